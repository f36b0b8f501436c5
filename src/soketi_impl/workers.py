"""``soketi-impl start --workers N``: N worker processes on one port, one server, no Redis.

The ``start`` process becomes the *supervisor*. It makes a private directory
(mode 0700) with a unix socket, runs the :class:`~soketi_impl.adapters.local_ipc.Hub`
there in its own event loop, and starts N workers: ``python -m soketi_impl start``
with the same arguments but ``--workers``, and three variables that make a process
worker ``i`` (:data:`WORKER_ENV`, :data:`HUB_ENV`, :data:`SUPERVISOR_ENV`). Each
worker is the usual server, listening on the same port with ``SO_REUSEPORT`` (the
kernel spreads new connections over the workers); with the ``local`` adapter its
adapter is a :class:`~soketi_impl.adapters.local_ipc.HubAdapter`, so the workers
behave as one server; with ``redis`` or ``nats`` each worker is a node of that
adapter, and the hub only watches over the workers.

- The port is bound once by the supervisor before any worker starts (a port in
  use is one error line and exit code 1, with no worker started); port 0 is
  resolved there and given to every worker.
- The supervisor prints ``soketi-impl: N workers on HOST:PORT`` once every worker
  listens. A worker that exits before it listens at the start stops everything
  (exit 1); one that dies later is restarted (a log line with its exit code or
  signal, a backoff), unless :data:`MAX_CRASHES` happened within
  :data:`CRASH_WINDOW` seconds: then the supervisor stops them all and exits 1.
- SIGTERM, SIGINT or SIGHUP: SIGTERM to every worker, which stop gracefully as a
  single server does; then exit 0.
- A worker whose hub connection ends stops (:mod:`soketi_impl.server`), and on
  Linux the kernel sends it SIGTERM if the supervisor dies (``PR_SET_PDEATHSIG``):
  no orphans.
- Test knob: :data:`PORT_BASE_ENV` (``SOKETI_IMPL_WORKER_PORT_BASE=P``) makes worker
  ``i`` also listen on port ``P + i``, so a test can choose the worker of a client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .config import Config

__all__ = [
    "CRASH_WINDOW",
    "HUB_ENV",
    "MAX_CRASHES",
    "PORT_BASE_ENV",
    "SUPERVISOR_ENV",
    "WORKER_ENV",
    "Supervisor",
    "WorkerRole",
    "die_with_parent",
    "supervise",
    "worker_role",
]

log = logging.getLogger("soketi_impl.workers")

#: the worker's index (0 .. N-1)
WORKER_ENV = "SOKETI_IMPL_WORKER"
#: the path of the hub's unix socket
HUB_ENV = "SOKETI_IMPL_HUB"
#: the supervisor's pid (a worker whose parent is another process stops at once)
SUPERVISOR_ENV = "SOKETI_IMPL_SUPERVISOR"
#: tests only: worker i also listens on this port + i
PORT_BASE_ENV = "SOKETI_IMPL_WORKER_PORT_BASE"

#: this many unexpected worker exits within CRASH_WINDOW seconds: the supervisor gives up
MAX_CRASHES = 5
CRASH_WINDOW = 30.0
#: the first restart waits this long; each further crash in the window doubles it
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What makes a ``start`` process a worker: its index, the hub, the test port base."""

    index: int
    hub_path: str
    supervisor_pid: int = 0
    port_base: int | None = None

    @property
    def own_port(self) -> int | None:
        """The port this worker alone listens on (tests), or None."""
        return None if self.port_base is None else self.port_base + self.index


def worker_role(environ: Mapping[str, str]) -> WorkerRole | None:
    """The role :data:`WORKER_ENV` and :data:`HUB_ENV` give this process, or None (not a worker)."""
    index, hub = environ.get(WORKER_ENV), environ.get(HUB_ENV)
    if index is None or not hub:
        return None
    base = environ.get(PORT_BASE_ENV)
    return WorkerRole(
        int(index), hub, int(environ.get(SUPERVISOR_ENV) or 0), int(base) if base else None
    )


def die_with_parent(supervisor_pid: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux); exit now if it is gone already."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if supervisor_pid and os.getppid() != supervisor_pid:
        log.error("the supervisor (pid %d) is gone: this worker stops", supervisor_pid)
        sys.exit(1)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) a ``SO_REUSEPORT`` socket on the port the workers will share.

    Raises OSError when another program holds the port; resolves port 0.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock, int(sock.getsockname()[1])


