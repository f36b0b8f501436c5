"""Connection table at 100k connections: C twin against the py twin, as ratios.

Median of several runs of each operation (add, lookup, remove, iterate over 100k
ids), the two twins alternating so that machine noise hits both alike. Ids are
Pusher socket-id strings by default, or ints (``--ids int``) as in the seed's example.
Writes ``bench/results/micro_conntable.json`` (``micro_conntable_int.json`` for int ids).
Run: ``PYTHONPATH=src python bench/conntable_ratio.py [--ids int]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from soketi_impl.twins import _conntable_c, _conntable_py

N = 100_000
KEYS: list[Any] = [f"{i}.{i * 7}" for i in range(N)]
INT_KEYS: list[Any] = [i * 7919 for i in range(N)]


def cases(mod: Any, keys: list[Any] = KEYS) -> dict[str, Callable[[], float]]:

    def add() -> float:
        t = mod.ConnectionTable()
        f = t.add
        start = time.perf_counter()
        for k in keys:
            f(k, k)
        return time.perf_counter() - start

    def full() -> Any:
        t = mod.ConnectionTable()
        for k in keys:
            t.add(k, k)
        return t

    def lookup() -> float:
        t = full()
        g = t.get
        start = time.perf_counter()
        for k in keys:
            g(k)
        return time.perf_counter() - start

    def remove() -> float:
        t = full()
        r = t.remove
        start = time.perf_counter()
        for k in keys:
            r(k)
        return time.perf_counter() - start

    def iterate() -> float:
        t = full()
        start = time.perf_counter()
        for _ in t:
            pass
        return time.perf_counter() - start

    return {"add": add, "lookup": lookup, "remove": remove, "iterate": iterate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--ids", choices=["str", "int"], default="str")
    args = ap.parse_args()
    keys = INT_KEYS if args.ids == "int" else KEYS
    twins = {"py": cases(_conntable_py, keys), "c": cases(_conntable_c, keys)}
    times: dict[str, dict[str, list[float]]] = {k: {op: [] for op in twins["py"]} for k in twins}
    for _ in range(args.runs):
        for kind, ops in twins.items():
            for op, fn in ops.items():
                times[kind][op].append(fn())
    result: dict[str, Any] = {"n": N, "ids": args.ids, "runs": args.runs, "python": platform.python_version(), "ops": {}}
    for op in twins["py"]:
        py, c = statistics.median(times["py"][op]), statistics.median(times["c"][op])
        result["ops"][op] = {"py_ops_per_s": round(N / py), "c_ops_per_s": round(N / c), "c_over_py": round(py / c, 2)}
        print(f"{op:8s} py {N / py / 1e6:6.2f}M/s  c {N / c / 1e6:6.2f}M/s  C/py {py / c:4.2f}x")
    name = "micro_conntable.json" if args.ids == "str" else "micro_conntable_int.json"
    out = Path(__file__).parent / "results" / name
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
