"""A network partition between one replica and the brokers, made on this machine alone.

The replica runs in a network namespace of its own (``unshare --net``), where only ``lo``
exists. Inside it, a forwarder listens on ``127.0.0.1:<each broker port>`` and carries every
connection over a unix socket (a file: unix sockets reach across network namespaces) to the
:class:`Bridge` in the harness, which connects to the real ``127.0.0.1:<broker port>``. The
brokers advertise ``127.0.0.1:PORT``, so the replica reaches every broker through the bridge
and nothing else: no traffic leaves loopback, no interface, route or firewall rule of the
host is touched, and the namespace goes away with the last process in it.

Partition, :meth:`Bridge.cut`: ``reset`` closes every bridged connection (the replica's side
sees a reset) and refuses new ones at once; ``blackhole`` stops moving bytes and holds new
connections unanswered, as a dropped link does (the replica's clients find out by their own
timeouts). :meth:`Bridge.heal` lets traffic through again (held connections resume).

The inside half is this module run as a program, by ``unshare --net`` (which ``exec``s it in
the new namespace)::

    unshare --net -- python -m runcoord.harness.replay.netpart --bridge DIR --ports 9092 -- ARGV

It brings ``lo`` up, forks the forwarder (which dies with its parent: PR_SET_PDEATHSIG), waits
until it listens, and ``exec``s ARGV: the replica keeps the pid the harness started, so kill -9,
SIGSTOP and its exit code are the replica's own. Standard library only: it starts before
every replica start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

MODES = ("reset", "blackhole")
_T = TypeVar("_T")
_CHUNK = 65536


def socket_path(folder: Path, port: int) -> Path:
    return folder / f"p{port}.sock"


def netns_available() -> str | None:
    """None if this machine lets us make a network namespace (root, unshare, ip); else why."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        probe = subprocess.run(
            ["unshare", "--net", "--", "ip", "link", "set", "lo", "up"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --net: {exc}"
    if probe.returncode != 0:
        return f"unshare --net: {(probe.stderr or probe.stdout).strip() or probe.returncode}"
    return None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection at once; for TCP with a reset (SO_LINGER 0), as a cut link looks."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None
) -> None:
    try:
        while True:
            if gate is not None:
                await gate.wait()
            data = await reader.read(_CHUNK)
            if not data:
                return
            if gate is not None:
                await gate.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        return


class Bridge:
    """The harness's half: unix sockets in a fresh folder, one per broker port."""

    def __init__(self, ports: Sequence[int], host: str = "127.0.0.1") -> None:
        self.ports = list(ports)
        self.host = host
        self.folder = Path(tempfile.mkdtemp(prefix="rcnp-", dir="/tmp"))  # sun_path is short
        self.state = "open"  # open | reset | blackhole
        self.counts = {"connections": 0, "refused": 0, "reset": 0, "held": 0}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netpart", daemon=True)
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._gate: asyncio.Event | None = None
        self._servers: list[asyncio.AbstractServer] = []

    # ------------------------------------------------------------------ control (any thread)
    def start(self) -> None:
        self._thread.start()
        self._call(self._serve(), 30)

    def cut(self, mode: str = "reset") -> str:
        if mode not in MODES:
            raise ValueError(f"partition mode {mode!r}: want one of {MODES}")
        return self._call(self._cut(mode), 30)

    def heal(self) -> str:
        return self._call(self._heal(), 30)

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._close(), 30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ the loop's side
    async def _serve(self) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        for port in self.ports:
            path = socket_path(self.folder, port)

            async def accept(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
            ) -> None:
                await self._accept(port, reader, writer)

            self._servers.append(await asyncio.start_unix_server(accept, path=str(path)))

    async def _accept(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        assert self._gate is not None
        if self.state == "reset":
            self.counts["refused"] += 1
            writer.transport.abort()
            return
        if self.state == "blackhole":
            self.counts["held"] += 1
        await self._gate.wait()  # a blackhole holds new connections unanswered
        if self.state == "reset":  # cut again while it waited
            self.counts["refused"] += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, port)
        except OSError:
            writer.transport.abort()
            return
        self.counts["connections"] += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            # Whichever side ends first ends both: the inside half resets its TCP peer.
            _, pending = await asyncio.wait(
                [
                    asyncio.ensure_future(_pump(reader, up_writer, self._gate)),
                    asyncio.ensure_future(_pump(up_reader, writer, self._gate)),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in pending:
                task.cancel()
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            _reset(up_writer)

    async def _cut(self, mode: str) -> str:
        assert self._gate is not None
        self.state = mode
        self._gate.clear()
        if mode == "blackhole":
            return f"blackhole: {len(self._pairs)} connection(s) held"
        pairs = list(self._pairs)
        for inside, upstream in pairs:
            inside.transport.abort()
            _reset(upstream)
        self.counts["reset"] += len(pairs)
        return f"reset {len(pairs)} connection(s); new ones refused"

    async def _heal(self) -> str:
        assert self._gate is not None
        was = self.state
        self.state = "open"
        self._gate.set()
        return f"healed ({was}); {len(self._pairs)} connection(s) open"

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for inside, upstream in list(self._pairs):
            inside.transport.abort()
            upstream.transport.abort()
        assert self._gate is not None
        self._gate.set()  # connections held by a blackhole end too
        for server in self._servers:
            await server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the aborted transports close their sockets


# ---------------------------------------------------------------------- the inside half


async def _inside(folder: Path, ports: Sequence[int], ready: int) -> None:
    async def forward(
        port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(
                str(socket_path(folder, port))
            )
        except OSError:
            _reset(writer)
            return
        await asyncio.wait(
            [
                asyncio.ensure_future(_pump(reader, up_writer, None)),
                asyncio.ensure_future(_pump(up_reader, writer, None)),
            ],
            return_when=asyncio.FIRST_COMPLETED,
        )
        _reset(writer)
        up_writer.transport.abort()

    servers = []
    for port in ports:

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
        ) -> None:
            await forward(port, reader, writer)

        servers.append(await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True))
    os.write(ready, b"1")
    os.close(ready)
    await asyncio.Event().wait()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="netpart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bridge", type=Path, required=True, help="the Bridge's socket folder")
    parser.add_argument("--ports", required=True, help="broker ports, comma-separated")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- ARGV to exec")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    ports = [int(p) for p in args.ports.split(",") if p]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    parent = os.getpid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the forwarder: dies with the replica, whatever kills it
        os.close(read_end)
        _die_with_parent()
        if os.getppid() != parent:
            os._exit(0)
        try:
            asyncio.run(_inside(args.bridge, ports, write_end))
        finally:
            os._exit(0)
    os.close(write_end)
    if os.read(read_end, 1) != b"1":
        sys.exit("netpart: the forwarder did not come up")
    os.close(read_end)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
