"""`runcoord coordinator`: run one coordinator replica (several form one consumer group)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from runcoord import faults, logs, metrics, tracing
from runcoord.config import load
from runcoord.coordinator.loop import FAULT_POINTS, Coordinator, LoopConfig
from runcoord.domain import Policy
from runcoord.errors import ConfigError
from runcoord.kafka import TopicNames
from runcoord.registry import load_registry

log = logging.getLogger("runcoord.coordinator")

# The options' defaults are the loop's and the policy's own, never written twice.
_LOOP = LoopConfig(bootstrap="")
_POLICY = Policy()


def coordinator(
    instance_id: Annotated[
        str | None,
        typer.Option(
            help="Stable replica name (coord-0…), unique among live replicas; given, the "
            "replica joins as a static member and gets its partitions back at once after a "
            "restart. Default: host-pid."
        ),
    ] = None,
    group: Annotated[
        str, typer.Option(help="Consumer group of the replicas.")
    ] = "runcoord-coordinator",
    topic_prefix: Annotated[
        str, typer.Option(help="Prefix of every topic name (tests, tenants).")
    ] = "",
    tools: Annotated[
        Path | None, typer.Option(help="The tool registry (default: RUNCOORD_TOOLS_FILE).")
    ] = None,
    batch_max: Annotated[
        int, typer.Option(help="Inputs per transaction at most.")
    ] = _LOOP.batch_max,
    batch_wait_ms: Annotated[
        int,
        typer.Option(
            help="How long an idle coordinator waits for an input before checking its timers."
        ),
    ] = _LOOP.batch_wait_ms,
    step_budget_ms: Annotated[
        int, typer.Option(help="Longest a step may wait for its tools.")
    ] = _POLICY.step_budget_ms,
    safety_margin_ms: Annotated[
        int, typer.Option(help="Answer a step this long before expiry.")
    ] = _POLICY.safety_margin_ms,
    run_budget_ms: Annotated[
        int, typer.Option(help="A turn not done by then is cancelled.")
    ] = _POLICY.run_budget_ms,
    watch_timeout_ms: Annotated[
        int, typer.Option(help="Longest one provider watch lasts.")
    ] = _POLICY.watch_timeout_ms,
    approval_budget_ms: Annotated[
        int,
        typer.Option(
            help="Longest a call waits for a person's approval (the provider's expiry bounds "
            "it too); past it the model is told it was not approved in time."
        ),
    ] = _POLICY.approval_budget_ms,
    session_timeout_ms: Annotated[
        int, typer.Option(help="Group session timeout.")
    ] = _LOOP.session_timeout_ms,
    max_poll_interval_ms: Annotated[
        int, typer.Option(help="Group max poll interval.")
    ] = _LOOP.max_poll_interval_ms,
    call_deadline_s: Annotated[
        float,
        typer.Option(
            help="A transactional call not back by then is taken as hung: clients rebuilt."
        ),
    ] = _LOOP.call_deadline_s,
    stats_every_s: Annotated[float, typer.Option(help="Print loop figures this often.")] = 10.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics here (default: RUNCOORD_METRICS_PORT)."),
    ] = None,
    fault_at: Annotated[
        str | None,
        typer.Option(
            help=f"Test hook: kill|stop|hang@POINT[:N], POINT one of {', '.join(FAULT_POINTS)} "
            "(default: RUNCOORD_FAULT_AT).",
        ),
    ] = None,
) -> None:
    """Consume runs.inbox and apply it exactly once, one Kafka transaction per batch."""
    logs.setup()
    settings = load()
    try:
        tracing.setup("runcoord-coordinator")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        faults.configure(fault_at)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        registry = load_registry(tools or settings.tools_file)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    policy = registry.policy(
        step_budget_ms=step_budget_ms,
        safety_margin_ms=safety_margin_ms,
        run_budget_ms=run_budget_ms,
        watch_timeout_ms=watch_timeout_ms,
        approval_budget_ms=approval_budget_ms,
    )
    config = LoopConfig(
        bootstrap=settings.bootstrap,
        topics=TopicNames.with_prefix(topic_prefix),
        group_id=group,
        batch_max=batch_max,
        batch_wait_ms=batch_wait_ms,
        session_timeout_ms=session_timeout_ms,
        max_poll_interval_ms=max_poll_interval_ms,
        call_deadline_s=call_deadline_s,
    )
    if instance_id:
        # A name given is stable across restarts (coord-0, coord-1…): join under it.
        config = dataclasses.replace(config, instance_id=instance_id, static_membership=True)
    loop = Coordinator(config, policy)
    metrics.serve(metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = threading.Thread(target=loop.run, args=(stop,), name="coordinator", daemon=True)
    worker.start()
    log.info("coordinator %s up (group %s, prefix %r)", config.instance_id, group, topic_prefix)
    last = time.monotonic()
    while worker.is_alive():
        worker.join(0.5)
        loop.update_run_gauges()
        if time.monotonic() - last >= stats_every_s:
            _print_stats(loop, time.monotonic() - last)
            last = time.monotonic()
    log.info("coordinator %s stopped", config.instance_id)


def _print_stats(loop: Coordinator, elapsed: float) -> None:
    s = loop.stats
    txn = sorted(s.take_txn_ms())
    if not txn:
        log.info(
            "idle: %d partitions, %d runs",
            len(loop.owned),
            sum(len(r) for r in loop.owned.values()),
        )
        return
    p99 = txn[min(len(txn) - 1, int(len(txn) * 0.99))]
    log.info(
        "%.1f txn/s, txn p50 %.1f ms p99 %.1f ms; totals: %d inputs, %d ticks, %d records out, "
        "%d aborts, %d dead letters; %d partitions, %d runs",
        len(txn) / elapsed,
        statistics.median(txn),
        p99,
        s.inputs,
        s.ticks,
        s.records_out,
        s.aborts,
        s.dead_letters,
        len(loop.owned),
        sum(len(r) for r in loop.owned.values()),
    )
