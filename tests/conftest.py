"""Shared fixtures.

- Every async test runs on plain asyncio and on uvloop (ids ``asyncio`` / ``uvloop``),
  through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook.
- ``impl`` gives the twin kind (``py`` / ``c``); ``twin(area)`` imports
  ``soketi_impl.twins._{area}_{kind}``. A missing C twin fails the test unless
  ``SOKETI_IMPL_NO_EXTENSIONS`` is set, where the ``c`` cases are skipped.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

import pytest
import uvloop

from soketi_impl.twins import _speedups


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "c" and _speedups.NO_EXTENSIONS:
        pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
    return str(request.param)


@pytest.fixture
def twin(impl: str) -> Callable[[str], ModuleType]:
    """``twin("protocol")`` -> the module of that area for this test's kind."""

    def load(area: str) -> ModuleType:
        return importlib.import_module(f"soketi_impl.twins._{area}_{impl}")

    return load


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A plain event loop, set as the current one, for synchronous tests that drive a
    protocol object by hand (the front door, the trigger's fast path)."""
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    asyncio.set_event_loop(None)
    lp.close()


# ---------------------------------------------------------------- servers and clients

import contextlib
import fcntl
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

JS_DIR = Path(__file__).parent / "js"

#: The app every server test uses unless it says otherwise. Numeric id: the Python
#: `pusher` SDK accepts only numeric app ids.
APP_ID, APP_KEY, APP_SECRET = "123456", "test-key", "test-secret"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_EPHEMERAL_LOW = _ephemeral_low()
_given_ports: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a server a test starts, taken below the kernel's
    ephemeral range: every outgoing connection (of any test process) gets a local port
    from that range, so a port picked there could be taken between this check and the
    server's bind (seen in CI: "address already in use")."""
    low, high = max(1024, _EPHEMERAL_LOW - 12000), _EPHEMERAL_LOW - 1
    for _ in range(200 if high - low >= 1000 else 0):
        port = random.randint(low, high)
        if port in _given_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    with socket.socket() as s:  # (no room below the ephemeral range: any free port)
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(port: int, **extra: str) -> dict[str, str]:
    """Environment for a server subprocess: the test app on 127.0.0.1:port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKETI_")}
    env.update(
        SOKETI_HOST="127.0.0.1",
        SOKETI_PORT=str(port),
        SOKETI_DEFAULT_APP_ID=APP_ID,
        SOKETI_DEFAULT_APP_KEY=APP_KEY,
        SOKETI_DEFAULT_APP_SECRET=APP_SECRET,
        SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES="true",
        SOKETI_SHUTDOWN_GRACE_PERIOD="300",
    )
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """A server subprocess (``kind``: the host); ``log`` collects its output lines."""

    proc: subprocess.Popen[str]
    port: int
    host: str = "127.0.0.1"
    log: list[str] = field(default_factory=list)
    kind: str = "picows"
    #: set when the process closed its output (every line is in ``log``)
    log_closed: threading.Event = field(default_factory=threading.Event)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/app/{APP_KEY}?protocol=7&client=js&version=8.6.0"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"


#: The hosts a server test can run on: the picows front door (``soketi-impl start``),
#: the ASGI app under uvicorn, and the aiohttp host (``tests/host_aiohttp.py``).
HOSTS = ("picows", "asgi", "aiohttp")


def host_command(host: str, port: int, config_file: str | None = None) -> tuple[list[str], str]:
    """The command that serves ``host`` on ``port``, and the output text that says it is ready."""
    if host == "picows":
        argv = [sys.executable, "-m", "soketi_impl", "start"]
        return argv + (["--config", config_file] if config_file else []), "listening on"
    if config_file:
        raise ValueError("the asgi and aiohttp hosts take their config from SOKETI_* variables here")
    if host == "asgi":
        argv = [
            sys.executable, "-m", "uvicorn", "--factory", "soketi_impl.asgi:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        ]
        return argv, "Uvicorn running on"
    if host == "aiohttp":
        return [sys.executable, str(Path(__file__).parent / "host_aiohttp.py")], "listening on"
    raise ValueError(f"unknown host {host!r}")


@contextlib.contextmanager
def run_server(
    mode: str = "c",
    env: dict[str, str] | None = None,
    config_file: str | None = None,
    timeout: float = 30,
    host: str = "picows",
) -> Iterator[ServerProcess]:
    """Start a server subprocess (``mode`` ``c`` or ``py`` twins, on ``host``) and stop it after.

    Waits for the host's ready line in its log, not for time to pass.
    """
    for attempt in range(3):
        port = free_port()
        argv, marker = host_command(host, port, config_file)
        stack = contextlib.ExitStack()
        try:
            server = stack.enter_context(run_process(argv, marker, port, env, mode=mode, kind=host, timeout=timeout))
        except RuntimeError as exc:
            if attempt < 2 and "address already in use" in str(exc):
                continue  # another process took the port between free_port and the bind
            raise
        with stack:
            yield server
        return


@contextlib.contextmanager
def run_process(
    argv: list[str],
    marker: str,
    port: int,
    env: dict[str, str] | None = None,
    *,
    mode: str = "c",
    kind: str = "picows",
    timeout: float = 30,
) -> Iterator[ServerProcess]:
    """Run ``argv`` with the test app's environment on ``port``; ready when its output has ``marker``.

    stdout and stderr both go to ``log`` (``marker`` is matched without case). The
    process is terminated at the end if it still runs.
    """
    full_env = base_env(port) if env is None else {**base_env(port), **env}
    if mode == "py":
        full_env["SOKETI_IMPL_NO_EXTENSIONS"] = "1"
    else:
        full_env.pop("SOKETI_IMPL_NO_EXTENSIONS", None)
    proc = subprocess.Popen(argv, env=full_env, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True)
    server = ServerProcess(proc, port, kind=kind)
    ready = threading.Event()
    wanted = marker.lower()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.log.append(line.rstrip())
            if wanted in line.lower():
                ready.set()
        server.log_closed.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(timeout) or proc.poll() is not None:
            raise RuntimeError("server did not start:\n" + "\n".join(server.log))
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


#: (host, build) for the real-client suites: both builds on the picows front door,
#: the compiled build on the other hosts (the builds differ below the hosts).
HOST_MATRIX = [
    pytest.param(("picows", "c"), id="picows-c"),
    pytest.param(("picows", "py"), id="picows-py"),
    pytest.param(("asgi", "c"), id="asgi"),
    pytest.param(("aiohttp", "c"), id="aiohttp"),
]
#: One build per host: for suites whose both-build cases run on ``pusher_server``.
HOST_MATRIX_C = [p for p in HOST_MATRIX if p.id != "picows-py"]


@contextlib.contextmanager
def serve_host(param: tuple[str, str], env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A server for one :data:`HOST_MATRIX` entry.

    With ``SOKETI_IMPL_NO_EXTENSIONS`` set the compiled picows case is skipped and the
    other hosts run on the pure-Python build.
    """
    host, build = param
    if build == "c" and _speedups.NO_EXTENSIONS:
        if host == "picows":
            pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
        build = "py"
    with run_server(build, env, host=host) as server:
        yield server


@pytest.fixture(params=["c", "py"])
def server_mode(request: pytest.FixtureRequest) -> str:
    """Run a server test against both builds: compiled twins (c) and pure Python (py)."""
    if request.param == "c" and _speedups.NO_EXTENSIONS:
        pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
    return str(request.param)


@pytest.fixture
def pusher_server(server_mode: str) -> Iterator[ServerProcess]:
    """A server subprocess with the default test app (client events enabled)."""
    with run_server(server_mode) as server:
        yield server


@contextlib.contextmanager
def _npm_lock() -> Iterator[None]:
    """One ``npm ci`` at a time across pytest-xdist's worker processes (a file lock)."""
    with open(JS_DIR / ".npm-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/js/node_modules installed from the lock file (pinned pusher-js and pusher)."""
    with _npm_lock():
        if shutil.which("node") is None or shutil.which("npm") is None:
            pytest.fail("node and npm are needed for the real-client tests (Node.js 20)")
        marker = JS_DIR / "node_modules" / ".package-lock.json"
        if not marker.exists() or marker.stat().st_mtime < (JS_DIR / "package-lock.json").stat().st_mtime:
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=JS_DIR, check=True, timeout=600,
            )
        return JS_DIR / "node_modules"


@pytest.fixture
async def inproc_server() -> AsyncIterator[Any]:
    """A :class:`soketi_impl.server.Server` in this test's loop, on a free port."""
    from soketi_impl.config import load_config
    from soketi_impl.server import Server

    config = load_config(None, environ=base_env(0))
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a true value (returned), failing after ``timeout`` s.

    For state only visible by asking (the HTTP API), where there is no event to await.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


def clean_exit(server: ServerProcess, timeout: float = 15) -> bool:
    """Whether the server process ended cleanly after SIGTERM.

    uvicorn ends by raising the signal it caught again (exit status -SIGTERM) after a
    complete shutdown, so for it the log's last words count.
    """
    import signal

    code = server.proc.wait(timeout)
    server.log_closed.wait(timeout)
    if server.kind == "asgi":
        return code in (0, -signal.SIGTERM) and any("Application shutdown complete" in line for line in server.log)
    return code == 0


def signed_query(method: str, path: str, body: bytes) -> str:
    """The query string of a test-app request signed as the SDKs sign (auth_* and body_md5)."""
    import hashlib
    import hmac
    import time

    params = {
        "auth_key": APP_KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    signature = hmac.new(APP_SECRET.encode(), f"{method}\n{path}\n{query}".encode(), hashlib.sha256)
    return f"{query}&auth_signature={signature.hexdigest()}"


@pytest.fixture(params=("redis", "nats", "workers"))  # cluster_util.DRIVERS (it imports this module)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """A cluster on one adapter (``cluster_util.DRIVERS``), under a prefix of the test's
    own: (driver, prefix); what the prefix holds is deleted afterwards."""
    from cluster_util import cleanup, need, new_prefix

    driver = str(request.param)
    need(driver)
    prefix = new_prefix(driver)
    try:
        yield driver, prefix
    finally:
        await cleanup(driver, prefix)
