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
from collections.abc import Callable, Mapping
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


# ---------------------------------------------------------------- servers and clients

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

JS_DIR = Path(__file__).parent / "js"

#: The app every server test uses unless it says otherwise. Numeric id: the Python
#: `pusher` SDK accepts only numeric app ids.
APP_ID, APP_KEY, APP_SECRET = "123456", "test-key", "test-secret"


def free_port() -> int:
    with socket.socket() as s:
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
    """A `soketi-impl start` subprocess; ``log`` collects its stderr lines."""

    proc: subprocess.Popen[str]
    port: int
    host: str = "127.0.0.1"
    log: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/app/{APP_KEY}?protocol=7&client=js&version=8.6.0"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def run_server(
    mode: str = "c", env: dict[str, str] | None = None, config_file: str | None = None, timeout: float = 30
) -> Iterator[ServerProcess]:
    """Start the server as a subprocess (``mode`` ``c`` or ``py`` twins) and stop it after.

    Waits for the "listening" log line, not for time to pass.
    """
    port = free_port()
    full_env = base_env(port) if env is None else {**base_env(port), **env}
    if mode == "py":
        full_env["SOKETI_IMPL_NO_EXTENSIONS"] = "1"
    else:
        full_env.pop("SOKETI_IMPL_NO_EXTENSIONS", None)
    argv = [sys.executable, "-m", "soketi_impl", "start"] + (["--config", config_file] if config_file else [])
    proc = subprocess.Popen(argv, env=full_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    server = ServerProcess(proc, port)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            server.log.append(line.rstrip())
            if "listening on" in line:
                ready.set()
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


_npm_lock = threading.Lock()


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/js/node_modules installed from the lock file (pinned pusher-js and pusher)."""
    with _npm_lock:
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
