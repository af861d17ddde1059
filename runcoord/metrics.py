"""Prometheus metrics of every runcoord process, served with ``--metrics-port``.

Names are stable (dashboards and alerts use them): runcoord_<what>_<unit>.
"""

from __future__ import annotations

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


def serve(port: int | None, host: str | None = None) -> None:
    """Expose /metrics on host:port (None or 0: not at all); host defaults to
    RUNCOORD_METRICS_HOST, itself loopback unless set."""
    if port:
        start_http_server(port, addr=host or load().metrics_host)
