"""Dispatcher for the API query-string twins (see :mod:`soketi_impl.twins._speedups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

if TYPE_CHECKING:
    from ._query_py import parse_query, sdk_query, signed_query
else:
    _mod = load("query")
    parse_query = _mod.parse_query
    sdk_query = _mod.sdk_query
    signed_query = _mod.signed_query

__all__ = ["parse_query", "sdk_query", "signed_query"]
