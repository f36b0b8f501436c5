# cython: language_level=3
"""Pusher message parsing and encoding, compiled twin of ``_protocol_py``.

Same names, same results, same exceptions and messages as the reference; the
property tests in ``tests/test_protocol.py`` hold that. Where the time goes:

- parsing: a small C reader handles the frames clients really send (objects,
  arrays, strings with any escapes, ints up to 18 digits, simple floats,
  true/false/null) and builds exactly what orjson would, without building the
  top-level dict at all; short ASCII strings (keys, event and channel names)
  come from a bounded cache. Anything else, including every malformed frame,
  is declined and goes through orjson as in the reference, so every error
  comes from the same place;
- encoding: the frame bytes are written directly (one pass sizes the escaped
  output, one writes it into a preallocated ``bytes``), instead of a dict and
  a second orjson pass over an already-encoded payload;
- channel names: the str's code units are read in place, no regex.

Inputs the fast paths do not cover (a lone surrogate, bytes that are not
UTF-8) are handed to the reference's own steps, so they raise what it raises.
The module keeps global C state (the string cache) and relies on the GIL.
"""

from cpython.bytearray cimport PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.dict cimport PyDict_Check, PyDict_GetItem, PyDict_New, PyDict_SetItem
from cpython.list cimport PyList_Append
from cpython.float cimport PyFloat_FromDouble
from cpython.long cimport PyLong_FromLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.exc cimport PyErr_Clear
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport (
    PyUnicode_Check,
    PyUnicode_CheckExact,
    PyUnicode_DecodeUTF8,
    PyUnicode_GET_LENGTH,
    PyUnicode_New,
)
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy

import orjson

from soketi_impl.errors import ProtocolError
from soketi_impl.twins._protocol_py import loads_after_error as _loads_after_error

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
    "raw_data",
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


# ---------------------------------------------------------------- fast reader
#
# orjson.loads costs ~350 ns on a typical 100-byte client frame, most of it
# not parsing. This reader covers the shapes clients actually send (objects,
# arrays, strings with any escapes, small integers, true/false/null) and builds
# exactly what orjson would; for anything else (floats, big integers, deep
# nesting, any syntax error) it *declines* by returning _NO, and the caller
# runs orjson on the whole input. It never raises a ProtocolError itself, so
# every error comes from the same path as in the reference.

cdef object _NO = object()
cdef int _MAX_DEPTH = 64
# Short ASCII strings (keys above all, but also event and channel names) come
# back in frame after frame: a direct-mapped cache returns the str built last
# time, its hash already computed, instead of allocating a new one. Bounded:
# _CACHE_SIZE entries of at most _CACHE_MAX_LEN characters.
cdef enum:
    _CACHE_SIZE = 512
    _CACHE_MAX_LEN = 24
cdef PyObject* _CACHE[_CACHE_SIZE]
# Byte classes inside a JSON string: 0 plain ASCII, 1 '"', 2 '\\', 3 control, 4 non-ASCII.
cdef unsigned char _STR_CLASS[256]


cdef void _init_reader() noexcept:
    cdef int c
    for c in range(_CACHE_SIZE):
        _CACHE[c] = NULL
    for c in range(256):
        _STR_CLASS[c] = 3 if c < 0x20 else (4 if c >= 0x80 else 0)
    _STR_CLASS[34] = 1
    _STR_CLASS[92] = 2


_init_reader()
# The keys parse_client_message looks up go in first, as the very objects its
# lookups use, so those dict lookups succeed on identity.
for _k in ("event", "channel", "data", "auth", "channel_data", "user_data", "pusher:ping",
           "pusher:subscribe", "pusher:unsubscribe", "pusher:signin", "user_id", "user_info"):
    _cache_put(_k)
del _k


cdef struct _Reader:
    const unsigned char* p
    const unsigned char* end


cdef inline void _skip_ws(_Reader* r) noexcept nogil:
    cdef unsigned char c
    while r.p < r.end:
        c = r.p[0]
        if c != 32 and c != 10 and c != 13 and c != 9:
            return
        r.p += 1


