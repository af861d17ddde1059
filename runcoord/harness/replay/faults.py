"""Fires a plan's timeline during a replay, in its own thread (a broker or database restart
takes seconds; the turns keep flowing meanwhile), and records what happened.

Windows of the same target overlap freely: each change re-sends the merged faults of every
window open at that moment, with ``window_s`` set past the last one's end, so faults switch
themselves off even if the harness dies. Servers of the shared stack that a plan takes down
are always brought back, in :meth:`FaultRunner.restore`, however the replay ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from runcoord.config import Settings
from runcoord.harness.faultplan import Action
from runcoord.harness.replay.procs import Supervisor
from runcoord.harness.replay.sims import Sims
from runcoord.stack.kafka_broker import KafkaCluster
from runcoord.stack.postgres_server import PostgresServer
from runcoord.stack.redis_server import RedisServer

log = logging.getLogger(__name__)


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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)

    def _run(self) -> None:
        for action in self.timeline:
            wait = self.t0 + action.at_s - time.time()
            if wait > 0 and self._stop.wait(wait):
                return
            self._fire(action)

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
        self.fired.append(
            {
                "at": started,
                "t": round(started - self.t0, 3),
                "planned_t": round(action.at_s, 3),
                "kind": action.kind,
                "label": action.label,
                "applicable": action.applicable,
                "ok": ok,
                "detail": detail,
                "took_s": round(time.time() - started, 3),
            }
        )

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
        return f"unknown action {action.kind}"

    def _window(
        self,
        windows: dict[int, dict[str, Any]],
        action: Action,
        send: Callable[[dict[int, dict[str, Any]]], None],
    ) -> str:
        number = int(action.params["window"])
        if action.params["on"]:
            windows[number] = dict(action.params)
        else:
            windows.pop(number, None)
        send(windows)
        return f"{'on' if action.params['on'] else 'off'}; {len(windows)} window(s) open"

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
            raise RuntimeError("the broker is external (RUNCOORD_BOOTSTRAP_SERVERS)")
        return KafkaCluster(self.settings)

    def _redis(self) -> RedisServer:
        if self.settings.redis_url:
            raise RuntimeError("Redis is external (RUNCOORD_REDIS_URL)")
        return RedisServer(self.settings)

    def _postgres(self) -> PostgresServer:
        if self.settings.postgres_dsn:
            raise RuntimeError("PostgreSQL is external (RUNCOORD_POSTGRES_DSN)")
        return PostgresServer(self.settings)

    def restore(self) -> None:
        """Bring back every shared server this runner took down, and switch faults off."""
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
        try:
            self.sims.provider_faults({})
            self.sims.gateway_faults({"seed": self.seed})
        except Exception as exc:  # the simulators may be gone already
            log.info("switching faults off: %s", exc)
