"""Hostile WebSocket clients against the picows host (issue 9), exact frames on a raw socket.

Each test pins one row: what the client observes (close codes, pongs, answers) and,
where memory is at stake, that the server cut the connection instead of buffering.
Both twins of the frame check run: the in-process server follows the test's build.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hostile import RawWS, frame, open_raw, raw_ws, read_http_response, tracked_server
from soketi_impl.hosts.wslistener import MAX_FRAGMENTS, MAX_WRITE_BUFFER

pytestmark = pytest.mark.timeout(60)

PING = json.dumps({"event": "pusher:ping", "data": {}}).encode()


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    async with tracked_server(monkeypatch) as srv:
        yield srv


def _code(payload: bytes | None) -> int | None:
    if payload is None or len(payload) < 2:
        return None
    return int.from_bytes(payload[:2], "big")


async def _answered(ws: RawWS) -> dict[str, Any]:
    """Send a pusher:ping; the first text frame back, parsed."""
    ws.send(frame(0x1, PING))
    got = await ws.next_frame()
    assert got is not None and got[0] == 0x1, got
    return json.loads(got[1])  # type: ignore[no-any-return]


# ---------------------------------------------------------------- row 1: close handshake


@pytest.mark.parametrize(
    "sent, expected",
    [(b"", {None, 1000}), ((1000).to_bytes(2, "big"), {1000}), ((4000).to_bytes(2, "big"), {4000}),
     ((1006).to_bytes(2, "big"), {None, 1000}), ((1001).to_bytes(2, "big") + b"bye", {1001})],
    ids=["empty", "1000", "4000", "1006", "1001-reason"],
)
async def test_close_reply_never_carries_a_reserved_code(server: Any, sent: bytes, expected: set[int | None]) -> None:
    """An empty close frame (browsers, Node's ws) is answered empty or 1000, never 0;
    a reserved code (1006) is never echoed."""
    async with raw_ws(server.port) as ws:
        ws.send(frame(0x8, sent))
        reply = await ws.close_frame()
        assert reply is not None, "no close frame in reply"
        assert len(reply) != 1
        assert _code(reply) in expected, reply


# ---------------------------------------------------------------- row 3: ping flood


async def test_ping_flood_from_a_non_reader_is_cut(server: Any) -> None:
    """WebSocket pings from a client that never reads: the pongs count against the same
    write-buffer bound as every other write (4100), not buffered without end."""
    payload = b"p" * 125
    n = 2 * MAX_WRITE_BUFFER // 127  # pongs worth twice the bound
    async with raw_ws(server.port, rcvbuf=4096) as ws:
        ws.send(frame(0x9, payload) * n)
        received = await ws.until_closed(timeout=30)
        # the server closed the connection before answering every ping
        assert received < n * 127


async def test_pings_are_still_answered(server: Any) -> None:
    async with raw_ws(server.port) as ws:
        ws.send(frame(0x9, b"hello"))
        assert await ws.next_frame() == (0xA, b"hello")
        assert (await _answered(ws))["event"] == "pusher:pong"


# ---------------------------------------------------------------- row 6: fragments


async def test_endless_empty_continuations_are_refused(server: Any) -> None:
    async with raw_ws(server.port) as ws:
        ws.send(frame(0x1, b'{"event":', fin=False) + frame(0x0, b"", fin=False) * (MAX_FRAGMENTS + 10))
        assert _code(await ws.close_frame()) == 1009


async def test_fragments_over_the_size_limit_are_refused(server: Any) -> None:
    async with raw_ws(server.port) as ws:
        chunk = b"x" * 60_000
        ws.send(frame(0x1, b'{"event":"pusher:ping","data":"', fin=False) + frame(0x0, chunk, fin=False) * 2)
        assert _code(await ws.close_frame()) == 1009


async def test_new_data_frame_inside_a_fragmented_message_is_1002(server: Any) -> None:
    async with raw_ws(server.port) as ws:
        ws.send(frame(0x1, b'{"event":', fin=False) + frame(0x1, PING))
        assert _code(await ws.close_frame()) == 1002


async def test_stray_continuation_is_1002(server: Any) -> None:
    async with raw_ws(server.port) as ws:
        ws.send(frame(0x0, PING))
        assert _code(await ws.close_frame()) == 1002


async def test_fragmented_message_with_a_ping_between_is_served(server: Any) -> None:
    async with raw_ws(server.port) as ws:
        ws.send(frame(0x1, PING[:10], fin=False) + frame(0x9, b"mid") + frame(0x0, PING[10:20], fin=False)
                + frame(0x0, PING[20:]))
        assert await ws.next_frame() == (0xA, b"mid")
        got = await ws.next_frame()
        assert got is not None and json.loads(got[1])["event"] == "pusher:pong", got


async def test_utf8_split_across_fragments_is_valid(server: Any) -> None:
    text = json.dumps({"event": "pusher:ping", "data": {"é": "€"}}, ensure_ascii=False).encode()
    cut = text.index("€".encode()) + 1  # inside the three bytes of the euro sign
    async with raw_ws(server.port) as ws:
        ws.send(frame(0x1, text[:cut], fin=False) + frame(0x0, text[cut:]))
        got = await ws.next_frame()
        assert got is not None and json.loads(got[1])["event"] == "pusher:pong", got


# ---------------------------------------------------------------- row 7: activity


async def test_websocket_pings_count_as_activity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that only sends WebSocket pings is not closed 4201 (the server's
    activity timeout and pong timeout are 1 s here; the client pings for 4 s)."""
    env = {"SOKETI_ACTIVITY_TIMEOUT": "1", "SOKETI_PONG_TIMEOUT": "1"}
    async with tracked_server(monkeypatch, env) as srv, raw_ws(srv.port) as ws:
        for i in range(16):
            ws.send(frame(0x9, str(i).encode()))
            got = await ws.next_frame()
            assert got is not None and got[0] != 0x8, f"closed: {got}"
            assert got == (0xA, str(i).encode()), got  # not a pusher:ping: never silent
            await asyncio.sleep(0.25)  # the client's own pace; nothing is awaited on it


# ---------------------------------------------------------------- rows 8 and 9: frame rules


@pytest.mark.parametrize("opcode", [0x1, 0x2], ids=["text", "binary"])
async def test_invalid_utf8_is_1007(server: Any, opcode: int) -> None:
    async with raw_ws(server.port) as ws:
        ws.send(frame(opcode, b'{"event":"pusher:ping","data":"\xff\xfe"}'))
        assert _code(await ws.close_frame()) == 1007


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10], ids=["rsv1", "rsv2", "rsv3"])
@pytest.mark.parametrize("opcode", [0x1, 0x9], ids=["text", "ping"])
async def test_rsv_bits_are_1002(server: Any, rsv: int, opcode: int) -> None:
    async with raw_ws(server.port) as ws:
        ws.send(frame(opcode, PING, rsv=rsv))
        assert _code(await ws.close_frame()) == 1002


async def test_binary_json_is_parsed_as_text(server: Any) -> None:
    async with raw_ws(server.port) as ws:
        ws.send(frame(0x2, PING))
        got = await ws.next_frame()
        assert got is not None and got[0] == 0x1 and json.loads(got[1])["event"] == "pusher:pong", got


@pytest.mark.parametrize("version", ["8", "12", "", "13, 8"])
async def test_unsupported_websocket_version_is_426(server: Any, version: str) -> None:
    from hostile import HANDSHAKE

    reader, writer = await open_raw(server.port)
    try:
        writer.write(HANDSHAKE.format(key="test-key", version=version).encode())
        status, headers, _ = await read_http_response(reader)
        assert status == 426
        assert headers.get("sec-websocket-version") == "13"
    finally:
        writer.transport.abort()


async def test_connection_survives_a_bystander_protocol_error(server: Any) -> None:
    """One client's protocol error closes that client only."""
    async with raw_ws(server.port) as good, raw_ws(server.port) as bad:
        bad.send(frame(0x0, b"stray"))
        assert _code(await bad.close_frame()) == 1002
        assert (await _answered(good))["event"] == "pusher:pong"
