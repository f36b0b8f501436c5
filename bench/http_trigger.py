"""Signed HTTP triggers per second, against a bare httptools server measured in the same run.

Usage::

    PYTHONPATH=src python bench/http_trigger.py [--runs 3] [--seconds 3] [--builds c,py]
        [--connections 8] [--depth 4] [--subscribers 100,0] [--out bench/results/http_trigger.json]
        [--baseline-src OTHER_CHECKOUT]

Scenarios: the baseline, and ours for each build (``c``: compiled twins, ``py``: pure
Python) and each subscriber count (``c/100`` is the headline: every trigger fans out
to 100 WebSocket clients; ``c/0`` is the HTTP path alone). One run does, per scenario:

- start the server pinned with ``taskset -c 0``;
- start the load client (this script, ``--load``) pinned with ``taskset -c 1``: it
  subscribes n raw WebSocket clients to channel ``bench`` (ours only),
  opens ``--connections`` keep-alive HTTP connections and keeps ``--depth`` pipelined
  ``POST /apps/{id}/events`` requests in flight on each, all signed (auth_version 1.0,
  with ``body_md5``) once before the run;
- count the ``200`` answers over ``--seconds`` (after a 0.5 s warm-up) and the
  WebSocket deliveries that arrived over the same window; after the load stops, wait
  until every subscriber has all the events it was owed (``deliveries_complete`` is
  false in the results if any was missing).

``--baseline-src DIR`` adds, beside each of ours, the same scenario served by another
checkout of this project (``before/{build}/{n}``; ``DIR/src`` on PYTHONPATH, built in
place for the ``c`` build), so a change is measured before and after in one run::

    git worktree add ../before <commit> && PYTHONPATH=src python bench/http_trigger.py \
        --builds py --baseline-src ../before

The baseline (``--serve-baseline``, in this file) is the floor of any Python HTTP
server on this machine: asyncio (uvloop) + httptools, answering ``200 {}`` to every
request without reading it. The ratio ours/baseline is printed and written with the
medians of ``--runs`` runs to ``bench/results/http_trigger.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP_ID, APP_KEY, APP_SECRET = "1234", "app-key", "app-secret"
CHANNEL = "bench"
EVENT = "bench-event"
DATA = "x" * 64
STATUS_LINE = b"HTTP/1.1 "
OK_LINE = b"HTTP/1.1 200 "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the baseline server


def serve_baseline(port: int) -> None:
    """asyncio + httptools, ``200 {}`` to every request: the floor for a Python HTTP server."""
    import httptools
    import uvloop

    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    class Proto(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_complete(self) -> None:
            self.transport.write(response)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", port, backlog=1024)
        print("listening on", port, file=sys.stderr, flush=True)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------- the load client


def signed_request(port: int) -> bytes:
    body = json.dumps(
        {"name": EVENT, "channel": CHANNEL, "data": DATA}, separators=(",", ":")
    ).encode()
    path = f"/apps/{APP_ID}/events"
    params = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    sig = hmac.new(
        APP_SECRET.encode(), f"POST\n{path}\n{query}".encode(), hashlib.sha256
    ).hexdigest()
    return (
        f"POST {path}?{query}&auth_signature={sig} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def delivery_frame_size() -> int:
    """Bytes of one delivered event frame (server frames are unmasked; every one is the same)."""
    payload = json.dumps(
        {"event": EVENT, "channel": CHANNEL, "data": DATA}, separators=(",", ":")
    ).encode()
    n = len(payload)
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


async def ws_subscriber(
    port: int, counts: list[int], idx: int, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """A raw WebSocket client that subscribes to ``bench`` then counts the bytes it receives."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /app/{APP_KEY}?protocol=7&client=js&version=8.6.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")

    async def read_frame() -> bytes:
        head = await reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        return await reader.readexactly(n)

    assert b"connection_established" in await read_frame()
    payload = json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL}}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    assert b"subscription_succeeded" in await read_frame()
    ready.set()
    while not stop.is_set():
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        counts[idx] += len(chunk)
    writer.close()


class HttpLoad(asyncio.Protocol):
    """One keep-alive connection keeping ``depth`` pipelined requests in flight."""

    def __init__(self, request: bytes, depth: int, totals: dict[str, int]) -> None:
        self.request = request
        self.depth = depth
        self.totals = totals
        self.tail = b""
        self.transport: Any = None
        self.running = True

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request * self.depth)

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        n = buf.count(STATUS_LINE)
        ok = buf.count(OK_LINE)
        self.tail = buf[-(len(OK_LINE) - 1) :]
        self.totals["answers"] += n
        self.totals["errors"] += n - ok
        if n and self.running:
            self.transport.write(self.request * n)


async def load(
    port: int, connections: int, depth: int, subscribers: int, seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counts = [0] * subscribers
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in range(subscribers)]
    subs = [
        asyncio.ensure_future(ws_subscriber(port, counts, i, readies[i], stop))
        for i in range(subscribers)
    ]
    if subs:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    request = signed_request(port)
    totals = {"answers": 0, "errors": 0}
    protos: list[HttpLoad] = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: HttpLoad(request, depth, totals), "127.0.0.1", port
        )
        protos.append(proto)
    await asyncio.sleep(0.5)  # warm-up
    a0, d0, t0 = totals["answers"], sum(counts), time.perf_counter()
    await asyncio.sleep(seconds)
    a1, d1, t1 = totals["answers"], sum(counts), time.perf_counter()
    for p in protos:
        p.running = False
    # Let the in-flight requests finish, then check every subscriber got every event.
    await asyncio.sleep(0.3)
    frame = delivery_frame_size()
    owed = totals["answers"] - totals["errors"]
    complete = True
    if subscribers:
        deadline = time.perf_counter() + 20
        while min(counts) < owed * frame and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        complete = all(c == owed * frame for c in counts)
    stop.set()
    for p in protos:
        p.transport.close()
    for s in subs:
        s.cancel()
    dt = t1 - t0
    return {
        "triggers_per_s": round((a1 - a0) / dt),
        "deliveries_per_s": round((d1 - d0) / frame / dt) if subscribers else 0,
        "errors": totals["errors"],
        "answers": totals["answers"],
        "deliveries_complete": complete,
    }


