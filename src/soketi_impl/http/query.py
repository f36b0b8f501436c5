"""The query string of an API request, as the signature check reads it."""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["parse_query"]


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
