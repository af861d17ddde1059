"""PNG plots of a replay (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never a window, never a display server

import matplotlib.pyplot as plt

from runcoord.harness.report.data import ReplayData
from runcoord.harness.report.steps import analyse

COLORS = {"runcoord": "#1b7837", "baseline": "#b2182b"}


def _cdf(ax: Any, values: list[float], label: str) -> None:
    if not values:
        return
    ordered = sorted(values)
    n = len(ordered)
    ax.plot(ordered, [(i + 1) / n for i in range(n)], label=label, color=COLORS.get(label))


def turn_latency(replay: ReplayData, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, data in replay.systems.items():
        values = [
            r.finished_at - r.sent_at
            for r in data.runs
            if r.finished_at is not None and r.status == "completed"
        ]
        _cdf(ax, values, name)
    ax.set_xscale("log")
    ax.set_xlabel("turn latency, s (completed turns)")
    ax.set_ylabel("share of turns")
    ax.set_title("Turn latency (CDF)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def requires_action(replay: ReplayData, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    queue_ms = float(replay.protocol.get("queue_ms", 20.0))
    for name, data in replay.systems.items():
        turn_of_run = {r.run_id: replay.trace[r.turn_id] for r in data.runs}
        finished = {r.run_id: r.finished_at for r in data.runs if r.finished_at is not None}
        ended = float(data.info.get("ended_at", 0.0))
        waits, _ = analyse(data.sim_records, turn_of_run, queue_ms, ended, finished)
        _cdf(ax, [max(w.wait_s, 0.001) for w in waits], name)
    ax.axvline(5.0, color="grey", linestyle="--", label="5 s (stall threshold)")
    ax.set_xscale("log")
    ax.set_xlabel("time in requires_action per step, s (provider's records)")
    ax.set_ylabel("share of steps")
    ax.set_title("Time in requires_action (CDF)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline(replay: ReplayData, path: Path) -> Path:
    systems = list(replay.systems.items())
    fig, axes = plt.subplots(len(systems), 1, figsize=(9, 2.8 * len(systems)), squeeze=False)
    for ax, (name, data) in zip(axes[:, 0], systems, strict=True):
        t0 = float(data.info.get("started_at", 0.0))
        finishes = sorted(r.finished_at - t0 for r in data.runs if r.finished_at is not None)
        if finishes:
            width = max(1, int(finishes[-1]) + 1)
            per_second = [0] * width
            for t in finishes:
                per_second[max(0, min(width - 1, int(t)))] += 1
            ax.plot(range(width), per_second, color=COLORS.get(name), label="turns finished / s")
        sent = [s["t"] for s in data.timeline]
        inflight = [s["in_flight"] for s in data.timeline]
        ax.plot(sent, inflight, color="#2166ac", alpha=0.6, label="in flight")
        opened: dict[str, float] = {}
        for fault in data.faults:
            if not fault.get("applicable", True):
                continue
            kind, t = fault["kind"], float(fault["t"])
            if kind.endswith("_window"):
                key = fault["label"]
                if fault.get("detail", "").startswith("on"):
                    opened[key] = t
                elif key in opened:
                    ax.axvspan(opened.pop(key), t, color="orange", alpha=0.12)
            elif kind in ("kill", "broker_down", "redis_down", "postgres_down"):
                ax.axvline(t, color="black", alpha=0.5, linewidth=0.8)
        ax.set_title(
            f"{name}: throughput and faults (shaded: fault windows; lines: kills, outages)"
        )
        ax.set_xlabel("seconds since the first turn")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def all_plots(replay: ReplayData, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        turn_latency(replay, folder / "turn_latency.png"),
        requires_action(replay, folder / "requires_action.png"),
        timeline(replay, folder / "timeline.png"),
    ]
