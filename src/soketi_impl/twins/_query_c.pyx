# cython: language_level=3
"""The query string of an HTTP API request, compiled twin of ``_query_py`` (same contract).

An ASCII query without percent-escapes (what the SDKs send) is read byte by byte
from the string's own storage; anything else goes the pure twin's way.
"""

from urllib.parse import unquote

from libc.string cimport memchr, memcmp

__all__ = ["parse_query", "signed_query"]

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL

cdef const char* _SIGNATURE_KEY = b"auth_signature"
cdef Py_ssize_t _SIGNATURE_KEY_LEN = 14


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


cpdef object signed_query(str query):
    """The query as the signature covers it, when ``query`` is already in that form, else None."""
    cdef Py_ssize_t n, i, start, eq, prev_start = 0, prev_len = 0, klen, m
    cdef Py_ssize_t sig_start = -1, sig_end = -1, parts = 0
    cdef const char* s
    cdef char c
    cdef int cmp
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
        if klen == _SIGNATURE_KEY_LEN and memcmp(s + start, _SIGNATURE_KEY, klen) == 0:
            if sig_start >= 0:
                return None
            sig_start = start
            sig_end = i
        else:
            if prev_len:
                m = klen if klen < prev_len else prev_len
                cmp = memcmp(s + start, s + prev_start, m)
                if cmp < 0 or (cmp == 0 and klen <= prev_len):
                    return None
            prev_start = start
            prev_len = klen
        start = i + 1
    if sig_start < 0 or parts < 2:
        return None
    if sig_end == n:  # last (the Node SDK)
        return query[:sig_start - 1]
    if sig_start == 0:
        return query[sig_end + 1:]
    return query[:sig_start] + query[sig_end + 1:]  # in its sorted place (the Python SDK)
