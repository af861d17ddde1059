"""`runcoord executor submissions`: one submission executor replica."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runcoord.config import Settings
from runcoord.effects.runtime import Handler
from runcoord.effects.serve import (
    ConcurrencyOpt,
    FaultOpt,
    InstanceOpt,
    MetricsOpt,
    PrefixOpt,
    guard,
    serve,
)
from runcoord.provider.cli import ApiKeyOpt, ProviderUrlOpt, providers
from runcoord.submitter.executor import KINDS, Submissions


def submissions(
    instance_id: InstanceOpt = None,
    topic_prefix: PrefixOpt = "",
    provider_url: ProviderUrlOpt = None,
    api_key: ApiKeyOpt = None,
    concurrency: ConcurrencyOpt = 256,
    fault_at: FaultOpt = None,
    metrics_port: MetricsOpt = None,
) -> None:
    """Submit each step's outputs exactly once, reconciling after unknown outcomes."""

    @asynccontextmanager
    async def handler(settings: Settings, owner: str) -> AsyncIterator[Handler]:
        async with (
            providers(settings, provider_url, api_key, settings.observe) as clients,
            guard(settings, owner) as effects_guard,
        ):
            yield Submissions(clients, effects_guard)

    serve(
        "submissions",
        KINDS,
        handler,
        instance_id,
        topic_prefix,
        concurrency,
        fault_at,
        metrics_port,
    )
