"""The WebSocket connection twins (``twins/_ws_c.pyx`` and ``twins/_ws_py.py``) frame by frame.

A ``WSConn`` is driven with exact bytes through a recording transport and router:
what the router is fed, what goes on the wire and how the socket ends must be the
same for both twins, however the client's bytes are split across reads. The real
sockets and clients are in tests/test_hostile_ws.py and tests/test_protocol_ws.py.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

MASK = b"\x11\x22\x33\x44"


def _module(kind: str) -> ModuleType:
    if kind == "c" and os.environ.get("SOKETI_IMPL_NO_EXTENSIONS", "") not in ("", "0", "false"):
        pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
    return importlib.import_module(f"soketi_impl.twins._ws_{kind}")


KINDS = ["c", "py"]


class Transport:
    def __init__(self, buffered: int = 0) -> None:
        self.out = bytearray()
        self.writes = 0
        self.ended: str | None = None
        self.protocol: Any = None
        self.buffered = buffered

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        assert self.ended is None, "write after the end"
        self.out += data
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def close(self) -> None:
        self.ended = self.ended or "close"

    def abort(self) -> None:
        self.ended = self.ended or "abort"


class Router:
    def __init__(self, on_new: Any = None) -> None:
        self.fed: list[tuple[Any, ...]] = []
        self.on_new = on_new

    def feed(self, kind: str, conn: Any, *args: Any) -> None:
        self.fed.append((kind, *args))
        if kind == "new" and self.on_new is not None:
            self.on_new(conn)


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bytes | None = MASK,
                 length_form: int | None = None) -> bytes:
    """A client frame; ``length_form`` forces the 7-, 16- or 64-bit length (7, 16, 64)."""
    n = len(payload)
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    flag = 0x80 if mask is not None else 0
    if form == 7:
        head = bytes((b0, flag | n))
    elif form == 16:
        head = bytes((b0, flag | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, flag | 127)) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The frames a server wrote (unmasked), after the 101."""
    head_end = data.index(b"\r\n\r\n") + 4 if data.startswith(b"HTTP/1.1 101") else 0
    frames = []
    i = head_end
    while i < len(data):
        opcode = data[i] & 0x0F
        n = data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n = int.from_bytes(data[i:i + 2], "big")
            i += 2
        elif n == 127:
            n = int.from_bytes(data[i:i + 8], "big")
            i += 8
        frames.append((opcode, data[i:i + n]))
        i += n
    return frames


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    for opcode, payload in frames:
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
    return None


RESPONSE = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"


LOOP = asyncio.new_event_loop()


def start(mod: ModuleType, rest: bytes = b"", max_frame: int = 1000, on_new: Any = None,
          buffered: int = 0, writes_before_the_loop_runs: int | None = None) -> tuple[Any, Transport, Router]:
    """A ``WSConn`` started on ``transport`` inside a loop iteration, then the loop's
    next callbacks run (where the 101 goes out when nothing was sent with it)."""
    transport = Transport(buffered)
    router = Router(on_new)
    ws = mod.WSConn(router, max_frame)

    async def go() -> None:
        ws.start(transport, RESPONSE, rest, "1.2", "/app/key")
        if writes_before_the_loop_runs is not None:
            assert transport.writes == writes_before_the_loop_runs
        await asyncio.sleep(0)

    LOOP.run_until_complete(go())
    assert transport.protocol is ws
    return ws, transport, router


def run(mod: ModuleType, chunks: list[bytes], max_frame: int = 1000) -> tuple[list[Any], bytes, str | None]:
    ws, transport, router = start(mod, max_frame=max_frame)
    for chunk in chunks:
        ws.data_received(chunk)
    if transport.ended:
        ws.connection_lost(None)
    return router.fed, bytes(transport.out), transport.ended


# ------------------------------------------------------------------ the handshake


@pytest.mark.parametrize("kind", KINDS)
def test_accept_response_is_rfc6455s_example(kind: str) -> None:
    mod = _module(kind)
    response = mod.accept_response("dGhlIHNhbXBsZSBub25jZQ==")
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" in response
    for bad in (None, "", "short", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ!=", "é" * 24,
                "dGhlIHNhbXBsZSBub25jZXM="):  # the last: 17 bytes
        assert mod.accept_response(bad) is None, bad


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=14, max_size=18), junk=st.text(max_size=30))
def test_the_compiled_accept_key_is_hashlib_and_base64s(raw: bytes, junk: str) -> None:
    if os.environ.get("SOKETI_IMPL_NO_EXTENSIONS", "") not in ("", "0", "false"):
        return
    import base64

    c = importlib.import_module("soketi_impl.twins._ws_c")
    py = importlib.import_module("soketi_impl.twins._ws_py")
    key = base64.b64encode(raw).decode()
    for candidate in (key, junk, key[:-1] + junk[:1], key.replace("=", "A")):
        assert c.accept_response(candidate) == py.accept_response(candidate), candidate


