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

import asyncio
import gc

from picows.picows import WSProtocol as _WSProtocol  # its fields are not in picows's .pxd

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from picows.picows cimport MemoryBuffer, WSFrame, WSMsgType, WSTransport

from soketi_impl.twins._protocol_c cimport utf8_valid

__all__ = [
    "IDLE_READ_BUFFER", "IDLE_WRITE_BUFFER", "data_payload", "drop_handshake_leftovers",
    "drop_protocol_leftovers", "shrink_idle_buffers", "shrink_read_buffer",
]

cdef Py_ssize_t _IDLE = 64
IDLE_WRITE_BUFFER = _IDLE
# picows's read buffer after the upgrade: 512 bytes to read into, plus the 256
# bytes picows keeps free past the end for its SIMD parsers.
cdef Py_ssize_t _IDLE_READ = 768
cdef Py_ssize_t _SIMD_SLACK = 256
IDLE_READ_BUFFER = _IDLE_READ
# Where WSProtocol keeps three of its fields, in pointer-sized words from the
# object's start: found once, from the first one seen (0: not found, left alone).
cdef bint _learned = False
cdef Py_ssize_t _read_buffer_word = 0
cdef Py_ssize_t _handshake_word = 0
cdef Py_ssize_t _key_word = 0
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
        t.disconnected_future = _shared_done(t._loop)
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


cdef Py_ssize_t _word_of(object owner, object target) except -1:
    """The one pointer-sized word of ``owner`` that holds ``target``, else 0.

    Only compares addresses: nothing found in ``owner`` is dereferenced here.
    """
    cdef PyObject** words = <PyObject**><void*>owner
    cdef Py_ssize_t n = type(owner).__basicsize__ // sizeof(void*)
    cdef Py_ssize_t i, found = 0
    for i in range(2, n - 1):  # past the reference count and the type
        if words[i] == <PyObject*>target:
            if found:
                return 0
            found = i
    return found


cdef int _learn_layout(object ws) except -1:
    """Find, once per process, where WSProtocol keeps three fields (0: not found).

    picows declares WSProtocol's fields in its .pyx only, so they are found from an
    object: its one MemoryBuffer (the read buffer) and its one Future (the
    handshake's) are among the referents the collector lists; then the words holding
    them, and for the read buffer two checks of the fields picows declares around it
    (a parser state before, the write position after).
    """
    global _learned, _read_buffer_word, _handshake_word, _key_word
    bufs, futs = [], []
    for ref in gc.get_referents(ws):
        if type(ref) is MemoryBuffer:
            bufs.append(ref)
        elif isinstance(ref, asyncio.Future):
            futs.append(ref)
    _learned = True
    _read_buffer_word = _handshake_word = _key_word = 0
    cdef PyObject** words = <PyObject**><void*>ws
    cdef Py_ssize_t i, pos
    cdef int state
    if len(bufs) == 1:
        i = _word_of(ws, bufs[0])
        if i:
            pos = (<Py_ssize_t*>words)[i + 1]  # _f_new_data_start_pos
            state = (<int*>&words[i - 1])[0]  # _state
            if 0 <= pos <= (<MemoryBuffer>bufs[0]).size and 0 <= state <= 4:
                _read_buffer_word = i
    if len(futs) == 1:
        _handshake_word = _word_of(ws, futs[0])
    # The key is bytes, which the collector does not list: picows declares it two
    # words after the handshake future, past ``_http_max_size`` (16 KiB, checked
    # before the key's word is read at all).
    i = _handshake_word
    if i and i + 2 < type(ws).__basicsize__ // sizeof(void*) and (<Py_ssize_t*>words)[i + 1] == 16 * 1024:
        key = <object>words[i + 2]
        if type(key) is bytes and len(<bytes>key) == 24:
            _key_word = i + 2
    return 0


cdef object _shared_done(object loop):
    """One finished future (result None) per event loop, shared by every connection."""
    global _done
    if _done is None or _done.get_loop() is not loop:
        _done = loop.create_future()
        _done.set_result(None)
    return _done


cdef void _swap_word(PyObject** words, Py_ssize_t i, object value) noexcept:
    cdef PyObject* old = words[i]
    Py_INCREF(value)
    words[i] = <PyObject*>value
    Py_XDECREF(old)


cpdef int drop_protocol_leftovers(object ws) except -1:
    """Let go of what a server-side picows ``WSProtocol`` keeps but never uses after the upgrade.

    Its handshake future, once finished without an exception, is swapped for the shared
    finished one (picows only asks it ``done()`` and ``exception()`` from then on), and
    the client-side handshake key it makes on the server too is dropped (only a client
    reads it). About 200 bytes per connection. Returns how many objects were let go.
    """
    if type(ws) is not _WSProtocol:
        return 0
    if not _learned:
        _learn_layout(ws)
    cdef PyObject** words = <PyObject**><void*>ws
    cdef int n = 0
    cdef object fut
    if _handshake_word:
        fut = <object>words[_handshake_word]
        if isinstance(fut, asyncio.Future) and fut is not _done and fut.done() and not fut.cancelled() \
                and fut.exception() is None:
            _swap_word(words, _handshake_word, _shared_done(fut.get_loop()))
            n += 1
    if _key_word:
        if type(<object>words[_key_word]) is bytes:
            _swap_word(words, _key_word, None)
            n += 1
    return n


cpdef Py_ssize_t shrink_read_buffer(object ws) except -1:
    """Shrink an idle picows read buffer (2 KiB) to 768 bytes after the upgrade; returns bytes freed.

    Call it on a server-side ``WSProtocol`` right after the upgrade request was fed
    to it, outside its callbacks. Only a buffer holding no unread bytes is touched.
    picows grows the buffer again on demand (it doubles when a read fills it), so a
    client that sends more than 512 bytes at once costs one reallocation.
    """
    if type(ws) is not _WSProtocol:
        return 0
    if not _learned:
        _learn_layout(ws)
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
