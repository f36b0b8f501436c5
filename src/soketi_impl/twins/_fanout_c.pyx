# cython: language_level=3
"""Fan-out, compiled twin of ``_fanout_py`` (same names, same behaviour).

What is compiled here is the per-recipient work: a broadcast walks the channel's
dict with ``PyDict_Next`` in C and hands every sink the same frame object; the
flush walks the dirty list in C and makes one ``write()`` per sink. A sink with a
single pending frame writes that shared bytes object as is (no copy); only a
second frame in the same iteration makes it copy into a small C buffer, which is
freed after the write so that an idle sink holds no buffer at all.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.string cimport memcpy

__all__ = ["ChannelTable", "Outbox", "Sink", "Stats", "frame_text"]

#: Names of the :class:`Stats` counters, in :meth:`Stats.snapshot` order.
COUNTERS = (
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

cdef object _MISSING = object()

# First allocation of a sink's coalescing buffer: the largest pymalloc size.
cdef enum:
    _MIN_CAP = 512


cdef class Stats:
    """Per-app counters: ``long long`` attributes, readable and writable from Python.

    ``connected`` is a gauge the caller keeps; the others only grow. Sinks and
    channel tables bump the ``ws_*_sent``, ``deliveries`` and ``broadcasts``
    counters themselves; the rest are the caller's.
    """

    cpdef dict snapshot(self):
        """Every counter by name (a new dict)."""
        return {
            "ws_messages_sent": self.ws_messages_sent,
            "ws_bytes_sent": self.ws_bytes_sent,
            "ws_messages_received": self.ws_messages_received,
            "ws_bytes_received": self.ws_bytes_received,
            "http_calls": self.http_calls,
            "http_bytes_received": self.http_bytes_received,
            "http_bytes_sent": self.http_bytes_sent,
            "new_connections": self.new_connections,
            "disconnections": self.disconnections,
            "connected": self.connected,
            "deliveries": self.deliveries,
            "broadcasts": self.broadcasts,
        }

    def __repr__(self):
        return f"Stats({', '.join(f'{k}={v}' for k, v in self.snapshot().items())})"


cpdef bytes frame_text(bytes payload):
    """One server-to-client WebSocket frame: FIN + text opcode, unmasked, minimal length."""
    if payload is None:
        raise TypeError("payload must be bytes, not NoneType")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t hlen
    cdef int i
    if n < 126:
        hlen = 2
    elif n < 65536:
        hlen = 4
    else:
        hlen = 10
    cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen + n)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    cdef unsigned long long un = <unsigned long long>n
    p[0] = 0x81
    if hlen == 2:
        p[1] = <unsigned char>n
    elif hlen == 4:
        p[1] = 126
        p[2] = <unsigned char>((un >> 8) & 0xFF)
        p[3] = <unsigned char>(un & 0xFF)
    else:
        p[1] = 127
        for i in range(8):
            p[2 + i] = <unsigned char>((un >> (56 - 8 * i)) & 0xFF)
    memcpy(p + hlen, PyBytes_AS_STRING(payload), <size_t>n)
    return out


cdef class Outbox:
    """Flushes dirty sinks once per loop iteration; one per event loop.

    The first sink that gets something to send in an iteration schedules one
    ``loop.call_soon(self.flush)``; later ones only join the dirty list. Any object
    with a ``call_soon`` method will do as ``loop`` (tests use a stub).
    """

    def __init__(self, loop):
        self._loop = loop
        self._flush_cb = self.flush
        self._dirty = []
        self._scheduled = False
        self.errors = 0

    @property
    def dirty_count(self):
        """How many sinks wait for the next flush."""
        return len(self._dirty)

    cdef int _schedule(self) except -1:
        self._loop.call_soon(self._flush_cb)
        # Set only after call_soon succeeded, so a failed schedule is retried.
        self._scheduled = True
        return 0

    cpdef flush(self):
        """Write every dirty sink once; called by the loop, also callable directly."""
        cdef list batch = self._dirty
        cdef Py_ssize_t i = 0
        cdef Py_ssize_t n = len(batch)
        cdef Sink sink
        self._scheduled = False
        if n == 0:
            return
        # A fresh list: sinks dirtied while this batch is written (a write callback
        # that pushes again) go to the next flush instead of being lost.
        self._dirty = []
        try:
            while i < n:
                sink = <Sink>PyList_GET_ITEM(batch, i)
                i += 1
                sink._flush()
        finally:
            # Only reached with i < n when a BaseException escaped a sink: keep the
            # rest of the batch for the next flush rather than dropping it.
            while i < n:
                sink = <Sink>PyList_GET_ITEM(batch, i)
                i += 1
                sink._dirty = False
                sink._mark_dirty()


cdef class Sink:
    """One connection's outbound path.

    Give ``write`` (raw transport write of framed bytes; all frames of one loop
    iteration are coalesced into one call) or ``send`` (framework path: called once
    per message payload, unframed, in order). ``buffer_size()`` is checked after each
    flush: above ``max_buffer``, the sink is marked closed and ``on_overflow(sink)``
    is called once (the caller closes the connection with 4100).
    """

    def __init__(self, Outbox outbox not None, Stats stats not None, write=None, send=None,
                 buffer_size=None, on_overflow=None, Py_ssize_t max_buffer=4 * 1024 * 1024):
        if write is None and send is None:
            raise TypeError("Sink needs write or send")
        self._outbox = outbox
        self._stats = stats
        self._write = write
        self._send = None if write is not None else send
        self._buffer_size = buffer_size
        self._on_overflow = on_overflow
        self.max_buffer = max_buffer
        self.owner = None
        self.closed = False
        self._dirty = False
        self._pending = None
        self._nbytes = 0

    def __dealloc__(self):
        PyMem_Free(self._buf)
        self._buf = NULL

    @property
    def pending_bytes(self):
        """Bytes queued and not yet written (framed bytes in write mode)."""
        return self._nbytes

    cdef int _mark_dirty(self) except -1:
        cdef Outbox outbox = self._outbox
        self._dirty = True
        outbox._dirty.append(self)
        if not outbox._scheduled:
            outbox._schedule()
        return 0

    cdef int _queue(self, bytes data) except -1:
        """Queue framed bytes (write mode) or a payload (send mode); caller counts."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t need, cap
        cdef char* buf
        if self._write is not None:
            if self._nbytes == 0:
                # The common case: one frame per iteration, kept as the shared object.
                self._pending = data
            else:
                need = self._nbytes + n
                if need > self._cap:
                    cap = self._cap * 2
                    if cap < need:
                        cap = need
                    if cap < _MIN_CAP:
                        cap = _MIN_CAP
                    buf = <char*>PyMem_Realloc(self._buf, <size_t>cap)
                    if buf is NULL:
                        raise MemoryError()
                    self._buf = buf
                    self._cap = cap
                if self._pending is not None:
                    memcpy(self._buf, PyBytes_AS_STRING(self._pending), <size_t>self._nbytes)
                    self._pending = None
                memcpy(self._buf + self._nbytes, PyBytes_AS_STRING(data), <size_t>n)
        elif self._pending is None:
            self._pending = [data]
        else:
            (<list>self._pending).append(data)
        self._nbytes += n
        if not self._dirty:
            self._mark_dirty()
        return 0

    cpdef push(self, bytes payload):
        """Queue one message; it leaves after anything queued before it (broadcasts too)."""
        if payload is None:
            raise TypeError("payload must be bytes, not NoneType")
        if self.closed:
            return
        cdef bytes data = frame_text(payload) if self._write is not None else payload
        self._queue(data)
        self._stats.ws_messages_sent += 1
        self._stats.ws_bytes_sent += PyBytes_GET_SIZE(data)

    cdef void _drop(self) noexcept:
        self._pending = None
        self._nbytes = 0
        PyMem_Free(self._buf)
        self._buf = NULL
        self._cap = 0

    cpdef close(self):
        """Mark closed and drop anything pending."""
        self.closed = True
        self._drop()

    cdef void _fail(self) noexcept:
        self._outbox.errors += 1
        self.closed = True
        self._drop()

    cdef int _flush(self) except -1:
        cdef object pending = self._pending
        cdef object data
        cdef object payload
        cdef bint over
        self._dirty = False
        if self._write is not None and pending is None and self._nbytes:
            data = PyBytes_FromStringAndSize(self._buf, self._nbytes)
        else:
            data = pending
        # Reset first (and free the buffer): a write callback may push again.
        self._drop()
        if self.closed or data is None:
            return 0
        if self._write is not None:
            try:
                self._write(data)
            except Exception:
                self._fail()
                return 0
        else:
            for payload in <list>data:
                if self.closed:
                    return 0
                try:
                    self._send(payload)
                except Exception:
                    self._fail()
                    return 0
        if self._buffer_size is not None and not self.closed:
            try:
                over = self._buffer_size() > self.max_buffer
            except Exception:
                self._fail()
                return 0
            if over:
                self.closed = True
                self._drop()
                if self._on_overflow is not None:
                    try:
                        self._on_overflow(self)
                    except Exception:
                        self._outbox.errors += 1
        return 0

    def __repr__(self):
        mode = "write" if self._write is not None else "send"
        return f"<Sink {mode} closed={self.closed} pending={self._nbytes}>"


