"""Fires a plan's timeline during a replay, in its own thread (a broker or database restart
takes seconds; the turns keep flowing meanwhile), and records what happened.

Windows of the same target overlap freely: each change re-sends the merged faults of every
window open at that moment, with ``window_s`` set past the last one's end, so faults switch
themselves off even if the harness dies. Servers of the shared stack that a plan takes down
are always brought back, in :meth:`FaultRunner.restore`, however the replay ends.

Before the replicas start, :func:`stage` applies what a plan needs from their first start:
replicas armed with RUNCOORD_FAULT_AT (``kill_at``/``pause`` at a fault point), and the
coordinators a ``partition`` cuts off, each run in a network namespace of its own behind a
:class:`~runcoord.harness.replay.netpart.Bridge`. A plan's ``stack`` (its own Kafka cluster,
PostgreSQL, Redis) is started around the replay by :func:`private_stack`; broker, leader,
PostgreSQL and Redis faults then hit those servers, never the shared stack's.

A replica that faults itself is watched, not slept on: a thread waits for its death (or its
stop) with a deadline, records it with what its log says, and restarts (or resumes) it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from runcoord.config import Settings, load
from runcoord.errors import StackError
from runcoord.harness.faultplan import Action, FaultPlan
from runcoord.harness.faultplan.model import StackSpec
from runcoord.harness.faultplan.schedule import armed_at_start, partitioned
from runcoord.harness.replay.netpart import Bridge, netns_available
from runcoord.harness.replay.procs import Replica, Supervisor, free_port
from runcoord.harness.replay.sims import Sims
from runcoord.stack.kafka_broker import KafkaCluster
from runcoord.stack.kafka_config import CONTROLLER_PORT_OFFSET
from runcoord.stack.paths import StackPaths
from runcoord.stack.postgres_server import PostgresServer
from runcoord.stack.redis_server import RedisServer

log = logging.getLogger(__name__)

# After the last fault action, the replay goes on at least this long (FaultRunner.settled).
QUIET_S = 10.0

# Servers a plan's ``stack`` started (private_stack), by the address the replay is given: the
# fault runner's handle on them (the settings only carry the address).
_PRIVATE_KAFKA: dict[str, KafkaCluster] = {}
_PRIVATE_POSTGRES: dict[str, PostgresServer] = {}
_PRIVATE_REDIS: dict[str, RedisServer] = {}


# --------------------------------------------------------------------------- staging


class Staging:
    """What a plan set up before the replicas started; closed after they stopped."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # the replay's topic prefix (leader_kill finds its partitions)
        self.armed: dict[str, str] = {}  # replica name -> RUNCOORD_FAULT_AT at its first start
        self.bridges: dict[str, Bridge] = {}  # target -> the bridge out of its namespace

    def close(self) -> None:
        for bridge in self.bridges.values():
            bridge.close()
        self.bridges.clear()


def broker_ports(bootstrap: str) -> list[int]:
    """The ports of a loopback bootstrap list; a partition bridges only loopback brokers."""
    ports = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            raise StackError(f"partition: broker {address!r} is not on 127.0.0.1")
        ports.append(int(port))
    return ports


def stage(plan: FaultPlan, supervisor: Supervisor, settings: Settings, prefix: str) -> Staging:
    """Arm and wrap the plan's replicas before their first start; the supervisor keeps the
    staging (the fault runner finds it there) and closes it after stopping them."""
    staging = Staging(prefix)
    for target, spec in armed_at_start(plan).items():
        replica = supervisor.target(target)
        if replica is not None and _faults_itself(replica):
            replica.armed = spec
            staging.armed[replica.name] = spec
    targets = sorted(partitioned(plan))
    if targets:
        problem = netns_available()
        if problem:
            raise StackError(f"plan {plan.name}: a partition needs a network namespace: {problem}")
        ports = broker_ports(settings.bootstrap)
        try:
            for target in targets:
                replica = supervisor.target(target)
                if replica is None or not replica.name.startswith("coord-"):
                    continue  # not a runcoord coordinator (the baseline's talk to the sims)
                bridge = Bridge(ports)
                staging.bridges[target] = bridge
                bridge.start()
                replica.prefix = [
                    "unshare", "--net", "--", sys.executable, "-m",
                    "runcoord.harness.replay.netpart", "--bridge", str(bridge.folder),
                    "--ports", ",".join(str(p) for p in ports), "--",
                ]  # fmt: skip
        except BaseException:
            staging.close()
            raise
    supervisor.staging = staging
    supervisor.on_stop.append(staging.close)
    return staging


