"""The API query-string twins: the compiled one answers as the pure one, and a query
:func:`signed_query` takes as it is signs exactly what the canonical form would."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soketi_impl.signing import api_string_to_sign, sign_api_request
from soketi_impl.twins import _query_py

_piece = st.sampled_from(
    ["a", "b", "z", "A", "=", "&", "%", "%2b", "%ff", "_", "1", "é", "auth_key=k", "auth_signature",
     "&auth_signature=", "body_md5=", "auth_timestamp=1", "auth_version=1.0"]
)
_query = st.one_of(st.text(max_size=40), st.lists(_piece, max_size=12).map("".join))


def _answer(f: object, query: str) -> object:
    try:
        return f(query)  # type: ignore[operator]
    except Exception as exc:
        return type(exc)


@settings(max_examples=3000, deadline=None)
@given(_query)
def test_signed_query_is_the_canonical_form(query: str) -> None:
    signed = _query_py.signed_query(query)
    if signed is not None:
        params = _query_py.parse_query(query)
        assert api_string_to_sign("M", "/p", params) == f"M\n/p\n{signed}"


def test_the_sdk_form_is_taken_as_it_is() -> None:
    params = sign_api_request("key", "secret", "POST", "/apps/1/events", body=b"{}")
    query = "&".join(f"{k}={v}" for k, v in params.items())
    assert _query_py.signed_query(query) == query.rpartition("&auth_signature=")[0]
    assert _query_py.signed_query("b=1&a=2&auth_signature=x") is None  # not sorted: built
    assert _query_py.signed_query("a=%41&auth_signature=x") is None  # escaped: built


def test_the_python_sdk_form_is_taken_without_its_signature() -> None:
    # pusher-http-python sorts every parameter, auth_signature included
    params = sign_api_request("key", "secret", "POST", "/apps/1/events", body=b"{}")
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    assert query.index("auth_signature=") < query.index("auth_timestamp=")
    expected = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "auth_signature")
    assert _query_py.signed_query(query) == expected
    assert _query_py.signed_query("auth_signature=x&a=1") == "a=1"
    assert _query_py.signed_query("a=1&auth_signature=x&auth_signature=y") is None  # twice: built
    assert _query_py.signed_query("auth_signature=x") is None  # nothing else: built


try:
    _query_c = importlib.import_module("soketi_impl.twins._query_c")
except ImportError:  # the pure build; tests/test_speedups.py says whether that is expected
    _query_c = None


@pytest.mark.skipif(_query_c is None, reason="the compiled twin is not built")
@settings(max_examples=3000, deadline=None)
@given(_query)
def test_compiled_twin_answers_as_the_pure_one(query: str) -> None:
    for name in ("parse_query", "signed_query"):
        pure = _answer(getattr(_query_py, name), query)
        compiled = _answer(getattr(_query_c, name), query)
        assert pure == compiled, (name, query)
        if isinstance(pure, dict):
            assert list(pure.items()) == list(compiled.items())  # type: ignore[union-attr]
