"""Simulated model latencies and deadlines (config ``timing:`` section)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    queue_ms: float = 20.0  # time "queued", at the start and after each submission
    step_ms: float = 300.0  # model latency before each step, unless the script says
    cancel_ms: float = 20.0  # time "cancelling" before "cancelled"
    expires_after_s: float = 600.0  # a run's expires_at: created_at + this (OpenAI: 10 min)
    poll_after_ms: int = 200  # the openai-poll-after-ms hint on run retrieves