class Supervisor:
    """Runs ``count`` workers of ``argv`` (``start`` and its options, no ``--workers``) and the hub."""

    def __init__(self, config: Config, count: int, argv: list[str]) -> None:
        self.config = config
        self.count = count
        self.argv = argv
        self.port = config.port
        self.hub_path = ""
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.ready: dict[int, asyncio.Event] = {}
        self.stopping = asyncio.Event()
        self.failed: str | None = None
        self.crashes: collections.deque[float] = collections.deque(maxlen=MAX_CRASHES)

    def _on_ready(self, index: int) -> None:
        event = self.ready.get(index)
        if event is not None:
            event.set()

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env.update({
            WORKER_ENV: str(index), HUB_ENV: self.hub_path, SUPERVISOR_ENV: str(os.getpid()),
            "SOKETI_PORT": str(self.port),
        })
        self.ready[index] = asyncio.Event()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "soketi_impl", *self.argv, env=env)
        self.procs[index] = proc
        return proc

    async def _until_ready(self, index: int, proc: asyncio.subprocess.Process) -> bool:
        """True when worker ``index`` listens; False when it exited first."""
        ready = asyncio.ensure_future(self.ready[index].wait())
        exited = asyncio.ensure_future(proc.wait())
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self.ready[index].is_set():
            exited.cancel()
            return True
        return False

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        """Restart worker ``index`` whenever it dies, until the supervisor stops or gives up."""
        while True:
            code = await proc.wait()
            if self.stopping.is_set():
                return
            now = time.monotonic()
            self.crashes.append(now)
            recent = sum(1 for t in self.crashes if now - t <= CRASH_WINDOW)
            if recent >= MAX_CRASHES:
                self.failed = (
                    f"worker {index} (pid {proc.pid}) {_exit_text(code)}; workers died {recent} times "
                    f"within {CRASH_WINDOW:.0f} s: stopping"
                )
                self.stopping.set()
                return
            backoff = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (recent - 1))
            log.warning("worker %d (pid %d) %s; restarting it in %.1f s", index, proc.pid, _exit_text(code), backoff)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            if self.stopping.is_set():
                return
            proc = await self._spawn(index)

    async def run(self) -> int:
        """Serve until a signal (0) or a failure (1)."""
        from .adapters.local_ipc import Hub

        cfg = self.config
        try:
            probe, self.port = reserve_port(cfg.host, cfg.port)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", cfg.host, cfg.port, exc)
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stopping.set)
        directory = tempfile.mkdtemp(prefix="soketi-impl-")  # mode 0700
        self.hub_path = os.path.join(directory, "hub.sock")
        hub = Hub(self.hub_path, on_ready=self._on_ready)
        watchers: list[asyncio.Task[None]] = []
        try:
            await hub.start()
            started = [await self._spawn(i) for i in range(self.count)]
            waits = [asyncio.ensure_future(self._until_ready(i, p)) for i, p in enumerate(started)]
            stop = asyncio.ensure_future(self.stopping.wait())
            pending = set(waits)
            while pending and not stop.done():
                done, pending = await asyncio.wait(pending | {stop}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stop)
                for fut in done:
                    if fut is not stop and not fut.result():
                        i = waits.index(fut)
                        code = started[i].returncode
                        self.failed = (
                            f"worker {i} (pid {started[i].pid}) {_exit_text(code or 0)} before it listened: "
                            "stopping (its log lines above say why)"
                        )
                        self.stopping.set()
            for fut in pending:
                fut.cancel()
            probe.close()
            if not self.stopping.is_set():
                log.info("soketi-impl: %d workers on %s:%d", self.count, cfg.host, self.port)
                watchers = [loop.create_task(self._watch(i, p)) for i, p in enumerate(started)]
            await self.stopping.wait()
            stop.cancel()
            await self._stop_workers()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            probe.close()
            await hub.close()
            shutil.rmtree(directory, ignore_errors=True)
        if self.failed:
            log.error("%s", self.failed)
            return 1
        log.info("stopped")
        return 0

    async def _stop_workers(self) -> None:
        live = [p for p in self.procs.values() if p.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        timeout = self.config.shutdown_grace_period_ms / 1000 + 10
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), timeout)
        except asyncio.TimeoutError:
            for proc in live:
                if proc.returncode is None:
                    log.warning("worker pid %d did not stop within %.0f s: killing it", proc.pid, timeout)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in live))
        for index, proc in sorted(self.procs.items()):
            if proc in live and proc.returncode not in (0, None):
                log.warning("worker %d (pid %d) %s while stopping", index, proc.pid, _exit_text(proc.returncode))


def supervise(config: Config, count: int, argv: list[str]) -> int:
    """Run the supervisor on uvloop (see the module's documentation); returns the exit code."""
    supervisor = Supervisor(config, count, argv)
    if sys.platform != "win32":
        import uvloop

        return uvloop.run(supervisor.run())
    return asyncio.run(supervisor.run())
