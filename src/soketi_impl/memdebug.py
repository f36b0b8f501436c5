"""Debug-only memory dumps: where a server's bytes go (``bench/memory.py`` reads them).

Off by default. ``SOKETI_IMPL_MEMDEBUG=DIR`` makes ``soketi-impl start`` answer
SIGUSR2 with a dump into ``DIR``: it runs ``gc.collect()``, reads its own RSS
before allocating anything for the dump, then writes ``dump-N.json`` with the
RSS, the live objects per type (count and ``sys.getsizeof`` bytes: every object
the collector tracks, plus the untracked ones they refer to, such as strings and
bytes) and, with ``SOKETI_IMPL_TRACEMALLOC=1`` as well (or ``=N``: N frames per trace) (tracing from startup,
which slows the server and costs memory of its own), the traced bytes per
allocation site (``file:line``) in ``dump-N.tracemalloc``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

__all__ = ["install", "object_census", "rss_kb"]

log = logging.getLogger("soketi_impl.memdebug")


def rss_kb() -> int:
    """This process's resident set size in KiB (``/proc/self/status``), 0 where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def object_census() -> dict[str, list[int]]:
    """Live objects per type name: ``[count, bytes]`` (``sys.getsizeof``, shallow).

    The collector's objects and the untracked ones they refer to directly (str,
    bytes, int, float): each object is counted once.
    """
    tracked = gc.get_objects()
    seen: set[int] = set()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()

    def count(obj: object) -> None:
        name = type(obj).__qualname__
        mod = type(obj).__module__
        if mod not in ("builtins", None):
            name = f"{mod}.{name}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)

    for obj in tracked:
        seen.add(id(obj))
    for obj in tracked:
        count(obj)
        for ref in gc.get_referents(obj):
            if not gc.is_tracked(ref) and id(ref) not in seen:
                seen.add(id(ref))
                count(ref)
    return {name: [n, sizes[name]] for name, n in counts.items()}


def _dump(directory: Path, number: int) -> None:
    gc.collect()
    rss = rss_kb()  # before the dump allocates its own lists
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(directory / f"dump-{number}.tracemalloc"))
    census = object_census()
    data = {"rss_kb": rss, "traced_bytes": traced, "types": census}
    tmp = directory / f"dump-{number}.json.tmp"
    tmp.write_text(json.dumps(data))
    tmp.rename(directory / f"dump-{number}.json")  # the reader sees a whole file or none
    log.info("memory dump %d written to %s (RSS %d KiB after gc.collect())", number, directory, rss)


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Answer SIGUSR2 with a dump when ``SOKETI_IMPL_MEMDEBUG`` names a directory; True if so."""
    target = os.environ.get("SOKETI_IMPL_MEMDEBUG")
    if not target or not hasattr(signal, "SIGUSR2"):
        return False
    directory = Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    frames = os.environ.get("SOKETI_IMPL_TRACEMALLOC", "")
    if frames.isdigit() and int(frames) > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(int(frames))  # 1, or the frames kept per allocation
    numbers = iter(range(1, 1 << 30))
    loop.add_signal_handler(signal.SIGUSR2, lambda: _dump(directory, next(numbers)))
    log.warning("memory debugging on: SIGUSR2 writes a dump to %s%s", directory,
                " (tracemalloc tracing)" if tracemalloc.is_tracing() else "")
    return True
