"""One replay: for each system compared, a private world (database, topics, simulators),
its replicas, the driver, the fault plan; then the evidence, saved for the report."""

from __future__ import annotations

import compileall
import json
import logging
import os
import platform
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from openai import OpenAI

from runcoord.config import PACKAGE_DIR, REPO_ROOT, Settings, load
from runcoord.harness.faultplan import FaultPlan, expand
from runcoord.harness.replay.driver import Driver, DriverConfig
from runcoord.harness.replay.env import (
    create_database,
    create_topics,
    delete_topics,
    drop_database,
    groups_settled,
)
from runcoord.harness.replay.evidence import save_evidence
from runcoord.harness.replay.faults import FaultRunner, stage
from runcoord.harness.replay.procs import Replica, Supervisor
from runcoord.harness.replay.progress import Progress
from runcoord.harness.replay.sims import Sims
from runcoord.harness.report.data import write_jsonl
from runcoord.harness.systems.baseline_system import BaselineSystem
from runcoord.harness.systems.runcoord_system import RuncoordSystem, conversation_id
from runcoord.harness.systems.tools_via import ToolsVia, registry_file
from runcoord.harness.workload.trace import TraceTurn, write_trace
from runcoord.registry import load_registry
from runcoord.stack.polling import wait_until

log = logging.getLogger(__name__)
QUEUE_MS = 20.0
# How long a call waits for its simulated approver before "not approved in time": longer than
# any scripted decision (TraceApproval.after_ms, up to 3 s in generated traces).
APPROVAL_BUDGET_MS = 8_000