def _faults_itself(replica: Replica) -> bool:
    """runcoord's replicas reach fault points; the baseline's never do."""
    return "runcoord.harness.baseline" not in replica.argv


def _reached(replica: Replica, point: str) -> bool:
    """Whether the replica's latest incarnation logged reaching ``point`` (runcoord/faults.py
    logs "fault point POINT reached: ACTION" before it signals itself)."""
    text = replica.tail(200_000)
    latest = text.rsplit("===== harness: start", 1)[-1]
    return f"fault point {point} reached" in latest


# --------------------------------------------------------------------------- private servers


def _free_base(count: int, offset: int, start: int = 29092) -> int:
    """A base port with ``base..base+count-1`` and ``base+offset..`` free on loopback."""
    for base in range(start, 60000 - offset, 10):
        ports = [base + i for i in range(count)] + [base + offset + i for i in range(count)]
        if all(_port_free(p) for p in ports):
            return base
    raise StackError("no free ports for a private Kafka cluster")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def private_stack(
    spec: StackSpec, settings: Settings, root: Path, say: Callable[[str], None]
) -> Iterator[Settings]:
    """Start the servers ``spec`` asks for (fresh, under ``root``, on free ports), point this
    process and its children at them (RUNCOORD_BOOTSTRAP_SERVERS, RUNCOORD_POSTGRES_DSN,
    RUNCOORD_REDIS_URL), yield the settings that reach them, and stop and forget them after.
    The Kafka jars are the main stack's (no second download)."""
    if not spec.private:
        yield settings
        return
    env: dict[str, str] = {}
    stops: list[Callable[[], None]] = []
    forget: list[Callable[[], object]] = []
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    started = time.monotonic()
    try:
        if spec.kafka_brokers:
            cluster = _private_cluster(spec.kafka_brokers, settings, root, say)
            stops.append(lambda: cluster.down(log.info))
            env["RUNCOORD_BOOTSTRAP_SERVERS"] = cluster.bootstrap
            _PRIVATE_KAFKA[cluster.bootstrap] = cluster
            forget.append(lambda: _PRIVATE_KAFKA.pop(cluster.bootstrap, None))
        if spec.postgres:
            home = root / "pg"
            shutil.rmtree(home, ignore_errors=True)
            server = PostgresServer(
                Settings(home=settings.home, state_dir=home, postgres_port=free_port())
            )
            stops.append(lambda: server.down(log.info))
            say(f"private postgres at {server.address}, state {home}")
            server.up(120, log.info)
            env["RUNCOORD_POSTGRES_DSN"] = server.dsn
            _PRIVATE_POSTGRES[server.dsn] = server
            forget.append(lambda: _PRIVATE_POSTGRES.pop(server.dsn, None))
        if spec.redis:
            home = root / "redis"
            shutil.rmtree(home, ignore_errors=True)
            redis_server = RedisServer(
                Settings(home=settings.home, state_dir=home, redis_port=free_port())
            )
            stops.append(lambda: redis_server.down(log.info))
            say(f"private redis at {redis_server.address}")
            redis_server.up(60, log.info)
            env["RUNCOORD_REDIS_URL"] = redis_server.url
            _PRIVATE_REDIS[redis_server.url] = redis_server
            forget.append(lambda: _PRIVATE_REDIS.pop(redis_server.url, None))
        os.environ.update(env)
        say(f"private stack up in {time.monotonic() - started:.0f} s")
        yield load()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for undo in forget:
            undo()
        for stop_one in reversed(stops):
            try:
                stop_one()
            except Exception as exc:  # stopping the rest matters more
                log.warning("stopping a private server: %s", exc)