cdef class ChannelTable:
    """Channel name -> its sinks, in insertion order; broadcast frames once.

    A channel with one sink maps to that sink (no container: most channels of
    most applications have one subscriber); from the second sink on, to a dict
    used as an ordered set (O(1) add/remove, iteration with ``PyDict_Next``). A
    channel that loses its last sink is deleted.
    """

    def __init__(self, Stats stats not None):
        self._channels = {}
        self._stats = stats

    cpdef bint add(self, str channel, Sink sink) except -1:
        """Add ``sink`` to ``channel``; True if it was not there yet."""
        if channel is None or sink is None:
            raise TypeError("add(channel: str, sink: Sink)")
        cdef PyObject* p = PyDict_GetItem(self._channels, channel)
        cdef dict members
        cdef Py_ssize_t n
        if p is NULL:
            self._channels[channel] = sink
            return True
        if isinstance(<object>p, Sink):
            if <object>p is sink:
                return False
            self._channels[channel] = {<object>p: None, sink: None}
            return True
        members = <dict>p
        # One hash operation: the size tells whether the key was new (re-setting
        # an existing key keeps its place in the order).
        n = PyDict_Size(members)
        PyDict_SetItem(members, sink, None)
        return PyDict_Size(members) != n

    cpdef bint remove(self, str channel, Sink sink) except -1:
        """Remove ``sink`` from ``channel``; True if it was there."""
        if channel is None or sink is None:
            raise TypeError("remove(channel: str, sink: Sink)")
        cdef PyObject* p = PyDict_GetItem(self._channels, channel)
        cdef dict members
        if p is NULL:
            return False
        if isinstance(<object>p, Sink):
            if <object>p is not sink:
                return False
            del self._channels[channel]
            return True
        members = <dict>p
        if members.pop(sink, _MISSING) is _MISSING:
            return False
        if PyDict_Size(members) == 0:
            del self._channels[channel]
        return True

    cpdef Py_ssize_t count(self, object channel) except -1:
        """Number of sinks in ``channel`` (closed ones included)."""
        members = self._channels.get(channel)
        if members is None:
            return 0
        return 1 if isinstance(members, Sink) else len(<dict>members)

    cpdef list sinks(self, object channel):
        """The sinks of ``channel``, in the order they were added."""
        members = self._channels.get(channel)
        if members is None:
            return []
        return [members] if isinstance(members, Sink) else list(<dict>members)

    cpdef list channels(self):
        """Names of the non-empty channels."""
        return list(self._channels)

    def __contains__(self, channel):
        return channel in self._channels

    def __len__(self):
        return len(self._channels)

    cpdef Py_ssize_t broadcast(self, str channel, bytes payload, Sink exclude=None) except -1:
        """Queue ``payload`` to every open sink of ``channel`` but ``exclude``.

        The frame is built once and shared. Returns the number of recipients.
        """
        if channel is None:
            raise TypeError("channel must be a str")
        if payload is None:
            raise TypeError("payload must be bytes, not NoneType")
        cdef Stats stats = self._stats
        cdef PyObject* p
        cdef PyObject* key
        cdef PyObject* value
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t n = 0
        cdef long long nbytes = 0
        cdef bytes frame = None
        cdef Sink sink
        stats.broadcasts += 1
        p = PyDict_GetItem(self._channels, channel)
        if p is NULL:
            return 0
        cdef dict members
        if isinstance(<object>p, Sink):
            sink = <Sink>p
            if sink is exclude or sink.closed:
                return 0
            frame = frame_text(payload) if sink._write is not None else payload
            sink._queue(frame)
            stats.deliveries += 1
            stats.ws_messages_sent += 1
            stats.ws_bytes_sent += PyBytes_GET_SIZE(frame)
            return 1
        members = <dict>p
        while PyDict_Next(members, &pos, &key, &value):
            sink = <Sink>key
            if sink is exclude or sink.closed:
                continue
            if sink._write is not None:
                if frame is None:
                    frame = frame_text(payload)
                sink._queue(frame)
                nbytes += PyBytes_GET_SIZE(frame)
            else:
                sink._queue(payload)
                nbytes += PyBytes_GET_SIZE(payload)
            n += 1
        stats.deliveries += n
        stats.ws_messages_sent += n
        stats.ws_bytes_sent += nbytes
        return n
