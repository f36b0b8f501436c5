"""The compiled extensions must be there unless SOKETI_IMPL_NO_EXTENSIONS is set."""

from __future__ import annotations

import importlib

import pytest

from soketi_impl.twins import _speedups

AREAS = ["conntable", "protocol", "fanout", "ws", "frontdoor", "query", "trigger"]


@pytest.mark.parametrize("area", AREAS)
def test_extension_loaded(area: str) -> None:
    dispatcher = importlib.import_module(f"soketi_impl.twins._{area}")
    loaded = {getattr(dispatcher, n).__module__ for n in getattr(dispatcher, "__all__", []) if hasattr(getattr(dispatcher, n), "__module__")}
    if _speedups.NO_EXTENSIONS:
        assert loaded <= {f"soketi_impl.twins._{area}_py"}, loaded
        return
    # Not a skip: a build that silently fell back to the pure twins must fail CI.
    assert area not in _speedups.FAILED, f"extension soketi_impl.twins._{area}_c failed to load: {_speedups.FAILED[area]}"
    assert loaded == {f"soketi_impl.twins._{area}_c"}, loaded


def test_switch_read_in_one_place() -> None:
    import pathlib

    src = pathlib.Path(_speedups.__file__).parent
    readers = [
        p.name
        for p in src.rglob("*.py")
        if p.name != "_speedups.py"
        and any("SOKETI_IMPL_NO_EXTENSIONS" in line and ("environ" in line or "getenv" in line)
                for line in p.read_text().splitlines())
    ]
    assert readers == []