_ENV_KEYS = ("RUNCOORD_BOOTSTRAP_SERVERS", "RUNCOORD_POSTGRES_DSN", "RUNCOORD_REDIS_URL")


def _private_cluster(
    brokers: int, settings: Settings, root: Path, say: Callable[[str], None], attempts: int = 3
) -> KafkaCluster:
    """A fresh KRaft cluster on free ports, up and healthy. Ports are free when probed, not
    reserved: a cluster that fails to come up (a port taken meanwhile) is stopped, its files
    kept aside as ``kafka-N.failed-K`` (the broker logs say why), and tried again elsewhere."""
    home = root / f"kafka-{brokers}"
    start = 29092
    for attempt in range(1, attempts + 1):
        base = _free_base(brokers, CONTROLLER_PORT_OFFSET, start)
        shutil.rmtree(home, ignore_errors=True)
        own = Settings(
            home=settings.home, state_dir=home, kafka_port=base, kafka_brokers=brokers,
            kafka_heap=settings.kafka_heap, kafka_version=settings.kafka_version,
        )  # fmt: skip
        libs = StackPaths.of(settings).kafka_libs(settings.kafka_version)
        cluster = KafkaCluster(own, brokers, libs=libs)
        say(f"private kafka: {brokers} broker(s) at {cluster.bootstrap}, state {home}")
        try:
            cluster.up(timeout=180, say=log.info)
            return cluster
        except StackError as exc:
            cluster.down(log.info)
            failed = root / f"kafka-{brokers}.failed-{attempt}"
            shutil.rmtree(failed, ignore_errors=True)
            home.rename(failed)
            if attempt == attempts:
                raise
            say(f"private kafka did not come up ({str(exc).splitlines()[0]}); files in {failed}")
            start = base + 10
    raise AssertionError("unreachable")


