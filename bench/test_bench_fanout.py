"""Micro benchmarks of the fan-out twins, C against py side by side.

Run: ``PYTHONPATH=src pytest bench/test_bench_fanout.py -n 0 --benchmark-enable``
(``--benchmark-group-by=group`` puts each C case next to its py baseline). The
ratio script ``bench/fanout_ratio.py`` measures the same cases without pytest and
writes ``bench/results/micro_fanout.json``.

The sinks are in memory: their ``write`` is ``deque(maxlen=1).append``, a C
callable that keeps the last write, so what is timed is the fan-out itself
(framing, the per-recipient queueing, the flush's one call per sink), not a kernel.
"""

from __future__ import annotations

import collections
from types import ModuleType
from typing import Any

import pytest

from soketi_impl.twins import _fanout_py, _speedups

SUBSCRIBERS = 1000
PAYLOAD = b"x" * 64
CHURN = 100_000


def _modules() -> list[Any]:
    params: list[Any] = [pytest.param(_fanout_py, id="py")]
    if _speedups.NO_EXTENSIONS:
        params.append(pytest.param(None, id="c", marks=pytest.mark.skip("no extensions")))
    else:
        from soketi_impl.twins import _fanout_c

        params.append(pytest.param(_fanout_c, id="c"))
    return params


class NullLoop:
    """Stands for the event loop: the benchmark calls ``flush()`` itself."""

    def call_soon(self, cb: Any) -> None:
        pass


def make_channel(mod: ModuleType, n: int) -> tuple[Any, Any, list[collections.deque[bytes]]]:
    outbox = mod.Outbox(NullLoop())
    stats = mod.Stats()
    table = mod.ChannelTable(stats)
    outs: list[collections.deque[bytes]] = []
    for _ in range(n):
        out: collections.deque[bytes] = collections.deque(maxlen=1)
        outs.append(out)
        table.add("bench", mod.Sink(outbox, stats, write=out.append))
    return table, outbox, outs


@pytest.mark.parametrize("mod", _modules())
def test_broadcast_1000_sinks(benchmark: Any, mod: ModuleType) -> None:
    benchmark.group = "broadcast 64 B to 1000 sinks + flush"
    table, outbox, outs = make_channel(mod, SUBSCRIBERS)

    def once() -> None:
        table.broadcast("bench", PAYLOAD)
        outbox.flush()

    benchmark(once)
    assert outs[-1][0] == mod.frame_text(PAYLOAD)


@pytest.mark.parametrize("mod", _modules())
def test_broadcast_8_coalesced_1000_sinks(benchmark: Any, mod: ModuleType) -> None:
    benchmark.group = "8 broadcasts of 64 B to 1000 sinks, one flush"
    table, outbox, outs = make_channel(mod, SUBSCRIBERS)

    def once() -> None:
        for _ in range(8):
            table.broadcast("bench", PAYLOAD)
        outbox.flush()

    benchmark(once)
    assert outs[-1][0] == mod.frame_text(PAYLOAD) * 8


@pytest.mark.parametrize("mod", _modules())
def test_channel_add_remove_100k(benchmark: Any, mod: ModuleType) -> None:
    benchmark.group = "add then remove 100k sinks in one channel"
    outbox = mod.Outbox(NullLoop())
    stats = mod.Stats()
    table = mod.ChannelTable(stats)
    sinks = [mod.Sink(outbox, stats, write=len) for _ in range(CHURN)]

    def once() -> None:
        add = table.add
        remove = table.remove
        for s in sinks:
            add("bench", s)
        for s in sinks:
            remove("bench", s)

    benchmark.pedantic(once, rounds=5, iterations=1, warmup_rounds=1)
    assert len(table) == 0
