# cython: language_level=3
"""Pusher message parsing and encoding, compiled twin of ``_protocol_py``.

Same names, same results, same exceptions and messages as the reference; the
property tests in ``tests/test_protocol.py`` hold that. What this module saves:

- parsing still uses orjson, but everything around it (type checks, the three
  key lookups, the size check) is C on borrowed references;
- encoding builds the frame bytes directly: one pass counts the escaped size,
  one writes into a preallocated ``bytes``, instead of a dict plus a second
  orjson pass over an already-encoded payload;
- channel-name checks read the str's code units in place, with no regex.

Any input the fast paths do not cover (a lone surrogate, bytes that are not
UTF-8) is handed to the same steps the reference takes, so the error raised is
the reference's own.
"""

from cpython.bytearray cimport PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.dict cimport PyDict_Check, PyDict_GetItem
from cpython.exc cimport PyErr_Clear
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_Check, PyUnicode_GET_LENGTH
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

import re

import orjson

from soketi_impl.errors import ProtocolError

cdef extern from "Python.h":
    bint PyMemoryView_Check(object o)
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t index) nogil
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    int PyUnicode_1BYTE_KIND
    # No "except" clause: a NULL result (lone surrogate) is handled by the caller.
    const char* _utf8_and_size "PyUnicode_AsUTF8AndSize"(object o, Py_ssize_t* size)
    object _as_utf8_string "PyUnicode_AsUTF8String"(object o)

__all__ = [
    "ENCRYPTED",
    "PRESENCE",
    "PRIVATE",
    "PUBLIC",
    "SERVER_TO_USER",
    "channel_kind",
    "encode_error",
    "encode_event",
    "is_cache_channel",
    "parse_client_message",
    "valid_channel_name",
]

PUBLIC = KIND_PUBLIC
PRIVATE = KIND_PRIVATE
PRESENCE = KIND_PRESENCE
ENCRYPTED = KIND_ENCRYPTED
SERVER_TO_USER = KIND_SERVER_TO_USER

SERVER_TO_USER_PREFIX = "#server-to-user-"

MSG_NOT_UTF8 = "Message is not valid UTF-8"
MSG_NOT_JSON = "Message is not valid JSON"
MSG_NOT_OBJECT = "Message must be a JSON object"
MSG_NO_EVENT = "Message has no event name"
MSG_EVENT_TYPE = "Event name must be a string"
MSG_CHANNEL_TYPE = "Channel must be a string"

cdef object _loads = orjson.loads
cdef object _dumps = orjson.dumps
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _ProtocolError = ProtocolError

# Per byte: how many bytes its JSON string escape adds (orjson's choice of
# escapes: the five short ones, \u00xx for other controls, nothing above 0x1f
# but '"' and '\\'); _SHORT holds the letter of the short escapes.
cdef unsigned char _ESC_EXTRA[256]
cdef char _SHORT[256]
cdef char* _HEX = b"0123456789abcdef"
# Characters allowed in a channel name: A-Z a-z 0-9 _ - = @ , . ;
cdef unsigned char _NAME_OK[128]


cdef void _init_tables() noexcept:
    cdef int c
    for c in range(256):
        _ESC_EXTRA[c] = 0
        _SHORT[c] = 0
    for c in range(0x20):
        _ESC_EXTRA[c] = 5
    for c, e in ((0x08, b"b"), (0x09, b"t"), (0x0A, b"n"), (0x0C, b"f"), (0x0D, b"r"),
                 (0x22, b'"'), (0x5C, b"\\")):
        _ESC_EXTRA[c] = 1
        _SHORT[c] = (<bytes>e)[0]
    for c in range(128):
        _NAME_OK[c] = 0
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-=@,.;":
        _NAME_OK[c] = 1


_init_tables()


# ---------------------------------------------------------------- channel names

cdef inline bint _has_prefix(int kind, void* data, Py_ssize_t n, Py_ssize_t offset,
                             const char* prefix, Py_ssize_t plen) noexcept:
    cdef Py_ssize_t i
    if n < offset + plen:
        return False
    if kind == PyUnicode_1BYTE_KIND:
        # Latin-1 code units equal the ASCII prefix bytes, so memcmp is exact.
        return memcmp(<char*>data + offset, prefix, plen) == 0
    for i in range(plen):
        if PyUnicode_READ(kind, data, offset + i) != <Py_UCS4><unsigned char>prefix[i]:
            return False
    return True