# ---------------------------------------------------------------- orchestration


def start(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server {argv} exited with {proc.returncode}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server {argv} did not listen on {port}")


def server_argv(kind: str, port: int, src: Path = ROOT / "src") -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKETI_")}
    if kind == "baseline":
        return [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(port)], env
    env.update(
        PYTHONPATH=str(src),
        SOKETI_HOST="127.0.0.1",
        SOKETI_PORT=str(port),
        SOKETI_DEFAULT_APP_ID=APP_ID,
        SOKETI_DEFAULT_APP_KEY=APP_KEY,
        SOKETI_DEFAULT_APP_SECRET=APP_SECRET,
        SOKETI_SHUTDOWN_GRACE_PERIOD="100",
    )
    if kind == "py":
        env["SOKETI_IMPL_NO_EXTENSIONS"] = "1"
    return [sys.executable, "-m", "soketi_impl", "start"], env


def one_run(kind: str, subscribers: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    before = kind.startswith("before/")
    src = Path(args.baseline_src).resolve() / "src" if before else ROOT / "src"
    argv, env = server_argv(kind.removeprefix("before/"), port, src)
    proc = start(argv, env, port)
    try:
        out = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                sys.executable,
                str(Path(__file__).resolve()),
                "--load",
                str(port),
                "--connections",
                str(args.connections),
                "--depth",
                str(args.depth),
                "--subscribers",
                str(subscribers),
                "--seconds",
                str(args.seconds),
            ],
            capture_output=True,
            text=True,
            timeout=args.seconds + 90,
            check=True,
        )
        result: dict[str, Any] = json.loads(out.stdout)
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument(
        "--subscribers",
        default="100,0",
        help="comma-separated subscriber counts; each is a scenario for ours (default 100,0)",
    )
    ap.add_argument("--builds", default="c,py")
    ap.add_argument("--out", default=str(HERE / "results" / "http_trigger.json"))
    ap.add_argument(
        "--baseline-src",
        help="another checkout of this project, measured beside ours in the same run",
    )
    ap.add_argument("--load", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    if args.load:
        import uvloop

        result = uvloop.run(
            load(args.load, args.connections, args.depth, int(args.subscribers), args.seconds)
        )
        print(json.dumps(result))
        return 0

    builds = [b.strip() for b in args.builds.split(",") if b.strip()]
    counts = [int(c) for c in args.subscribers.split(",") if c.strip()]
    # A scenario is (server, subscribers); its name is "baseline" or "{build}/{subscribers}".
    kinds = [k for b in builds for k in ([b, f"before/{b}"] if args.baseline_src else [b])]
    scenarios = [("baseline", 0)] + [(k, n) for n in counts for k in kinds]
    names = ["baseline" if k == "baseline" else f"{k}/{n}" for k, n in scenarios]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for i in range(args.runs):
        for name, (kind, n) in zip(names, scenarios):  # interleaved: drift hits all alike
            r = one_run(kind, n, args)
            runs[name].append(r)
            print(
                f"run {i + 1} {name:12s} {r['triggers_per_s']:>8} req/s "
                f"{r['deliveries_per_s']:>9} deliveries/s"
                f"  errors={r['errors']} complete={r['deliveries_complete']}",
                flush=True,
            )
    results: dict[str, Any] = {}
    base = statistics.median(r["triggers_per_s"] for r in runs["baseline"])
    for name in names:
        med = statistics.median(r["triggers_per_s"] for r in runs[name])
        results[name] = {
            "requests_per_s": round(med),
            "deliveries_per_s": round(statistics.median(r["deliveries_per_s"] for r in runs[name])),
            "ratio_over_baseline": round(med / base, 3),
            "all_errors": sum(r["errors"] for r in runs[name]),
            "all_deliveries_complete": all(r["deliveries_complete"] for r in runs[name]),
            "runs": runs[name],
        }
    doc = {
        "what": (
            "signed POST /apps/{id}/events over keep-alive connections, pipelined; scenario "
            "'{build}/{n}' is ours (c: compiled twins, py: pure Python) with n raw WebSocket "
            "subscribers on the channel; the baseline is asyncio+httptools answering 200 {} "
            "without reading the request (no signature, no fan-out). Server taskset -c 0, "
            "load taskset -c 1; medians of the runs. 'before/...' scenarios: the same "
            "served by the --baseline-src checkout."
        ),
        "baseline_src": args.baseline_src,
        "runs": args.runs,
        "seconds": args.seconds,
        "connections": args.connections,
        "depth": args.depth,
        "subscribers": counts,
        "payload_bytes": len(DATA),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for name in names[1:]:
        r = results[name]
        print(
            f"{name}: {r['requests_per_s']} triggers/s ({r['deliveries_per_s']} deliveries/s) = "
            f"{r['ratio_over_baseline']:.2f}x the bare httptools server ({round(base)} req/s)"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
