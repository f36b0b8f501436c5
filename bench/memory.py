"""Memory per idle subscribed connection, and where the bytes go.

Starts ``python -m soketi_impl start`` (as bench/run.py does) with
``SOKETI_IMPL_MEMDEBUG`` set, so the server answers SIGUSR2 with ``gc.collect()``
and a dump of its RSS and live objects per type (``src/soketi_impl/memdebug.py``).
Then, per run:

1. one connection subscribes and leaves (the server is warm), dump 1 (baseline);
2. N connections (default 10,000; 200 handshakes in flight) each subscribe to a
   public channel of their own and go idle; dump 2 once all are subscribed;
3. per connection: (RSS 2 - RSS 1) / N, and the same per object type.

The client is raw asyncio sockets on uvloop: the upgrade request, then one masked
subscribe frame, and nothing is parsed but the two replies it waits for.

    python bench/memory.py                  # median of 3 runs, compiled twins
    python bench/memory.py --py             # pure-Python twins
    python bench/memory.py --trace --runs 1 # + tracemalloc: bytes per allocation site

``--trace`` runs the server under tracemalloc (slower, and its RSS is not the
figure to quote); its per-site table is what bench/README.md's breakdown shows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import run as e2e  # noqa: E402 - the e2e runner's helpers (waiting for a server)

APP_ID, APP_KEY, APP_SECRET = "1234", "app-key", "app-secret"
_KEY = base64.b64encode(b"0123456789abcdef").decode()


# Runs the server of a checkout without memdebug.py, with this checkout's dump on SIGUSR2.
_BOOTSTRAP = """
import importlib.util, itertools, os, pathlib, signal, sys, tracemalloc
spec = importlib.util.spec_from_file_location("_memdebug", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
d = pathlib.Path(os.environ["SOKETI_IMPL_MEMDEBUG"]); n = itertools.count(1)
if os.environ.get("SOKETI_IMPL_TRACEMALLOC", "0") != "0":
    tracemalloc.start(int(os.environ["SOKETI_IMPL_TRACEMALLOC"]))
signal.signal(signal.SIGUSR2, lambda *a: m._dump(d, next(n)))
from soketi_impl.cli import main
sys.exit(main(["start"]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def client_frame(text: str) -> bytes:
    """One masked TEXT frame (mask key 0: the payload goes as it is)."""
    data = text.encode()
    n = len(data)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


class Client(asyncio.Protocol):
    """One connection: upgrade, wait for connection_established, subscribe, wait for success."""

    __slots__ = ("channel", "request", "done", "buf", "stage", "transport")

    def __init__(self, port: int, channel: str, done: asyncio.Future[None]) -> None:
        self.channel = channel
        self.request = (
            f"GET /app/{APP_KEY}?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.done = done
        self.buf = b""
        self.stage = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.stage == 2:
            return
        self.buf += data
        if self.stage == 0 and b"connection_established" in self.buf:
            self.stage, self.buf = 1, b""
            sub = json.dumps({"event": "pusher:subscribe", "data": {"channel": self.channel}})
            assert self.transport is not None
            self.transport.write(client_frame(sub))
        elif self.stage == 1 and b"subscription_succeeded" in self.buf:
            self.stage, self.buf = 2, b""
            if not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"{self.channel}: closed by the server ({exc})"))


async def open_many(port: int, n: int, prefix: str, in_flight: int) -> list[asyncio.Transport]:
    """Open ``n`` subscribed connections, ``in_flight`` handshakes at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(in_flight)
    transports: list[asyncio.Transport] = []

    async def one(i: int) -> None:
        async with gate:
            done: asyncio.Future[None] = loop.create_future()
            t, _ = await loop.create_connection(lambda: Client(port, f"{prefix}-{i}", done), "127.0.0.1", port)
            transports.append(t)
            await asyncio.wait_for(done, 30)

    await asyncio.gather(*(one(i) for i in range(n)))
    return transports


async def wait_dump(directory: Path, number: int, pid: int, timeout: float = 120) -> dict[str, Any]:
    os.kill(pid, signal.SIGUSR2)
    path = directory / f"dump-{number}.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server wrote no {path} within {timeout} s")
        await asyncio.sleep(0.05)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def start_server(port: int, directory: Path, trace: int, pure: bool, src: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "SOKETI_HOST": "127.0.0.1", "SOKETI_PORT": str(port),
        "SOKETI_METRICS_SERVER_PORT": str(free_port()),
        "SOKETI_DEFAULT_APP_ID": APP_ID, "SOKETI_DEFAULT_APP_KEY": APP_KEY,
        "SOKETI_DEFAULT_APP_SECRET": APP_SECRET, "SOKETI_METRICS_ENABLED": "false",
        "SOKETI_DEBUG": "false", "SOKETI_IMPL_MEMDEBUG": str(directory),
        "PYTHONPATH": str(src),
    })
    env.pop("SOKETI_IMPL_TRACEMALLOC", None)
    env.pop("SOKETI_IMPL_NO_EXTENSIONS", None)
    if trace:
        env["SOKETI_IMPL_TRACEMALLOC"] = str(trace)
    if pure:
        env["SOKETI_IMPL_NO_EXTENSIONS"] = "1"
    argv = [sys.executable, "-m", "soketi_impl", "start"]
    if not (src / "soketi_impl" / "memdebug.py").exists():
        # An older checkout (a baseline): this checkout's dump, on a plain signal handler.
        argv = [sys.executable, "-c", _BOOTSTRAP, str(REPO / "src" / "soketi_impl" / "memdebug.py")]
    proc = subprocess.Popen(
        argv, env=env, cwd=REPO,
        stdout=(directory / "server.log").open("wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        e2e.wait_answering(proc, f"http://127.0.0.1:{port}/", "the server", directory / "server.log")
    except e2e.ServerFailed:
        proc.kill()
        raise
    return proc


def type_table(before: dict[str, list[int]], after: dict[str, list[int]], n: int, top: int) -> list[tuple[str, float, float]]:
    """(type, objects per connection, bytes per connection), largest bytes first."""
    rows = []
    for name, (count, size) in after.items():
        c0, s0 = before.get(name, [0, 0])
        if size - s0 > 0:
            rows.append((name, (count - c0) / n, (size - s0) / n))
    rows.sort(key=lambda r: -r[2])
    return rows[:top]


def site_table(directory: Path, n: int, top: int) -> list[tuple[str, float, float]]:
    """(file:line, blocks per connection, bytes per connection) from the two tracemalloc snapshots."""
    s1 = tracemalloc.Snapshot.load(str(directory / "dump-1.tracemalloc"))
    s2 = tracemalloc.Snapshot.load(str(directory / "dump-2.tracemalloc"))
    flt = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    stats = s2.filter_traces(flt).compare_to(s1.filter_traces(flt), "traceback")
    rows = []
    for st in stats[:top]:
        where = []
        for frame in reversed(st.traceback):  # innermost first
            fname = frame.filename
            for marker in ("site-packages/", "/src/", "/lib/python3."):
                if marker in fname:
                    fname = fname.split(marker, 1)[1]
            where.append(f"{fname}:{frame.lineno}")
        rows.append((" < ".join(where), st.count_diff / n, st.size_diff / n))
    return rows


async def one_run(args: argparse.Namespace, number: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="soketi-mem-") as tmp:
        directory = Path(tmp)
        port = free_port()
        proc = start_server(port, directory, args.trace, args.py, Path(args.src).resolve())
        try:
            # warm: one connection served (handshake, subscribe, close)
            for t in await open_many(port, 1, "warm", 1):
                t.close()
            await asyncio.sleep(0.5)
            d1 = await wait_dump(directory, 1, proc.pid)
            t0 = time.monotonic()
            transports = await open_many(port, args.connections, f"mem{number}", args.in_flight)
            opened = time.monotonic() - t0
            await asyncio.sleep(args.idle)  # idle: the handshake timers and buffers settle
            d2 = await wait_dump(directory, 2, proc.pid)
            n = args.connections
            result = {
                "rss_before_kb": d1["rss_kb"], "rss_held_kb": d2["rss_kb"],
                "kb_per_conn": (d2["rss_kb"] - d1["rss_kb"]) / n, "opened_per_s": n / opened,
                "types": type_table(d1["types"], d2["types"], n, args.top),
            }
            if args.trace:
                result["traced_bytes_per_conn"] = (d2["traced_bytes"] - d1["traced_bytes"]) / n
                result["sites"] = site_table(directory, n, args.top)
            for t in transports:
                t.abort()
            return result
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    per = sorted(r["kb_per_conn"] for r in results)
    med = statistics.median(per)
    mid = min(results, key=lambda r: abs(r["kb_per_conn"] - med))
    build = "pure-Python twins" if args.py else "compiled twins"
    print(f"\n{args.connections} idle connections, each subscribed to its own public channel ({build})")
    print(f"RSS per connection (KiB, after gc.collect()): median {med:.2f}  runs {', '.join(f'{x:.2f}' for x in per)}")
    print(f"RSS before {mid['rss_before_kb']} KiB, held {mid['rss_held_kb']} KiB; opened {mid['opened_per_s']:.0f}/s")
    print("\nlive objects per connection, by type (median run; sys.getsizeof, shallow)")
    print(f"{'type':60} {'objects':>8} {'bytes':>8}")
    for name, count, size in mid["types"]:
        print(f"{name:60} {count:8.2f} {size:8.0f}")
    total = sum(r[2] for r in mid["types"])
    print(f"{'(sum of the rows above)':60} {'':8} {total:8.0f}")
    if args.trace:
        print(f"\ntracemalloc: {mid['traced_bytes_per_conn']:.0f} traced bytes per connection, by allocation site")
        print(f"{'site':60} {'blocks':>8} {'bytes':>8}")
        for site, count, size in mid["sites"]:
            print(f"{site:60} {count:8.2f} {size:8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", "-n", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--in-flight", type=int, default=200)
    p.add_argument("--idle", type=float, default=2.0, help="seconds idle before the second dump")
    p.add_argument("--trace", type=int, nargs="?", const=1, default=0, metavar="FRAMES",
                   help="tracemalloc in the server: bytes per allocation site (FRAMES: stack depth shown)")
    p.add_argument("--py", action="store_true", help="the pure-Python twins (SOKETI_IMPL_NO_EXTENSIONS=1)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--src", default=str(REPO / "src"),
                   help="the src/ directory of the checkout to measure (a baseline: another worktree)")
    p.add_argument("--json", help="write every run's figures here")
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    import uvloop

    results = []
    for i in range(args.runs):
        r = uvloop.run(one_run(args, i))
        print(f"run {i + 1}: {r['kb_per_conn']:.2f} KiB per connection", flush=True)
        results.append(r)
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
