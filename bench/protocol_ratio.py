"""Measure the protocol twins side by side and write ``bench/results/micro_protocol.json``.

Usage: ``PYTHONPATH=src python bench/protocol_ratio.py [--runs 9] [--out PATH]``

Each case (the ones of ``bench/test_bench_protocol.py``) is timed for both twins,
interleaved, ``--runs`` times; a run is a batch of calls timed with
``time.thread_time`` (CPU time of this thread, so other load on a shared machine
does not land in the figure). Reported: the median calls/s per twin and the
C/py ratio of the medians (>1 means C is faster); for the parse cases also
``orjson.loads`` alone on the same frame, the floor the py twin builds on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from test_bench_protocol import CASES, FRAMES

from soketi_impl.twins import _protocol_c, _protocol_py


def ops_per_s(fn: Callable[[Any], object], mod: Any, calls: int) -> float:
    """Calls per second of ``fn(mod)`` over one batch of ``calls`` calls."""
    loop = range(calls)
    t0 = time.thread_time()
    for _ in loop:
        fn(mod)
    return calls / (time.thread_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--calls", type=int, default=50_000, help="calls per run")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "micro_protocol.json")
    args = ap.parse_args()

    results: dict[str, Any] = {}
    for name, (what, fn) in CASES.items():
        assert fn(_protocol_c) == fn(_protocol_py), name
        ops_per_s(fn, _protocol_py, args.calls // 10)  # warm-up
        ops_per_s(fn, _protocol_c, args.calls // 10)
        py_runs: list[float] = []
        c_runs: list[float] = []
        for _ in range(args.runs):
            py_runs.append(ops_per_s(fn, _protocol_py, args.calls))
            c_runs.append(ops_per_s(fn, _protocol_c, args.calls))
        py, c = statistics.median(py_runs), statistics.median(c_runs)
        results[name] = {
            "what": what,
            "unit": "calls/s",
            "py": round(py),
            "c": round(c),
            "py_ns_per_call": round(1e9 / py),
            "c_ns_per_call": round(1e9 / c),
            "ratio_c_over_py": round(c / py, 2),
        }
        line = f"{name:26s} py {py:12,.0f}  c {c:12,.0f} calls/s   C/py {c / py:5.2f}"
        if name in FRAMES:
            loads = statistics.median(
                ops_per_s(orjson.loads, FRAMES[name], args.calls) for _ in range(args.runs)
            )
            results[name]["orjson_loads_alone"] = round(loads)
            line += f"   (orjson.loads alone {loads:12,.0f})"
        print(line)

    doc = {
        "what": "protocol micro benchmark: each function called in a Python loop; "
        "median of runs, CPU time of the measuring thread (time.thread_time); "
        "the loop's own overhead is included in both twins",
        "runs": args.runs,
        "calls_per_run": args.calls,
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
