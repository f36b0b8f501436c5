# cython: language_level=3
"""The query string of an HTTP API request, compiled twin of ``_query_py`` (same contract).

An ASCII query without percent-escapes (what the SDKs send) is read byte by byte
from the string's own storage; anything else goes the pure twin's way.
"""

from urllib.parse import unquote

from libc.string cimport memchr, memcmp, memcpy

__all__ = ["parse_query", "sdk_query", "signed_query"]

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)


cdef dict _parse_slow(str query):
    cdef dict params = {}
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in key:
            key = unquote(key, errors="strict")
        if "%" in value:
            value = unquote(value, errors="strict")
        params[key.lower()] = value
    return params


cpdef dict parse_query(str query):
    """The query string as a dict: keys lower-cased, keys and values percent-decoded."""
    cdef dict params = {}
    cdef Py_ssize_t n, i, start, eq
    cdef const char* s
    cdef bint upper
    cdef char c
    cdef const char* end
    if not query:
        return params
    if not query.isascii():
        return _parse_slow(query)
    s = PyUnicode_AsUTF8AndSize(query, &n)  # an ASCII str's own bytes: no copy
    if memchr(s, b"%", n) != NULL:
        return _parse_slow(query)
    start = 0
    while start <= n:
        i = start
        eq = -1
        upper = False
        while i < n:  # the key
            c = s[i]
            if c == b"=" or c == b"&":
                break
            if b"A" <= c <= b"Z":
                upper = True
            i += 1
        if i < n and s[i] == b"=":
            eq = i
            end = <const char*>memchr(s + i, b"&", n - i)  # the value
            i = n if end == NULL else end - s
        if i > start:
            if eq < 0:
                key = query[start:i]
                value = ""
            else:
                key = query[start:eq]
                value = query[eq + 1:i]
            if upper:
                key = key.lower()
            params[key] = value
        start = i + 1
    return params


cdef inline str _ascii(const char* p, Py_ssize_t n):
    """A str of ``n`` ASCII bytes (no scan for the widest character: they are ASCII)."""
    cdef str text = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(text), p, n)
    return text


cdef inline bint _is(const char* s, Py_ssize_t start, Py_ssize_t klen, const char* key, Py_ssize_t n):
    return klen == n and memcmp(s + start, key, n) == 0


cpdef tuple sdk_query(str query):
    """A query in the signed form the SDKs send, read in one pass; None for any other.

    ``(signed, auth_key, auth_signature, auth_timestamp, auth_version, body_md5)``
    (``_query_py.sdk_query`` says it in Python): :func:`signed_query`'s checks, the
    values sliced from the string as they are found (the trigger's fast path reads
    its head with it).
    """
    cdef Py_ssize_t n, i, start, eq, prev_start = 0, prev_len = 0, klen, m
    cdef Py_ssize_t sig_start = -1, sig_end = -1, parts = 0
    cdef const char* s
    cdef char c
    cdef int cmp
    cdef object key = None, signature = None, stamp = None, version = None, md5 = None
    if not query.isascii():
        return None
    s = PyUnicode_AsUTF8AndSize(query, &n)
    if memchr(s, b"%", n) != NULL:
        return None
    start = 0
    while start <= n:  # one part per "&" (an empty query is one empty part)
        i = start
        eq = -1
        while i < n and s[i] != b"&":
            if eq < 0:
                c = s[i]
                if c == b"=":
                    eq = i
                elif not (b"a" <= c <= b"z" or b"0" <= c <= b"9" or c == b"_"):
                    return None
            i += 1
        klen = eq - start
        if eq < 0 or klen == 0:
            return None
        parts += 1
        if _is(s, start, klen, b"auth_signature", 14):
            if sig_start >= 0:
                return None
            sig_start = start
            sig_end = i
            signature = _ascii(<const char*>s + eq + 1, i - eq - 1)
        else:
            if prev_len:
                m = klen if klen < prev_len else prev_len
                cmp = memcmp(s + start, s + prev_start, m)
                if cmp < 0 or (cmp == 0 and klen <= prev_len):
                    return None
            prev_start = start
            prev_len = klen
            if _is(s, start, klen, b"auth_key", 8):
                key = _ascii(<const char*>s + eq + 1, i - eq - 1)
            elif _is(s, start, klen, b"auth_timestamp", 14):
                stamp = _ascii(<const char*>s + eq + 1, i - eq - 1)
            elif _is(s, start, klen, b"auth_version", 12):
                version = _ascii(<const char*>s + eq + 1, i - eq - 1)
            elif _is(s, start, klen, b"body_md5", 8):
                md5 = _ascii(<const char*>s + eq + 1, i - eq - 1)
        start = i + 1
    if sig_start < 0 or parts < 2:
        return None
    if sig_end == n:  # last (the Node SDK)
        signed = _ascii(<const char*>s, sig_start - 1)
    elif sig_start == 0:
        signed = _ascii(<const char*>s + sig_end + 1, n - sig_end - 1)
    else:  # in its sorted place (the Python SDK): the parts before and after it
        signed = PyUnicode_New(n - (sig_end + 1 - sig_start), 127)
        memcpy(PyUnicode_DATA(signed), s, sig_start)
        memcpy(<char*>PyUnicode_DATA(signed) + sig_start, s + sig_end + 1, n - sig_end - 1)
    return (signed, key, signature, stamp, version, md5)


cpdef object signed_query(str query):
    """The query as the signature covers it, when ``query`` is already in that form, else None."""
    cdef tuple found = sdk_query(query)
    return None if found is None else found[0]
