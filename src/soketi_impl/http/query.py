"""The query string of an API request, as the signature check reads it.

:func:`parse_query` and :func:`signed_query` are the query twins
(:mod:`soketi_impl.twins._query_py`, compiled: ``_query_c``).
"""

from __future__ import annotations

from ..twins._query import parse_query, signed_query

__all__ = ["parse_query", "signed_query"]
