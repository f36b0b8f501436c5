"""Fan-out, pure-Python twin (the reference and the test oracle of ``_fanout_c``).

Four pieces, all without sockets of their own:

- :class:`Stats`: the per-app counters that the metrics layer reads.
- :func:`frame_text`: one server-to-client WebSocket text frame (RFC 6455, unmasked).
- :class:`Sink`: one connection's outbound path. Messages queued during one loop
  iteration are coalesced and leave in a single ``write()`` (or, for framework
  transports, one ``send()`` per message) when the :class:`Outbox` flushes.
- :class:`ChannelTable`: channel membership and broadcast. A broadcast frames the
  payload once; every recipient gets the very same bytes object.

Why coalescing: one uncoalesced delivery costs about 8 µs of kernel time on
loopback, whatever language the loop is written in (measured: see bench/README.md);
the number of syscalls is what counts.

Example::

    outbox = Outbox(loop)
    stats = Stats()
    table = ChannelTable(stats)
    sink = Sink(outbox, stats, write=transport.write)
    table.add("news", sink)
    table.broadcast("news", b'{"event":"x"}')   # written at the end of this iteration
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["ChannelTable", "Outbox", "Sink", "Stats", "frame_text"]

#: Names of the :class:`Stats` counters, in :meth:`Stats.snapshot` order.
COUNTERS: tuple[str, ...] = (
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
)


class Stats:
    """Per-app counters: plain integer attributes, readable and writable.

    ``connected`` is a gauge the caller keeps; the others only grow. Sinks and
    channel tables bump the ``ws_*_sent``, ``deliveries`` and ``broadcasts``
    counters themselves; the rest are the caller's.
    """

    __slots__ = COUNTERS

    def __init__(self) -> None:
        self.ws_messages_sent: int = 0
        self.ws_bytes_sent: int = 0
        self.ws_messages_received: int = 0
        self.ws_bytes_received: int = 0
        self.http_calls: int = 0
        self.http_bytes_received: int = 0
        self.http_bytes_sent: int = 0
        self.new_connections: int = 0
        self.disconnections: int = 0
        self.connected: int = 0
        self.deliveries: int = 0
        self.broadcasts: int = 0

    def snapshot(self) -> dict[str, int]:
        """Every counter by name (a new dict)."""
        return {name: getattr(self, name) for name in COUNTERS}

    def __repr__(self) -> str:
        return f"Stats({', '.join(f'{k}={v}' for k, v in self.snapshot().items())})"


def frame_text(payload: bytes) -> bytes:
    """One server-to-client WebSocket frame: FIN + text opcode, unmasked, minimal length.

    >>> frame_text(b"hi")
    b'\\x81\\x02hi'
    """
    if type(payload) is not bytes:
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Outbox:
    """Flushes dirty sinks once per loop iteration; one per event loop.

    The first sink that gets something to send in an iteration schedules one
    ``loop.call_soon(self.flush)``; later ones only join the dirty list. Any object
    with a ``call_soon`` method will do as ``loop`` (tests use a stub).
    """

    __slots__ = ("_dirty", "_loop", "_scheduled", "errors")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Sink] = []
        self._scheduled = False
        #: Exceptions swallowed from sinks' write/send/buffer_size/on_overflow
        #: (each one closed its sink). Counted, never logged per message.
        self.errors: int = 0

    @property
    def dirty_count(self) -> int:
        """How many sinks wait for the next flush."""
        return len(self._dirty)

    def _schedule(self) -> None:
        self._loop.call_soon(self.flush)
        # Set only after call_soon succeeded, so a failed schedule is retried.
        self._scheduled = True

    def flush(self) -> None:
        """Write every dirty sink once; called by the loop, also callable directly."""
        self._scheduled = False
        batch = self._dirty
        if not batch:
            return
        # A fresh list: sinks dirtied while this batch is written (a write callback
        # that pushes again) go to the next flush instead of being lost.
        self._dirty = []
        i = 0
        n = len(batch)
        try:
            while i < n:
                sink = batch[i]
                i += 1
                sink._flush()
        finally:
            # Only reached with i < n when a BaseException escaped a sink: keep the
            # rest of the batch for the next flush rather than dropping it.
            while i < n:
                sink = batch[i]
                i += 1
                sink._dirty = False
                sink._mark_dirty()


class Sink:
    """One connection's outbound path.

    Give ``write`` (raw transport write of framed bytes; all frames of one loop
    iteration are coalesced into one call) or ``send`` (framework path: called once
    per message payload, unframed, in order). ``buffer_size()`` is checked after each
    flush: above ``max_buffer``, the sink is marked closed and ``on_overflow(sink)``
    is called once (the caller closes the connection with 4100).
    """

    __slots__ = (
        "_buffer_size",
        "_dirty",
        "_nbytes",
        "_on_overflow",
        "_outbox",
        "_pending",
        "_send",
        "_stats",
        "_write",
        "closed",
        "max_buffer",
        "owner",
    )

    def __init__(
        self,
        outbox: Outbox,
        stats: Stats,
        write: Callable[[bytes], Any] | None = None,
        send: Callable[[bytes], Any] | None = None,
        buffer_size: Callable[[], int] | None = None,
        on_overflow: Callable[[Sink], Any] | None = None,
        max_buffer: int = 4 * 1024 * 1024,
    ) -> None:
        if not isinstance(outbox, Outbox):
            raise TypeError("outbox must be an Outbox")
        if not isinstance(stats, Stats):
            raise TypeError("stats must be a Stats")
        if write is None and send is None:
            raise TypeError("Sink needs write or send")
        self._outbox = outbox
        self._stats = stats
        self._write = write
        self._send = None if write is not None else send
        self._buffer_size = buffer_size
        self._on_overflow = on_overflow
        self.max_buffer: int = max_buffer
        #: Free for the caller (its per-connection state).
        self.owner: Any = None
        #: Closed sinks receive nothing; settable.
        self.closed: bool = False
        self._dirty = False
        # write mode: None, the one pending frame (bytes, shared with other sinks),
        # or a bytearray once a second frame arrives. send mode: None or a list.
        self._pending: bytes | bytearray | list[bytes] | None = None
        self._nbytes = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet written (framed bytes in write mode)."""
        return self._nbytes

    def _mark_dirty(self) -> None:
        self._dirty = True
        outbox = self._outbox
        outbox._dirty.append(self)
        if not outbox._scheduled:
            outbox._schedule()

    def _queue(self, data: bytes) -> None:
        """Queue framed bytes (write mode) or a payload (send mode); caller counts."""
        pending = self._pending
        if pending is None:
            # The common case: one frame per iteration, kept as the shared object.
            self._pending = [data] if self._write is None else data
        elif isinstance(pending, list):
            pending.append(data)
        elif isinstance(pending, bytearray):
            pending += data
        else:
            self._pending = bytearray(pending) + data
        self._nbytes += len(data)
        if not self._dirty:
            self._mark_dirty()

    def push(self, payload: bytes) -> None:
        """Queue one message; it leaves after anything queued before it (broadcasts too)."""
        if type(payload) is not bytes:
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if self.closed:
            return
        data = frame_text(payload) if self._write is not None else payload
        self._queue(data)
        stats = self._stats
        stats.ws_messages_sent += 1
        stats.ws_bytes_sent += len(data)

    def close(self) -> None:
        """Mark closed and drop anything pending."""
        self.closed = True
        self._pending = None
        self._nbytes = 0

    def _fail(self) -> None:
        self._outbox.errors += 1
        self.close()

    def _flush(self) -> None:
        self._dirty = False
        pending = self._pending
        # Reset first: a write callback may push again (re-entrancy).
        self._pending = None
        self._nbytes = 0
        if self.closed or pending is None:
            return
        if isinstance(pending, list):
            send = self._send
            assert send is not None
            for payload in pending:
                if self.closed:
                    return
                try:
                    send(payload)
                except Exception:
                    self._fail()
                    return
        else:
            write = self._write
            assert write is not None
            try:
                write(pending if type(pending) is bytes else bytes(pending))
            except Exception:
                self._fail()
                return
        if self._buffer_size is not None and not self.closed:
            try:
                over = self._buffer_size() > self.max_buffer
            except Exception:
                self._fail()
                return
            if over:
                self.close()
                if self._on_overflow is not None:
                    try:
                        self._on_overflow(self)
                    except Exception:
                        self._outbox.errors += 1

    def __repr__(self) -> str:
        mode = "write" if self._write is not None else "send"
        return f"<Sink {mode} closed={self.closed} pending={self._nbytes}>"


