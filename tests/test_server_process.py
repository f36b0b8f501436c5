"""The server as a process and as an embedded object: start, serve, shut down, backpressure."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import ServerProcess, run_server


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKETI_")}
    env.update(extra)
    return env


def test_logs_where_it_listens(pusher_server: ServerProcess) -> None:
    assert any(f":{pusher_server.port}" in line and "listening on" in line for line in pusher_server.log)


async def test_sigterm_closes_with_4200_and_exits_0(server_mode: str) -> None:
    with run_server(server_mode) as server:
        async with connect(server.ws_url) as ws:
            established = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert established["event"] == "pusher:connection_established"
            server.proc.send_signal(signal.SIGTERM)
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert error == {"event": "pusher:error", "data": {"code": 4200, "message": "Server is restarting, reconnect."}}
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4200
        assert await asyncio.to_thread(server.proc.wait, 20) == 0


def test_bad_config_exits_2(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "soketi_impl", "start"],
        env=_env(SOKETI_PORT="not-a-port"),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "SOKETI_PORT" in proc.stderr or "port" in proc.stderr


def test_port_in_use_fails_with_a_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "soketi_impl", "start"],
            env=_env(SOKETI_PORT=str(port), SOKETI_HOST="127.0.0.1"),
            capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr


async def test_slow_reader_is_closed_with_4100(inproc_server: object, caplog: pytest.LogCaptureFixture) -> None:
    """A subscriber that stops reading is cut off instead of growing the server's memory.

    The cut is an abort (the close frame would wait behind megabytes the peer does not
    read), so the code is not visible on the wire: the log line that says why pins it.
    """
    from soketi_impl.server import Server

    caplog.set_level(logging.INFO, logger="soketi_impl.http")
    assert isinstance(inproc_server, Server)
    server = inproc_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(
        f"GET /app/{server.config.apps[0].key}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    payload = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "flood"}})
    writer.write(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
    await asyncio.wait_for(reader.readuntil(b"subscription_succeeded"), 10)
    app = server.pusher.apps[server.config.apps[0].id]
    assert app.table.count("flood") == 1
    big = "x" * 90_000
    closed = False
    for _ in range(400):  # at most 36 MB; the limit is 4 MiB of unsent data
        await server.pusher.trigger(app.config.id, ["flood"], "big", big)
        await asyncio.sleep(0)
        if app.stats.connected == 0:
            closed = True
            break
    assert closed, "the slow reader was never cut off"
    assert any("closing with 4100" in r.getMessage() for r in caplog.records), caplog.text
    writer.close()
