from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soketi_impl.errors import DuplicateConnection
from soketi_impl.twins import _speedups


def test_add_get_remove(twin: Callable[[str], ModuleType]) -> None:
    t = twin("conntable").ConnectionTable()
    t.add("1.1", "a")
    t.add("1.2", "b")
    assert len(t) == 2 and "1.1" in t and "9" not in t
    assert t.get("1.2") == "b" and t.get("x") is None and t.get("x", 5) == 5
    assert sorted(t) == ["a", "b"] and sorted(t.keys()) == ["1.1", "1.2"]
    assert t.remove("1.1") == "a" and t.remove("1.1") is None
    assert len(t) == 1 and dict(t.mapping()) == {"1.2": "b"}
    t.clear()
    assert len(t) == 0


def test_duplicate_is_clear_error(twin: Callable[[str], ModuleType]) -> None:
    t = twin("conntable").ConnectionTable()
    t.add("7", object())
    with pytest.raises(DuplicateConnection, match="'7' is already tracked"):
        t.add("7", object())


def test_iteration_is_a_snapshot(twin: Callable[[str], ModuleType]) -> None:
    t = twin("conntable").ConnectionTable()
    for i in range(10):
        t.add(str(i), i)
    for v in t:  # removing while iterating must not raise
        t.remove(str(v))
    assert len(t) == 0


def test_mapping_is_live_and_read_only(twin: Callable[[str], ModuleType]) -> None:
    t = twin("conntable").ConnectionTable()
    m = t.mapping()
    t.add("a", 1)
    assert m["a"] == 1
    with pytest.raises(TypeError):
        m["b"] = 2  # type: ignore[index]


# ---------------------------------------------------------------- any hashable id


def test_numeric_and_tuple_ids(twin: Callable[[str], ModuleType]) -> None:
    """The seed's example uses numeric ids (``Math.random() * 1e5``): every twin takes them."""
    t = twin("conntable").ConnectionTable()
    t.add(42, "int")
    t.add(12345.678, "float")
    t.add(("node", 7), "tuple")
    assert t.get(42) == "int" and t.get(42.0) == "int" and 12345.678 in t
    assert t.get(("node", 7)) == "tuple" and t.keys() == [42, 12345.678, ("node", 7)]
    t.add(1, "one")
    with pytest.raises(DuplicateConnection, match="id True is already tracked"):
        t.add(True, "true")  # 1 == True: one dict key
    assert t.remove(1.0) == "one" and len(t) == 3


def test_unhashable_id_is_a_type_error(twin: Callable[[str], ModuleType]) -> None:
    t = twin("conntable").ConnectionTable()
    t.add("a", 1)  # (dict.pop on an empty dict returns the default without hashing)
    for op in (lambda: t.add([1], "x"), lambda: t.get([1]), lambda: t.remove({}), lambda: [1] in t):
        with pytest.raises(TypeError, match="unhashable"):
            op()


# Keys chosen to collide under dict semantics (1 == 1.0 == True, 0 == -0.0 == False)
# next to keys that only look alike ("1", (1,)), plus arbitrary ones of each type.
_COLLIDING = [0, 1, 2, 1.0, 0.0, -0.0, True, False, "1", "", "1.2", (1,), (1.0,), (True, "a"), ()]
_scalar = st.one_of(
    st.sampled_from(_COLLIDING),
    st.integers(),
    st.text(max_size=4),
    st.floats(allow_nan=False),  # NaN != NaN: a dict finds it by identity only
    st.booleans(),
    st.binary(max_size=3),
)
_keys = st.one_of(_scalar, st.tuples(_scalar, _scalar), st.lists(st.integers(), max_size=2))
_ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "get", "contains", "iterate", "len", "keys", "mapping"]), _keys),
    max_size=60,
)


def _run(table: Any, ops: list[tuple[str, Any]]) -> list[Any]:
    """Apply ``ops``; each step's result, or the exception type and message it raised."""
    out: list[Any] = []
    for i, (op, key) in enumerate(ops):
        try:
            if op == "add":
                out.append(table.add(key, i))
            elif op == "remove":
                out.append(table.remove(key))
            elif op == "get":
                out.append(table.get(key, "missing"))
            elif op == "contains":
                out.append(key in table)
            elif op == "iterate":
                out.append(list(table))
            elif op == "len":
                out.append(len(table))
            elif op == "keys":
                # repr tells 1 from 1.0 from True: the twins must keep the same key object.
                out.append([repr(k) for k in table.keys()])
            else:
                out.append(sorted(repr(kv) for kv in table.mapping().items()))
        except Exception as exc:
            out.append((type(exc).__name__, str(exc)))
    return out


@pytest.mark.skipif(_speedups.NO_EXTENSIONS, reason="SOKETI_IMPL_NO_EXTENSIONS is set")
@settings(max_examples=400, deadline=None)
@given(_ops)
def test_twins_agree_on_any_ids(ops: list[tuple[str, Any]]) -> None:
    from soketi_impl.twins import _conntable_c, _conntable_py

    ops = ops + [("keys", 0), ("mapping", 0)]
    py, c = _run(_conntable_py.ConnectionTable(), ops), _run(_conntable_c.ConnectionTable(), ops)
    assert py == c
    # ...and both behave as a dict does, so the py twin is a sound oracle.
    model: dict[Any, int] = {}
    for i, (op, key) in enumerate(ops):
        try:
            if op == "add" and key not in model:
                model[key] = i
            elif op == "remove":
                model.pop(key, None)
        except TypeError:  # unhashable: both twins raised it too (checked above)
            pass
    assert c[-2] == [repr(k) for k in model]
    assert c[-1] == sorted(repr(kv) for kv in model.items())
