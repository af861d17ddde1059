"""Prometheus metrics of every runcoord process, served with ``--metrics-port``.

Names are stable (dashboards and alerts use them): runcoord_<what>_<unit>.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from runcoord.config import load

_LATENCY = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

TXN_SECONDS = Histogram(
    "runcoord_txn_seconds",
    "Coordinator: one batch's transaction, begin to commit",
    buckets=_LATENCY,
)
TXN_ABORTS = Counter("runcoord_txn_aborts_total", "Coordinator: transactions aborted and retried")
INPUTS = Counter("runcoord_inputs_total", "Coordinator: inputs applied", ["type"])
EVENTS = Counter("runcoord_events_total", "Coordinator: journal events appended", ["type"])
INTENTS = Counter("runcoord_intents_total", "Coordinator: effect intents emitted", ["kind"])
DEAD_LETTERS = Counter("runcoord_dead_letters_total", "Inputs dead-lettered", ["process", "kind"])
DEADLINES = Counter(
    "runcoord_deadline_outputs_total", "Tool calls answered by a step deadline's error output"
)
RUNS = Gauge("runcoord_runs", "Coordinator: runs this replica owns, by phase", ["phase"])
# Summed over the replicas, it must equal runs.inbox's partition count: less, for longer than
# a rebalance takes, means a partition nobody owns, whose runs all stall (see DESIGN.md §3).
PARTITIONS = Gauge(
    "runcoord_partitions_owned", "Coordinator: runs.inbox partitions this replica owns"
)
EFFECTS = Counter(
    "runcoord_effects_total",
    "Executors: intents finished, by kind and outcome",
    ["kind", "outcome"],
)
EFFECT_SECONDS = Histogram(
    "runcoord_effect_seconds",
    "Executors: one intent, start to report delivered",
    ["kind"],
    buckets=_LATENCY,
)
EFFECT_RETRIES = Counter("runcoord_effect_retries_total", "Executors: retriable failures", ["kind"])
API_REQUESTS = Counter(
    "runcoord_api_requests_total",
    "Agent API: requests by route template, method and status",
    ["route", "method", "status"],
)
API_SECONDS = Histogram(
    "runcoord_api_request_seconds",
    "Agent API: one request, until its response starts",
    ["route"],
    buckets=_LATENCY,
)
RELAYED = Counter(
    "runcoord_relay_records_total", "Outbox relay: rows published, by outcome", ["outcome"]
)
PROJECTED = Counter(
    "runcoord_projected_records_total", "Forensics projector: records projected, by kind", ["kind"]
)


class HttpMetrics:
    """ASGI middleware counting each request by route template (never by raw path, which
    holds ids) and timing it until its response starts."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                route = getattr(scope.get("route"), "path", "unmatched")
                API_SECONDS.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            API_REQUESTS.labels(route, scope["method"], str(status)).inc()


def serve(port: int | None, host: str | None = None) -> None:
    """Expose /metrics on host:port; port None means RUNCOORD_METRICS_PORT (unset or 0: not
    at all), host None means RUNCOORD_METRICS_HOST, itself loopback unless set."""
    settings = load()
    port = settings.metrics_port if port is None else port
    if port:
        start_http_server(port, addr=host or settings.metrics_host)
