"""`runcoord api serve|relay|keys create`: the agent API, its outbox relay, tenants' keys."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from runcoord.config import load

app = typer.Typer(no_args_is_help=True)
keys_app = typer.Typer(no_args_is_help=True, help="Tenants' API keys (stored hashed).")
app.add_typer(keys_app, name="keys")
log = logging.getLogger("runcoord.api")

PrefixOpt = Annotated[str, typer.Option(help="Prefix of every topic name (tests, tenants).")]
MetricsOpt = Annotated[
    int | None,
    typer.Option(help="Serve Prometheus /metrics here (default: RUNCOORD_METRICS_PORT)."),
]
AllowPrivateOpt = Annotated[
    bool,
    typer.Option(
        "--webhooks-allow-private",
        help="Outbound webhooks may target private, loopback and link-local addresses (never "
        "the cloud metadata address) (default: RUNCOORD_WEBHOOKS_ALLOW_PRIVATE).",
    ),
]


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8400,
    topic_prefix: PrefixOpt = "",
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            help="Secret provider webhooks are signed with (default: OPENAI_WEBHOOK_SECRET)."
        ),
    ] = None,
    assistant_id: Annotated[
        str, typer.Option(help="Assistant a turn runs on when it names none.")
    ] = "asst_default",
    provider_url: Annotated[
        str | None,
        typer.Option(
            help="The provider's base URL (…/v1); with `auto`, OpenAI's own means responses, "
            "any other assistants (default: RUNCOORD_PROVIDER_URL, else the local simulator).",
            show_default=False,
        ),
    ] = None,
    providers_file: Annotated[
        Path | None,
        typer.Option(
            help="Which protocol each assistant's turns use (a turn's own `provider` wins) "
            "(default: RUNCOORD_PROVIDERS_FILE, else providers.yaml in the repo).",
            show_default=False,
        ),
    ] = None,
    metrics_port: MetricsOpt = None,
    webhooks_allow_private: AllowPrivateOpt = False,
) -> None:
    """Serve the agent API (FastAPI on uvicorn)."""
    import uvicorn

    from runcoord import logs, metrics, tracing
    from runcoord.api.app import config_from, create_app
    from runcoord.errors import ConfigError
    from runcoord.kafka import TopicNames

    settings = load()
    try:  # before anything starts: a bad providers.yaml stops the API with its message
        config = config_from(
            settings,
            topics=TopicNames.with_prefix(topic_prefix),
            webhook_secret=webhook_secret or settings.openai_webhook_secret,
            assistant_id=assistant_id,
            provider_url=provider_url,
            providers_file=providers_file,
        )
    except ConfigError as exc:
        raise typer.BadParameter(
            str(exc), param_hint="--provider-url / --providers-file (or their RUNCOORD_ variables)"
        ) from exc
    logs.setup()
    tracing.setup("runcoord-api")
    metrics.serve(metrics_port)
    log.info(
        "provider %s; providers.yaml: default %s, %d assistants named; a turn of %s naming "
        "no protocol gets %s",
        config.provider_url,
        config.providers.default,
        len(config.providers.assistants),
        config.assistant_id,
        config.protocol_for(config.assistant_id, None),
    )
    if webhooks_allow_private:
        config = dataclasses.replace(config, webhooks_allow_private=True)
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")


@app.command("relay")
def relay(topic_prefix: PrefixOpt = "", metrics_port: MetricsOpt = None) -> None:
    """Publish the API's outbox to runs.inbox (idempotent producer; rows marked after delivery)."""
    from runcoord import logs, metrics, tracing
    from runcoord.api.relay import Relay, RelayConfig
    from runcoord.kafka import TopicNames

    logs.setup()
    tracing.setup("runcoord-relay")
    metrics.serve(metrics_port)
    settings = load()
    topics = TopicNames.with_prefix(topic_prefix)
    relay_ = Relay(RelayConfig(settings.bootstrap, settings.dsn, [topics.inbox], dlq=topics.dlq))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("relay up for %s", topics.inbox)
    relay_.run(stop)
    s = relay_.stats
    log.info("relay stopped: %d sent, %d failed, %d parked", s.sent, s.failed, s.parked)


