# C API of the compiled protocol twin, for other Cython modules:
#   from soketi_impl.twins._protocol_c cimport parse_client_message, encode_event_utf8, ...
# cpdef functions are direct C calls from Cython and fast vectorcalls from Python.

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

# Bytes a UTF-8 buffer takes once escaped as the inside of a JSON string (orjson's escapes).
cdef Py_ssize_t json_escaped_len(const unsigned char* s, Py_ssize_t n) noexcept nogil
# Writes the escaped form of s at out; returns the end of what was written.
cdef char* json_escape_into(char* out, const unsigned char* s, Py_ssize_t n) noexcept nogil
# True when s[:n] is strict UTF-8 (as bytes.decode("utf-8") accepts it).
cdef bint utf8_valid(const unsigned char* s, Py_ssize_t n) noexcept nogil
# encode_event from UTF-8 buffers the caller vouches for (valid UTF-8, no surrogates);
# a NULL channel, data or user_id is left out. Same bytes as encode_event.
cdef bytes encode_event_utf8(const char* event, Py_ssize_t event_len,
                             const char* channel, Py_ssize_t channel_len,
                             const char* data, Py_ssize_t data_len,
                             const char* user_id, Py_ssize_t user_id_len)
