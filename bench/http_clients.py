"""(f) CPU per HTTP request of the executors' clients, httpx's own transport against aiohttp.

The executors are mostly requests: polls and writes through the openai SDK (provider and
submission executors), tool calls through httpx (tool executor). Against a simulated
provider started for the purpose, each client sends the same requests one after another in
this process, rounds interleaved so the machine's noise falls on all alike; the figure is
this process's CPU time per request (the server's excluded):

- ``sdk_httpx``: ``AsyncOpenAI`` on its default transport (httpx2), retrieving a run;
- ``sdk_aiohttp``: the same through ``runcoord.provider.client.open_client`` (aiohttp), what
  the executors use;
- ``gateway_httpx``: ``httpx.AsyncClient`` POSTing JSON;
- ``gateway_aiohttp``: the same through ``runcoord.transport.gateway_client``;
- ``responses_write``: one write of a Responses turn as the executors make it
  (``ResponsesProvider`` with ``observe="stream"``: the opening response, then each
  follow-up with the step's outputs, each streamed and followed until the model stops
  working), over aiohttp, against the simulator's default model latency.

    .venv/bin/python bench/http_clients.py [--requests 400] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from openai import AsyncOpenAI

from runcoord.domain.model import Output
from runcoord.harness.replay.procs import free_port, python_argv
from runcoord.provider import ResponsesProvider
from runcoord.provider.client import open_client
from runcoord.provider.port import Turn
from runcoord.stack.polling import wait_until
from runcoord.transport import gateway_client

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the Assistants API's


def start_sim(port: int) -> subprocess.Popen[bytes]:
    sim = subprocess.Popen(
        python_argv("sim", "provider", "--port", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> str | None:
        if sim.poll() is not None:
            raise RuntimeError(f"the simulated provider exited with {sim.returncode}")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/_sim/health", timeout=1)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return None if health.status_code == 200 else f"HTTP {health.status_code}"

    try:
        wait_until(up, timeout=30, what="the simulated provider")
    except BaseException:
        sim.kill()
        raise
    return sim


async def cpu_per_request(send: Callable[[], Awaitable[Any]], n: int) -> float:
    await send()  # the connection opened, outside the figure
    began = time.process_time()
    for _ in range(n):
        await send()
    return (time.process_time() - began) / n * 1000


async def write_cpu(base: str, writes: int) -> float:
    """CPU per streamed Responses write: turns opened and answered until ``writes`` made."""
    async with open_client(base + "/v1", "sk-bench") as client:
        provider = ResponsesProvider(client, tools=[], observe="stream")
        made, cpu = 0, 0.0
        while made < writes:
            conversation = (await client.conversations.create()).id
            began = time.process_time()
            run, _ = await provider.create_run(
                run_id=f"r-{made}", thread_id=conversation, assistant_id="gpt-4o",
                input="open a ticket", effect_key=f"open-{conversation}",
            )  # fmt: skip
            made += 1
            while run.status == "requires_action" and run.step_id is not None:
                outputs = [Output(c.id, "ok", False, "tool", "") for c in run.tool_calls]
                outcome = await provider.submit_outputs(
                    thread_id=conversation, provider_run_id=run.provider_run_id,
                    step_id=run.step_id, outputs=outputs, effect_key=f"{run.step_id}-out",
                    turn=Turn(f"r-{made}", "gpt-4o", {}), unanswered=True,
                )  # fmt: skip
                made += 1
                if outcome.seen is None:
                    break
                run = outcome.seen
            cpu += time.process_time() - began
        return cpu / made * 1000


async def measure(base: str, requests: int, rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name in ("sdk_httpx", "sdk_aiohttp"):
            sdk = (
                AsyncOpenAI(base_url=base + "/v1", api_key="sk-bench")
                if name == "sdk_httpx"
                else open_client(base + "/v1", "sk-bench")
            )
            async with sdk as client:
                assistant = await client.beta.assistants.create(model="gpt-4o")
                thread = await client.beta.threads.create()
                run = await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)

                async def poll(c: AsyncOpenAI = client, r: str = run.id, t: str = thread.id) -> Any:
                    return await c.beta.threads.runs.retrieve(r, thread_id=t)

                samples.setdefault(name, []).append(await cpu_per_request(poll, requests))
        for name in ("gateway_httpx", "gateway_aiohttp"):
            http = httpx.AsyncClient() if name == "gateway_httpx" else gateway_client()
            async with http:

                async def post(h: httpx.AsyncClient = http) -> Any:
                    response = await h.post(base + "/v1/threads", json={"metadata": {}})
                    return response.json()

                samples.setdefault(name, []).append(await cpu_per_request(post, requests))
        samples.setdefault("responses_write", []).append(
            await write_cpu(base, max(1, requests // 2))
        )
    figures: dict[str, Any] = {"requests": requests, "rounds": rounds}
    for name, values in samples.items():
        figures[f"{name}_cpu_ms_per_request"] = statistics.median(values)
    for kind in ("sdk", "gateway"):
        figures[f"{kind}_aiohttp_over_httpx"] = (
            figures[f"{kind}_aiohttp_cpu_ms_per_request"]
            / figures[f"{kind}_httpx_cpu_ms_per_request"]
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    args = parser.parse_args()
    port = free_port()
    sim = start_sim(port)
    try:
        figures = asyncio.run(measure(f"http://127.0.0.1:{port}", args.requests, args.rounds))
    finally:
        sim.terminate()
        sim.wait(10)
    out = sys.stderr if args.json else sys.stdout
    head = f"{args.requests} requests x {args.rounds} rounds, CPU of this process (median)"
    print(head, file=out)
    for kind in ("sdk", "gateway"):
        h, a = (figures[f"{kind}_{t}_cpu_ms_per_request"] for t in ("httpx", "aiohttp"))
        print(f"{kind:8s} httpx {h:5.2f} ms  aiohttp {a:5.2f} ms  ratio {a / h:.2f}", file=out)
    write = figures["responses_write_cpu_ms_per_request"]
    print(f"a streamed Responses write (create or follow-up, followed): {write:5.2f} ms", file=out)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
