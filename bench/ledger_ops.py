"""(g) CPU and wall time per guarded effect of the effect ledger, by adapter.

Every guarded effect (a run's creation, a tool call, a submission) costs three ledger
statements on the executor's side: claim, mark_sent, complete. The executors used to run the
blocking adapter in worker threads (a thread hop per statement); they now run the async
adapter on their event loop. This runs the same effects through both, in this process,
against a scratch database on the stack's PostgreSQL, rounds interleaved so the machine's
noise falls on both alike, `--concurrency` effects at a time; the figure is this process's
CPU time per effect (the server's excluded) and the wall time per effect.

    .venv/bin/python bench/ledger_ops.py [--effects 2000] [--rounds 3] [--concurrency 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from runcoord.config import load
from runcoord.effects.ledger import (
    Acquired,
    AsyncLedger,
    AsyncPostgresLedger,
    EffectMeta,
    EffectState,
    PostgresLedger,
)
from runcoord.effects.ledger.port import OnThreads
from runcoord.harness.replay.env import create_database, drop_database


async def one_effect(ledger: AsyncLedger, key: str) -> None:
    meta = EffectMeta("tool_call", "bench", "run", "step", key, "hash")
    claim = await ledger.claim(key, meta, "bench-owner", 30.0)
    assert isinstance(claim, Acquired), claim  # a fresh key
    await ledger.mark_sent(key, claim.token)
    await ledger.complete(key, claim.token, EffectState.SUCCEEDED, {"ok": True})


async def run(ledger: AsyncLedger, effects: int, concurrency: int) -> tuple[float, float]:
    gate = asyncio.Semaphore(concurrency)

    async def limited() -> None:
        async with gate:
            await one_effect(ledger, uuid.uuid4().hex)

    await one_effect(ledger, uuid.uuid4().hex)  # connect outside the measure
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(limited() for _ in range(effects)))
    return (
        (time.process_time() - cpu) * 1000 / effects,
        (time.perf_counter() - wall) * 1000 / effects,
    )


async def measure(dsn: str, effects: int, rounds: int, concurrency: int) -> dict[str, Any]:
    samples: dict[str, list[tuple[float, float]]] = {"threads": [], "event_loop": []}
    for _ in range(rounds):
        blocking = PostgresLedger(dsn)
        try:
            samples["threads"].append(await run(OnThreads(blocking), effects, concurrency))
        finally:
            blocking.close()
        async with AsyncPostgresLedger(dsn) as native:
            samples["event_loop"].append(await run(native, effects, concurrency))
    figures: dict[str, Any] = {
        "effects": effects,
        "rounds": rounds,
        "concurrency": concurrency,
    }
    for name, got in samples.items():
        figures[f"{name}_cpu_ms_per_effect"] = round(statistics.median(c for c, _ in got), 3)
        figures[f"{name}_wall_ms_per_effect"] = round(statistics.median(w for _, w in got), 3)
    figures["cpu_ratio_event_loop_to_threads"] = round(
        figures["event_loop_cpu_ms_per_effect"] / figures["threads_cpu_ms_per_effect"], 2
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--effects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    args = parser.parse_args()
    settings = load()
    name = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    dsn = create_database(settings.dsn, name)
    try:
        figures = asyncio.run(measure(dsn, args.effects, args.rounds, args.concurrency))
    finally:
        drop_database(settings.dsn, name)
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{figures['effects']} effects x {figures['rounds']} rounds, "
        f"{figures['concurrency']} at a time (claim, mark_sent, complete), medians"
    )
    for name in ("threads", "event_loop"):
        print(
            f"{name:10s}  CPU {figures[f'{name}_cpu_ms_per_effect']:.3f} ms/effect  "
            f"wall {figures[f'{name}_wall_ms_per_effect']:.3f} ms/effect"
        )
    print(f"CPU ratio event loop / threads: {figures['cpu_ratio_event_loop_to_threads']}")


if __name__ == "__main__":
    main()
