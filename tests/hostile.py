"""Helpers for the hostile-client tests: exact bytes on a raw socket, an in-process
server whose front doors can be inspected."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from conftest import APP_KEY, base_env

WAIT = 10.0

HANDSHAKE = (
    "GET /app/{key}?protocol=7&client=js&version=8.6.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
)


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """One masked client frame; ``rsv`` is the RSV bits (0x40 RSV1, 0x20 RSV2, 0x10 RSV3)."""
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


@dataclass
class RawWS:
    """A WebSocket client on a raw socket: every byte it sends is the test's choice."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffer: bytes = b""
    socket_id: str = ""

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def next_frame(self, timeout: float = WAIT) -> tuple[int, bytes] | None:
        """The next server frame as ``(opcode, payload)``, or ``None`` at EOF or reset."""
        while True:
            parsed = _split(self.buffer)
            if parsed is not None:
                op, payload, self.buffer = parsed
                return op, payload
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not chunk:
                return None
            self.buffer += chunk

    async def close_frame(self, timeout: float = WAIT) -> bytes | None:
        """Read until the server's close frame; its payload, or ``None`` if the socket ended first."""
        while (f := await self.next_frame(timeout)) is not None:
            if f[0] == 0x8:
                return f[1]
        return None

    async def until_closed(self, timeout: float = WAIT) -> int:
        """Read (and drop) everything until EOF or reset; returns the bytes read."""
        total = len(self.buffer)
        self.buffer = b""
        while True:
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            except (ConnectionResetError, BrokenPipeError):
                return total
            if not chunk:
                return total
            total += len(chunk)


def _split(data: bytes) -> tuple[int, bytes, bytes] | None:
    if len(data) < 2:
        return None
    n, i = data[1] & 0x7F, 2
    if n == 126:
        if len(data) < 4:
            return None
        n, i = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        if len(data) < 10:
            return None
        n, i = int.from_bytes(data[2:10], "big"), 10
    if len(data) < i + n:
        return None
    return data[0] & 0x0F, data[i:i + n], data[i + n:]


async def open_raw(port: int, *, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection; ``rcvbuf`` shrinks the receive buffer (a client that reads slowly)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=1 << 22)


@contextlib.asynccontextmanager
async def raw_ws(port: int, *, version: str = "13", rcvbuf: int | None = None) -> AsyncIterator[RawWS]:
    """A handshaken raw WebSocket whose ``connection_established`` was read."""
    reader, writer = await open_raw(port, rcvbuf=rcvbuf)
    ws = RawWS(reader, writer)
    try:
        writer.write(HANDSHAKE.format(key=APP_KEY, version=version).encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        first = await ws.next_frame()
        assert first is not None and b"connection_established" in first[1], first
        ws.socket_id = json.loads(json.loads(first[1])["data"])["socket_id"]
        yield ws
    finally:
        writer.transport.abort()


async def read_http_response(reader: asyncio.StreamReader, timeout: float = WAIT) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response: status, headers (lower-cased names), body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout)
    return status, headers, body


@contextlib.asynccontextmanager
async def tracked_server(monkeypatch: Any, env: dict[str, str] | None = None, **options: Any) -> AsyncIterator[Any]:
    """An in-process :class:`Server` whose front doors are listed in ``server.doors``.

    ``options`` override :class:`FrontDoorOptions` fields (short timeouts in tests).
    """
    import soketi_impl.server as server_mod
    from soketi_impl.config import load_config
    from soketi_impl.hosts.picows import FrontDoor

    doors: list[FrontDoor] = []

    class Tracked(FrontDoor):
        __slots__ = ()

        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            doors.append(self)

    monkeypatch.setattr(server_mod, "FrontDoor", Tracked)
    server = server_mod.Server(load_config(None, environ=base_env(0, **(env or {}))))
    for name, value in options.items():
        setattr(server.options, name, value)
    server.doors = doors  # type: ignore[attr-defined]
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    """Poll ``predicate`` (server-side state has no event to await) until true or fail."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
