"""Tests of the fan-out twins (``_fanout_py`` and ``_fanout_c``): framing, coalescing,
ordering, backpressure, error isolation, stats, membership, and a hypothesis state
machine that drives both twins with the same operations and compares what they do."""

from __future__ import annotations

import asyncio
import importlib
import struct
import sys
from collections.abc import Callable, Generator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from soketi_impl.twins import _fanout, _fanout_py, _speedups

Twin = Callable[[str], ModuleType]


class StubLoop:
    """Records call_soon callbacks; ``run()`` plays them, like one loop iteration."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], Any]] = []
        self.scheduled = 0

    def call_soon(self, cb: Callable[[], Any]) -> None:
        self.scheduled += 1
        self.calls.append(cb)

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for cb in calls:
            cb()


class Recorder:
    """An in-memory transport: every write() call is one item of ``writes``."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        assert type(data) is bytes
        self.writes.append(data)


def ref_frame(payload: bytes) -> bytes:
    """RFC 6455 section 5.2, written out by hand: FIN=1, opcode 1, MASK=0."""
    n = len(payload)
    if n <= 125:
        head = struct.pack("!BB", 0x81, n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


def _run(gen: Generator[None, None, Any]) -> Any:
    """Drive a websockets sans-I/O generator whose data was all fed already."""
    try:
        next(gen)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("truncated frame")  # pragma: no cover


def parse_frames(data: bytes) -> list[Frame]:
    """Parse server-to-client frames with the websockets library's own parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames: list[Frame] = []
    while not _run(reader.at_eof()):
        frames.append(_run(Frame.parse(reader.read_exact, mask=False, max_size=None)))
    return frames


class Env:
    """One twin's objects wired to a stub loop."""

    def __init__(self, mod: ModuleType) -> None:
        self.mod = mod
        self.loop = StubLoop()
        self.outbox = mod.Outbox(self.loop)
        self.stats = mod.Stats()
        self.table = mod.ChannelTable(self.stats)

    def sink(self, **kw: Any) -> tuple[Any, Recorder]:
        rec = Recorder()
        if "send" not in kw and "write" not in kw:
            kw["write"] = rec.write
        return self.mod.Sink(self.outbox, self.stats, **kw), rec


@pytest.fixture
def fan(twin: Twin) -> ModuleType:
    return twin("fanout")


@pytest.fixture
def env(fan: ModuleType) -> Env:
    return Env(fan)


# --- framing -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_text_lengths(fan: ModuleType, n: int) -> None:
    payload = bytes(i % 251 for i in range(n))
    frame = fan.frame_text(payload)
    assert type(frame) is bytes
    assert frame == ref_frame(payload)
    (parsed,) = parse_frames(frame)
    assert parsed.fin and parsed.opcode is Opcode.TEXT and parsed.data == payload
    assert not (parsed.rsv1 or parsed.rsv2 or parsed.rsv3)


@pytest.mark.parametrize("bad", [None, "text", bytearray(b"x"), memoryview(b"x")])
def test_frame_text_rejects_non_bytes(fan: ModuleType, bad: Any) -> None:
    with pytest.raises(TypeError):
        fan.frame_text(bad)


# --- coalescing, ordering -------------------------------------------------------------


async def test_coalescing_one_write_per_iteration(fan: ModuleType) -> None:
    loop = asyncio.get_running_loop()
    outbox = fan.Outbox(loop)
    stats = fan.Stats()
    table = fan.ChannelTable(stats)
    writes: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def write(data: bytes) -> None:
        writes.append(data)
        if not done.done():
            done.set_result(None)

    sink = fan.Sink(outbox, stats, write=write)
    table.add("ch", sink)
    assert table.broadcast("ch", b"one") == 1
    assert table.broadcast("ch", b"two") == 1
    sink.push(b"three")
    assert writes == []  # nothing leaves before the loop turns
    assert sink.pending_bytes == 3 * 2 + len(b"onetwothree")
    await asyncio.wait_for(done, 5)
    assert writes == [ref_frame(b"one") + ref_frame(b"two") + ref_frame(b"three")]
    assert [f.data for f in parse_frames(writes[0])] == [b"one", b"two", b"three"]
    assert sink.pending_bytes == 0


async def test_next_iteration_is_a_new_write(fan: ModuleType) -> None:
    loop = asyncio.get_running_loop()
    outbox = fan.Outbox(loop)
    stats = fan.Stats()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    sink = fan.Sink(outbox, stats, write=got.put_nowait)
    sink.push(b"a")
    assert await asyncio.wait_for(got.get(), 5) == ref_frame(b"a")
    sink.push(b"b")
    sink.push(b"c")
    assert await asyncio.wait_for(got.get(), 5) == ref_frame(b"b") + ref_frame(b"c")
    assert got.empty()


def test_one_call_soon_per_iteration_for_many_sinks(env: Env) -> None:
    sinks = [env.sink() for _ in range(5)]
    for s, _ in sinks:
        env.table.add("x", s)
        env.table.add("y", s)
    env.table.broadcast("x", b"1")
    env.table.broadcast("y", b"2")
    sinks[0][0].push(b"3")
    assert env.loop.scheduled == 1
    assert env.outbox.dirty_count == 5
    env.loop.run()
    assert env.outbox.dirty_count == 0
    for i, (_, rec) in enumerate(sinks):
        tail = ref_frame(b"3") if i == 0 else b""
        assert rec.writes == [ref_frame(b"1") + ref_frame(b"2") + tail]
    env.table.broadcast("x", b"4")
    assert env.loop.scheduled == 2


def test_ordering_push_and_broadcast_interleaved(env: Env) -> None:
    s, rec = env.sink()
    env.table.add("c", s)
    msgs = []
    for i in range(50):
        m = f"m{i}".encode()
        msgs.append(m)
        if i % 3:
            env.table.broadcast("c", m)
        else:
            s.push(m)
    env.loop.run()
    assert len(rec.writes) == 1
    assert [f.data for f in parse_frames(rec.writes[0])] == msgs


def test_broadcast_shares_one_frame_object(env: Env) -> None:
    (a, ra), (b, rb) = env.sink(), env.sink()
    env.table.add("c", a)
    env.table.add("c", b)
    env.table.broadcast("c", b"payload")
    env.outbox.flush()
    assert ra.writes == rb.writes == [ref_frame(b"payload")]
    # framed once: every recipient got the very same bytes object
    assert ra.writes[0] is rb.writes[0]


def test_large_coalesced_buffer(env: Env) -> None:
    s, rec = env.sink()
    payloads = [bytes([65 + i % 26]) * (i * 97) for i in range(60)] + [b"z" * 70000]
    for p in payloads:
        s.push(p)
    env.outbox.flush()
    assert rec.writes == [b"".join(ref_frame(p) for p in payloads)]
    assert s.pending_bytes == 0
    # the sink is reusable after its buffer was released
    s.push(b"again")
    s.push(b"!")
    env.outbox.flush()
    assert rec.writes[1] == ref_frame(b"again") + ref_frame(b"!")


def test_flush_with_nothing_dirty_is_harmless(env: Env) -> None:
    env.outbox.flush()
    s, rec = env.sink()
    s.push(b"x")
    env.outbox.flush()
    env.outbox.flush()
    env.loop.run()  # the scheduled flush finds nothing left
    assert rec.writes == [ref_frame(b"x")]


def test_write_callback_that_pushes_goes_to_next_flush(env: Env) -> None:
    writes: list[bytes] = []
    holder: list[Any] = []

    def write(data: bytes) -> None:
        writes.append(data)
        if len(writes) == 1:
            holder[0].push(b"again")

    s = env.mod.Sink(env.outbox, env.stats, write=write)
    holder.append(s)
    s.push(b"first")
    env.loop.run()
    assert writes == [ref_frame(b"first")]
    assert env.outbox.dirty_count == 1
    env.loop.run()
    assert writes == [ref_frame(b"first"), ref_frame(b"again")]


# --- exclude, closed ------------------------------------------------------------------


def test_exclude(env: Env) -> None:
    (a, ra), (b, rb), (c, rc) = env.sink(), env.sink(), env.sink()
    for s in (a, b, c):
        env.table.add("c", s)
    assert env.table.broadcast("c", b"hi", exclude=b) == 2
    assert env.table.broadcast("c", b"all", None) == 3
    env.outbox.flush()
    assert ra.writes == rc.writes == [ref_frame(b"hi") + ref_frame(b"all")]
    assert rb.writes == [ref_frame(b"all")]
    # a sink that is not a member as exclude changes nothing
    other, _ = env.sink()
    assert env.table.broadcast("c", b"x", exclude=other) == 3


def test_closed_sinks_receive_nothing(env: Env) -> None:
    (a, ra), (b, rb) = env.sink(), env.sink()
    env.table.add("c", a)
    env.table.add("c", b)
    b.close()
    assert b.closed
    assert env.table.broadcast("c", b"x") == 1
    b.push(b"y")  # ignored, not counted
    assert b.pending_bytes == 0
    env.outbox.flush()
    assert ra.writes == [ref_frame(b"x")]
    assert rb.writes == []
    assert env.stats.ws_messages_sent == 1
    assert env.table.count("c") == 2  # membership is the caller's business


def test_close_drops_pending(env: Env) -> None:
    s, rec = env.sink()
    s.push(b"a")
    s.push(b"b")
    s.close()
    assert s.pending_bytes == 0
    env.outbox.flush()
    assert rec.writes == []


def test_closed_attribute_is_settable(env: Env) -> None:
    s, rec = env.sink()
    env.table.add("c", s)
    env.table.broadcast("c", b"queued")
    s.closed = True  # set while something is pending: flush skips it
    env.outbox.flush()
    assert rec.writes == []
    assert env.table.broadcast("c", b"skip") == 0
    s.closed = False
    assert env.table.broadcast("c", b"back") == 1
    env.outbox.flush()
    assert rec.writes == [ref_frame(b"back")]


def test_owner_and_max_buffer_attributes(env: Env) -> None:
    s, _ = env.sink()
    assert s.owner is None
    marker = object()
    s.owner = marker
    assert s.owner is marker
    assert s.max_buffer == 4 * 1024 * 1024
    s.max_buffer = 10
    assert s.max_buffer == 10
    assert s.closed is False


# --- send mode ------------------------------------------------------------------------


def test_send_mode_once_per_message_unframed(env: Env) -> None:
    sent: list[bytes] = []
    s = env.mod.Sink(env.outbox, env.stats, send=sent.append)
    env.table.add("c", s)
    env.table.broadcast("c", b"one")
    s.push(b"two")
    env.table.broadcast("c", b"")
    assert s.pending_bytes == 6
    env.loop.run()
    assert sent == [b"one", b"two", b""]
    assert env.stats.ws_bytes_sent == 6


def test_write_wins_over_send(env: Env) -> None:
    sent: list[bytes] = []
    rec = Recorder()
    s = env.mod.Sink(env.outbox, env.stats, write=rec.write, send=sent.append)
    s.push(b"x")
    env.outbox.flush()
    assert rec.writes == [ref_frame(b"x")] and sent == []


def test_mixed_modes_in_one_channel(env: Env) -> None:
    sent: list[bytes] = []
    w, rec = env.sink()
    s = env.mod.Sink(env.outbox, env.stats, send=sent.append)
    env.table.add("c", w)
    env.table.add("c", s)
    assert env.table.broadcast("c", b"abc") == 2
    env.outbox.flush()
    assert rec.writes == [ref_frame(b"abc")] and sent == [b"abc"]
    assert env.stats.ws_bytes_sent == len(ref_frame(b"abc")) + 3


def test_sink_needs_write_or_send(fan: ModuleType) -> None:
    ob = fan.Outbox(StubLoop())
    with pytest.raises(TypeError):
        fan.Sink(ob, fan.Stats())
    with pytest.raises(TypeError):
        fan.Sink(None, fan.Stats(), write=print)
    with pytest.raises(TypeError):
        fan.Sink(ob, None, write=print)


@pytest.mark.parametrize("bad", [None, "text", bytearray(b"x")])
def test_payload_must_be_bytes(env: Env, bad: Any) -> None:
    s, _ = env.sink()
    env.table.add("c", s)
    with pytest.raises(TypeError):
        s.push(bad)
    with pytest.raises(TypeError):
        env.table.broadcast("c", bad)
    with pytest.raises(TypeError):
        env.table.add(None, s)
    with pytest.raises(TypeError):
        env.table.add("c", None)


# --- backpressure, errors -------------------------------------------------------------


def test_backpressure_overflow_once(env: Env) -> None:
    size = [0]
    overflowed: list[Any] = []
    s, rec = env.sink(buffer_size=lambda: size[0], on_overflow=overflowed.append, max_buffer=100)
    env.table.add("c", s)
    env.table.broadcast("c", b"x")
    env.outbox.flush()
    assert rec.writes and overflowed == [] and not s.closed  # 0 <= 100
    size[0] = 100
    env.table.broadcast("c", b"x")
    env.outbox.flush()
    assert overflowed == [] and not s.closed  # at the limit is still fine
    size[0] = 101
    env.table.broadcast("c", b"y")
    env.outbox.flush()
    assert overflowed == [s]
    assert s.closed
    assert env.table.broadcast("c", b"z") == 0
    s.push(b"z")
    env.outbox.flush()
    assert overflowed == [s]
    assert len(rec.writes) == 3


def test_backpressure_in_send_mode(env: Env) -> None:
    overflowed: list[Any] = []
    s = env.mod.Sink(
        env.outbox,
        env.stats,
        send=lambda b: None,
        buffer_size=lambda: 10**9,
        on_overflow=overflowed.append,
    )
    s.push(b"x")
    env.outbox.flush()
    assert overflowed == [s] and s.closed


def test_overflow_without_callback_just_closes(env: Env) -> None:
    s, _ = env.sink(buffer_size=lambda: 5, max_buffer=1)
    s.push(b"x")
    env.outbox.flush()
    assert s.closed


def test_failing_write_does_not_stop_others(env: Env) -> None:
    def boom(data: bytes) -> None:
        raise RuntimeError("transport is closing")

    (a, ra), (c, rc) = env.sink(), env.sink()
    bad = env.mod.Sink(env.outbox, env.stats, write=boom)
    for s in (a, bad, c):
        env.table.add("c", s)
    assert env.table.broadcast("c", b"m") == 3
    env.loop.run()
    assert ra.writes == rc.writes == [ref_frame(b"m")]
    assert bad.closed
    assert env.outbox.errors == 1
    assert env.table.broadcast("c", b"n") == 2
    env.loop.run()
    assert env.outbox.errors == 1


def test_failing_send_stops_that_sink_only(env: Env) -> None:
    got: list[bytes] = []

    def send(data: bytes) -> None:
        if data == b"2":
            raise ConnectionResetError
        got.append(data)

    bad = env.mod.Sink(env.outbox, env.stats, send=send)
    ok, rec = env.sink()
    for p in (b"1", b"2", b"3"):
        bad.push(p)
        ok.push(p)
    env.outbox.flush()
    assert got == [b"1"] and bad.closed
    assert rec.writes == [ref_frame(b"1") + ref_frame(b"2") + ref_frame(b"3")]
    assert env.outbox.errors == 1


def test_failing_buffer_size_and_on_overflow_are_contained(env: Env) -> None:
    def raises() -> int:
        raise OSError

    def bad_cb(sink: Any) -> None:
        raise ValueError

    a, _ = env.sink(buffer_size=raises)
    b, _ = env.sink(buffer_size=lambda: 10, max_buffer=1, on_overflow=bad_cb)
    c, rc = env.sink()
    for s in (a, b, c):
        s.push(b"x")
    env.outbox.flush()
    assert a.closed and b.closed and not c.closed
    assert rc.writes == [ref_frame(b"x")]
    assert env.outbox.errors == 2


def test_close_during_send_stops_the_rest(env: Env) -> None:
    got: list[bytes] = []
    holder: list[Any] = []

    def send(data: bytes) -> None:
        got.append(data)
        holder[0].close()

    s = env.mod.Sink(env.outbox, env.stats, send=send)
    holder.append(s)
    s.push(b"a")
    s.push(b"b")
    env.outbox.flush()
    assert got == [b"a"]


class Fatal(BaseException):
    pass


def test_base_exception_keeps_the_rest_of_the_batch(env: Env) -> None:
    calls = [0]

    def fatal(data: bytes) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise Fatal

    a = env.mod.Sink(env.outbox, env.stats, write=fatal)
    b, rb = env.sink()
    a.push(b"1")
    b.push(b"2")
    with pytest.raises(Fatal):
        env.outbox.flush()
    assert env.outbox.dirty_count == 1
    env.outbox.flush()
    assert rb.writes == [ref_frame(b"2")]


def test_failed_schedule_is_retried(fan: ModuleType) -> None:
    class Closed:
        def __init__(self) -> None:
            self.fail = True
            self.calls: list[Any] = []

        def call_soon(self, cb: Any) -> None:
            if self.fail:
                raise RuntimeError("Event loop is closed")
            self.calls.append(cb)

    loop = Closed()
    ob = fan.Outbox(loop)
    rec = Recorder()
    s = fan.Sink(ob, fan.Stats(), write=rec.write)
    with pytest.raises(RuntimeError):
        s.push(b"a")
    loop.fail = False
    t = fan.Sink(ob, fan.Stats(), write=Recorder().write)
    t.push(b"b")
    assert len(loop.calls) == 1
    loop.calls[0]()
    assert rec.writes == [ref_frame(b"a")]


# --- stats ---------------------------------------------------------------------------


def test_stats_fields_and_snapshot(fan: ModuleType) -> None:
    names = [
        "ws_messages_sent",
        "ws_bytes_sent",
        "ws_messages_received",
        "ws_bytes_received",
        "http_calls",
        "http_bytes_received",
        "http_bytes_sent",
        "new_connections",
        "disconnections",
        "connected",
        "deliveries",
        "broadcasts",
    ]
    s = fan.Stats()
    assert s.snapshot() == dict.fromkeys(names, 0)
    assert list(s.snapshot()) == names
    for i, name in enumerate(names):
        setattr(s, name, i + 1)
        assert getattr(s, name) == i + 1
    s.connected -= 5
    snap = s.snapshot()
    assert snap["connected"] == 5 and snap["broadcasts"] == 12
    big = 2**62
    s.ws_bytes_sent = big
    assert s.ws_bytes_sent == big
    assert "ws_bytes_sent=" in repr(s)


def test_stats_counting(env: Env) -> None:
    (a, _), (b, _) = env.sink(), env.sink()
    sent: list[bytes] = []
    c = env.mod.Sink(env.outbox, env.stats, send=sent.append)
    for s in (a, b, c):
        env.table.add("c", s)
    payload = b"p" * 200  # 4-byte header
    assert env.table.broadcast("c", payload, exclude=a) == 2
    assert env.table.broadcast("nobody", payload) == 0
    a.push(b"q")
    snap = env.stats.snapshot()
    assert snap["broadcasts"] == 2
    assert snap["deliveries"] == 2
    assert snap["ws_messages_sent"] == 3
    assert snap["ws_bytes_sent"] == (4 + 200) + 200 + (2 + 1)
    assert snap["ws_messages_received"] == 0 and snap["http_calls"] == 0


# --- membership -----------------------------------------------------------------------


def test_membership_semantics(env: Env) -> None:
    t = env.table
    (a, _), (b, _) = env.sink(), env.sink()
    assert len(t) == 0 and t.channels() == [] and "x" not in t
    assert t.count("x") == 0 and t.sinks("x") == []
    assert t.add("x", a) is True
    assert t.add("x", a) is False
    assert t.add("x", b) is True
    assert t.add("y", b) is True
    assert t.count("x") == 2 and t.sinks("x") == [a, b]
    assert t.channels() == ["x", "y"] and len(t) == 2
    assert "x" in t and "y" in t and "z" not in t and 5 not in t
    assert t.remove("x", a) is True
    assert t.remove("x", a) is False
    assert t.remove("z", a) is False
    assert t.sinks("x") == [b]
    assert t.remove("x", b) is True
    assert "x" not in t and t.channels() == ["y"] and len(t) == 1  # emptied -> deleted
    assert t.count("x") == 0
    assert t.add("x", a) is True  # and can come back
    assert t.channels() == ["y", "x"]
    assert t.broadcast("x", b"m") == 1


def test_one_member_channel(env: Env) -> None:
    """A channel with one sink keeps no container: the same answers, exclude and closed too."""
    t = env.table
    (a, ra), (b, _) = env.sink(), env.sink()
    assert t.add("solo", a) is True and t.add("solo", a) is False
    assert t.count("solo") == 1 and t.sinks("solo") == [a] and "solo" in t
    assert t.remove("solo", b) is False and t.count("solo") == 1  # not a member
    assert t.broadcast("solo", b"x", exclude=a) == 0
    assert t.broadcast("solo", b"y", exclude=b) == 1
    env.outbox.flush()
    assert ra.writes == [ref_frame(b"y")]
    assert env.stats.ws_messages_sent == 1 and env.stats.ws_bytes_sent == len(ref_frame(b"y"))
    a.close()
    assert t.broadcast("solo", b"z") == 0
    assert t.remove("solo", a) is True and "solo" not in t and t.sinks("solo") == []
    assert t.remove("solo", a) is False


def test_many_members(env: Env) -> None:
    sinks = [env.sink()[0] for _ in range(2000)]
    for s in sinks:
        env.table.add("big", s)
    for s in sinks[::2]:
        env.table.remove("big", s)
    assert env.table.count("big") == 1000
    assert env.table.sinks("big") == sinks[1::2]
    assert env.table.broadcast("big", b"x") == 1000


def test_idle_sink_is_small(env: Env) -> None:
    s, _ = env.sink()
    assert sys.getsizeof(s) < 200
    s.push(b"x" * 10000)
    s.push(b"y" * 10000)
    env.outbox.flush()
    assert s.pending_bytes == 0
    assert sys.getsizeof(s) < 200


def test_dispatcher_exports() -> None:
    names = {"ChannelTable", "Outbox", "Sink", "Stats", "frame_text"}
    assert set(_fanout.__all__) == names
    expected = "py" if _speedups.NO_EXTENSIONS else "c"
    for name in names:
        assert getattr(_fanout, name).__module__ == f"soketi_impl.twins._fanout_{expected}"


# --- a real socket ----------------------------------------------------------------------


async def test_over_a_real_socket(fan: ModuleType) -> None:
    """Coalesced frames through a real loopback transport, parsed by websockets."""
    loop = asyncio.get_running_loop()
    outbox = fan.Outbox(loop)
    stats = fan.Stats()
    table = fan.ChannelTable(stats)
    ready: asyncio.Future[Any] = loop.create_future()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            sink = fan.Sink(
                outbox,
                stats,
                write=transport.write,
                buffer_size=transport.get_write_buffer_size,
            )
            table.add("room", sink)
            ready.set_result(transport)

    server = await loop.create_server(Proto, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        transport = await asyncio.wait_for(ready, 5)
        payloads = [b"a" * 10, b"b" * 300, b"c" * 70000]
        for p in payloads:
            table.broadcast("room", p)
        expected = b"".join(ref_frame(p) for p in payloads)
        data = await asyncio.wait_for(reader.readexactly(len(expected)), 5)
        assert [f.data for f in parse_frames(data)] == payloads
        writer.close()
        transport.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_through_picows_to_a_websockets_client(fan: ModuleType) -> None:
    """The production wiring: picows's underlying transport as ``write``; a real
    WebSocket client (websockets) must read every coalesced frame as one message."""
    import picows
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    outbox = fan.Outbox(loop)
    stats = fan.Stats()
    table = fan.ChannelTable(stats)
    joined: asyncio.Future[Any] = loop.create_future()

    class Listener(picows.WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: Any) -> None:
            raw = transport.underlying_transport
            sink = fan.Sink(outbox, stats, write=raw.write, buffer_size=raw.get_write_buffer_size)
            table.add("room", sink)
            joined.set_result(sink)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await picows.ws_create_server(
        lambda request: Listener(), "127.0.0.1", 0, use_aiofastnet=False
    )
    try:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None, open_timeout=5) as ws:
            sink = await asyncio.wait_for(joined, 5)
            messages = ["hello", "x" * 126, "y" * 65536]
            table.broadcast("room", messages[0].encode())
            sink.push(messages[1].encode())
            table.broadcast("room", messages[2].encode())
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in messages]
            assert got == messages
        assert stats.deliveries == 2 and stats.ws_messages_sent == 3
    finally:
        server.close()
        await server.wait_closed()