def new_replay_id() -> str:
    """When, to the second, plus a random part: two replays started in the same second (side
    by side on one stack) must not share topics, databases or run ids."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


@dataclass
class ReplayConfig:
    trace_path: Path
    plan: FaultPlan
    out: Path
    provider: str = "assistants"
    # How runcoord's provider executor watches Responses runs (RUNCOORD_OBSERVE's default).
    observe: str = Settings.model_fields["observe"].default
    systems: tuple[str, ...] = ("baseline", "runcoord")
    rate: float | None = None  # turns per second; None: the trace's own offsets
    coordinators: int = 2
    executors: int = 1
    split_executors: bool = False  # a replica per kind, or every kind in each (executor all)
    budget_s: float = 120.0
    expires_after_s: float = 600.0
    drain_s: float | None = None  # stop waiting for stragglers this long after the last send
    tools_file: Path = field(default_factory=lambda: load().tools_file)
    # How runcoord reaches the tools (the baseline always calls them over HTTP).
    tools_via: ToolsVia = "http"
    keep: bool = False  # keep the databases and topics
    replay_id: str = field(default_factory=lambda: new_replay_id())


def scale_for(trace: list[TraceTurn], rate: float | None) -> float:
    if rate is None or len(trace) < 2 or trace[-1].offset_ms == 0:
        return 1.0
    nominal = len(trace) / (trace[-1].offset_ms / 1000)
    return nominal / rate


def protocol(config: ReplayConfig, trace: list[TraceTurn], settings: Settings) -> dict[str, Any]:
    registry = load_registry(config.tools_file)
    scale = scale_for(trace, config.rate)
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return {
        "replay_id": config.replay_id,
        "systems": list(config.systems),
        "trace": str(config.trace_path),
        "turns": len(trace),
        "plan": config.plan.name,
        "plan_description": config.plan.description,
        "provider": config.provider,
        "observe": config.observe,
        "tools_via": config.tools_via,
        "rate": round(len(trace) / max(0.001, trace[-1].offset_ms / 1000 * scale), 2),
        "send_window_s": round(trace[-1].offset_ms / 1000 * scale, 1),
        "coordinators": config.coordinators,
        "executors_per_kind": config.executors,
        "executor_layout": "per kind" if config.split_executors else "all kinds in each",
        "terminal_budget_s": config.budget_s,
        "stall_threshold_s": 5.0,
        "cluster_window_s": 90.0,
        "queue_ms": QUEUE_MS,
        "expires_after_s": config.expires_after_s,
        "write_tools": {n: sorted(t.tenants) for n, t in registry.tools.items() if t.write},
        "ground_truth": "sandbox_audit rows (PostgreSQL) and the simulated provider's records",
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "bootstrap": settings.bootstrap,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _wait_up(replica: Replica, marker: str, timeout: float) -> None:
    def up() -> str | None:
        if not replica.alive():
            raise RuntimeError(f"{replica.name} exited during start-up:\n{replica.tail()}")
        return None if marker in replica.tail(20_000) else "not up yet"

    wait_until(up, timeout=timeout, what=replica.name, interval=0.3)


def _redis_ops(settings: Settings) -> int | None:
    try:
        client = redis.Redis.from_url(settings.redis, socket_timeout=3)
        return int(client.info("stats")["total_commands_processed"])
    except redis.RedisError:
        return None


def replay_system(
    name: str,
    config: ReplayConfig,
    trace: list[TraceTurn],
    settings: Settings,
    say: Callable[[str], None],
) -> None:
    folder = config.out / name
    folder.mkdir(parents=True, exist_ok=True)
    tag = config.replay_id.replace("-", "")
    db_name, prefix = f"harness_{tag}_{name}", f"rp{tag}{name[0]}."
    say(f"[{name}] database {db_name}, topics {prefix}*")
    dsn = create_database(settings.dsn, db_name)
    sims = Sims(folder, dsn, queue_ms=QUEUE_MS, expires_after_s=config.expires_after_s)
    supervisor = Supervisor()
    supervisor.add(sims.provider)
    supervisor.add(sims.gateway)
    system: RuncoordSystem | BaselineSystem
    approvals = any(turn.script.approvals() for turn in trace)
    if name == "runcoord":
        system = RuncoordSystem(
            settings.bootstrap, prefix, folder, dsn, sims.provider_url, sims.gateway_url,
            registry_file(
                config.tools_file, config.tools_via, sims.gateway_url, folder, approvals
            ),
            config.coordinators, config.executors, observe=config.observe,
            split_executors=config.split_executors,
            conversations=config.plan.threads == "runcoord",
            approval_budget_ms=APPROVAL_BUDGET_MS if approvals else None,
            protocol=config.provider,
        )  # fmt: skip
        markers = {"coordinator": " up (group", "executor": "up, kinds"}
    else:
        system = BaselineSystem(
            settings.bootstrap, prefix, folder, sims.provider_url, sims.gateway_url,
            config.tools_file, config.coordinators,
        )  # fmt: skip
        markers = {"coordinator": "baseline base-"}
    topics = create_topics(settings, prefix, system.topics())
    system.replicas(supervisor)
    runner: FaultRunner | None = None
    transport = None
    driver: Driver | None = None
    try:
        stage(config.plan, supervisor, settings, prefix)  # armed replicas, namespaces
        supervisor.start_all()
        sims.wait_ready()
        for replica in supervisor.replicas.values():
            marker = markers.get(replica.role.partition("-")[0])
            if marker:
                _wait_up(replica, marker, 120)
        wait_until(
            lambda: groups_settled(settings.bootstrap, system.groups()),
            timeout=180,
            what=f"{name}'s consumer groups",
            interval=1.0,
        )
        say(f"[{name}] {len(supervisor.replicas)} processes up, consumer groups settled")
        client = OpenAI(base_url=sims.provider_url, api_key="sk-harness", max_retries=8)
        if config.provider == "assistants":
            assistant_id = client.beta.assistants.create(model="sim", name="harness").id

            def new_thread() -> str:
                return client.beta.threads.create().id
        else:
            assistant_id = "sim"

            def new_thread() -> str:
                return client.conversations.create().id

        if name == "runcoord" and config.plan.threads == "runcoord":
            new_thread = conversation_id  # the tenant's own id; runcoord creates the thread
        transport = system.transport()
        scale = scale_for(trace, config.rate)
        driver = Driver(
            trace,
            transport,
            new_thread,
            DriverConfig(config.replay_id, config.provider, assistant_id, scale, config.budget_s),
        )
        timeline = expand(config.plan, driver.window_s, supervisor.counts())
        runner = FaultRunner(
            timeline,
            sims=sims,
            supervisor=supervisor,
            settings=settings,
            seed=config.plan.seed,
            duplicate=transport.duplicate,
            resubmit=driver.mark_resubmit,
        )
        redis_before = _redis_ops(settings)
        cpu_before = supervisor.cpu()
        samples: list[dict[str, Any]] = []
        drain = config.drain_s if config.drain_s is not None else config.budget_s
        with Progress(name, len(trace), len(timeline)) as progress:
            driver.start()
            runner.start(driver.t0)
            next_sample = driver.t0
            while not (driver.done() and runner.settled()):  # faults undone, then quiet
                driver.step()
                now = time.time()
                if now >= next_sample:
                    counts = driver.counts()
                    samples.append({"t": round(now - driver.t0, 2), **counts})
                    progress.update(counts, len(runner.fired))
                    next_sample = now + 1.0
                    for dead in supervisor.dead():
                        # A replica that died by itself (not by the plan) is restarted, as an
                        # orchestrator would; its log tells why.
                        say(f"[{name}] {dead.name} exited by itself; restarting")
                        dead.start()
                if now - driver.t0 > driver.window_s + drain:
                    break
                time.sleep(0.005)
            progress.update(driver.counts(), len(runner.fired))
        ended_at = time.time()
        runner.stop()
        runner.restore()
        say(f"[{name}] replay done in {ended_at - driver.t0:.0f} s; collecting evidence")
        # Let the last reports land before the books are closed.
        time.sleep(0.5)
        driver.step()
        redis_after = _redis_ops(settings)
        write_jsonl(folder / "runs.jsonl", driver.runs.values())
        write_jsonl(folder / "audit.jsonl", sims.audit())
        write_jsonl(folder / "gateway_arrivals.jsonl", sims.arrivals())
        (folder / "sim_records.json").write_text(json.dumps(sims.records()))
        write_jsonl(folder / "faults.jsonl", runner.fired)
        write_jsonl(folder / "timeline.jsonl", samples)
        cpu_after = supervisor.cpu()
        info = {
            "started_at": driver.t0,
            "ended_at": ended_at,
            "wall_s": round(ended_at - driver.t0, 1),
            "cpu_s": {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in cpu_after.items()},
            "restarts": {r.name: r.starts - 1 for r in supervisor.replicas.values()},
            # None when unknown, or when a Redis restart (a plan's outage) reset the counter.
            "redis_ops": (redis_after - redis_before)
            if redis_after is not None and redis_before is not None and redis_after >= redis_before
            else None,
            "faults_fired_by_sims": sims.fired(),
            "send_errors": driver.send_errors[:50],
            "send_error_count": len(driver.send_errors),
            "prefix": prefix,
            "database": db_name,
        }
        (folder / "system.json").write_text(json.dumps(info, indent=2))
        save_evidence(folder, name, settings, prefix, dsn)
    finally:
        if runner is not None:
            runner.stop()
            runner.restore()
        if driver is not None:
            driver.close()
        supervisor.stop_all()
        if transport is not None:
            transport.close()
        sims.close()
        if not config.keep:
            delete_topics(settings, topics)
            drop_database(settings.dsn, db_name)


def byte_compile() -> None:
    """Write the package's bytecode once, before any replica starts.

    Where PYTHONDONTWRITEBYTECODE is set (it is on our machines) no process caches what it
    compiles, so every replica compiled every runcoord module it imports at each start, and
    again at each restart after a kill -9: half a second of an executor's start here, on the
    path of every step that waits for it. Python still reads bytecode it finds; compileall
    writes it whatever that variable says, and skips modules whose bytecode is current.
    """
    compileall.compile_dir(PACKAGE_DIR, quiet=1)


def replay(
    config: ReplayConfig, trace: list[TraceTurn], settings: Settings, say: Callable[[str], None]
) -> Path:
    config.out.mkdir(parents=True, exist_ok=True)
    byte_compile()
    write_trace(config.out / "trace.jsonl", trace)
    (config.out / "replay.json").write_text(json.dumps(protocol(config, trace, settings), indent=2))
    for name in config.systems:
        replay_system(name, config, trace, settings, say)
    return config.out


def copy_plan(config: ReplayConfig, source: Path) -> None:
    if source.exists():
        shutil.copy(source, config.out / "plan.yaml")