cdef inline int _check_name(object name) except -1:
    if not PyUnicode_Check(name):
        raise TypeError(f"channel name must be str, not {type(name).__name__}")
    return 0


cpdef int channel_kind(object name) except -1:
    """The kind of channel ``name`` is, from its prefix (matched at the start only).

    >>> channel_kind("private-encrypted-chat") == ENCRYPTED
    True
    """
    _check_name(name)
    cdef int kind = PyUnicode_KIND(name)
    cdef void* data = PyUnicode_DATA(name)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(name)
    if _has_prefix(kind, data, n, 0, b"private-", 8):
        if _has_prefix(kind, data, n, 8, b"encrypted-", 10):
            return KIND_ENCRYPTED
        return KIND_PRIVATE
    if _has_prefix(kind, data, n, 0, b"presence-", 9):
        return KIND_PRESENCE
    if _has_prefix(kind, data, n, 0, b"#server-to-user-", 16):
        return KIND_SERVER_TO_USER
    return KIND_PUBLIC


cpdef bint is_cache_channel(object name) except -1:
    """True for ``cache-``, ``private-cache-``, ``private-encrypted-cache-`` and
    ``presence-cache-`` channels."""
    _check_name(name)
    cdef int kind = PyUnicode_KIND(name)
    cdef void* data = PyUnicode_DATA(name)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(name)
    if _has_prefix(kind, data, n, 0, b"cache-", 6):
        return True
    if _has_prefix(kind, data, n, 0, b"private-", 8):
        return (_has_prefix(kind, data, n, 8, b"cache-", 6)
                or _has_prefix(kind, data, n, 8, b"encrypted-cache-", 16))
    return _has_prefix(kind, data, n, 0, b"presence-cache-", 15)


cpdef bint valid_channel_name(object name, Py_ssize_t max_length=200) except -1:
    """True when ``name`` is non-empty, at most ``max_length`` characters, and made
    of ``A-Z a-z 0-9 _ - = @ , . ;`` or is ``#server-to-user-`` plus such a
    non-empty user id."""
    _check_name(name)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(name)
    if n == 0 or n > max_length:
        return False
    cdef int kind = PyUnicode_KIND(name)
    cdef void* data = PyUnicode_DATA(name)
    cdef Py_ssize_t i = 0
    cdef Py_UCS4 ch
    cdef const unsigned char* s
    if _has_prefix(kind, data, n, 0, b"#server-to-user-", 16):
        i = 16
        if n == 16:
            return False
    if kind == PyUnicode_1BYTE_KIND:
        s = <const unsigned char*>data
        while i < n:
            if s[i] >= 128 or not _NAME_OK[s[i]]:
                return False
            i += 1
        return True
    while i < n:
        ch = PyUnicode_READ(kind, data, i)
        if ch >= 128 or not _NAME_OK[ch]:
            return False
        i += 1
    return True


# ---------------------------------------------------------------- parsing