cdef inline uint64_t _load64(const unsigned char* s) noexcept nogil:
    cdef uint64_t w
    memcpy(&w, s, 8)
    return w


cdef inline uint32_t _load32(const unsigned char* s) noexcept nogil:
    cdef uint32_t w
    memcpy(&w, s, 4)
    return w


cdef inline uint64_t _short_key(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    # Two overlapping loads cover any 1..16 bytes; past 16 the middle is left
    # out, which only costs a collision now and then (the compare is exact).
    if n >= 8:
        return _load64(s) * 0x9E3779B97F4A7C15ULL ^ _load64(s + n - 8)
    if n >= 4:
        return (<uint64_t>_load32(s) << 32) | _load32(s + n - 4)
    return (<uint64_t>s[0] << 16) | (<uint64_t>s[n >> 1] << 8) | s[n - 1]


cdef inline bint _same_bytes(const unsigned char* a, const unsigned char* b,
                             Py_ssize_t n) noexcept nogil:
    if n > 16:
        return memcmp(a, b, n) == 0
    if n >= 8:
        return _load64(a) == _load64(b) and _load64(a + n - 8) == _load64(b + n - 8)
    if n >= 4:
        return _load32(a) == _load32(b) and _load32(a + n - 4) == _load32(b + n - 4)
    return memcmp(a, b, n) == 0


cdef inline Py_ssize_t _cache_slot(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = (_short_key(s, n) + <uint64_t>n) * 0x9E3779B97F4A7C15ULL
    return <Py_ssize_t>((h >> 40) & (_CACHE_SIZE - 1))


cdef void _cache_put(str u):
    # u: compact ASCII, 1.._CACHE_MAX_LEN characters.
    cdef Py_ssize_t h = _cache_slot(<const unsigned char*>PyUnicode_DATA(u),
                                    PyUnicode_GET_LENGTH(u))
    hash(u)
    Py_INCREF(u)
    Py_XDECREF(_CACHE[h])
    _CACHE[h] = <PyObject*>u


cdef inline bint _all_ascii(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        if _load64(s + i) & 0x8080808080808080ULL:
            return False
        i += 8
    while i < n:
        if s[i] & 0x80:
            return False
        i += 1
    return True


cdef inline uint64_t _special8(uint64_t w) noexcept nogil:
    # Non-zero when one of the 8 bytes is '"', '\\', below 0x20 or above 0x7f
    # (the "has a zero byte" trick on w ^ '"' and on w ^ '\\').
    cdef uint64_t ones = 0x0101010101010101ULL
    cdef uint64_t highs = 0x8080808080808080ULL
    cdef uint64_t q = w ^ 0x2222222222222222ULL
    cdef uint64_t b = w ^ 0x5C5C5C5C5C5C5C5CULL
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - 0x2020202020202020ULL) & ~w) | w) & highs


cdef object _ascii_str(const unsigned char* s, Py_ssize_t n):
    cdef object u
    cdef PyObject* hit
    cdef Py_ssize_t h
    if 0 < n <= _CACHE_MAX_LEN:
        h = _cache_slot(s, n)
        hit = _CACHE[h]
        if (hit is not NULL and PyUnicode_GET_LENGTH(<object>hit) == n
                and _same_bytes(<const unsigned char*>PyUnicode_DATA(<object>hit), s, n)):
            return <object>hit
        u = PyUnicode_New(n, 127)
        memcpy(PyUnicode_DATA(u), s, n)
        hash(u)  # computed once, while cached
        Py_INCREF(u)
        Py_XDECREF(hit)
        _CACHE[h] = <PyObject*>u
        return u
    u = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(u), s, n)
    return u


cdef inline int _hex4(const unsigned char* s) noexcept nogil:
    # Value of four hex digits, or -1.
    cdef int v = 0, i, d
    cdef unsigned char c
    for i in range(4):
        c = s[i]
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        elif 65 <= c <= 70:
            d = c - 55
        else:
            return -1
        v = (v << 4) | d
    return v


