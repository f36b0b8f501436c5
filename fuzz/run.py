"""Run every fuzz target for a fixed time: ``python fuzz/run.py --seconds 120``.

Each target (``fuzz/fuzz_<name>.py``, atheris on libFuzzer) starts from its seed
corpus in ``fuzz/corpus/<name>`` and writes what it learns, and any crashing input,
into a work folder (``--work``, by default under the system temp folder), so the
committed corpus only changes when you copy inputs there on purpose. Prints, per
target, how long it ran, how many inputs it tried and what it found; the exit
status is 1 when any target found a crash.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
TARGETS = ("protocol", "http")


def run_target(name: str, seconds: int, work: Path) -> dict[str, object]:
    """Fuzz one target for ``seconds``; returns its summary."""
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, str(HERE / f"fuzz_{name}.py"), str(out), str(HERE / "corpus" / name),
        f"-max_total_time={seconds}", f"-artifact_prefix={out}/", "-rss_limit_mb=2048",
        "-timeout=20", "-print_final_stats=1", "-max_len=4096",
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    (work / f"{name}.log").write_text(log)
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    crashes = sorted(str(p) for p in out.glob("crash-*")) + sorted(str(p) for p in out.glob("timeout-*"))
    return {
        "target": name, "seconds": round(elapsed), "runs": int(runs[-1]) if runs else None,
        "corpus": len(list(out.iterdir())), "exit": proc.returncode, "crashes": crashes,
    }


def main() -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=120, help="time per target (default 120)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated (default: all)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "soketi-impl-fuzz")
    args = ap.parse_args()
    found = False
    for name in args.targets.split(","):
        result = run_target(name, args.seconds, args.work)
        found |= bool(result["crashes"]) or result["exit"] not in (0,)
        print(
            f"{name}: {result['seconds']} s, {result['runs']} inputs, corpus {result['corpus']}, "
            f"exit {result['exit']}, crashes: {result['crashes'] or 'none'} (log: {args.work / (name + '.log')})"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