# --- both twins side by side --------------------------------------------------------------


def _c_module() -> ModuleType:
    if _speedups.NO_EXTENSIONS:
        pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
    return importlib.import_module("soketi_impl.twins._fanout_c")


CHANNELS = st.sampled_from(["a", "b", "private-c", "presence-d"])
PAYLOADS = st.binary(max_size=300) | st.sampled_from([b"x" * 126, b"y" * 65536])


class TwinMachine(RuleBasedStateMachine):
    """Drives the py and the c twins with the same operations; results must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.envs = [Env(_fanout_py), Env(self.c_mod)]
        self.sinks: list[list[Any]] = [[], []]
        self.out: list[list[list[Any]]] = [[], []]  # per env, per sink: writes/sends
        self.failing: list[bool] = []
        self.overflowed: list[list[int]] = [[], []]

    c_mod: ModuleType = _fanout_py  # replaced by the test

    def _both(self, fn: Callable[[int, Env], Any]) -> Any:
        results = [fn(i, e) for i, e in enumerate(self.envs)]
        assert results[0] == results[1]
        return results[0]

    @initialize()
    def start(self) -> None:
        for k in range(3):
            self.new_sink(mode="write", fails=False, limit=None)
            for i, e in enumerate(self.envs):
                e.table.add("a", self.sinks[i][k])

    @rule(
        mode=st.sampled_from(["write", "send"]),
        fails=st.booleans(),
        limit=st.none() | st.integers(0, 2000),
    )
    def new_sink(self, mode: str, fails: bool, limit: int | None) -> None:
        idx = len(self.failing)
        self.failing.append(fails)
        for i, e in enumerate(self.envs):
            out: list[Any] = []
            self.out[i].append(out)

            def cb(data: bytes, out: list[Any] = out) -> None:
                if self.failing[idx] and len(out) >= 1:
                    raise OSError("broken")
                out.append(data)

            kw: dict[str, Any] = {mode: cb}
            if limit is not None:
                kw["max_buffer"] = limit
                kw["buffer_size"] = lambda out=out: sum(len(d) for d in out)
                kw["on_overflow"] = lambda s, i=i, idx=idx: self.overflowed[i].append(idx)
            self.sinks[i].append(e.mod.Sink(e.outbox, e.stats, **kw))

    def _sink_index(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.failing) - 1))

    @rule(ch=CHANNELS, data=st.data())
    def add(self, ch: str, data: st.DataObject) -> None:
        k = self._sink_index(data)
        self._both(lambda i, e: e.table.add(ch, self.sinks[i][k]))

    @rule(ch=CHANNELS, data=st.data())
    def add_many(self, ch: str, data: st.DataObject) -> None:
        ks = data.draw(st.lists(st.integers(0, len(self.failing) - 1), max_size=6))
        for k in ks:
            self._both(lambda i, e, k=k: e.table.add(ch, self.sinks[i][k]))

    @rule(ch=CHANNELS, data=st.data())
    def remove(self, ch: str, data: st.DataObject) -> None:
        k = self._sink_index(data)
        self._both(lambda i, e: e.table.remove(ch, self.sinks[i][k]))

    @rule(ch=CHANNELS, payload=PAYLOADS, data=st.data(), excl=st.booleans())
    def broadcast(self, ch: str, payload: bytes, data: st.DataObject, excl: bool) -> None:
        members = self.envs[0].table.sinks(ch)
        if members and excl:  # mostly exclude a member, as a publisher's socket would be
            k = self.sinks[0].index(data.draw(st.sampled_from(members)))
        else:
            k = self._sink_index(data)
        self._both(lambda i, e: e.table.broadcast(ch, payload, self.sinks[i][k] if excl else None))

    @rule(payload=PAYLOADS, data=st.data())
    def push(self, payload: bytes, data: st.DataObject) -> None:
        k = self._sink_index(data)
        self._both(lambda i, e: self.sinks[i][k].push(payload))

    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        k = self._sink_index(data)
        self._both(lambda i, e: self.sinks[i][k].close())

    @rule(data=st.data(), value=st.booleans())
    def set_closed(self, data: st.DataObject, value: bool) -> None:
        k = self._sink_index(data)
        for i in range(2):
            self.sinks[i][k].closed = value

    @rule()
    def run_loop(self) -> None:
        for e in self.envs:
            e.loop.run()

    @invariant()
    def same_observables(self) -> None:
        if not hasattr(self, "envs"):
            return
        self._both(lambda i, e: e.stats.snapshot())
        self._both(lambda i, e: (e.outbox.errors, e.outbox.dirty_count, e.loop.scheduled))
        self._both(lambda i, e: (e.table.channels(), len(e.table)))
        self._both(
            lambda i, e: [
                [self.sinks[i].index(s) for s in e.table.sinks(ch)]
                for ch in ["a", "b", "private-c", "presence-d", "nope"]
            ]
        )
        self._both(lambda i, e: [(s.closed, s.pending_bytes) for s in self.sinks[i]])
        assert self.out[0] == self.out[1]
        assert self.overflowed[0] == self.overflowed[1]


def test_twins_agree_state_machine() -> None:
    TwinMachine.c_mod = _c_module()
    TwinMachine.TestCase.settings = settings(
        max_examples=100, stateful_step_count=40, deadline=None
    )
    TwinMachine.TestCase().runTest()
