"""`runcoord executor provider`, and the provider clients the submission executor shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated

import typer

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
from runcoord.provider.client import open_client
from runcoord.provider.executor import KINDS, ProviderEffects
from runcoord.provider.port import OBSERVE_MODES, Observe, RunProvider
from runcoord.providers import load_choice
from runcoord.registry import load_registry

ProviderUrlOpt = Annotated[
    str | None,
    typer.Option(help="The provider's base URL (…/v1) (default: RUNCOORD_PROVIDER_URL)."),
]
ApiKeyOpt = Annotated[
    str | None, typer.Option(help="The provider's API key (default: OPENAI_API_KEY).")
]
ObserveOpt = Annotated[
    str | None,
    typer.Option(
        help="stream: a Responses run is watched by its event stream (resumed after a "
        "drop), and an Assistants run is created with stream=true and followed until its "
        "first step; poll: retrieve with backoff. Default: RUNCOORD_OBSERVE, else stream."
    ),
]


def check_observe(observe: str | None) -> Observe | None:
    """--observe as given (None: the setting decides), or a clear error."""
    if observe is not None and observe not in OBSERVE_MODES:
        raise typer.BadParameter(f"--observe: one of {', '.join(OBSERVE_MODES)}")
    return observe


def provider(
    instance_id: InstanceOpt = None,
    topic_prefix: PrefixOpt = "",
    provider_url: ProviderUrlOpt = None,
    api_key: ApiKeyOpt = None,
    concurrency: ConcurrencyOpt = 512,
    fault_at: FaultOpt = None,
    metrics_port: MetricsOpt = None,
    observe: ObserveOpt = None,
) -> None:
    """Create provider runs (at most one per turn), watch them, cancel them."""
    chosen = check_observe(observe)

    @asynccontextmanager
    async def handler(settings: Settings, owner: str) -> AsyncIterator[Handler]:
        mode = settings.observe if chosen is None else chosen
        async with (
            providers(settings, provider_url, api_key, mode) as clients,
            guard(settings, owner) as effects_guard,
        ):
            yield ProviderEffects(clients, effects_guard)

    options = (instance_id, topic_prefix, concurrency, fault_at, metrics_port)
    serve("provider", KINDS, handler, *options)


class Adapters(Mapping[str, RunProvider]):
    """The adapter of each protocol: those in `expected` built now, the others (and their
    modules imported) at their first use.

    The Assistants adapter brings 0.8 s of the openai SDK's types. Imported at start, a
    replica restarted after a kill -9 paid it before serving anything, even with no
    Assistants runs; imported at the first intent, the first step paid it. So the protocols
    the configuration gives turns (providers.yaml) are built at start, and only the others
    wait, in case an intent names one anyway.
    """

    def __init__(
        self, factories: Mapping[str, Callable[[], RunProvider]], expected: Iterable[str] = ()
    ) -> None:
        self._factories = factories
        self._built: dict[str, RunProvider] = {}
        for protocol in expected:
            self[protocol]

    def __getitem__(self, protocol: str) -> RunProvider:
        adapter = self._built.get(protocol)
        if adapter is None:
            adapter = self._built[protocol] = self._factories[protocol]()
        return adapter

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)


@asynccontextmanager
async def providers(
    settings: Settings, url: str | None, api_key: str | None, observe: Observe
) -> AsyncIterator[Mapping[str, RunProvider]]:
    """Both protocols; each intent names the one its run uses."""
    registry = load_registry(settings.tools_file)
    if any(t.server and t.parameters is None for t in registry.tools.values()):
        # MCP tools tools.yaml leaves unschemed are offered as their servers list them. (The
        # MCP SDK takes a second to import: only when needed.)
        from runcoord.tools.listing import with_listing

        registry = await with_listing(registry)
    tools = registry.function_tools()
    base_url = url or settings.provider_url
    expected = load_choice(settings.providers_file).protocols(base_url)
    async with open_client(base_url, api_key or settings.openai_api_key) as client:

        def assistants() -> RunProvider:
            from runcoord.provider.assistants import AssistantsProvider

            return AssistantsProvider(client, observe=observe)

        def responses() -> RunProvider:
            from runcoord.provider.responses import ResponsesProvider

            return ResponsesProvider(client, tools=tools, observe=observe)  # type: ignore[arg-type]

        yield Adapters({"assistants": assistants, "responses": responses}, expected)
