# cython: language_level=3
"""picows glue, compiled twin of ``_wsglue_py``: reaches picows's C structures.

picows gives every connection a 1 KiB write buffer for framing its own sends
(close frames, pongs). Our fan-out writes pre-framed bytes straight to the socket,
so that buffer is idle almost always; it grows back on demand (picows reserves
before every use), so shrinking it after the handshake is safe and saves about
1 KB per connection. :func:`drop_handshake_leftovers` lets go of the transport's
other objects that are dead after the upgrade.

:func:`data_payload` is the check every client frame goes through: it reads the
frame's header fields and payload in place and validates UTF-8 with the protocol
twin's C routine (eight ASCII bytes at a time), before one copy into ``bytes``.
"""

import gc

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Realloc
from cpython.object cimport PyObject
from picows.picows cimport MemoryBuffer, WSFrame, WSMsgType, WSTransport

from soketi_impl.twins._protocol_c cimport utf8_valid

__all__ = [
    "IDLE_READ_BUFFER", "IDLE_WRITE_BUFFER", "data_payload", "drop_handshake_leftovers",
    "shrink_idle_buffers", "shrink_read_buffer",
]

cdef Py_ssize_t _IDLE = 64
IDLE_WRITE_BUFFER = _IDLE
# picows's read buffer after the upgrade: 512 bytes to read into, plus the 256
# bytes picows keeps free past the end for its SIMD parsers.
cdef Py_ssize_t _IDLE_READ = 768
cdef Py_ssize_t _SIMD_SLACK = 256
IDLE_READ_BUFFER = _IDLE_READ
# Where WSProtocol keeps its read buffer, in pointer-sized words from the object's
# start: found once (-1: not looked for yet; 0: not found, never shrink).
cdef Py_ssize_t _read_buffer_word = -1
# One finished future per event loop, shared by every connection (see below).
cdef object _done = None


cpdef int drop_handshake_leftovers(object transport) except -1:
    """Let go of what a server-side picows transport keeps but never uses after the upgrade.

    The upgrade request and response objects (nothing reads them once connected),
    the weak proxy to the listener (only picows's user-specific auto-ping uses it;
    auto-ping is off here) and the ``disconnected_future``, which is swapped for
    one finished future shared by every connection: picows then skips resolving
    it, and nobody awaits it (``wait_disconnected`` would return at once). About
    290 bytes per connection. Returns how many objects were let go.
    """
    global _done
    cdef WSTransport t = <WSTransport?>transport
    cdef int n = 0
    if t.request is not None or t.response is not None:
        t.request = None
        t.response = None
        n += 2
    if t.listener_proxy is not None:
        t.listener_proxy = None
        n += 1
    fut = t.disconnected_future
    if fut is not _done and not fut.done():
        loop = t._loop
        if _done is None or _done.get_loop() is not loop:
            _done = loop.create_future()
            _done.set_result(None)
        t.disconnected_future = _done
        n += 1
    return n


cpdef Py_ssize_t shrink_idle_buffers(object transport) except -1:
    """Give back the idle part of a picows transport's write buffer; returns bytes freed."""
    cdef WSTransport t = <WSTransport?>transport
    cdef MemoryBuffer buf = t._write_buffer
    cdef Py_ssize_t old = buf.capacity
    cdef char* data
    if buf.size > _IDLE or old <= _IDLE:
        return 0
    data = <char*>PyMem_Realloc(buf.data, _IDLE)
    if data == NULL:
        return 0  # keeping the larger buffer is fine
    buf.data = data
    buf.capacity = _IDLE
    return old - _IDLE


cpdef object data_payload(object frame):
    """The payload of a whole, clean data frame (FIN, TEXT or BINARY, no RSV bit,
    valid UTF-8) as bytes, else ``None``: see the pure-Python twin."""
    cdef WSFrame f = <WSFrame?>frame
    if f.msg_type != WSMsgType.TEXT and f.msg_type != WSMsgType.BINARY:
        return None
    if not f.fin or f.rsv1 or f.rsv2 or f.rsv3:
        return None
    if not utf8_valid(<const unsigned char*>f.payload_ptr, f.payload_size):
        return None
    return PyBytes_FromStringAndSize(f.payload_ptr, f.payload_size)


cdef Py_ssize_t _find_read_buffer(object ws) except -1:
    """The word of ``ws`` that points to its read buffer, or 0.

    picows declares WSProtocol's fields in its .pyx only, so they are found from the
    object: its one MemoryBuffer (the collector lists it among the referents), the
    word holding that pointer, then two checks of the fields picows declares around
    it (the parser state before, the write position after).
    """
    cdef object buf = None
    for ref in gc.get_referents(ws):
        if type(ref) is MemoryBuffer:
            if buf is not None:
                return 0  # two buffers: not the layout this was written for
            buf = ref
    if buf is None:
        return 0
    cdef PyObject** words = <PyObject**><void*>ws
    cdef Py_ssize_t n = type(ws).__basicsize__ // sizeof(void*)
    cdef Py_ssize_t i, found = 0
    for i in range(2, n - 1):
        if words[i] == <PyObject*>buf:
            if found:
                return 0
            found = i
    if not found:
        return 0
    cdef Py_ssize_t pos = (<Py_ssize_t*>words)[found + 1]  # _f_new_data_start_pos
    cdef int state = (<int*>&words[found - 1])[0]  # _state (READ_HEADER after the upgrade)
    if not (0 <= pos <= (<MemoryBuffer>buf).size) or state != 1:
        return 0
    return found


cpdef Py_ssize_t shrink_read_buffer(object ws) except -1:
    """Shrink an idle picows read buffer (2 KiB) to 768 bytes after the upgrade; returns bytes freed.

    Call it on a server-side ``WSProtocol`` right after the upgrade request was fed
    to it, outside its callbacks. Only a buffer holding no unread bytes is touched.
    picows grows the buffer again on demand (it doubles when a read fills it), so a
    client that sends more than 512 bytes at once costs one reallocation.
    """
    global _read_buffer_word
    if _read_buffer_word < 0:
        _read_buffer_word = _find_read_buffer(ws)
    if _read_buffer_word == 0:
        return 0
    cdef PyObject** words = <PyObject**><void*>ws
    cdef PyObject* p = words[_read_buffer_word]
    if p == NULL or <object>p is None or type(<object>p) is not MemoryBuffer:
        return 0
    cdef MemoryBuffer buf = <MemoryBuffer>p
    cdef Py_ssize_t pos = (<Py_ssize_t*>words)[_read_buffer_word + 1]
    cdef int state = (<int*>&words[_read_buffer_word - 1])[0]
    cdef Py_ssize_t old = buf.capacity
    cdef char* data
    if pos != 0 or state != 1 or old <= _IDLE_READ:
        return 0
    data = <char*>PyMem_Realloc(buf.data, _IDLE_READ)
    if data == NULL:
        return 0
    buf.data = data
    buf.capacity = _IDLE_READ
    buf.size = _IDLE_READ - _SIMD_SLACK
    return old - _IDLE_READ
