# C API of the compiled protocol twin: what another Cython module may cimport
# (_wsglue_c.pyx cimports utf8_valid). cpdef functions are direct C calls from Cython
# and fast vectorcalls from Python; the other cdef helpers stay private to the .pyx.

cdef enum:
    KIND_PUBLIC = 0
    KIND_PRIVATE = 1
    KIND_PRESENCE = 2
    KIND_ENCRYPTED = 3
    KIND_SERVER_TO_USER = 4

cpdef int channel_kind(object name) except -1
cpdef bint is_cache_channel(object name) except -1
cpdef bint valid_channel_name(object name, Py_ssize_t max_length=*) except -1
cpdef tuple parse_client_message(object raw, Py_ssize_t max_size=*)
cpdef bytes encode_event(object event, object channel, object data, object user_id=*)
cpdef bytes encode_error(object code, object message)
cpdef object raw_data(object raw)

# True when s[:n] is strict UTF-8 (as bytes.decode("utf-8") accepts it).
cdef bint utf8_valid(const unsigned char* s, Py_ssize_t n) noexcept nogil
