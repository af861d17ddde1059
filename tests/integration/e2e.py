"""The whole product as separate processes on the real stack, for end-to-end and fault tests.

`launch` starts the simulated provider (driven by the official SDK), the sandbox gateway (its
audit log is the ground truth), a coordinator and one executor of each kind, each with its
own log, and on request the agent API with its outbox relay; `Stack` drives turns into
runs.inbox and reads the journal back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import yaml
from confluent_kafka import Consumer, Producer
from openai import OpenAI

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record, to_record
from runcoord.config import REPO_ROOT
from runcoord.db import migrate
from runcoord.domain import inputs as inp
from runcoord.harness.systems.tools_via import ToolsVia, registry_file
from runcoord.kafka import TopicNames, consumer_config, producer_config
from runcoord.registry import load_registry
from runcoord.topics import Level, TopicSpec
from runcoord.topics import apply as apply_topics
from runcoord.topics import delete as delete_topics
from tests.integration.processes import Proc, free_port, running

# The SDK marks its whole Assistants surface deprecated (OpenAI's hosted API is gone);
# Assistants-compatible servers are exactly what that adapter is for.
SDK_WARNINGS = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]

WRITE_TOOLS = {"create_ticket", "send_email", "charge_card", "update_crm", "post_note"}


@dataclass
class Stack:
    topics: TopicNames
    provider: str
    gateway: str
    sdk: OpenAI
    assistant_id: str
    procs: dict[str, Proc]
    codec: AvroCodec
    bootstrap: str
    # From the journal: (run_id, tool_call_id) -> tool name, and -> the output recorded.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    calls: dict[tuple[str, str], str] = field(default_factory=dict)
    outputs: dict[tuple[str, str], str] = field(default_factory=dict)
    api: str | None = None  # the agent API's base URL, when launched with api=True

    def start_turns(
        self, scripts: dict[str, dict[str, Any]], tenant: str = "t1", protocol: str = "assistants"
    ) -> None:
        """One turn per script, each in a new thread (Assistants) or conversation (Responses)."""
        producer = Producer(producer_config(self.bootstrap))
        for run_id, script in scripts.items():
            if protocol == "responses":
                # A turn is a background response in a conversation; the "assistant" is a model.
                thread_id, assistant = self.sdk.conversations.create().id, "sim-1"
            else:
                thread_id, assistant = self.sdk.beta.threads.create().id, self.assistant_id
            start = inp.StartRun(
                run_id,
                tenant,
                thread_id,
                assistant,
                protocol,
                "help me",
                0,
                {"sim_script": json.dumps(script)},
            )
            name, datum = to_record(start)
            producer.produce(self.topics.inbox, self.codec.encode(name, datum), run_id.encode())
        producer.flush(10)

    def wait_finished(self, run_ids: set[str], timeout: float) -> dict[str, tuple[str, str]]:
        consumer = Consumer(consumer_config(self.bootstrap, f"e2e-{time.monotonic_ns()}"))
        consumer.subscribe([self.topics.events])
        finished: dict[str, tuple[str, str]] = {}
        deadline = time.monotonic() + timeout
        try:
            while not run_ids <= set(finished) and time.monotonic() < deadline:
                for msg in consumer.consume(500, 0.5):
                    if msg.error() is None:
                        name, datum = self.codec.decode(msg.value() or b"")
                        ev = from_record(name, datum)
                        if name == "RunFinished":
                            finished[ev.run_id] = (ev.status, ev.reason or "")
                        elif name == "StepOpened":
                            for c in ev.calls:
                                self.calls[(ev.run_id, c.id)] = c.name
                        elif name == "ToolOutputRecorded":
                            key = (ev.run_id, ev.output.tool_call_id)
                            self.outputs[key] = ev.output.output
                for p in self.procs.values():
                    assert p.alive(), f"{p.name} died:\n{p.tail()}"
        finally:
            consumer.close()
        return finished

    def metrics(self, process: str) -> str:
        port = self.metrics_ports[process]
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    def records(self) -> dict[str, Any]:
        return dict(httpx.get(self.provider.removesuffix("/v1") + "/_sim/records").json())

    def audit(self) -> list[dict[str, Any]]:
        rows = httpx.get(self.gateway + "/_sim/audit").json()
        return list(rows["rows"] if isinstance(rows, dict) else rows)

    def gateway_faults(self, faults: dict[str, Any]) -> None:
        httpx.post(self.gateway + "/_sim/faults", json=faults).raise_for_status()

    def arrivals(self, runs: set[str]) -> list[dict[str, Any]]:
        """The tool requests of ``runs`` as the gateway saw them arrive (reads too), each with
        the transport it came by (``via``: http | mcp)."""
        rows = httpx.get(self.gateway + "/_sim/arrivals").json()["arrivals"]
        return [r for r in rows if r["run_id"] in runs]

    def gateway_fired(self) -> dict[str, int]:
        """How often each armed gateway fault was drawn (``tool.knob`` -> count)."""
        return dict(httpx.get(self.gateway + "/_sim/faults").json()["fired"])


@contextmanager
def launch(
    bootstrap: str,
    pg_dsn: str,
    topics: TopicNames,
    tmp_path: Path,
    env: dict[str, dict[str, str]] | None = None,
    coordinator_args: list[str] | None = None,
    api: bool = False,
    tools_via: ToolsVia = "http",
    tools_file: Path | None = None,
    projector: bool = False,
    executors: Literal["split", "all"] = "split",
    executor_args: list[str] | None = None,
) -> Iterator[Stack]:
    """Everything up; ``env`` adds environment variables per process name (fault points).

    ``api=True`` adds the agent API ("api") and its outbox relay ("relay"), for turns posted
    over HTTP instead of written to runs.inbox. ``tools_via="mcp"``: every process reads the
    registry's MCP twin, and the tool executor calls the sandbox's tools over MCP.
    ``tools_file``: the registry every process reads, instead of the repository's tools.yaml
    (approval rules, say). ``projector=True`` adds the forensics projector ("projector"),
    which the API's reads (runs, approvals) come from. ``executors="all"``: one ``executor
    all`` replica ("executor") instead of one of each kind ("provider-exec", "tools-exec",
    "submit-exec"), started with ``executor_args`` added.
    """
    tools_file = tools_file or REPO_ROOT / "tools.yaml"
    env = env or {}
    migrate(pg_dsn)
    prefix = topics.inbox.removesuffix("runs.inbox")
    sim_port, gw_port = free_port(), free_port()
    metrics_ports = {"coordinator": free_port(), "tools-exec": free_port(), "executor": free_port()}
    sim_config = tmp_path / "sim.yaml"
    sim_config.write_text(
        yaml.safe_dump(
            {
                "records": {"run_id_key": "runcoord_run_id"},
                "timing": {"queue_ms": 5, "step_ms": 30, "poll_after_ms": 50},
            }
        )
    )
    provider_url = f"http://127.0.0.1:{sim_port}/v1"
    gateway_url = f"http://127.0.0.1:{gw_port}"
    registry = registry_file(tools_file, tools_via, gateway_url, tmp_path)
    common = ["--topic-prefix", prefix]
    procs = [
        Proc(
            "provider-sim",
            [
                "sim",
                "provider",
                "--host",
                "127.0.0.1",
                "--port",
                str(sim_port),
                "--config",
                str(sim_config),
            ],
            tmp_path / "sim.log",
        ),
        Proc(
            "gateway",
            ["sim", "tools", "--host", "127.0.0.1", "--port", str(gw_port), "--dsn", pg_dsn],
            tmp_path / "gateway.log",
        ),
        Proc(
            "coordinator",
            [
                "coordinator",
                "--instance-id",
                "coord-0",
                "--group",
                f"{prefix}coord",
                "--step-budget-ms",
                "20000",
                "--watch-timeout-ms",
                "5000",
                *common,
                "--metrics-port",
                str(metrics_ports["coordinator"]),
                *(coordinator_args or []),
            ],
            tmp_path / "coord.log",
        ),
    ]
    gateway_args = ["--gateway-url", gateway_url, "--registry", str(registry)]
    if executors == "all":
        procs.append(
            Proc(
                "executor",
                [
                    "executor",
                    "all",
                    "--instance-id",
                    "exec-0",
                    "--provider-url",
                    provider_url,
                    *gateway_args,
                    "--metrics-port",
                    str(metrics_ports["executor"]),
                    *common,
                    *(executor_args or []),
                ],
                tmp_path / "exec.log",
            )
        )
    else:
        procs += [
            Proc(
                "provider-exec",
                [
                    "executor",
                    "provider",
                    "--instance-id",
                    "prov-0",
                    "--provider-url",
                    provider_url,
                    *common,
                ],
                tmp_path / "prov.log",
            ),
            Proc(
                "tools-exec",
                [
                    "executor",
                    "tools",
                    "--instance-id",
                    "tools-0",
                    *gateway_args,
                    "--metrics-port",
                    str(metrics_ports["tools-exec"]),
                    *common,
                ],
                tmp_path / "tools.log",
            ),
            Proc(
                "submit-exec",
                [
                    "executor",
                    "submissions",
                    "--instance-id",
                    "sub-0",
                    "--provider-url",
                    provider_url,
                    *common,
                ],
                tmp_path / "sub.log",
            ),
        ]
    api_url = None
    if api:
        api_port = free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        procs += [
            Proc(
                "api",
                ["api", "serve", "--host", "127.0.0.1", "--port", str(api_port), *common],
                tmp_path / "api.log",
            ),
            Proc("relay", ["api", "relay", *common], tmp_path / "relay.log"),
        ]
    if projector:
        group = ["--group", f"{prefix}projector"]
        procs.append(
            Proc("projector", ["forensics", "project", *group, *common], tmp_path / "proj.log")
        )
    for p in procs:
        p.env["RUNCOORD_TOOLS_FILE"] = str(registry)
        p.env.update(env.get(p.name, {}))
    with running(*procs):
        procs[0].wait_http(provider_url.removesuffix("/v1") + "/_sim/health")
        procs[1].wait_http(gateway_url + "/_sim/health")
        if api_url is not None:
            next(p for p in procs if p.name == "api").wait_http(api_url + "/healthz")
        # No /_sim/reset: it empties the shared audit table; every check filters by run_id.
        sdk = OpenAI(base_url=provider_url, api_key="sk-test")
        tools = [
            {
                "type": "function",
                "function": {
                    k: v for k, v in t.items() if k in ("name", "description", "parameters")
                },
            }
            for t in load_registry(tools_file).function_tools()
        ]
        assistant = sdk.beta.assistants.create(model="sim-1", tools=tools)  # type: ignore[arg-type]
        yield Stack(
            topics,
            provider_url,
            gateway_url,
            sdk,
            assistant.id,
            {p.name: p for p in procs},
            AvroCodec(),
            bootstrap,
            metrics_ports,
            api=api_url,
        )
        sdk.close()


def approval_rules(folder: Path) -> Path:
    """tools.yaml with charge_card over 100.00 waiting for a person, for every tenant."""
    tools = yaml.safe_load((REPO_ROOT / "tools.yaml").read_text())
    card = tools["tools"]["charge_card"]
    card["tenants"] = ["*"]
    card["approval"] = {"when": [{"argument": "amount_cents", "above": 10_000}]}
    path = folder / "tools.approvals.yaml"
    path.write_text(yaml.safe_dump(tools, sort_keys=False))
    return path


@contextmanager
def product_with_approvals(
    bootstrap: str,
    pg_dsn: str,
    topic_specs: list[TopicSpec],
    folder: Path,
    approval_budget_ms: int,
) -> Iterator[Stack]:
    """The whole product with the agent API and the projector, on topics of its own (deleted
    afterwards), charge_card over 100.00 waiting for approval: a test module's stack."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    errors = [f for f in apply_topics(bootstrap, topic_specs, prefix) if f.level is Level.ERROR]
    assert not errors, f"creating the module's topics: {errors}"
    topics = TopicNames.with_prefix(prefix)
    try:
        with launch(
            bootstrap,
            pg_dsn,
            topics,
            folder,
            coordinator_args=["--approval-budget-ms", str(approval_budget_ms)],
            api=True,
            tools_file=approval_rules(folder),
            projector=True,
        ) as stack:
            yield stack
    finally:
        delete_topics(bootstrap, list(topics.all()))