@pytest.mark.parametrize("kind", KINDS)
def test_what_the_router_sends_on_admission_leaves_with_the_101_in_one_write(kind: str) -> None:
    mod = _module(kind)
    ws, transport, router = start(mod, on_new=lambda conn: conn.send_nowait('{"event":"hello"}'),
                                  writes_before_the_loop_runs=1)
    assert transport.writes == 1
    assert transport.out.startswith(RESPONSE)
    assert server_frames(bytes(transport.out)) == [(0x1, b'{"event":"hello"}')]
    ws(mod.frame(0x1, b"later"))  # after the handshake: straight to the transport
    assert transport.writes == 2
    assert router.fed[0] == ("new",)


@pytest.mark.parametrize("kind", KINDS)
def test_with_nothing_sent_on_admission_the_101_goes_out_in_the_same_loop_iteration(kind: str) -> None:
    mod = _module(kind)
    ws, transport, router = start(mod, writes_before_the_loop_runs=0)
    assert bytes(transport.out) == RESPONSE


@pytest.mark.parametrize("kind", KINDS)
def test_frames_sent_with_the_upgrade_request_are_read(kind: str) -> None:
    mod = _module(kind)
    ws, transport, router = start(mod, rest=client_frame(0x1, b'{"a":1}'))
    assert router.fed == [("new",), ("message", b'{"a":1}')]


@pytest.mark.parametrize("kind", KINDS)
def test_a_connection_refused_at_admission_gets_its_close_frame_after_the_101(kind: str) -> None:
    mod = _module(kind)
    ws, transport, router = start(mod, rest=client_frame(0x1, b"{}"), on_new=lambda conn: conn._native.close(4001, "No app"))
    assert transport.ended == "close"
    assert close_code(server_frames(bytes(transport.out))) == 4001
    assert router.fed == [("new",)]  # the frame that came with the request is not read


# ------------------------------------------------------------------ frames in


@pytest.mark.parametrize("kind", KINDS)
def test_masked_text_and_binary_frames_are_messages(kind: str) -> None:
    mod = _module(kind)
    big = b"x" * 300
    fed, out, ended = run(mod, [client_frame(0x1, b"hello"), client_frame(0x2, "é".encode()),
                               client_frame(0x1, big), client_frame(0x1, b"")])
    assert fed[1:] == [("message", b"hello"), ("message", "é".encode()), ("message", big), ("message", b"")]
    assert ended is None


@pytest.mark.parametrize("kind", KINDS)
def test_a_64_bit_length_is_read(kind: str) -> None:
    mod = _module(kind)
    payload = b"y" * 70000
    fed, out, ended = run(mod, [client_frame(0x1, payload)], max_frame=100000)
    assert fed[1:] == [("message", payload)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "frames, code",
    [
        ([client_frame(0x1, b"x", mask=None)], 1002),
        ([client_frame(0x1, b"x", rsv=4)], 1002),
        ([client_frame(0x3, b"x")], 1002),
        ([client_frame(0xB, b"")], 1002),
        ([client_frame(0x9, b"x", fin=False)], 1002),
        ([client_frame(0x9, b"x" * 126)], 1002),
        ([client_frame(0x1, b"x" * 10, length_form=16)], 1002),
        ([client_frame(0x1, b"x" * 200, length_form=64)], 1002),
        ([client_frame(0x1, b"\xff")], 1007),
        ([client_frame(0x1, b"x" * 1001)], 1009),
        ([client_frame(0x0, b"x")], 1002),
        ([client_frame(0x1, b"a", fin=False), client_frame(0x1, b"b")], 1002),
        ([client_frame(0x1, b"a" * 600, fin=False), client_frame(0x0, b"b" * 600)], 1009),
        ([client_frame(0x1, b"\xc3", fin=False), client_frame(0x0, b"(")], 1007),
        ([client_frame(0x8, b"\x03")], 1002),
        ([client_frame(0x8, (1004).to_bytes(2, "big"))], 1002),
        ([client_frame(0x8, (2999).to_bytes(2, "big"))], 1002),
        ([client_frame(0x8, (1000).to_bytes(2, "big") + b"\xff")], 1007),
    ],
    ids=["unmasked", "rsv", "opcode-3", "opcode-b", "fragmented-ping", "ping-126", "long-16-bit-length",
         "long-64-bit-length", "bad-utf8", "too-big", "stray-continuation", "data-inside-fragments",
         "fragments-too-big", "utf8-across-fragments-bad", "close-one-byte", "close-1004", "close-2999",
         "close-bad-reason"],
)
def test_protocol_errors_close_with_their_code(kind: str, frames: list[bytes], code: int) -> None:
    mod = _module(kind)
    fed, out, ended = run(mod, [b"".join(frames)])
    assert close_code(server_frames(out)) == code
    assert ended == "close"
    assert [f for f in fed if f[0] == "message"] == []
    assert fed[-1] == ("closed", None, None)


