"""Measure the fan-out twins side by side and write ``bench/results/micro_fanout.json``.

Usage: ``PYTHONPATH=src python bench/fanout_ratio.py [--runs 7] [--out PATH]``

Each figure is the median of ``--runs`` runs; the py twin is the baseline measured
in the same run, and every case reports the C/py ratio (>1 means C is faster).
Cases: one broadcast of a 64-byte payload to 1000 in-memory sinks then a flush
(deliveries/s), eight broadcasts coalesced into one flush, and add + remove of
100k sinks in one channel (operations/s).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from soketi_impl.twins import _fanout_c, _fanout_py

SUBSCRIBERS = 1000
PAYLOAD = b"x" * 64
CHURN = 100_000


class NullLoop:
    """Stands for the event loop: the benchmark calls ``flush()`` itself."""

    def call_soon(self, cb: Any) -> None:
        pass


def _channel(mod: ModuleType) -> tuple[Any, Any]:
    outbox = mod.Outbox(NullLoop())
    stats = mod.Stats()
    table = mod.ChannelTable(stats)
    for _ in range(SUBSCRIBERS):
        table.add("bench", mod.Sink(outbox, stats, write=collections.deque(maxlen=1).append))
    return table, outbox


def broadcast_case(mod: ModuleType, per_flush: int, rounds: int) -> float:
    """Deliveries per second of ``per_flush`` broadcasts then one flush, ``rounds`` times."""
    table, outbox = _channel(mod)
    broadcast, flush = table.broadcast, outbox.flush
    t0 = time.perf_counter()
    for _ in range(rounds):
        for _ in range(per_flush):
            broadcast("bench", PAYLOAD)
        flush()
    dt = time.perf_counter() - t0
    return SUBSCRIBERS * per_flush * rounds / dt


def churn_case(mod: ModuleType) -> float:
    """Membership operations per second: add then remove ``CHURN`` sinks."""
    outbox = mod.Outbox(NullLoop())
    stats = mod.Stats()
    table = mod.ChannelTable(stats)
    sinks = [mod.Sink(outbox, stats, write=len) for _ in range(CHURN)]
    add, remove = table.add, table.remove
    t0 = time.perf_counter()
    for s in sinks:
        add("bench", s)
    for s in sinks:
        remove("bench", s)
    dt = time.perf_counter() - t0
    return 2 * CHURN / dt


def _timed(fn: Callable[[], float]) -> float:
    # The cyclic GC would fire at random points of the 100k-object cases.
    gc.collect()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


def medians(runs: int, fn: Callable[[ModuleType], float]) -> tuple[float, float]:
    """Median of ``runs`` runs of each twin; py and c runs alternate, so that load
    from elsewhere on the machine falls on both alike."""
    _timed(lambda: fn(_fanout_py))  # warm-up
    _timed(lambda: fn(_fanout_c))
    py: list[float] = []
    c: list[float] = []
    for _ in range(runs):
        py.append(_timed(lambda: fn(_fanout_py)))
        c.append(_timed(lambda: fn(_fanout_c)))
    return statistics.median(py), statistics.median(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "micro_fanout.json")
    args = ap.parse_args()

    cases: dict[str, tuple[str, Callable[[ModuleType], float]]] = {
        "broadcast_64B_1000_sinks": ("deliveries/s", lambda m: broadcast_case(m, 1, 300)),
        "broadcast_64B_1000_sinks_8_per_flush": (
            "deliveries/s",
            lambda m: broadcast_case(m, 8, 60),
        ),
        "channel_add_remove_100k": ("operations/s", churn_case),
    }
    results: dict[str, Any] = {}
    for name, (unit, fn) in cases.items():
        py, c = medians(args.runs, fn)
        results[name] = {
            "unit": unit,
            "py": round(py),
            "c": round(c),
            "ratio_c_over_py": round(c / py, 2),
        }
        print(f"{name:40s} py {py:14,.0f}  c {c:14,.0f} {unit:13s} C/py {c / py:5.2f}")

    doc = {
        "what": "fan-out micro benchmark: in-memory sinks (deque(maxlen=1).append as write), "
        "broadcast + Outbox.flush called directly; median of runs, py and c alternating",
        "runs": args.runs,
        "subscribers": SUBSCRIBERS,
        "payload_bytes": len(PAYLOAD),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
