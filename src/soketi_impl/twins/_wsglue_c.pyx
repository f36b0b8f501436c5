# cython: language_level=3
"""picows glue, compiled twin of ``_wsglue_py``: reaches picows's C structures.

picows gives every connection a 1 KiB write buffer for framing its own sends
(close frames, pongs). Our fan-out writes pre-framed bytes straight to the socket,
so that buffer is idle almost always; it grows back on demand (picows reserves
before every use), so shrinking it after the handshake is safe and saves about
1 KB per connection.

:func:`data_payload` is the check every client frame goes through: it reads the
frame's header fields and payload in place and validates UTF-8 with the protocol
twin's C routine (eight ASCII bytes at a time), before one copy into ``bytes``.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Realloc
from picows.picows cimport MemoryBuffer, WSFrame, WSMsgType, WSTransport

from soketi_impl.twins._protocol_c cimport utf8_valid

__all__ = ["IDLE_WRITE_BUFFER", "data_payload", "shrink_idle_buffers"]

cdef Py_ssize_t _IDLE = 64
IDLE_WRITE_BUFFER = _IDLE


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
