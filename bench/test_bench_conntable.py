"""Micro benchmarks of the connection table twins at 100k connections, C against py.

Run: ``PYTHONPATH=src pytest bench/test_bench_conntable.py -n 0 --benchmark-enable
--benchmark-group-by=group`` (each C case next to its py baseline), or
``python bench/conntable_ratio.py`` for the ratios, written to
``bench/results/micro_conntable.json``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from soketi_impl.twins import _conntable_py, _speedups

N = 100_000
KEYS = [f"{i}.{i * 7}" for i in range(N)]
INT_KEYS = [i * 7919 for i in range(N)]  # numeric ids, as in the seed's example


def _modules() -> list[Any]:
    params: list[Any] = [pytest.param(_conntable_py, id="py")]
    if _speedups.NO_EXTENSIONS:
        params.append(pytest.param(None, id="c", marks=pytest.mark.skip("no extensions")))
    else:
        from soketi_impl.twins import _conntable_c

        params.append(pytest.param(_conntable_c, id="c"))
    return params


def filled(mod: ModuleType, keys: list[Any] = KEYS) -> Any:
    table = mod.ConnectionTable()
    add = table.add
    for key in keys:
        add(key, key)
    return table


@pytest.mark.parametrize("mod", _modules())
def test_add(benchmark: Any, mod: ModuleType) -> None:
    benchmark.group = "add 100k"
    benchmark(filled, mod)


@pytest.mark.parametrize("mod", _modules())
def test_lookup(benchmark: Any, mod: ModuleType) -> None:
    benchmark.group = "lookup 100k"
    table = filled(mod)

    def run() -> None:
        get = table.get
        for key in KEYS:
            get(key)

    benchmark(run)


@pytest.mark.parametrize("mod", _modules())
def test_lookup_int_ids(benchmark: Any, mod: ModuleType) -> None:
    benchmark.group = "lookup 100k int ids"
    table = filled(mod, INT_KEYS)

    def run() -> None:
        get = table.get
        for key in INT_KEYS:
            get(key)

    benchmark(run)


@pytest.mark.parametrize("mod", _modules())
def test_remove(benchmark: Any, mod: ModuleType) -> None:
    benchmark.group = "remove 100k"

    def run(table: Any) -> None:
        remove = table.remove
        for key in KEYS:
            remove(key)

    benchmark.pedantic(run, setup=lambda: ((filled(mod),), {}), rounds=5)


@pytest.mark.parametrize("mod", _modules())
def test_iterate(benchmark: Any, mod: ModuleType) -> None:
    benchmark.group = "iterate 100k"
    table = filled(mod)

    def run() -> int:
        n = 0
        for _ in table:
            n += 1
        return n

    assert benchmark(run) == N