@app.command("deliver")
def deliver(
    topic_prefix: PrefixOpt = "",
    group: Annotated[
        str, typer.Option(help="Consumer group of the journal (each group records anew).")
    ] = "runcoord-webhooks-deliver",
    concurrency: Annotated[int, typer.Option(min=1, help="Deliveries in flight at once.")] = 8,
    timeout_s: Annotated[
        float, typer.Option(min=0.1, help="Each of connect, send and read, per attempt.")
    ] = 10.0,
    max_attempts: Annotated[int, typer.Option(min=1, help="Attempts before a row fails.")] = 30,
    webhooks_allow_private: AllowPrivateOpt = False,
    metrics_port: MetricsOpt = None,
) -> None:
    """Tell tenants' webhooks of approval requests and finished runs (from runs.events)."""
    from runcoord import logs, metrics
    from runcoord.api.deliver import DeliverConfig, Deliverer, RetryPolicy
    from runcoord.kafka import TopicNames

    logs.setup()
    metrics.serve(metrics_port)
    settings = load()
    config = DeliverConfig(
        bootstrap=settings.bootstrap,
        dsn=settings.dsn,
        topics=TopicNames.with_prefix(topic_prefix),
        group_id=group,
        allow_private=webhooks_allow_private or settings.webhooks_allow_private,
        concurrency=concurrency,
        timeout_s=timeout_s,
        retry=RetryPolicy(max_attempts=max_attempts),
    )
    deliverer = Deliverer(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "deliverer up (group %s, journal %s, private targets %s)",
        group,
        config.topics.events,
        "allowed" if config.allow_private else "refused",
    )
    deliverer.run(stop)
    s = deliverer.stats
    log.info(
        "deliverer stopped: %d notices read, %d rows recorded, %d delivered, %d retried, "
        "%d failed, %d skipped",
        s.notices,
        s.recorded,
        s.delivered,
        s.retried,
        s.failed,
        s.skipped,
    )


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")],
    name: Annotated[
        str | None,
        typer.Option(help="Who holds the key; an approver's decisions are signed with it."),
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            help="approver: may decide approval requests (POST /v1/approvals/{id}); "
            "operator: sees every tenant's runs in the console (--tenant is then a label). "
            "Default: none (turns and reads only).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create an API key for a tenant and print it (it is stored hashed: shown only now)."""
    import psycopg

    from runcoord.api.keys import ROLES, create

    if role is not None and role not in ROLES:
        raise typer.BadParameter(f"{role!r}: one of {', '.join(ROLES)}", param_hint="--role")
    if name == "":
        raise typer.BadParameter("empty; leave it out instead", param_hint="--name")
    with psycopg.connect(load().dsn, autocommit=True, connect_timeout=10) as conn:
        typer.echo(create(conn, tenant, name=name, role=role))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (rk_<id>_…).")]) -> None:
    """Revoke a key by its id."""
    import psycopg

    from runcoord.api.keys import revoke

    with psycopg.connect(load().dsn, autocommit=True, connect_timeout=10) as conn:
        if not revoke(conn, key_id):
            typer.echo(f"no active key {key_id}", err=True)
            raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


assistants_app = typer.Typer(
    no_args_is_help=True, help="Which assistants each tenant may run (besides the default)."
)
app.add_typer(assistants_app, name="assistants")
TenantOpt = Annotated[str, typer.Option(help="The tenant.")]
AssistantArg = Annotated[str, typer.Argument(help="The assistant's id (asst_…, or a model).")]


@assistants_app.command("allow")
def assistants_allow(assistant_id: AssistantArg, tenant: TenantOpt) -> None:
    """Let a tenant's turns name this assistant."""
    import psycopg

    from runcoord.api import tenants

    with psycopg.connect(load().dsn, autocommit=True, connect_timeout=10) as conn:
        added = tenants.allow(conn, tenant, assistant_id)
    typer.echo(f"{tenant} may run {assistant_id}" + ("" if added else " (already could)"))


@assistants_app.command("revoke")
def assistants_revoke(assistant_id: AssistantArg, tenant: TenantOpt) -> None:
    """Stop a tenant's turns from naming this assistant (runs already accepted go on)."""
    import psycopg

    from runcoord.api import tenants

    with psycopg.connect(load().dsn, autocommit=True, connect_timeout=10) as conn:
        if not tenants.revoke(conn, tenant, assistant_id):
            typer.echo(f"{tenant} was not allowed {assistant_id}", err=True)
            raise typer.Exit(1)
    typer.echo(f"{tenant} may no longer run {assistant_id}")


@assistants_app.command("list")
def assistants_list(tenant: TenantOpt) -> None:
    """The assistants a tenant may name, one a line."""
    import psycopg

    from runcoord.api import tenants

    with psycopg.connect(load().dsn, autocommit=True, connect_timeout=10) as conn:
        for assistant_id in tenants.allowed(conn, tenant):
            typer.echo(assistant_id)
