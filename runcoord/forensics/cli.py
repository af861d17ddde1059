"""`runcoord forensics project|run|scan`: keep the run projection, explain a run, find anomalies."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from runcoord.config import load

app = typer.Typer(no_args_is_help=True)
log = logging.getLogger("runcoord.forensics")

PrefixOpt = Annotated[str, typer.Option(help="Prefix of every topic name (tests, tenants).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.command("project")
def project(
    topic_prefix: PrefixOpt = "",
    group: Annotated[
        str, typer.Option(help="Consumer group (a new one rebuilds the projection).")
    ] = "runcoord-forensics-projector",
    batch_max: Annotated[int, typer.Option(help="Records per PostgreSQL transaction.")] = 5000,
    stats_every_s: Annotated[float, typer.Option(help="Log figures this often.")] = 10.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics here (default: RUNCOORD_METRICS_PORT)."),
    ] = None,
) -> None:
    """Consume runs.events, effects and runs.dlq into the run projection (PostgreSQL)."""
    from runcoord import logs, metrics
    from runcoord.forensics.projector import Projector, ProjectorConfig
    from runcoord.kafka import TopicNames

    logs.setup()
    metrics.serve(metrics_port)
    settings = load()
    config = ProjectorConfig(
        bootstrap=settings.bootstrap,
        dsn=settings.dsn,
        topics=TopicNames.with_prefix(topic_prefix),
        group_id=group,
        batch_max=batch_max,
    )
    projector = Projector(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = threading.Thread(target=projector.run, args=(stop,), name="projector", daemon=True)
    worker.start()
    log.info("projector up (group %s, journal %s)", group, config.topics.events)
    last = time.monotonic()
    while worker.is_alive():
        worker.join(0.5)
        if time.monotonic() - last >= stats_every_s:
            s = projector.stats
            log.info(
                "projected %d events, %d intents, %d dead letters in %d batches; %d skipped",
                s.events,
                s.intents,
                s.dead_letters,
                s.batches,
                s.skipped,
            )
            last = time.monotonic()
    if projector.failure is not None:
        log.error("projector stopped: %s", projector.failure)
        raise typer.Exit(1)


@app.command("run")
def run(
    run_id: Annotated[str, typer.Argument(help="The run to explain.")],
    topic_prefix: PrefixOpt = "",
    as_json: JsonOpt = False,
    tools: Annotated[
        Path | None, typer.Option(help="The tool registry (default: RUNCOORD_TOOLS_FILE).")
    ] = None,
    evidence: Annotated[
        Path | None,
        typer.Option(
            help="Read the run from a replay's evidence folder (the replay's or one system's) "
            "instead of the projection, Kafka and PostgreSQL.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
) -> None:
    """One run's full story: journal, intents, ledger and sandbox audit on one clock."""
    import psycopg

    from runcoord.codec import AvroCodec
    from runcoord.errors import ConfigError
    from runcoord.forensics.gather import gather, tool_infos
    from runcoord.forensics.reader import PositionReader
    from runcoord.forensics.render import story_text, to_json
    from runcoord.forensics.timeline import build_story
    from runcoord.kafka import TopicNames
    from runcoord.registry import load_registry

    settings = load()
    try:
        registry = load_registry(tools or load().tools_file)
    except ConfigError as exc:
        typer.echo(f"warning: {exc}; explaining without the registry", err=True)
        registry = None
    if evidence is not None:
        from runcoord.forensics.evidence import gather_from_evidence, locate

        folder = locate(evidence, run_id)
        found = gather_from_evidence(folder, run_id, tool_infos(registry)) if folder else None
        if found is None:
            typer.echo(f"run {run_id} is not in the journal saved under {evidence}", err=True)
            raise typer.Exit(1)
        story = build_story(found)
        typer.echo(to_json(story) if as_json else story_text(story))
        return
    topics = TopicNames.with_prefix(topic_prefix)
    with (
        psycopg.connect(settings.dsn, connect_timeout=10) as conn,
        PositionReader(settings.bootstrap) as reader,
    ):
        facts = gather(conn, reader, topics, run_id, codec=AvroCodec(), registry=registry)
    if facts is None:
        typer.echo(f"run {run_id} is not in the projection of {topics.events}", err=True)
        raise typer.Exit(1)
    story = build_story(facts)
    typer.echo(to_json(story) if as_json else story_text(story))


def _when(text: str) -> datetime:
    """ISO time, or a duration back from now: 15m, 2h, 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("scan")
def scan(
    from_: Annotated[
        str, typer.Option("--from", help="Start: ISO time or a duration ago (1h).")
    ] = "1h",
    to: Annotated[str, typer.Option("--to", help="End: ISO time or a duration ago.")] = "0s",
    topic_prefix: PrefixOpt = "",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Anomalies across runs: duplicate clusters and their cause, unknown outcomes, steps near
    their deadline, dead letters, client resubmissions."""
    import psycopg

    from runcoord.forensics.render import scan_text, to_json
    from runcoord.forensics.scan import scan as run_scan
    from runcoord.kafka import TopicNames

    settings = load()
    try:
        start, end = _when(from_), _when(to)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    journal = TopicNames.with_prefix(topic_prefix).events
    with psycopg.connect(settings.dsn, connect_timeout=10) as conn:
        result = run_scan(conn, journal, start, end, tenant)
    if as_json:
        payload = {
            "from": start,
            "to": end,
            "counts": result.counts(),
            "clusters": [
                {
                    "tool": c.tool,
                    "tenant": c.tenant,
                    "payload_hash": c.payload_hash,
                    "cause": c.cause,
                    "actions": c.actions,
                    "causes": c.causes,
                    "reasons": c.reasons,
                }
                for c in result.clusters
            ],
            "unknown_outcomes": result.unknown_outcomes,
            "near_deadline": result.near_deadline,
            "dead_letters": result.dead_letters,
            "client_resubmissions": result.resubmissions,
        }
        typer.echo(to_json(payload))
    else:
        typer.echo(scan_text(result))
