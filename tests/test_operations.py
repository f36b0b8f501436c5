"""Operations, on the real server process: .env, SIGHUP, the metrics port, unknown settings.

soketi loads ``.env`` from the working directory, stops gracefully on SIGHUP as on
SIGTERM, and always serves ``/``, ``/ready`` and ``/usage`` on its metrics port
(``/metrics`` only when enabled); ``/ready`` fails while it shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import APP_KEY, base_env, free_port

WAIT = 10


def once(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on one event loop: the loop under test is the server's, in
    another process, so the client side need not run on both loops (it halves the time)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class Proc:
    """A ``soketi-impl start`` subprocess whose stderr lines are collected as they come."""

    def __init__(
        self, env: dict[str, str], cwd: Path | None = None, config: str | None = None,
        executable: str = sys.executable,
    ) -> None:
        argv = [executable, "-m", "soketi_impl", "start"] + (["--config", config] if config else [])
        self.port = int(env["SOKETI_PORT"])
        self.log: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.log.append(line.rstrip())
                self._changed.notify_all()
        with self._changed:
            self.log.append("<eof>")
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first log line containing ``text``; fails if the process ends first."""
        with self._changed:
            ok = self._changed.wait_for(
                lambda: any(text in line for line in self.log) or "<eof>" in self.log, timeout
            )
            found = [line for line in self.log if text in line]
        assert ok and found, f"no {text!r} in the log:\n" + "\n".join(self.log)
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def started(env: dict[str, str], cwd: Path | None = None, config: str | None = None) -> Iterator[Proc]:
    proc = Proc(env, cwd, config)
    try:
        proc.wait_for("listening on")
        yield proc
    finally:
        proc.stop()


def env_with_metrics(mode: str, **extra: str) -> dict[str, str]:
    env = base_env(free_port(), SOKETI_METRICS_HOST="127.0.0.1", SOKETI_METRICS_SERVER_PORT=str(free_port()))
    if mode == "py":
        env["SOKETI_IMPL_NO_EXTENSIONS"] = "1"
    env.update(extra)
    return env


