"""raw_data: the exact text of a client frame's ``data`` value, on both twins."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soketi_impl.twins import _protocol_py, _speedups

CASES = [
    (b'{"event":"client-x","channel":"private-a","data":{"a":1}}', '{"a":1}'),
    (b'{"event":"client-x","data":123456789012345678901234567890}', "123456789012345678901234567890"),
    (b'{"event":"client-x","data":1e400,"channel":"c"}', "1e400"),
    (b'{"event":"client-x","data":"str \\" with } and ]"}', '"str \\" with } and ]"'),
    (b'{ "data" : [1, {"x": "]}"}, 2.50] , "event":"e"}', '[1, {"x": "]}"}, 2.50]'),
    (b'{"event":"e","d\\u0061ta":true}', "true"),
    (b'{"event":"e","data":null}', "null"),
    (b'{"event":"e","data":1,"data":2}', "2"),  # the last one wins, as in the parser
    (b'{"event":"e"}', None),
    (b'{"event":"e","x":{"data":1}}', None),  # only the top level counts
    ('{"event":"e","data":{"é":"ü"}}', '{"é":"ü"}'),
]


@pytest.mark.parametrize("raw, expected", CASES)
def test_examples(twin: Callable[[str], ModuleType], raw: Any, expected: str | None) -> None:
    assert twin("protocol").raw_data(raw) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    data=json_values,
    extra=st.dictionaries(st.text(max_size=6).filter(lambda k: k != "data"), json_values, max_size=3),
    indent=st.sampled_from([None, 1]),
    data_first=st.booleans(),
)
def test_span_parses_back_to_the_value(data: Any, extra: dict[str, Any], indent: int | None, data_first: bool) -> None:
    frame: dict[str, Any] = {"data": data} if data_first else {}
    frame.update({"event": "client-x", **extra})
    if not data_first:
        frame["data"] = data
    raw = json.dumps(frame, indent=indent, ensure_ascii=False).encode()
    text = _protocol_py.raw_data(raw)
    assert text is not None and json.loads(text) == data
    if not _speedups.NO_EXTENSIONS:
        from soketi_impl.twins import _protocol_c

        assert _protocol_c.raw_data(raw) == text
        assert _protocol_c.raw_data(bytearray(raw)) == text