class ChannelTable:
    """Channel name -> its sinks, in insertion order; broadcast frames once.

    A channel with one sink maps to that sink (no container: most channels of
    most applications have one subscriber); from the second sink on, to a dict
    used as an ordered set (O(1) add/remove, fast iteration). A channel that
    loses its last sink is deleted.
    """

    __slots__ = ("_channels", "_stats")

    def __init__(self, stats: Stats) -> None:
        if not isinstance(stats, Stats):
            raise TypeError("stats must be a Stats")
        self._channels: dict[str, Sink | dict[Sink, None]] = {}
        self._stats = stats

    def add(self, channel: str, sink: Sink) -> bool:
        """Add ``sink`` to ``channel``; True if it was not there yet."""
        if type(channel) is not str or not isinstance(sink, Sink):
            raise TypeError("add(channel: str, sink: Sink)")
        members = self._channels.get(channel)
        if members is None:
            self._channels[channel] = sink
            return True
        if isinstance(members, Sink):
            if members is sink:
                return False
            self._channels[channel] = {members: None, sink: None}
            return True
        if sink in members:
            return False
        members[sink] = None
        return True

    def remove(self, channel: str, sink: Sink) -> bool:
        """Remove ``sink`` from ``channel``; True if it was there."""
        if type(channel) is not str or not isinstance(sink, Sink):
            raise TypeError("remove(channel: str, sink: Sink)")
        members = self._channels.get(channel)
        if isinstance(members, Sink):
            if members is not sink:
                return False
            del self._channels[channel]
            return True
        if members is None or sink not in members:
            return False
        del members[sink]
        if not members:
            del self._channels[channel]
        return True

    def count(self, channel: str) -> int:
        """Number of sinks in ``channel`` (closed ones included)."""
        members = self._channels.get(channel)
        if members is None:
            return 0
        return 1 if isinstance(members, Sink) else len(members)

    def sinks(self, channel: str) -> list[Sink]:
        """The sinks of ``channel``, in the order they were added."""
        members = self._channels.get(channel)
        if members is None:
            return []
        return [members] if isinstance(members, Sink) else list(members)

    def channels(self) -> list[str]:
        """Names of the non-empty channels."""
        return list(self._channels)

    def __contains__(self, channel: object) -> bool:
        return channel in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def broadcast(self, channel: str, payload: bytes, exclude: Sink | None = None) -> int:
        """Queue ``payload`` to every open sink of ``channel`` but ``exclude``.

        The frame is built once and shared. Returns the number of recipients.
        """
        if type(channel) is not str:
            raise TypeError("channel must be a str")
        if type(payload) is not bytes:
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if exclude is not None and not isinstance(exclude, Sink):
            raise TypeError("exclude must be a Sink or None")
        stats = self._stats
        stats.broadcasts += 1
        members = self._channels.get(channel)
        if members is None:
            return 0
        group: tuple[Sink] | dict[Sink, None] = (members,) if isinstance(members, Sink) else members
        frame: bytes | None = None
        n = 0
        nbytes = 0
        for sink in group:
            if sink is exclude or sink.closed:
                continue
            if sink._write is not None:
                if frame is None:
                    frame = frame_text(payload)
                sink._queue(frame)
                nbytes += len(frame)
            else:
                sink._queue(payload)
                nbytes += len(payload)
            n += 1
        stats.deliveries += n
        stats.ws_messages_sent += n
        stats.ws_bytes_sent += nbytes
        return n