async def http_get(url: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def established(ws: ClientConnection) -> dict[str, object]:
    message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert message["event"] == "pusher:connection_established"
    return dict(message)


async def closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    return ws.close_code


def ws_url(port: int, key: str = APP_KEY) -> str:
    return f"ws://127.0.0.1:{port}/app/{key}?protocol=7&client=js&version=8.6.0"


# -- .env -------------------------------------------------------------------------------


@once
async def test_dotenv_in_the_working_directory_with_the_environment_winning(tmp_path: Path) -> None:
    env = base_env(free_port())
    del env["SOKETI_DEFAULT_APP_KEY"]
    (tmp_path / ".env").write_text(
        "# as a soketi deployment has it\n"
        "SOKETI_DEFAULT_APP_KEY=dotenv-key\n"
        f"SOKETI_PORT={free_port()}\n"  # the environment's port wins
        "SOKETI_METRICS_SERVER_PORT=0\n",
        encoding="utf-8",
    )
    with started(env, cwd=tmp_path) as server:
        line = server.wait_for("listening on")
        assert f":{server.port}/app/" in line and "(key dotenv-key)" in line
        async with connect(ws_url(server.port, "dotenv-key"), open_timeout=WAIT) as ws:
            await established(ws)


# -- signals ----------------------------------------------------------------------------


@once
async def test_sighup_closes_with_4200_and_exits_0(server_mode: str) -> None:
    with started(env_with_metrics(server_mode)) as server:
        async with connect(ws_url(server.port), open_timeout=WAIT) as ws:
            await established(ws)
            server.proc.send_signal(signal.SIGHUP)
            error = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert error == {
                "event": "pusher:error",
                "data": {"code": 4200, "message": "Server is restarting, reconnect."},
            }
            assert await closed_with(ws) == 4200
        assert await asyncio.to_thread(server.proc.wait, 20) == 0
        server.wait_for("SIGHUP: shutting down")


# -- the metrics port -------------------------------------------------------------------


@once
async def test_metrics_port_serves_health_and_usage_with_metrics_disabled(server_mode: str) -> None:
    env = env_with_metrics(server_mode)
    metrics = int(env["SOKETI_METRICS_SERVER_PORT"])
    with started(env) as server:
        line = server.wait_for("metrics server on")
        assert f"http://127.0.0.1:{metrics} (/, /ready, /usage)" in line
        assert "SOKETI_METRICS_ENABLED" in line
        base = f"http://127.0.0.1:{metrics}"
        assert await http_get(base + "/") == (200, "OK")
        assert await http_get(base + "/ready") == (200, "OK")
        status, body = await http_get(base + "/usage")
        assert status == 200 and json.loads(body)["memory"]["rss"] > 0
        assert (await http_get(base + "/metrics"))[0] == 404


@once
async def test_metrics_port_serves_metrics_when_enabled() -> None:
    env = env_with_metrics("c", SOKETI_METRICS_ENABLED="true")
    metrics = int(env["SOKETI_METRICS_SERVER_PORT"])
    with started(env) as server:
        assert "/usage, /metrics)" in server.wait_for("metrics server on")
        async with connect(ws_url(server.port), open_timeout=WAIT) as ws:
            await established(ws)
            status, body = await http_get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200
        assert 'soketi_connected{app_id="123456",port="' in body
        assert (await http_get(f"http://127.0.0.1:{metrics}/ready")) == (200, "OK")


@once
async def test_ready_fails_during_the_shutdown_grace_period() -> None:
    # two clients: the closes come in two waves, half the grace period apart
    env = env_with_metrics("c", SOKETI_SHUTDOWN_GRACE_PERIOD="6000")
    metrics = f"http://127.0.0.1:{env['SOKETI_METRICS_SERVER_PORT']}"
    with started(env) as server:
        async with (
            connect(ws_url(server.port), open_timeout=WAIT) as a,
            connect(ws_url(server.port), open_timeout=WAIT) as b,
        ):
            await established(a)
            await established(b)
            assert (await http_get(metrics + "/ready"))[0] == 200
            server.proc.send_signal(signal.SIGTERM)
            first = asyncio.ensure_future(closed_with(a))
            second = asyncio.ensure_future(closed_with(b))
            done, pending = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
            assert pending, "both waves came at once: the grace period was not spread"
            # shutting down: not ready, still alive
            assert await http_get(metrics + "/ready") == (503, "Shutting down")
            assert await http_get(metrics + "/") == (200, "OK")
            assert {await first, await second} == {4200}
        assert await asyncio.to_thread(server.proc.wait, 20) == 0


def _taken_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, int(holder.getsockname()[1])


@once
async def test_a_taken_metrics_port_warns_when_disabled_and_fails_when_enabled() -> None:
    holder, port = _taken_port()
    with holder:
        env = env_with_metrics("c", SOKETI_METRICS_SERVER_PORT=str(port))
        with started(env) as server:
            assert f"cannot listen on the metrics port 127.0.0.1:{port}" in server.wait_for("WARNING")
            assert "not served" in server.wait_for("metrics port")
            async with connect(ws_url(server.port), open_timeout=WAIT) as ws:
                await established(ws)
        proc = subprocess.run(
            [sys.executable, "-m", "soketi_impl", "start"],
            env={**env, "SOKETI_METRICS_ENABLED": "true"},
            capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 1
    assert f"cannot listen on the metrics port 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- unknown settings: the same from the environment and from the file -------------------


def test_unknown_settings_warn_alike_from_env_and_file(tmp_path: Path) -> None:
    env = env_with_metrics("c", SOKETI_PROT="7001", SOKETI_DEFAULT_APP_SECRT="s")
    with started(env) as server:
        assert "unknown setting SOKETI_PROT ignored (did you mean SOKETI_PORT?)" in server.wait_for(
            "SOKETI_PROT"
        )
        assert "(did you mean SOKETI_DEFAULT_APP_SECRET?)" in server.wait_for("SOKETI_DEFAULT_APP_SECRT")
    config = tmp_path / "soketi.json"
    config.write_text(
        json.dumps({"prot": 7001, "appManager.array.apps": [{"id": "1", "key": "k", "secret": "s", "secrt": "x"}]}),
        encoding="utf-8",
    )
    with started(env_with_metrics("c"), config=str(config)) as server:
        assert "unknown setting prot ignored (did you mean port?)" in server.wait_for("prot")
        assert "unknown setting appManager.array.apps.0.secrt ignored (did you mean secret?)" in (
            server.wait_for("secrt")
        )