cdef Py_ssize_t _unescape(const unsigned char* s, Py_ssize_t n, unsigned char* out,
                          bint* high) noexcept nogil:
    # JSON string body s[:n] (escapes known present) -> UTF-8 at out; -1 to decline.
    # The output is never longer than the input. *high is set when an escape
    # gave a character above U+007F.
    cdef Py_ssize_t i = 0, o = 0
    cdef unsigned char c
    cdef int cp, lo
    while i < n:
        c = s[i]
        if c != 92:
            out[o] = c
            o += 1
            i += 1
            continue
        if i + 1 >= n:
            return -1
        c = s[i + 1]
        i += 2
        if c == 34 or c == 92 or c == 47:
            out[o] = c
        elif c == 98:
            out[o] = 8
        elif c == 102:
            out[o] = 12
        elif c == 110:
            out[o] = 10
        elif c == 114:
            out[o] = 13
        elif c == 116:
            out[o] = 9
        elif c == 117:
            if i + 4 > n:
                return -1
            cp = _hex4(s + i)
            i += 4
            if cp < 0 or 0xDC00 <= cp <= 0xDFFF:
                return -1
            if 0xD800 <= cp <= 0xDBFF:
                if i + 6 > n or s[i] != 92 or s[i + 1] != 117:
                    return -1
                lo = _hex4(s + i + 2)
                if lo < 0xDC00 or lo > 0xDFFF:
                    return -1
                i += 6
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
            if cp >= 0x80:
                high[0] = True
            if cp < 0x80:
                out[o] = cp
            elif cp < 0x800:
                out[o] = 0xC0 | (cp >> 6)
                out[o + 1] = 0x80 | (cp & 0x3F)
                o += 1
            elif cp < 0x10000:
                out[o] = 0xE0 | (cp >> 12)
                out[o + 1] = 0x80 | ((cp >> 6) & 0x3F)
                out[o + 2] = 0x80 | (cp & 0x3F)
                o += 2
            else:
                out[o] = 0xF0 | (cp >> 18)
                out[o + 1] = 0x80 | ((cp >> 12) & 0x3F)
                out[o + 2] = 0x80 | ((cp >> 6) & 0x3F)
                out[o + 3] = 0x80 | (cp & 0x3F)
                o += 3
        else:
            return -1
        o += 1
    return o


cdef object _read_str(_Reader* r):
    # r.p is at the opening quote.
    cdef const unsigned char* s = r.p + 1
    cdef const unsigned char* q = s
    cdef unsigned char c
    cdef bint ascii = True, escaped = False
    cdef Py_ssize_t n
    while True:
        # Eight plain ASCII bytes at a time (no quote, backslash, control or
        # high-bit byte), the common case in keys, ids and signatures.
        while q + 8 <= r.end and not _special8(_load64(q)):
            q += 8
        # Then plain bytes one by one up to the special one.
        while q < r.end and _STR_CLASS[q[0]] == 0:
            q += 1
        if q >= r.end:
            return _NO
        c = _STR_CLASS[q[0]]
        if c == 1:
            break
        elif c == 2:
            escaped = True
            q += 2  # the escaped character cannot end the string
        elif c == 4:
            ascii = False
            q += 1
        else:
            return _NO
    r.p = q + 1
    n = q - s
    if not escaped:
        if ascii:
            return _ascii_str(s, n)
        if not utf8_valid(s, n):
            return _NO
        return PyUnicode_DecodeUTF8(<char*>s, n, NULL)
    cdef unsigned char small[256]
    if n <= 256:
        return _unescaped_str(s, n, ascii, small)
    cdef unsigned char* buf = <unsigned char*>PyMem_Malloc(n)
    if buf is NULL:
        raise MemoryError()
    try:
        return _unescaped_str(s, n, ascii, buf)
    finally:
        PyMem_Free(buf)


cdef object _unescaped_str(const unsigned char* s, Py_ssize_t n, bint ascii,
                           unsigned char* buf):
    # buf: n bytes of scratch. An escape always yields valid UTF-8 (lone
    # surrogates are declined), so only raw non-ASCII bytes need checking.
    cdef bint high = False
    cdef Py_ssize_t m = _unescape(s, n, buf, &high)
    if m < 0:
        return _NO
    if ascii and not high:
        return _ascii_str(buf, m)
    if not ascii and not utf8_valid(buf, m):
        return _NO
    return PyUnicode_DecodeUTF8(<char*>buf, m, NULL)


