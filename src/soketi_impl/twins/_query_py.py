"""The query string of an HTTP API request, pure-Python twin of ``_query_c``.

- :func:`parse_query`: the parameters as the API and the signature check read them;
- :func:`signed_query`: the part of the query a client signed, taken as it is when the
  client sent it in canonical form (as the SDKs do), so no canonical string is built;
- :func:`sdk_query`: that part and the signature's parameters together (the trigger's
  fast path, ``_trigger``, reads a request's head with it).
"""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["parse_query", "sdk_query", "signed_query"]

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def parse_query(query: str) -> dict[str, str]:
    """The query string as a dict: keys lower-cased, keys and values percent-decoded.

    The SDKs send values unescaped (and sign them so); a client that escapes them
    signs the decoded value, which is what the signature check recomputes. A
    percent-escape that is not UTF-8 raises ``UnicodeDecodeError`` (the API answers
    400). A repeated key keeps its last value.
    """
    params: dict[str, str] = {}
    if not query:
        return params
    if "%" not in query and query.islower():
        # what the SDKs send: nothing to decode, no key to lower-case (two scans in C)
        for part in query.split("&"):
            if part:
                key, _, value = part.partition("=")
                params[key] = value
        return params
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


def signed_query(query: str) -> str | None:
    """The query as the signature covers it, when ``query`` is already in that form, else None.

    The form (see :func:`soketi_impl.signing.api_string_to_sign`): every parameter but
    ``auth_signature``, ``k=v`` sorted by key, joined by ``&``. ``query`` is in it when
    taking out its one ``auth_signature=...`` part leaves exactly that: ASCII, no
    percent-escape, keys of ``a-z 0-9 _`` in strictly increasing order, each with ``=``,
    and at least one of them. The SDKs send it so: the Node SDK with the signature
    last, the Python SDK with it in its sorted place. Then the answer is the query
    without that part, equal to what the check would build from :func:`parse_query`'s
    dict; None means: build it.
    """
    if not query.isascii() or "%" in query:
        return None
    parts = query.split("&")
    if len(parts) < 2:
        return None
    signature = -1
    previous = ""
    for i, part in enumerate(parts):
        key, eq, _ = part.partition("=")
        if not eq or not key or not _KEY_CHARS.issuperset(key):
            return None
        if key == "auth_signature":
            if signature >= 0:
                return None
            signature = i
        elif key <= previous:
            return None
        else:
            previous = key
    if signature < 0:
        return None
    return "&".join(parts[:signature] + parts[signature + 1 :])


def sdk_query(query: str) -> tuple[str, str | None, str | None, str | None, str | None, str | None] | None:
    """A query in the signed form the SDKs send, read in one pass; None for any other.

    ``(signed, auth_key, auth_signature, auth_timestamp, auth_version, body_md5)``: the
    text :func:`signed_query` answers, then the values :func:`parse_query`'s dict has
    (None where absent). None when ``signed_query`` is None.
    """
    signed = signed_query(query)
    if signed is None:
        return None
    params = parse_query(query)
    get = params.get
    return (
        signed, get("auth_key"), get("auth_signature"), get("auth_timestamp"), get("auth_version"),
        get("body_md5"),
    )
