"""One baseline replica: ``python -m runcoord.harness.baseline --instance-id base-0 ...``.

Turns come from ``<prefix>baseline.turns`` (a consumer group shared by the replicas, offsets
auto-committed every few seconds, as variant A did); each finished turn is reported on
``<prefix>baseline.done`` as JSON ``{run_id, status, reason, at}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import threading
import time
from pathlib import Path

import httpx
from confluent_kafka import Consumer, Producer
from openai import AsyncOpenAI

from runcoord.harness.baseline.gateway import BlindRetryTools
from runcoord.harness.baseline.lru import Lru
from runcoord.harness.baseline.turns import (
    AssistantsTurn,
    Knobs,
    ResponsesTurn,
    ToolRunner,
    TurnMessage,
)
from runcoord.registry import load_registry

log = logging.getLogger("runcoord.harness.baseline")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runcoord.harness.baseline")
    p.add_argument("--instance-id", required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--provider-url", required=True)
    p.add_argument("--gateway-url", required=True)
    p.add_argument("--tools", type=Path, required=True)
    p.add_argument("--poll-ms", type=float, default=500)
    p.add_argument("--budget-s", type=float, default=120)
    return p.parse_args()


async def serve(args: argparse.Namespace, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    registry = load_registry(args.tools)
    lru = Lru()
    knobs = Knobs(poll_s=args.poll_ms / 1000, budget_s=args.budget_s)
    done = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"{args.prefix}baseline",
            "client.id": args.instance_id,
            "enable.auto.commit": True,  # variant A: offsets move on a timer, not with the work
            "auto.commit.interval.ms": 5000,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([f"{args.prefix}baseline.turns"])
    async with (
        httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as http,
        AsyncOpenAI(base_url=args.provider_url, api_key="sk-baseline") as client,
    ):
        tools = BlindRetryTools(http, args.gateway_url, registry)
        tasks: set[asyncio.Task[None]] = set()

        def runner(tenant: str, run_id: str) -> ToolRunner:
            async def run_tool(name: str, arguments: str, call_id: str) -> str:
                cached = lru.get(call_id)
                if cached is not None:
                    return cached
                output = await tools.call(
                    name, arguments, tenant=tenant, run_id=run_id, tool_call_id=call_id
                )
                lru.put(call_id, output)
                return output

            return run_tool

        async def handle(turn: TurnMessage) -> None:
            kind = AssistantsTurn if turn.provider == "assistants" else ResponsesTurn
            try:
                status, reason = await kind(client, runner(turn.tenant, turn.run_id), knobs)(turn)
            except Exception as exc:  # variant A logs and moves on
                status, reason = "failed", f"{type(exc).__name__}: {exc}"
            report = {"run_id": turn.run_id, "status": status, "reason": reason, "at": time.time()}
            done.produce(
                f"{args.prefix}baseline.done", json.dumps(report).encode(), turn.run_id.encode()
            )
            done.poll(0)

        while not stop.is_set():
            msgs = await loop.run_in_executor(None, consumer.consume, 100, 0.2)
            for msg in msgs:
                if msg.error() is not None:
                    continue
                turn = TurnMessage.from_json(json.loads(msg.value() or b"{}"))
                task = asyncio.create_task(handle(turn))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            done.poll(0)
        consumer.close()
        done.flush(10)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("baseline %s up", args.instance_id)
    asyncio.run(serve(args, stop))


if __name__ == "__main__":
    main()
