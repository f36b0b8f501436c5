"""``--workers 2`` against 1: deliveries/s and server CPU per delivery, with the native load client.

Each run starts ``python -m soketi_impl start --workers W`` fresh (not pinned: the
workers may use every core; the load client is pinned to core 1 as in ``run.py``)
and runs ``run.py``'s ``fanout`` scenario (1000 subscribers on one public channel,
signed HTTP publishes, 8 in flight) against the shared port. The kernel spreads the
subscribers and the publishers' connections over the workers, so most deliveries of
a publish happen on a worker that got the frame through the hub.

Server CPU is user and system time from ``/proc/PID/stat`` of the supervisor (the
hub) and of every worker, summed over the run; with ``--workers 1`` there is no
supervisor and the one process is counted. Reported per variant: deliveries/s, CPU
microseconds per delivery (user, system, total), the hub's share of the server's
CPU, and p50/p99 latency. The variants alternate within a run and the order flips
every run. Writes ``bench/results/workers.json``. Run: ``python bench/workers.py``
(``--runs N``, default 3; ``--quick``: short runs). Only on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import run as e2e  # noqa: E402 - the e2e runner's helpers (env, load client, /proc readers)

HZ = os.sysconf("SC_CLK_TCK")
PORT = 7301


def cpu_parts(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / HZ, int(fields[12]) / HZ


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


@contextlib.contextmanager
def server(workers: int, logfile: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A fresh server with ``workers`` workers; yields it and the pids of its workers."""
    argv = [sys.executable, "-m", "soketi_impl", "start", "--workers", str(workers)]
    out = logfile.open("ab")
    proc = subprocess.Popen(
        [*e2e.priority_prefix(), *argv], env=e2e.server_env(PORT, {"PYTHONPATH": str(REPO / "src")}),
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
    )
    try:
        e2e.wait_answering(proc, f"http://127.0.0.1:{PORT}/", f"--workers {workers}", logfile)
        pids: list[int] = []
        deadline = time.monotonic() + 30
        while workers > 1 and len(pids) < workers:  # all listen once the supervisor says so
            assert time.monotonic() < deadline, "the workers did not start"
            if b"workers on" in logfile.read_bytes():
                pids = children(proc.pid)
            else:
                time.sleep(0.1)
        yield proc, pids
    finally:
        e2e.kill_group(proc)
        out.close()


def measure(workers: int, args: list[str], logfile: Path) -> dict[str, Any]:
    with server(workers, logfile) as (proc, pids):
        everyone = [proc.pid, *pids]
        before = {p: cpu_parts(p) for p in everyone}
        result = e2e.run_client(e2e.client_cmd(args, PORT), 60, proc.pid)
        after = {p: cpu_parts(p) for p in everyone}
    user = sum(after[p][0] - before[p][0] for p in everyone)
    system = sum(after[p][1] - before[p][1] for p in everyone)
    hub = sum(after[proc.pid]) - sum(before[proc.pid]) if workers > 1 else 0.0
    result = e2e.derive(result)
    deliveries = result.get("deliveries", 0) or 0

    def per(seconds: float) -> float | None:
        return round(seconds / deliveries * 1e6, 3) if deliveries else None

    return {
        "workers": workers,
        "deliveries_per_s": result.get("deliveries_per_s"),
        "deliveries": deliveries,
        "lost": result.get("lost"),
        "server_user_s": round(user, 3),
        "server_system_s": round(system, 3),
        "cpu_us_per_delivery": per(user + system),
        "user_us_per_delivery": per(user),
        "system_us_per_delivery": per(system),
        "hub_cpu_share": round(hub / (user + system), 3) if user + system else None,
        "p50_ms": result.get("p50_ms"),
        "p99_ms": result.get("p99_ms"),
        "server_run_delay_s": result.get("server_run_delay_s"),
        "client_run_delay_s": result.get("client_run_delay_s"),
        "wall_s": result.get("wall_s"),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["deliveries_per_s", "cpu_us_per_delivery", "user_us_per_delivery", "system_us_per_delivery",
            "hub_cpu_share", "p50_ms", "p99_ms"]
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short runs (1 s)")
    parser.add_argument("--workers", type=int, default=2, help="the variant against 1 (default 2)")
    parser.add_argument("--out", type=Path, default=e2e.RESULTS / "workers.json")
    args = parser.parse_args(argv)
    scenario = e2e.SCENARIOS["fanout"]
    load = scenario.quick_args if args.quick else scenario.args
    e2e.raise_nofile()
    e2e.build_loadclient()
    logdir = e2e.CACHE / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    variants = [1, args.workers]
    runs: dict[int, list[dict[str, Any]]] = {v: [] for v in variants}
    for i in range(args.runs):
        for w in variants if i % 2 == 0 else variants[::-1]:
            r = measure(w, load, logdir / f"workers-{w}.log")
            runs[w].append(r)
            e2e.log(f"run {i + 1} --workers {w}: {r['deliveries_per_s']} deliveries/s, "
                    f"{r['cpu_us_per_delivery']} us CPU/delivery, hub share {r['hub_cpu_share']}")
    summaries = {str(w): summary(runs[w]) for w in variants}
    one, many = summaries["1"], summaries[str(args.workers)]
    ratios = {
        key: round(many[key]["median"] / one[key]["median"], 3)
        for key in ("deliveries_per_s", "cpu_us_per_delivery")
        if key in one and key in many and one[key]["median"]
    }
    machine = e2e.machine_info()
    machine["pinning"] = {"server": "none (the workers may use every core)", "load_client": "taskset -c 1"}
    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "scenario": scenario.title,
        "load_args": load,
        "cpus": len(os.sched_getaffinity(0)),
        "runs": {str(w): runs[w] for w in variants},
        "median": summaries,
        f"ratio_{args.workers}_over_1": ratios,
    }
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"median": summaries, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
