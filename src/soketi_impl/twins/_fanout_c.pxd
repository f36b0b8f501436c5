# cython: language_level=3
# C API of the fan-out twin: other Cython modules cimport these classes and call
# the cdef/cpdef methods directly (no Python dispatch on the hot path).

cdef class Stats:
    cdef public long long ws_messages_sent
    cdef public long long ws_bytes_sent
    cdef public long long ws_messages_received
    cdef public long long ws_bytes_received
    cdef public long long http_calls
    cdef public long long http_bytes_received
    cdef public long long http_bytes_sent
    cdef public long long new_connections
    cdef public long long disconnections
    cdef public long long connected
    cdef public long long deliveries
    cdef public long long broadcasts

    cpdef dict snapshot(self)


cpdef bytes frame_text(bytes payload)


cdef class Outbox:
    cdef object _loop
    cdef object _flush_cb      # the bound method, made once
    cdef list _dirty
    cdef bint _scheduled
    cdef public long long errors

    cdef int _schedule(self) except -1
    cpdef flush(self)


cdef class Sink:
    cdef Outbox _outbox
    cdef Stats _stats
    cdef object _write
    cdef object _send
    cdef object _buffer_size
    cdef object _on_overflow
    cdef public object owner
    # write mode: None or the single pending frame (shared bytes); send mode: None or a list
    cdef object _pending
    cdef char* _buf            # coalesced frames once a second one arrives (write mode)
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _nbytes
    cdef public Py_ssize_t max_buffer
    cdef public bint closed
    cdef bint _dirty

    cdef int _mark_dirty(self) except -1
    cdef int _queue(self, bytes data) except -1
    cdef void _drop(self) noexcept
    cdef void _fail(self) noexcept
    cdef int _flush(self) except -1
    cpdef push(self, bytes payload)
    cpdef close(self)


cdef class ChannelTable:
    cdef dict _channels
    cdef Stats _stats

    cpdef bint add(self, str channel, Sink sink) except -1
    cpdef bint remove(self, str channel, Sink sink) except -1
    cpdef Py_ssize_t count(self, object channel) except -1
    cpdef list sinks(self, object channel)
    cpdef list channels(self)
    cpdef Py_ssize_t broadcast(self, str channel, bytes payload, Sink exclude=*) except -1