cdef Py_ssize_t _utf8_size(object s):
    """Bytes ``s`` takes in UTF-8, a lone surrogate counting 3 (as surrogatepass)."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    if PyUnicode_IS_COMPACT_ASCII(s):
        return n
    cdef int kind = PyUnicode_KIND(s)
    cdef void* data = PyUnicode_DATA(s)
    cdef Py_ssize_t i, size = 0
    cdef Py_UCS4 ch
    for i in range(n):
        ch = PyUnicode_READ(kind, data, i)
        if ch < 0x80:
            size += 1
        elif ch < 0x800:
            size += 2
        elif ch < 0x10000:
            size += 3
        else:
            size += 4
    return size


cdef bint _is_utf8(object raw):
    # Error path only: mirrors the reference's check.
    try:
        if PyUnicode_Check(raw):
            raw.encode("utf-8")
        else:
            bytes(raw).decode("utf-8")
    except UnicodeError:
        return False
    return True


cpdef tuple parse_client_message(object raw, Py_ssize_t max_size=102400):
    """Parse one client frame into ``(event, channel, data)``.

    ``channel`` is None when absent or null; ``data`` is what the client sent, or
    None. Anything malformed raises ProtocolError saying what was wrong.

    >>> parse_client_message(b'{"event":"pusher:ping","data":{}}')
    ('pusher:ping', None, {})
    """
    cdef Py_ssize_t size
    cdef PyObject* p
    cdef object msg, event, channel
    if PyBytes_Check(raw):
        size = PyBytes_GET_SIZE(raw)
    elif PyUnicode_Check(raw):
        size = _utf8_size(raw)
    elif PyByteArray_Check(raw):
        size = PyByteArray_GET_SIZE(raw)
    elif PyMemoryView_Check(raw):
        size = raw.nbytes
    else:
        raise TypeError(f"raw must be bytes or str, not {type(raw).__name__}")
    if size > max_size:
        raise _ProtocolError(f"Message too large ({size} bytes, limit {max_size})")
    try:
        msg = _loads(raw)
    except _JSONDecodeError:
        raise _ProtocolError(MSG_NOT_JSON if _is_utf8(raw) else MSG_NOT_UTF8) from None
    if not PyDict_Check(msg):
        raise _ProtocolError(MSG_NOT_OBJECT)
    p = PyDict_GetItem(msg, "event")
    if p is NULL or <object>p is None:
        raise _ProtocolError(MSG_NO_EVENT)
    event = <object>p
    if not PyUnicode_Check(event):
        raise _ProtocolError(MSG_EVENT_TYPE)
    if PyUnicode_GET_LENGTH(event) == 0:
        raise _ProtocolError(MSG_NO_EVENT)
    p = PyDict_GetItem(msg, "channel")
    if p is NULL:
        channel = None
    else:
        channel = <object>p
        if channel is not None and not PyUnicode_Check(channel):
            raise _ProtocolError(MSG_CHANNEL_TYPE)
    p = PyDict_GetItem(msg, "data")
    if p is NULL:
        return (event, channel, None)
    return (event, channel, <object>p)


# ---------------------------------------------------------------- encoding

cdef Py_ssize_t json_escaped_len(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, total = n
    for i in range(n):
        total += _ESC_EXTRA[s[i]]
    return total


cdef char* json_escape_into(char* out, const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, start = 0
    cdef unsigned char c, extra
    for i in range(n):
        c = s[i]
        extra = _ESC_EXTRA[c]
        if extra == 0:
            continue
        if i > start:
            memcpy(out, s + start, i - start)
            out += i - start
        out[0] = b"\\"
        if extra == 1:
            out[1] = _SHORT[c]
            out += 2
        else:
            out[1] = b"u"
            out[2] = b"0"
            out[3] = b"0"
            out[4] = _HEX[c >> 4]
            out[5] = _HEX[c & 15]
            out += 6
        start = i + 1
    if n > start:
        memcpy(out, s + start, n - start)
        out += n - start
    return out


cdef bint utf8_valid(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1, lo, hi
    cdef uint64_t word
    while i < n:
        # Runs of ASCII, eight bytes at a time.
        while i + 8 <= n:
            memcpy(&word, s + i, 8)
            if word & 0x8080808080808080ULL:
                break
            i += 8
        if i >= n:
            break
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2:  # a stray continuation byte or an overlong 2-byte form
            return False
        if c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
            continue
        lo = 0x80
        hi = 0xBF
        if c < 0xF0:
            if c == 0xE0:
                lo = 0xA0  # overlong
            elif c == 0xED:
                hi = 0x9F  # surrogates
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if c1 < lo or c1 > hi or (s[i + 2] & 0xC0) != 0x80:
                return False
            i += 3
            continue
        if c < 0xF5:
            if c == 0xF0:
                lo = 0x90  # overlong
            elif c == 0xF4:
                hi = 0x8F  # above U+10FFFF
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if (c1 < lo or c1 > hi or (s[i + 2] & 0xC0) != 0x80
                    or (s[i + 3] & 0xC0) != 0x80):
                return False
            i += 4
            continue
        return False
    return True


cdef inline char* _put(char* out, const char* lit, Py_ssize_t n) noexcept nogil:
    memcpy(out, lit, n)
    return out + n


cdef bytes encode_event_utf8(const char* event, Py_ssize_t event_len,
                             const char* channel, Py_ssize_t channel_len,
                             const char* data, Py_ssize_t data_len,
                             const char* user_id, Py_ssize_t user_id_len):
    # Key order and spelling are orjson's for the reference's dict:
    # {"event":"..","channel":"..","data":"..","user_id":".."}
    cdef Py_ssize_t total = 10 + json_escaped_len(<const unsigned char*>event, event_len) + 2
    if channel is not NULL:
        total += 12 + json_escaped_len(<const unsigned char*>channel, channel_len) + 1
    if data is not NULL:
        total += 9 + json_escaped_len(<const unsigned char*>data, data_len) + 1
    if user_id is not NULL:
        total += 12 + json_escaped_len(<const unsigned char*>user_id, user_id_len) + 1
    cdef bytes res = PyBytes_FromStringAndSize(NULL, total)
    cdef char* start = PyBytes_AS_STRING(res)
    cdef char* out = _put(start, b'{"event":"', 10)
    out = json_escape_into(out, <const unsigned char*>event, event_len)
    out[0] = b'"'
    out += 1
    if channel is not NULL:
        out = _put(out, b',"channel":"', 12)
        out = json_escape_into(out, <const unsigned char*>channel, channel_len)
        out[0] = b'"'
        out += 1
    if data is not NULL:
        out = _put(out, b',"data":"', 9)
        out = json_escape_into(out, <const unsigned char*>data, data_len)
        out[0] = b'"'
        out += 1
    if user_id is not NULL:
        out = _put(out, b',"user_id":"', 12)
        out = json_escape_into(out, <const unsigned char*>user_id, user_id_len)
        out[0] = b'"'
        out += 1
    out[0] = b"}"
    out += 1
    assert out - start == total
    return res


cdef inline int _check_str(str what, object value) except -1:
    if not PyUnicode_Check(value):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    return 0


cdef bytes _encode_event_ref(object event, object channel, object data, object user_id):
    # The reference's steps, for inputs the fast path declines: raises exactly
    # what the reference raises.
    msg = {"event": event}
    if channel is not None:
        msg["channel"] = channel
    if data is not None:
        if PyUnicode_Check(data):
            msg["data"] = data
        elif PyBytes_Check(data):
            msg["data"] = data.decode("utf-8")
        else:
            msg["data"] = _dumps(data).decode("utf-8")
    if user_id is not None:
        msg["user_id"] = user_id
    return _dumps(msg)


cpdef bytes encode_event(object event, object channel, object data, object user_id=None):
    """The server-to-client frame ``{"event","channel","data","user_id"}`` as compact JSON.

    ``channel``, ``data`` and ``user_id`` are left out when None; ``data`` always
    becomes a JSON string (str as is, bytes decoded as UTF-8, anything else
    orjson-encoded first).
    """
    _check_str("event", event)
    if channel is not None:
        _check_str("channel", channel)
    if user_id is not None:
        _check_str("user_id", user_id)
    cdef const char* ep
    cdef const char* cp = NULL
    cdef const char* dp = NULL
    cdef const char* up = NULL
    cdef Py_ssize_t en, cn = 0, dn = 0, un = 0
    cdef object holder = None  # keeps dp's buffer alive
    if data is not None:
        if PyUnicode_Check(data):
            if PyUnicode_IS_COMPACT_ASCII(data):
                dp = <const char*>PyUnicode_DATA(data)
                dn = PyUnicode_GET_LENGTH(data)
            else:
                # A temporary copy rather than PyUnicode_AsUTF8AndSize, which
                # would keep a UTF-8 copy of a possibly large payload on the str.
                try:
                    holder = _as_utf8_string(data)
                except UnicodeEncodeError:  # a lone surrogate
                    return _encode_event_ref(event, channel, data, user_id)
        elif PyBytes_Check(data):
            if not utf8_valid(<const unsigned char*>PyBytes_AS_STRING(data),
                              PyBytes_GET_SIZE(data)):
                return _encode_event_ref(event, channel, data, user_id)
            holder = data
        else:
            holder = _dumps(data)
        if holder is not None:
            dp = PyBytes_AS_STRING(holder)
            dn = PyBytes_GET_SIZE(holder)
    ep = _utf8_and_size(event, &en)
    if ep is NULL:
        PyErr_Clear()
        return _encode_event_ref(event, channel, data, user_id)
    if channel is not None:
        cp = _utf8_and_size(channel, &cn)
        if cp is NULL:
            PyErr_Clear()
            return _encode_event_ref(event, channel, data, user_id)
    if user_id is not None:
        up = _utf8_and_size(user_id, &un)
        if up is NULL:
            PyErr_Clear()
            return _encode_event_ref(event, channel, data, user_id)
    return encode_event_utf8(ep, en, cp, cn, dp, dn, up, un)


cpdef bytes encode_error(object code, object message):
    """A ``pusher:error`` frame; its ``data`` is an object ``{"code","message"}``.

    Not on a hot path, so it is the reference's orjson call, typed.
    """
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise TypeError(f"code must be int or None, not {type(code).__name__}")
    _check_str("message", message)
    return _dumps({"event": "pusher:error", "data": {"code": code, "message": message}})
