"""picows glue: the idle write buffer is given back, and picows's own sends still work."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from picows import WSAutoPingStrategy, WSListener, WSMsgType, ws_create_server
from picows.picows import WSProtocol, _make_test_ws_frame  # type: ignore[attr-defined]  # not in picows's stubs
from websockets.asyncio.client import connect

from conftest import APP_KEY


async def test_shrink_then_send_large_frames(twin: Callable[[str], ModuleType]) -> None:
    glue = twin("wsglue")
    freed: list[int] = []

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: Any) -> None:
            freed.append(glue.shrink_idle_buffers(transport))
            freed.append(glue.shrink_idle_buffers(transport))  # twice: nothing more to give

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                # picows frames this itself, in the buffer that was just shrunk
                transport.send(WSMsgType.TEXT, frame.get_payload_as_bytes() * 2)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await ws_create_server(lambda r: Echo(), "127.0.0.1", 0, use_aiofastnet=False)
    port = server.sockets[0].getsockname()[1]
    try:
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
            for size in (10, 200, 70_000):
                await ws.send("x" * size)
                assert await asyncio.wait_for(ws.recv(), 10) == "x" * (2 * size)
            await ws.ping()
    finally:
        server.close()
        await server.wait_closed()
    expected_first = 1024 - glue.IDLE_WRITE_BUFFER if glue.__name__.endswith("_c") else 0
    assert freed == [expected_first, 0]


# ---------------------------------------------------------------- data_payload

_KINDS = [WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION, WSMsgType.PING, WSMsgType.PONG, WSMsgType.CLOSE]


@settings(max_examples=500, deadline=None)
@given(
    kind=st.sampled_from(_KINDS),
    payload=st.binary(max_size=40) | st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    fin=st.booleans(),
    rsv1=st.booleans(),
)
def test_data_payload_twins_agree(kind: WSMsgType, payload: bytes, fin: bool, rsv1: bool) -> None:
    """Only a whole TEXT or BINARY frame, no RSV bit, valid UTF-8 is a message; both twins say so."""
    from soketi_impl.twins import _speedups, _wsglue_py

    f = _make_test_ws_frame(kind, payload, fin, rsv1)
    expected = _wsglue_py.data_payload(f)
    ok = kind in (WSMsgType.TEXT, WSMsgType.BINARY) and fin and not rsv1
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        ok = False
    assert expected == (payload if ok else None)
    if not _speedups.NO_EXTENSIONS:
        from soketi_impl.twins import _wsglue_c

        assert _wsglue_c.data_payload(f) == expected


# ---------------------------------------------------------------- after the upgrade


async def test_upgrade_shrinks_read_buffer_and_drops_leftovers(inproc_server: Any, monkeypatch: Any) -> None:
    """Through the front door: the read buffer shrinks, the transport's leftovers go,
    and messages from 10 bytes to 9 KB, the close handshake included, still work."""
    from soketi_impl.hosts import wslistener
    from soketi_impl.twins import _speedups

    freed: list[int] = []
    dropped: list[int] = []
    transports: list[Any] = []
    shrink, drop = wslistener.shrink_read_buffer, wslistener.drop_handshake_leftovers
    drop_more = wslistener.drop_protocol_leftovers
    monkeypatch.setattr(wslistener, "shrink_read_buffer", lambda ws: freed.append(shrink(ws)) or freed[-1])
    monkeypatch.setattr(wslistener, "drop_handshake_leftovers", lambda t: transports.append(t) or drop(t))
    monkeypatch.setattr(wslistener, "drop_protocol_leftovers", lambda ws: dropped.append(drop_more(ws)) or 0)
    url = f"ws://127.0.0.1:{inproc_server.port}/app/{APP_KEY}?protocol=7"
    async with connect(url, max_size=None) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["event"] == "pusher:connection_established"
        for size in (10, 400, 600, 3000, 9000):
            await ws.send(json.dumps({"event": "pusher:ping", "data": "x" * size}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["event"] == "pusher:pong"
        await ws.close()
    assert ws.close_code == 1000
    compiled = _speedups.using_extensions()
    assert freed == ([2048 - 768] if compiled else [0])
    assert dropped == ([2] if compiled else [0])  # the handshake future and key
    # picows still saw the disconnect (it asks the swapped future): the core forgot the socket
    app = next(iter(inproc_server.pusher.apps.values()))
    for _ in range(100):
        if not len(app.sockets):
            break
        await asyncio.sleep(0.05)
    assert len(app.sockets) == 0
    (transport,) = transports
    assert (transport.request is None and transport.response is None) == compiled


async def test_upgrade_with_a_partial_frame_keeps_the_buffer(inproc_server: Any) -> None:
    """Bytes of a frame that arrive with the upgrade request stay unread in picows's
    buffer: it is not shrunk then, and the frame completes with the next read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", inproc_server.port)
    try:
        frame = json.dumps({"event": "pusher:ping", "data": {}}).encode()
        masked = bytes([0x81, 0x80 | len(frame)]) + b"\0\0\0\0" + frame
        writer.write(
            f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode() + masked[:5]
        )
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        got = b""
        while b"connection_established" not in got:
            got += await asyncio.wait_for(reader.read(4096), 10)
        writer.write(masked[5:])
        got = b""
        while b"pusher:pong" not in got:
            got += await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()


async def test_protocol_left_alone_before_the_upgrade(twin: Callable[[str], ModuleType]) -> None:
    """Before an upgrade the read buffer is not shrunk and the pending handshake future
    stays; anything but a picows WSProtocol is left alone."""
    glue = twin("wsglue")
    ws = WSProtocol(
        None, None, False, lambda request: None, logging.getLogger("test_wsglue"), True, 5.0,
        False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE, False, 1024, None, 2048,
    )
    compiled = glue.__name__.endswith("_c")
    assert glue.shrink_read_buffer(object()) == 0 and glue.drop_protocol_leftovers(object()) == 0
    assert glue.shrink_read_buffer(ws) == 0  # the parser still waits for the upgrade request
    assert glue.drop_protocol_leftovers(ws) == (1 if compiled else 0)  # the key; not the pending future
    assert glue.drop_protocol_leftovers(ws) == 0
    futures = [r for r in gc.get_referents(ws) if isinstance(r, asyncio.Future)]
    assert len(futures) == 1 and not futures[0].done()