class FaultRunner:
    def __init__(
        self,
        timeline: list[Action],
        *,
        sims: Sims,
        supervisor: Supervisor,
        settings: Settings,
        seed: int,
        duplicate: Callable[[float, bool], str],
        resubmit: Callable[[int], str],
    ) -> None:
        self.timeline = timeline
        self.sims = sims
        self.supervisor = supervisor
        self.settings = settings
        self.seed = seed
        self._duplicate = duplicate
        self._resubmit = resubmit
        self.fired: list[dict[str, Any]] = []
        self._provider_windows: dict[int, dict[str, Any]] = {}
        self._gateway_windows: dict[int, dict[str, Any]] = {}
        self._down: set[str] = set()  # shared-stack servers this runner took down
        self._leaders: dict[int, int] = {}  # leader_kill window -> the broker it killed
        # What the gateway's windows drew, tool.knob -> count (it resets on every change).
        self.gateway_fired: dict[str, int] = {}
        self._drawn_recorded = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._next = 0  # timeline actions fired so far
        self._recovering = 0  # faults that hit and are not undone yet (restart/resume due)
        self._last_fired = 0.0
        self.t0 = 0.0

    @property
    def staging(self) -> Staging | None:
        staging = self.supervisor.staging
        return staging if isinstance(staging, Staging) else None

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)
        for watcher in self._watchers:
            watcher.join(60)

    def _run(self) -> None:
        for action in self.timeline:
            wait = self.t0 + action.at_s - time.time()
            if wait > 0 and self._stop.wait(wait):
                return
            self._fire(action)
            self._next += 1

    def settled(self, quiet_s: float = QUIET_S) -> bool:
        """Every action of the timeline fired, every fault that hit undone (the replica
        restarted or woken, the broker back), and nothing fired for ``quiet_s``: what a woken
        zombie or a healed replica does next has had time to show in the evidence. The replay
        does not end before (a fault point never reached does not hold it: once the turns are
        all done, it will not be reached any more)."""
        with self._lock:
            busy = self._recovering
            last = self._last_fired
        return self._next >= len(self.timeline) and not busy and time.time() - last >= quiet_s

    def _busy(self, delta: int) -> None:
        with self._lock:
            self._recovering += delta

    def _fire(self, action: Action) -> None:
        started = time.time()
        ok, detail = True, ""
        if not action.applicable:
            ok, detail = False, "not applicable to this system"
        else:
            try:
                detail = self._apply(action)
            except Exception as exc:  # a fault that failed to fire is reported, not fatal
                ok, detail = False, f"{type(exc).__name__}: {exc}"
                log.warning("fault %s failed: %s", action.label, detail)
        self._record(action, started, ok, detail)

    def _record(
        self,
        action: Action,
        started: float,
        ok: bool,
        detail: str,
        kind: str | None = None,
        **extra: Any,
    ) -> None:
        with self._lock:
            self._last_fired = time.time()
            self.fired.append(
                {
                    "at": started,
                    "t": round(started - self.t0, 3),
                    "planned_t": round(action.at_s, 3),
                    "kind": kind or action.kind,
                    "label": action.label,
                    "applicable": action.applicable,
                    "ok": ok,
                    "detail": detail,
                    "took_s": round(time.time() - started, 3),
                    **extra,
                }
            )

    def _watch(self, name: str, body: Callable[[], None]) -> None:
        thread = threading.Thread(target=body, name=f"faults-{name}", daemon=True)
        self._watchers.append(thread)
        thread.start()

    # ------------------------------------------------------------------ actions
    def _apply(self, action: Action) -> str:
        p = action.params
        match action.kind:
            case "provider_window":
                return self._window(self._provider_windows, action, self._send_provider)
            case "gateway_window":
                return self._window(self._gateway_windows, action, self._send_gateway)
            case "kill":
                replica = self.supervisor.target(p["target"])
                if replica is None:
                    return "no such replica"
                return f"killed {replica.name}" if replica.kill9() else f"{replica.name} was down"
            case "restart":
                replica = self.supervisor.target(p["target"])
                if replica is None or replica.alive():
                    return "already running"
                replica.start()
                return f"started {replica.name}"
            case "broker_down":
                cluster = self._cluster()
                self._down.add("kafka")
                if p.get("mode") == "stop":
                    cluster.stop(p["broker"], grace=30)
                else:
                    cluster.kill(p["broker"])
                return f"broker {p['broker']} {p.get('mode', 'kill')}"
            case "broker_up":
                self._cluster().start(p["broker"])
                self._down.discard("kafka")
                return f"broker {p['broker']} started"
            case "redis_down":
                self._down.add("redis")
                self._redis().down(log.info)
                return "redis stopped"
            case "redis_up":
                self._redis().up(60, log.info)
                self._down.discard("redis")
                return "redis started"
            case "postgres_down":
                self._down.add("postgres")
                self._postgres().down(log.info)
                return "postgres stopped"
            case "postgres_up":
                self._postgres().up(60, log.info)
                self._down.discard("postgres")
                return "postgres started"
            case "duplicate":
                return self._duplicate(float(p["pick"]), bool(p["intents"]))
            case "resubmit":
                run_id = self._resubmit(int(p["after_ms"]))
                return f"marked {run_id}" if run_id else "no run in flight"
            case "kill_at":
                return self._kill_at(action)
            case "pause_watch":
                return self._pause_at_point(action)
            case "pause":
                replica = self._replica(p["target"])
                if not replica.pause():
                    raise RuntimeError(f"{replica.name} is not running")
                return f"SIGSTOP {replica.name} (pid {replica.pid})"
            case "resume":
                replica = self._replica(p["target"])
                if not replica.resume():
                    raise RuntimeError(f"{replica.name} is not running")
                return f"SIGCONT {replica.name} (pid {replica.pid})"
            case "leader_kill":
                return self._leader_kill(action)
            case "leader_up":
                broker = self._leaders.pop(int(p["window"]), None)
                if broker is None:
                    raise RuntimeError("no broker was killed by this fault")
                cluster = self._cluster()
                cluster.start(broker)
                self._busy(+1)  # until it is registered again (_broker_back)
                self._watch(f"broker-{broker}", lambda: self._broker_back(action, cluster, broker))
                return f"broker {broker} started"
            case "partition_cut" | "partition_heal":
                bridge = self.staging.bridges.get(p["target"]) if self.staging else None
                if bridge is None:
                    raise RuntimeError(f"{p['target']} does not run in a network namespace")
                if action.kind == "partition_cut":
                    return bridge.cut(str(p["mode"]))
                return bridge.heal()
        return f"unknown action {action.kind}"

    def _replica(self, target: str) -> Replica:
        replica = self.supervisor.target(target)
        if replica is None:
            raise RuntimeError(f"no replica {target}")
        return replica

    # ------------------------------------------------------------------ self-inflicted faults
    def _kill_at(self, action: Action) -> str:
        p = action.params
        replica = self._replica(p["target"])
        if not _faults_itself(replica):
            raise RuntimeError(f"{replica.name} has no fault points")
        if p["rearm"]:
            replica.stop()
            replica.armed = str(p["spec"])
            replica.start()
            what = f"restarted {replica.name} armed {p['spec']}"
        elif replica.armed != p["spec"]:
            raise RuntimeError(f"{replica.name} was not armed from its start (no staging?)")
        else:
            what = f"{replica.name} armed {p['spec']} since its start"
        self._watch(replica.name, lambda: self._await_death(action, replica))
        return f"{what}; watching for its death"

    def _within(self, action: Action) -> float:
        """Seconds left until the action's ``within`` deadline (a very long time if none)."""
        within = action.params.get("within_s")
        return 1e9 if within is None else self.t0 + float(within) - time.time()

    def _await_death(self, action: Action, replica: Replica) -> None:
        p, point = action.params, str(action.params["spec"]).split("@")[1].split(":")[0]
        late = False
        while True:
            code = replica.wait_exit(
                max(0.0, self._within(action)) if not late else 1e9, self._stop
            )
            if code is not None:
                break
            if self._stop.is_set():
                self._record(
                    action, time.time(), False,
                    f"{replica.name}: {p['spec']} not reached before the replay ended",
                    kind="kill_at_death",
                )  # fmt: skip
                return
            late = True
            self._record(
                action, time.time(), False,
                f"{replica.name}: {p['spec']} not reached within the plan's deadline",
                kind="kill_at_death",
            )  # fmt: skip
        died = time.time()
        self._busy(+1)
        reached = _reached(replica, point)
        replica.armed = None
        self._record(
            action, died, code == -9 and reached,
            f"{replica.name} exited with {code}; its log says the fault point was "
            f"{'reached' if reached else 'NOT reached'}",
            kind="kill_at_death", exit_code=code, late=late,
        )  # fmt: skip
        try:
            if self._stop.wait(float(p["restart_after_s"])):
                self._record(
                    action, time.time(), False, "replay over: not restarted", kind="restart"
                )
                return
            replica.start()
            self._record(
                action, time.time(), True, f"restarted {replica.name} unarmed", kind="restart"
            )
        finally:
            self._busy(-1)

    def _pause_at_point(self, action: Action) -> str:
        p = action.params
        replica = self._replica(p["target"])
        if replica.armed != p["spec"]:
            raise RuntimeError(f"{replica.name} was not armed from its start (no staging?)")
        self._watch(replica.name, lambda: self._await_stop(action, replica))
        return f"{replica.name} armed {p['spec']} since its start; watching for its stop"

    def _await_stop(self, action: Action, replica: Replica) -> None:
        p = action.params
        while replica.state() != "T":
            if not replica.alive():
                replica.armed = None
                self._record(
                    action, time.time(), False, f"{replica.name} exited before stopping",
                    kind="stopped",
                )  # fmt: skip
                return
            if self._stop.is_set() or self._within(action) <= 0:
                self._record(
                    action, time.time(), False, f"{replica.name}: {p['spec']} not reached",
                    kind="stopped",
                )  # fmt: skip
                return
            time.sleep(0.02)
        stopped = time.time()
        self._busy(+1)
        try:
            replica.paused, replica.armed = True, None
            self._record(
                action, stopped, True, f"{replica.name} (pid {replica.pid}) stopped itself",
                kind="stopped",
            )  # fmt: skip
            self._stop.wait(float(p["duration_s"]))
            resumed = replica.resume()
            self._record(
                action, time.time(), resumed,
                f"SIGCONT {replica.name} after {time.time() - stopped:.1f} s stopped",
                kind="resume",
            )  # fmt: skip
        finally:
            self._busy(-1)

    # ------------------------------------------------------------------ brokers
    def _leader_kill(self, action: Action) -> str:
        p = action.params
        if self.staging is None:
            raise RuntimeError("no staging: the replay's topic prefix is unknown")
        topic = f"{self.staging.prefix}{p['topic']}"
        admin = AdminClient({"bootstrap.servers": self.settings.bootstrap, "log_level": 0})
        metadata = admin.list_topics(topic, timeout=10)
        partition = metadata.topics[topic].partitions.get(int(p["partition"]))
        if partition is None or partition.leader < 0:
            raise RuntimeError(f"{topic}[{p['partition']}] has no leader now")
        leader = int(partition.leader)
        cluster = self._cluster()
        self._down.add("kafka")
        cluster.kill(leader)
        self._leaders[int(p["window"])] = leader
        return (
            f"killed broker {leader} (-9), leader of {topic}[{p['partition']}] "
            f"(replicas {list(partition.replicas)}, in sync {list(partition.isrs)})"
        )

    def _broker_back(self, action: Action, cluster: KafkaCluster, broker: int) -> None:
        started = time.time()
        try:
            cluster.wait_broker(broker, timeout=120)
        except StackError as exc:
            self._record(action, started, False, str(exc)[:500], kind="broker_back")
            return
        finally:
            self._busy(-1)
        self._record(
            action, started, True,
            f"broker {broker} registered again after {time.time() - started:.1f} s",
            kind="broker_back",
        )  # fmt: skip

    def _window(
        self,
        windows: dict[int, dict[str, Any]],
        action: Action,
        send: Callable[[dict[int, dict[str, Any]]], None],
    ) -> str:
        number = int(action.params["window"])
        drawn = ""
        if windows is self._gateway_windows:
            # The gateway forgets what fired whenever its faults are set: read it first.
            try:
                counts = self.sims.fired().get("gateway", {})
            except Exception as exc:  # counting is evidence, not the fault
                counts = {}
                log.info("reading the gateway's fired faults: %s", exc)
            for key, n in counts.items():
                self.gateway_fired[key] = self.gateway_fired.get(key, 0) + int(n)
            drawn = f"; gateway faults drawn so far {dict(sorted(self.gateway_fired.items()))}"
        if action.params["on"]:
            windows[number] = dict(action.params)
        else:
            windows.pop(number, None)
        send(windows)
        return f"{'on' if action.params['on'] else 'off'}; {len(windows)} window(s) open{drawn}"

    def _safety_s(self, windows: dict[int, dict[str, Any]]) -> float:
        ends = [float(w["until"]) for w in windows.values()]
        return max(1.0, max(ends) - (time.time() - self.t0) + 5.0)

    def _send_provider(self, windows: dict[int, dict[str, Any]]) -> None:
        if not windows:
            self.sims.provider_faults({})
            return
        endpoints: dict[str, Any] = {}
        for number in sorted(windows):
            for cls, rule in windows[number]["rules"].items():
                endpoints[cls] = {**endpoints.get(cls, {}), **rule}
        body = {"endpoints": endpoints, "seed": self.seed, "window_s": self._safety_s(windows)}
        self.sims.provider_faults(body)

    def _send_gateway(self, windows: dict[int, dict[str, Any]]) -> None:
        if not windows:
            self.sims.gateway_faults({"seed": self.seed})
            return
        shared: dict[str, Any] = {}
        per_tool: dict[str, dict[str, Any]] = {}
        for number in sorted(windows):
            window = windows[number]
            if window["tools"] is None:
                shared.update(window["knobs"])
            else:
                for tool in window["tools"]:
                    per_tool.setdefault(tool, {}).update(window["knobs"])
        body = {
            "seed": self.seed,
            "window_s": self._safety_s(windows),
            "global": shared,
            "tools": per_tool,
        }
        self.sims.gateway_faults(body)

    # ------------------------------------------------------------------ the shared stack
    def _cluster(self) -> KafkaCluster:
        if self.settings.bootstrap_servers:
            private = _PRIVATE_KAFKA.get(self.settings.bootstrap_servers)
            if private is None:
                raise RuntimeError("the broker is external (RUNCOORD_BOOTSTRAP_SERVERS)")
            return private
        return KafkaCluster(self.settings)

    def _redis(self) -> RedisServer:
        if self.settings.redis_url:
            private = _PRIVATE_REDIS.get(self.settings.redis_url)
            if private is None:
                raise RuntimeError("Redis is external (RUNCOORD_REDIS_URL)")
            return private
        return RedisServer(self.settings)

    def _postgres(self) -> PostgresServer:
        if self.settings.postgres_dsn:
            private = _PRIVATE_POSTGRES.get(self.settings.postgres_dsn)
            if private is None:
                raise RuntimeError("PostgreSQL is external (RUNCOORD_POSTGRES_DSN)")
            return private
        return PostgresServer(self.settings)

    def restore(self) -> None:
        """Bring back every server this runner took down, heal every partition, wake every
        replica it paused, and switch faults off."""
        staging = self.staging
        for bridge in staging.bridges.values() if staging else []:
            if bridge.state != "open":
                bridge.heal()
        for replica in self.supervisor.replicas.values():
            if replica.paused or replica.state() == "T":
                replica.resume()
        if "kafka" in self._down:
            cluster = self._cluster()
            for index in range(cluster.brokers):
                cluster.start(index)
            cluster.wait_healthy(timeout=120)
        if "redis" in self._down:
            self._redis().up(60, log.info)
        if "postgres" in self._down:
            self._postgres().up(60, log.info)
        self._down.clear()
        self._leaders.clear()
        try:
            if not self._drawn_recorded:
                self._drawn_recorded = True
                for key, n in self.sims.fired().get("gateway", {}).items():
                    self.gateway_fired[key] = self.gateway_fired.get(key, 0) + int(n)
                now = time.time()
                self.fired.append(
                    {
                        "at": now, "t": round(now - self.t0, 3), "planned_t": None,
                        "kind": "gateway_drawn", "label": "what the gateway's windows drew",
                        "applicable": True, "ok": True, "took_s": 0.0,
                        "detail": str(self.gateway_fired), "counts": dict(self.gateway_fired),
                    }
                )  # fmt: skip
            self.sims.provider_faults({})
            self.sims.gateway_faults({"seed": self.seed})
        except Exception as exc:  # the simulators may be gone already
            log.info("switching faults off: %s", exc)