cdef inline bint _digit(unsigned char c) noexcept nogil:
    return 48 <= c <= 57


# Exact powers of ten: every 10**k for k <= 22 is a double with no rounding.
cdef double _POW10[23]
for _i in range(23):
    _POW10[_i] = float(10 ** _i)
del _i


cdef object _read_number(_Reader* r):
    # JSON number grammar is checked here, and the value must be orjson's: an
    # int when there is no fraction or exponent, else a correctly rounded
    # float. Taken here: ints of up to 18 digits, and floats whose digits fit
    # the exact case (at most 15 significant digits and a power of ten up to
    # 22, so one IEEE multiply or divide of two exact values rounds correctly).
    # Anything else goes to orjson.
    cdef const unsigned char* p = r.p
    cdef const unsigned char* end = r.end
    cdef bint neg = False, is_float = False, exp_neg = False
    cdef uint64_t m = 0
    cdef int digits = 0, sig = 0, frac = 0, e10 = 0, e = 0
    cdef double x
    if p[0] == 45:
        neg = True
        p += 1
    if p >= end or not _digit(p[0]):
        return _NO
    if p[0] == 48:
        p += 1
        if p < end and _digit(p[0]):  # a leading zero
            return _NO
    else:
        while p < end and _digit(p[0]):
            digits += 1
            if digits <= 19:
                m = m * 10 + (p[0] - 48)
            p += 1
        sig = digits
    if p < end and p[0] == 46:
        is_float = True
        p += 1
        if p >= end or not _digit(p[0]):
            return _NO
        while p < end and _digit(p[0]):
            if sig or p[0] != 48:  # leading zeros of the fraction are not significant
                sig += 1
                if sig <= 19:
                    m = m * 10 + (p[0] - 48)
            frac += 1
            p += 1
    if p < end and (p[0] == 101 or p[0] == 69):
        is_float = True
        p += 1
        if p < end and (p[0] == 43 or p[0] == 45):
            exp_neg = p[0] == 45
            p += 1
        if p >= end or not _digit(p[0]):
            return _NO
        while p < end and _digit(p[0]):
            if e < 100000:
                e = e * 10 + (p[0] - 48)
            p += 1
    if not is_float:
        if digits > 18:  # might not fit in 64 bits; orjson decides
            return _NO
        r.p = p
        return PyLong_FromLongLong(-<long long>m if neg else <long long>m)
    if sig > 15:
        return _NO
    e10 = (-e if exp_neg else e) - frac
    if e10 < -22 or e10 > 22:
        return _NO
    x = <double>m
    if e10 >= 0:
        x = x * _POW10[e10]
    else:
        x = x / _POW10[-e10]
    r.p = p
    return PyFloat_FromDouble(-x if neg else x)


cdef object _read_value(_Reader* r, int depth):
    _skip_ws(r)
    if r.p >= r.end:
        return _NO
    cdef unsigned char c = r.p[0]
    cdef Py_ssize_t left = r.end - r.p
    if c == 34:
        return _read_str(r)
    if c == 123:
        return _read_object(r, depth + 1)
    if c == 91:
        return _read_array(r, depth + 1)
    if c == 116:
        if left >= 4 and memcmp(r.p, b"true", 4) == 0:
            r.p += 4
            return True
        return _NO
    if c == 102:
        if left >= 5 and memcmp(r.p, b"false", 5) == 0:
            r.p += 5
            return False
        return _NO
    if c == 110:
        if left >= 4 and memcmp(r.p, b"null", 4) == 0:
            r.p += 4
            return None
        return _NO
    if c == 45 or 48 <= c <= 57:
        return _read_number(r)
    return _NO