@pytest.mark.parametrize("kind", KINDS)
def test_an_oversized_frame_is_refused_from_its_header(kind: str) -> None:
    """The header says 1 MB: 1009 at once, before any payload is held."""
    mod = _module(kind)
    ws, transport, router = start(mod)
    ws.data_received(client_frame(0x1, b"x" * 70000)[:14])
    assert close_code(server_frames(bytes(transport.out))) == 1009
    assert ws.partial is None


@pytest.mark.parametrize("kind", KINDS)
def test_fragments_ping_between_and_too_many(kind: str) -> None:
    mod = _module(kind)
    fed, out, ended = run(mod, [client_frame(0x1, "é".encode()[:1], fin=False) + client_frame(0x9, b"mid")
                               + client_frame(0x0, "é".encode()[1:])])
    assert fed[1:] == [("message", "é".encode())]
    assert server_frames(out) == [(0xA, b"mid")]
    many = client_frame(0x1, b"", fin=False) + client_frame(0x0, b"", fin=False) * (mod.MAX_FRAGMENTS + 5)
    fed, out, ended = run(mod, [many])
    assert close_code(server_frames(out)) == 1009


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "sent, wire, reported",
    [(b"", 1000, 1005), ((1000).to_bytes(2, "big"), 1000, 1000), ((4000).to_bytes(2, "big") + b"bye", 4000, 4000),
     ((1006).to_bytes(2, "big"), 1000, 1006), ((1001).to_bytes(2, "big"), 1001, 1001)],
)
def test_the_peers_close_is_echoed_and_reported(kind: str, sent: bytes, wire: int, reported: int) -> None:
    mod = _module(kind)
    fed, out, ended = run(mod, [client_frame(0x8, sent) + client_frame(0x1, b"after")])
    assert server_frames(out) == [(0x8, wire.to_bytes(2, "big"))]
    assert ended == "close"
    assert fed[-1][:2] == ("closed", reported)
    assert ("message", b"after") not in fed


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_is_written_after_the_close_frame(kind: str) -> None:
    mod = _module(kind)
    ws, transport, router = start(mod)
    ws.close(4200, "bye")
    ws(mod.frame(0x1, b"late"))
    ws.send("late")
    ws.close(4200, "again")
    assert server_frames(bytes(transport.out)) == [(0x8, (4200).to_bytes(2, "big") + b"bye")]


@pytest.mark.parametrize("kind", KINDS)
def test_a_peer_that_does_not_read_is_aborted_with_4100(kind: str) -> None:
    mod = _module(kind)
    ws, transport, router = start(mod, buffered=mod.MAX_WRITE_BUFFER + 1)
    ws(mod.frame(0x1, b"x"))
    assert transport.ended == "abort"
    frames = server_frames(bytes(transport.out))
    assert close_code(frames) == 4100
    # a ping flood from a non-reader meets the same bound
    ws, transport, router = start(mod, buffered=mod.MAX_WRITE_BUFFER + 1)
    ws.data_received(client_frame(0x9, b"p"))
    assert transport.ended == "abort"


@pytest.mark.parametrize("kind", KINDS)
def test_server_frames_have_the_shortest_length(kind: str) -> None:
    mod = _module(kind)
    for n in (0, 125, 126, 65535, 65536):
        data = mod.frame(0x2, b"z" * n)
        assert server_frames(data) == [(0x2, b"z" * n)]
        assert len(data) - n == (2 if n < 126 else 4 if n < 65536 else 10)
        assert data[0] == 0x82


# ------------------------------------------------------------------ any split, both twins agree

_frame = st.one_of(
    st.builds(lambda p: client_frame(0x1, p), st.binary(max_size=300).filter(lambda b: b.isascii())),
    st.builds(lambda p: client_frame(0x2, p.encode()), st.text(max_size=80)),
    st.builds(lambda p: client_frame(0x9, p), st.binary(max_size=125)),
    st.builds(lambda p: client_frame(0xA, p), st.binary(max_size=125)),
    st.builds(lambda a, b: client_frame(0x1, a, fin=False) + client_frame(0x0, b),
              st.binary(max_size=50).filter(lambda b: b.isascii()), st.binary(max_size=50).filter(lambda b: b.isascii())),
    st.just(client_frame(0x1, b"x" * 2000)),  # too big: 1009
    st.just(client_frame(0x1, b"\xfe")),  # 1007
    st.just(client_frame(0x8, (1000).to_bytes(2, "big"))),
)


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(_frame, min_size=1, max_size=6), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8))
def test_any_split_of_the_same_bytes_gives_the_same_result_in_both_twins(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(frames)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = run(importlib.import_module("soketi_impl.twins._ws_py"), [data])
    assert run(importlib.import_module("soketi_impl.twins._ws_py"), chunks) == whole
    if os.environ.get("SOKETI_IMPL_NO_EXTENSIONS", "") in ("", "0", "false"):
        c = importlib.import_module("soketi_impl.twins._ws_c")
        assert run(c, chunks) == whole
        assert run(c, [data[i:i + 1] for i in range(len(data))]) == whole  # one byte at a time
