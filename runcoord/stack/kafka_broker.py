"""A local Apache Kafka cluster in KRaft mode: N combined broker+controller JVMs.

Besides ``up``/``down``/``status`` this is the handle fault tests use on single brokers::

    cluster = KafkaCluster(settings, brokers=3)
    cluster.up(timeout=120, say=print)
    cluster.kill(1)                      # kill -9
    cluster.start(1)
    cluster.wait_healthy(timeout=60)     # every broker registered, transactions work
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from runcoord.config import Settings
from runcoord.errors import StackError
from runcoord.stack.component import ComponentStatus, Say, require_free_port
from runcoord.stack.kafka_config import (
    CONTROLLER_PORT_OFFSET,
    BrokerLayout,
    random_cluster_id,
    server_properties,
)
from runcoord.stack.kafka_probe import missing_brokers, transactions_unready
from runcoord.stack.kafka_runtime import LOG4J2_CONFIG, ensure_jars
from runcoord.stack.paths import StackPaths
from runcoord.stack.polling import Deadline, NotReadyInTime, wait_until
from runcoord.stack.preflight import find_java
from runcoord.stack.procs import (
    alive_pid,
    signal_and_wait,
    spawn_detached,
    stop_pid,
    stop_pids,
    tail,
)

_JVM_FLAGS = [
    # kafka-run-class.sh's collector settings: short pauses matter more than throughput here.
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]
# The storage tool runs for a second: the quick JIT tier and serial GC start it fastest.
_TOOL_JVM_FLAGS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]


class KafkaCluster:
    name = "kafka"

    def __init__(
        self, settings: Settings, brokers: int | None = None, *, libs: Path | None = None
    ) -> None:
        self.settings = settings
        self.paths = StackPaths.of(settings)
        recorded = self._recorded()
        self.brokers: int = brokers or (recorded[1] if recorded else settings.kafka_brokers)
        if self.brokers < 1:
            raise StackError(f"a Kafka cluster needs at least one broker, not {self.brokers}")
        # Another folder of jars (e.g. the main stack's) saves a fault test's second cluster
        # from running Maven again.
        self._libs = libs
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ layout
    def broker(self, index: int) -> BrokerLayout:
        if not 0 <= index < self.brokers:
            raise StackError(f"no broker {index}: this cluster has brokers 0..{self.brokers - 1}")
        port = self.settings.kafka_port + index
        return BrokerLayout(
            index=index,
            port=port,
            controller_port=self.settings.kafka_port + CONTROLLER_PORT_OFFSET + index,
            home=self.paths.broker(index),
        )

    @property
    def layouts(self) -> list[BrokerLayout]:
        return [self.broker(i) for i in range(self.brokers)]

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.layouts)

    def _recorded(self) -> tuple[str, int] | None:
        """(cluster id, broker count) the storage was formatted with, if it was."""
        try:
            data = json.loads(self.paths.kafka_cluster_file.read_text())
        except FileNotFoundError:
            return None
        return str(data["cluster_id"]), int(data["brokers"])

    # ------------------------------------------------------------------ preparation
    def _cluster_id(self) -> str:
        recorded = self._recorded()
        if recorded is not None:
            cluster_id, brokers = recorded
            if brokers != self.brokers:
                raise StackError(
                    f"the Kafka cluster in {self.paths.kafka} was formatted for {brokers} "
                    f"broker(s), not {self.brokers}: run `runcoord stack down --purge` to "
                    "start over, or use another RUNCOORD_STATE_DIR"
                )
            return cluster_id
        cluster_id = random_cluster_id()
        self.paths.kafka.mkdir(parents=True, exist_ok=True)
        self.paths.kafka_cluster_file.write_text(
            json.dumps({"cluster_id": cluster_id, "brokers": self.brokers}) + "\n"
        )
        return cluster_id

    def _java_argv(
        self, java: str, broker: BrokerLayout, *, heap: str, flags: list[str]
    ) -> list[str]:
        libs = self._libs or self.paths.kafka_libs(self.settings.kafka_version)
        return [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            *flags,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={broker.log_dir}",
            "-cp",
            f"{libs}/*",
        ]

    def prepare(self, say: Say) -> None:
        """Java present, jars cached, properties written, storage formatted (each once)."""
        java = find_java()
        if self._libs is None:
            ensure_jars(
                self.paths.kafka_libs(self.settings.kafka_version),
                self.settings.kafka_version,
                say,
            )
        cluster_id = self._cluster_id()
        cluster = self.layouts
        formatting: list[tuple[BrokerLayout, subprocess.Popen[str]]] = []
        for broker in cluster:
            broker.log_dir.mkdir(parents=True, exist_ok=True)
            broker.properties.write_text(server_properties(broker, cluster))
            if (broker.data / "meta.properties").exists():
                continue
            # With a static controller.quorum.voters, format without --standalone
            # (the tool refuses the combination).
            argv = [
                *self._java_argv(java, broker, heap="256m", flags=_TOOL_JVM_FLAGS),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(broker.properties),
            ]
            formatting.append(
                (
                    broker,
                    subprocess.Popen(
                        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                    ),
                )
            )
        for broker, proc in formatting:
            output, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise StackError(
                    f"formatting Kafka storage for broker {broker.index} failed "
                    f"(exit {proc.returncode}):\n{output[-2000:]}"
                )
        if formatting:
            say(f"kafka: formatted storage for {len(formatting)} broker(s), cluster {cluster_id}")

    # ------------------------------------------------------------------ single brokers
    def pid(self, index: int) -> int | None:
        broker = self.broker(index)
        return alive_pid(broker.pid_file, str(broker.properties))

    def start(self, index: int) -> bool:
        """Start broker ``index`` unless it runs already; True if it was started now.

        Call :meth:`prepare` once first (``up`` does); this only spawns the JVM.
        """
        broker = self.broker(index)
        if self.pid(index) is not None:
            return False
        for port, role in ((broker.port, "client"), (broker.controller_port, "controller")):
            require_free_port(
                port, what=f"kafka broker {index} {role} port", setting="RUNCOORD_KAFKA_PORT"
            )
        argv = [
            *self._java_argv(find_java(), broker, heap=self.settings.kafka_heap, flags=_JVM_FLAGS),
            "kafka.Kafka",
            str(broker.properties),
        ]
        broker.log_dir.mkdir(parents=True, exist_ok=True)
        with broker.server_log.open("a") as log:  # log4j appends after this line
            log.write(
                f"===== runcoord: starting broker {index} at {time.strftime('%F %T')} =====\n"
            )
        self._procs[index] = spawn_detached(
            argv, log=broker.stdout_log, pid_file=broker.pid_file, cwd=broker.home
        )
        return True

    def stop(self, index: int, *, grace: float = 30.0) -> None:
        """Graceful stop (SIGTERM: controlled shutdown), SIGKILL after ``grace`` seconds."""
        pid = self.pid(index)
        if pid is not None:
            stop_pid(pid, grace=grace)
        self._forget(index)

    def kill(self, index: int) -> None:
        """kill -9: no controlled shutdown, no flush; returns once the process is gone."""
        pid = self.pid(index)
        if pid is not None and not signal_and_wait(pid, signal.SIGKILL, timeout=10):
            raise StackError(f"kafka broker {index} (pid {pid}) survived SIGKILL for 10 s")
        self._forget(index)

    def _forget(self, index: int) -> None:
        proc = self._procs.pop(index, None)
        if proc is not None:
            proc.wait(timeout=10)
        self.broker(index).pid_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ health
    def _exited(self) -> str | None:
        for index, proc in self._procs.items():
            if proc.poll() is not None:
                return f"kafka broker {index} exited with code {proc.returncode} during start-up"
        return None

    def wait_broker(self, index: int, *, timeout: float) -> None:
        """Until broker ``index`` answers metadata and is registered in the cluster."""
        broker = self.broker(index)

        def check() -> str | None:
            return self._exited() or missing_brokers(broker.address, [index])

        self._wait(check, timeout=timeout, what=f"kafka broker {index}", logs=[broker])

    def wait_healthy(self, *, timeout: float) -> None:
        """Until every broker is registered and a transactional producer can init_transactions."""
        deadline = Deadline(timeout)
        ids = list(range(self.brokers))

        def registered() -> str | None:
            return self._exited() or missing_brokers(self.bootstrap, ids)

        def transactional() -> str | None:
            return self._exited() or transactions_unready(
                self.bootstrap, timeout=max(1.0, min(10.0, deadline.remaining()))
            )

        self._wait(registered, timeout=deadline.remaining(), what="kafka", logs=self.layouts)
        self._wait(
            transactional,
            timeout=deadline.remaining(),
            what="kafka transactions",
            logs=self.layouts,
        )

    def _wait(
        self,
        check: Callable[[], str | None],
        *,
        timeout: float,
        what: str,
        logs: list[BrokerLayout],
    ) -> None:
        try:
            wait_until(check, timeout=timeout, what=what, interval=0.25)
        except NotReadyInTime as exc:
            raise StackError(_with_logs(str(exc), logs)) from None
        crashed = self._exited()
        if crashed:
            raise StackError(_with_logs(crashed, logs))

    # ------------------------------------------------------------------ component
    def up(self, timeout: float, say: Say) -> None:
        self.prepare(say)  # not on the clock: the first run downloads the jars
        deadline = Deadline(timeout)
        started = [i for i in range(self.brokers) if self.start(i)]
        running = [i for i in range(self.brokers) if i not in started]
        if running:
            say(f"kafka: broker(s) {running} already running")
        if started:
            say(f"kafka: started broker(s) {started}, waiting until they answer")
        self.wait_healthy(timeout=deadline.remaining())
        say(f"kafka: healthy at {self.bootstrap} (metadata and transactions)")

    def down(self, say: Say) -> None:
        running: dict[int, int] = {}
        for index in self._existing_indexes():
            home = self.paths.broker(index)
            pid = alive_pid(home / "broker.pid", str(home / "server.properties"))
            if pid is not None:
                running[index] = pid
        killed = stop_pids(list(running.values()), grace=30.0)
        for index, pid in running.items():
            proc = self._procs.pop(index, None)
            if proc is not None:
                proc.wait(timeout=10)  # reap what this process spawned (fault tests)
            how = "killed after 30 s" if pid in killed else "stopped"
            say(f"kafka: {how} broker {index} (pid {pid})")
        for index in self._existing_indexes():
            (self.paths.broker(index) / "broker.pid").unlink(missing_ok=True)

    def _existing_indexes(self) -> list[int]:
        if not self.paths.kafka.exists():
            return []
        return sorted(
            int(p.name.removeprefix("broker-"))
            for p in self.paths.kafka.glob("broker-*")
            if p.name.removeprefix("broker-").isdigit()
        )

    def status(self) -> list[ComponentStatus]:
        rows = []
        for broker in self.layouts:
            pid = self.pid(broker.index)
            problem = "stopped" if pid is None else missing_brokers(broker.address, [broker.index])
            rows.append(
                ComponentStatus(
                    name=f"kafka-{broker.index}",
                    address=broker.address,
                    managed=True,
                    pid=pid,
                    healthy=problem is None,
                    detail=problem or "answers metadata",
                    log=broker.server_log,
                )
            )
        return rows

    def logs(self) -> dict[str, Path]:
        return {f"kafka-{b.index}": b.server_log for b in self.layouts}


def _with_logs(message: str, brokers: list[BrokerLayout], lines: int = 15) -> str:
    parts = [message]
    for broker in brokers:
        for log in (broker.server_log, broker.stdout_log):
            if log.exists() and log.stat().st_size:
                parts.append(f"--- last lines of {log} ---\n{tail(log, lines)}")
    return "\n".join(parts)