cdef object _read_object(_Reader* r, int depth):
    # r.p is at "{".
    if depth > _MAX_DEPTH:
        return _NO
    r.p += 1
    cdef dict d = PyDict_New()
    cdef object k, v
    _skip_ws(r)
    if r.p < r.end and r.p[0] == 125:
        r.p += 1
        return d
    while True:
        if r.p >= r.end or r.p[0] != 34:
            return _NO
        k = _read_str(r)
        if k is _NO:
            return _NO
        _skip_ws(r)
        if r.p >= r.end or r.p[0] != 58:
            return _NO
        r.p += 1
        v = _read_value(r, depth)
        if v is _NO:
            return _NO
        PyDict_SetItem(d, k, v)  # a repeated key: the last one wins, as in orjson
        _skip_ws(r)
        if r.p >= r.end:
            return _NO
        if r.p[0] == 44:
            r.p += 1
            _skip_ws(r)
            continue
        if r.p[0] == 125:
            r.p += 1
            return d
        return _NO


cdef object _read_array(_Reader* r, int depth):
    # r.p is at "[".
    if depth > _MAX_DEPTH:
        return _NO
    r.p += 1
    cdef list items = []
    cdef object v
    _skip_ws(r)
    if r.p < r.end and r.p[0] == 93:
        r.p += 1
        return items
    while True:
        v = _read_value(r, depth)
        if v is _NO:
            return _NO
        PyList_Append(items, v)
        _skip_ws(r)
        if r.p >= r.end:
            return _NO
        if r.p[0] == 44:
            r.p += 1
            continue
        if r.p[0] == 93:
            r.p += 1
            return items
        return _NO


cdef object _fast_parse(const unsigned char* p, Py_ssize_t n):
    """parse_client_message's answer for the frame p[:n], or _NO when orjson must
    decide. The top-level object is never built as a dict: only the last value
    of each of "event", "channel" and "data" is kept (a repeated key's last
    value wins in orjson too); other members are read for validity and dropped.
    """
    cdef _Reader r
    cdef object event = None, channel = None, data = None, k, v
    r.p = p
    r.end = p + n
    _skip_ws(&r)
    if r.p >= r.end or r.p[0] != 123:
        return _NO
    r.p += 1
    _skip_ws(&r)
    if r.p < r.end and r.p[0] == 125:
        r.p += 1
    else:
        while True:
            if r.p >= r.end or r.p[0] != 34:
                return _NO
            k = _read_str(&r)
            if k is _NO:
                return _NO
            _skip_ws(&r)
            if r.p >= r.end or r.p[0] != 58:
                return _NO
            r.p += 1
            v = _read_value(&r, 1)
            if v is _NO:
                return _NO
            if k == "event":
                event = v
            elif k == "channel":
                channel = v
            elif k == "data":
                data = v
            _skip_ws(&r)
            if r.p >= r.end:
                return _NO
            if r.p[0] == 44:
                r.p += 1
                _skip_ws(&r)
                continue
            if r.p[0] == 125:
                r.p += 1
                break
            return _NO
    _skip_ws(&r)
    if r.p != r.end:
        return _NO
    # The frame is well-formed JSON: from here on, the reference's checks.
    if event is None:
        raise _ProtocolError(MSG_NO_EVENT)
    if not PyUnicode_Check(event):
        raise _ProtocolError(MSG_EVENT_TYPE)
    if PyUnicode_GET_LENGTH(event) == 0:
        raise _ProtocolError(MSG_NO_EVENT)
    if channel is not None and not PyUnicode_Check(channel):
        raise _ProtocolError(MSG_CHANNEL_TYPE)
    return (event, channel, data)


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
    # Exact types only: orjson refuses subclasses, so the reference does too.
    if PyBytes_CheckExact(raw):
        msg = _fast_parse(<const unsigned char*>PyBytes_AS_STRING(raw), size)
        if msg is not _NO:
            return msg
    elif PyUnicode_CheckExact(raw) and PyUnicode_IS_COMPACT_ASCII(raw):
        msg = _fast_parse(<const unsigned char*>PyUnicode_DATA(raw), size)
        if msg is not _NO:
            return msg
    try:
        msg = _loads(raw)
    except _JSONDecodeError as exc:
        # The reference's own error path (numbers beyond double range, error messages).
        msg = _loads_after_error(raw, exc)
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

