"""`runcoord executor all`: the provider, tool and submission executors in one replica.

Every executor reads every intent on ``effects`` and keeps its own kinds, so three
processes read each intent three times, commit three groups' offsets and keep three
clients, event loops and ledger connections idle between intents. One replica that hosts
all three lanes reads each intent once. Each lane keeps its own handler, concurrency and
ledger connection (runcoord/effects/runtime.py ``Lane``), so a lane that is full (slow
tools) queues its own intents and does not hold up the others'. The provider and
submission lanes share the provider clients and their connection pool.

The kinds' own commands remain, to scale one kind apart from the others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer

from runcoord.config import Settings, load
from runcoord.effects.limits import Limits
from runcoord.effects.runtime import Lane
from runcoord.effects.serve import FaultOpt, InstanceOpt, MetricsOpt, PrefixOpt, guard, serve
from runcoord.provider import executor as provider_kind
from runcoord.provider.cli import ApiKeyOpt, ObserveOpt, ProviderUrlOpt, check_observe, providers
from runcoord.provider.executor import ProviderEffects
from runcoord.registry import load_registry
from runcoord.submitter import executor as submission_kind
from runcoord.submitter.executor import Submissions
from runcoord.tools import executor as tool_kind
from runcoord.tools.cli import GatewayUrlOpt, RegistryOpt, tool_calls

KINDS = provider_kind.KINDS | tool_kind.KINDS | submission_kind.KINDS


def all_kinds(
    instance_id: InstanceOpt = None,
    topic_prefix: PrefixOpt = "",
    provider_url: ProviderUrlOpt = None,
    api_key: ApiKeyOpt = None,
    gateway_url: GatewayUrlOpt = None,
    registry: RegistryOpt = None,
    observe: ObserveOpt = None,
    per_tenant: Annotated[
        int, typer.Option(help="Tool calls in flight per tenant.")
    ] = Limits.per_tenant,
    provider_concurrency: Annotated[
        int, typer.Option(help="Provider intents (create, watch, cancel) in flight at most.")
    ] = 512,
    tools_concurrency: Annotated[int, typer.Option(help="Tool calls in flight at most.")] = 256,
    submissions_concurrency: Annotated[
        int, typer.Option(help="Submissions in flight at most.")
    ] = 256,
    fault_at: FaultOpt = None,
    metrics_port: MetricsOpt = None,
) -> None:
    """Create and watch provider runs, call tools and submit outputs, in one replica."""
    chosen = check_observe(observe)
    tools_file: Path = registry or load().tools_file
    reg = load_registry(tools_file)

    @asynccontextmanager
    async def lanes(settings: Settings, owner: str) -> AsyncIterator[list[Lane]]:
        # The provider lane offers the tools of the same registry the tool lane calls.
        settings = settings.model_copy(update={"tools_file": tools_file})
        mode = settings.observe if chosen is None else chosen
        async with (
            providers(settings, provider_url, api_key, mode) as clients,
            guard(settings, owner) as provider_guard,
            guard(settings, owner) as submission_guard,
            tool_calls(settings, owner, reg, gateway_url, per_tenant) as tools,
        ):
            yield [
                Lane(
                    provider_kind.KINDS,
                    ProviderEffects(clients, provider_guard),
                    provider_concurrency,
                ),
                Lane(tool_kind.KINDS, tools, tools_concurrency),
                Lane(
                    submission_kind.KINDS,
                    Submissions(clients, submission_guard),
                    submissions_concurrency,
                ),
            ]

    # Its own consumer group (runcoord-executor-all): run these replicas or each kind's own,
    # not both on one set of topics, or every intent is run twice (the ledger keeps its
    # effect to one, but each watch would poll twice).
    # Each lane has its own bound: serve's single-lane concurrency does not apply.
    serve("all", KINDS, lanes, instance_id, topic_prefix, 0, fault_at, metrics_port)
