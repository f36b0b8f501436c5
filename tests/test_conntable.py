from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from soketi_impl.errors import DuplicateConnection


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