cdef inline uint64_t _escape8(uint64_t w) noexcept nogil:
    # Non-zero when one of the 8 bytes needs escaping: '"', '\\' or below 0x20.
    cdef uint64_t ones = 0x0101010101010101ULL
    cdef uint64_t q = w ^ 0x2222222222222222ULL
    cdef uint64_t b = w ^ 0x5C5C5C5C5C5C5C5CULL
    cdef uint64_t low = (w - 0x2020202020202020ULL) & ~w
    return (((q - ones) & ~q) | ((b - ones) & ~b) | low) & 0x8080808080808080ULL


cdef Py_ssize_t json_escaped_len(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0, j, total = n
    while i + 8 <= n:
        if _escape8(_load64(s + i)):
            for j in range(i, i + 8):
                total += _ESC_EXTRA[s[j]]
        i += 8
    while i < n:
        total += _ESC_EXTRA[s[i]]
        i += 1
    return total


cdef char* json_escape_into(char* out, const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0, start = 0
    cdef unsigned char c, extra
    while i < n:
        if i + 8 <= n and not _escape8(_load64(s + i)):
            i += 8
            continue
        c = s[i]
        extra = _ESC_EXTRA[c]
        if extra == 0:
            i += 1
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
        i += 1
        start = i
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


# ---------------------------------------------------------------- raw data span

cdef inline bint _rd_ws(unsigned char c) noexcept nogil:
    return c == 32 or c == 9 or c == 13 or c == 10


cdef inline Py_ssize_t _rd_skip_ws(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and _rd_ws(p[i]):
        i += 1
    return i


cdef inline Py_ssize_t _rd_skip_string(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    i += 1
    while i < n:
        if p[i] == 92:  # backslash
            i += 2
        elif p[i] == 34:
            return i + 1
        else:
            i += 1
    return n


cdef Py_ssize_t _rd_skip_value(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    cdef unsigned char c = p[i]
    cdef Py_ssize_t depth = 0
    if c == 34:
        return _rd_skip_string(p, i, n)
    if c == 123 or c == 91:
        while i < n:
            c = p[i]
            if c == 34:
                i = _rd_skip_string(p, i, n)
                continue
            if c == 123 or c == 91:
                depth += 1
            elif c == 125 or c == 93:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    while i < n and not (p[i] == 44 or p[i] == 125 or p[i] == 93 or _rd_ws(p[i])):
        i += 1
    return i


cpdef object raw_data(object raw):
    """The exact JSON text of the top-level ``data`` value of a client frame, or None.

    Same contract as ``_protocol_py.raw_data``: call it on a frame the parser accepted.
    """
    cdef bytes buf
    if PyUnicode_Check(raw):
        buf = raw.encode("utf-8", "surrogatepass")
    elif PyBytes_CheckExact(raw):
        buf = <bytes>raw
    else:
        buf = bytes(raw)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t i = _rd_skip_ws(p, 0, n)
    cdef Py_ssize_t key_start, key_end, start = -1, end = -1, vstart
    if i >= n or p[i] != 123:
        return None
    i += 1
    while True:
        i = _rd_skip_ws(p, i, n)
        if i >= n or p[i] != 34:
            break
        key_start = i
        i = _rd_skip_string(p, i, n)
        key_end = i
        i = _rd_skip_ws(p, i, n)
        if i >= n or p[i] != 58:
            break
        i = _rd_skip_ws(p, i + 1, n)
        if i >= n:
            break
        vstart = i
        i = _rd_skip_value(p, i, n)
        if key_end - key_start == 6 and memcmp(p + key_start, b'"data"', 6) == 0:
            start, end = vstart, i
        elif memchr(p + key_start, 92, key_end - key_start) != NULL:
            if orjson.loads(buf[key_start:key_end]) == "data":
                start, end = vstart, i
        i = _rd_skip_ws(p, i, n)
        if i >= n or p[i] != 44:
            break
        i += 1
    if start < 0:
        return None
    return PyUnicode_DecodeUTF8(<const char*>p + start, end - start, NULL)