def script(*steps: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {
        "steps": [
            {"tool_calls": [{"name": n, "arguments": a} for n, a in step], "latency_ms": 20}
            for step in steps
        ],
        "final": {"message": "done", "latency_ms": 10},
        "queue_ms": 5,
    }


# Run ids unique to this test session: the gateway's audit table is shared and never reset
# (a reset would empty it under concurrent tests), so old rows must not match new runs.
SESSION = uuid.uuid4().hex[:8]


def turns(n: int, tag: str) -> dict[str, dict[str, Any]]:
    return {
        f"{tag}-{SESSION}-{i}": script(
            [
                ("create_ticket", {"subject": f"late order {i}"}),
                ("lookup_customer", {"customer_id": f"C-{i}"}),
            ],
            [("update_crm", {"customer_id": f"C-{i}", "fields": {"tier": "gold"}})],
        )
        for i in range(n)
    }


def assert_one_action_per_call(stack: Stack, runs: set[str]) -> None:
    rows = [r for r in stack.audit() if r["run_id"] in runs]
    per_call = Counter((r["run_id"], r["tool_call_id"]) for r in rows)
    assert per_call and max(per_call.values()) == 1, per_call.most_common(3)
    records = stack.records()
    creates = records["counts"]["creates_by_run_id"]
    assert {r: creates.get(r) for r in runs} == dict.fromkeys(runs, 1)
    accepted = records["counts"]["accepted_by_step"]
    assert accepted and set(accepted.values()) == {1}
