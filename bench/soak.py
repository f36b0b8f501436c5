"""Soak test: many connections over many channels, steady events, constant reconnects.

    python bench/soak.py [--minutes 30] [--connections 10000] [--channels 1000]
        [--rate 100] [--churn 0.01] [--workers 2] [--out bench/results/soak.json]

Starts ``soketi-impl start`` (compiled twins unless ``--py``), opens ``--connections``
WebSocket connections spread over ``--channels`` public channels (clients in
``--workers`` processes, picows), publishes ``--rate`` events per second through the
signed HTTP API, and every second closes and reopens ``--churn`` of all connections.
The reconnecting connections come from a pool (``--churn-pool``, 10 % of all by
default); every other connection stays connected for the whole run.

It reports, in ``--out`` and a PNG beside it:

- deliveries lost by the connections that stayed: every event whose publish started
  after the connection's subscription succeeded must arrive (must be 0);
- the server's RSS over time (sampled from /proc every ``--sample`` seconds);
- p99 delivery latency over time, per ``--sample`` window (event sent -> frame read,
  one machine, one monotonic clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

ROOT = Path(__file__).resolve().parent.parent
APP_ID, APP_KEY, APP_SECRET = "424242", "soak-key", "soak-secret"


# ---------------------------------------------------------------- client workers


def worker(index: int, args: argparse.Namespace, port: int, conns: list[tuple[int, bool]], pipe: Any) -> None:
    """One client process: ``conns`` is (channel, churns) per connection; reports at the end."""
    import uvloop

    uvloop.run(_worker(index, args, port, conns, pipe))


async def _worker(index: int, args: argparse.Namespace, port: int, conns: list[tuple[int, bool]], pipe: Any) -> None:
    from picows import WSListener, WSMsgType, ws_connect

    url = f"ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7&client=js&version=8.6.0"
    t0 = args.t0
    window = args.sample
    latencies: dict[int, list[float]] = {}
    stayers: list[Any] = []

    class Client(WSListener):  # type: ignore[misc]
        def __init__(self, channel: int, record: bool) -> None:
            self.channel = channel
            self.record = record
            self.subscribed_at = 0.0
            self.seqs: list[int] = []
            self.transport: Any = None
            self.closed = asyncio.get_running_loop().create_future()

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type != WSMsgType.TEXT:
                return
            msg = orjson.loads(frame.get_payload_as_bytes())
            event = msg.get("event")
            if event == "soak":
                data = orjson.loads(msg["data"])
                now = time.monotonic()
                if self.record:
                    self.seqs.append(data["s"])
                latencies.setdefault(int((now - t0) // window), []).append(now - data["t"])
            elif event == "pusher:connection_established":
                sub = {"event": "pusher:subscribe", "data": {"channel": f"soak-{self.channel}"}}
                transport.send(WSMsgType.TEXT, orjson.dumps(sub))
            elif event == "pusher_internal:subscription_succeeded":
                self.subscribed_at = time.monotonic()
            elif event == "pusher:ping":
                transport.send(WSMsgType.TEXT, b'{"event":"pusher:pong","data":{}}')

        def on_ws_disconnected(self, transport: Any) -> None:
            if not self.closed.done():
                self.closed.set_result(None)

    async def connect(channel: int, record: bool) -> Client:
        while True:
            try:
                _, client = await ws_connect(lambda: Client(channel, record), url)
                return client  # type: ignore[no-any-return]
            except OSError:
                await asyncio.sleep(0.5)

    # open everything, ramping so the accept queue keeps up
    churners: list[Client] = []
    batch = 200
    for i in range(0, len(conns), batch):
        clients = await asyncio.gather(*(connect(ch, not churns) for ch, churns in conns[i:i + batch]))
        for (_ch, churns), c in zip(conns[i:i + batch], clients, strict=True):
            (churners if churns else stayers).append(c)
    pipe.send(("ready", index))
    assert pipe.recv() == "go"

    async def churn() -> None:
        per_second = args.churn_per_worker
        while True:
            await asyncio.sleep(1)
            picks = random.sample(range(len(churners)), min(per_second, len(churners)))
            for i in picks:
                old = churners[i]
                if old.transport is not None:
                    old.transport.send_close(1000)
                    old.transport.disconnect()
            fresh = await asyncio.gather(*(connect(churners[i].channel, False) for i in picks))
            for i, c in zip(picks, fresh, strict=True):
                churners[i] = c

    task = asyncio.ensure_future(churn())
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
    task.cancel()
    await asyncio.sleep(args.drain)  # frames in flight arrive
    report = {
        "stayers": [(c.channel, c.subscribed_at, c.seqs, c.closed.done()) for c in stayers],
        "latencies": latencies,
    }
    pipe.send(report)


# ---------------------------------------------------------------- publisher, sampler


def _sign(method: str, path: str, body: bytes) -> str:
    from soketi_impl.signing import sign_api_request

    return urlencode(sign_api_request(APP_KEY, APP_SECRET, method, path, None, body))


async def publish(port: int, args: argparse.Namespace, log: dict[int, list[tuple[int, float]]], stop: asyncio.Event) -> int:
    """Publish ``args.rate`` events a second, round-robin over the channels; returns failures."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    path = f"/apps/{APP_ID}/events"
    seqs = [0] * args.channels
    failures = 0
    n = 0
    start = time.monotonic()
    while not stop.is_set():
        channel = n % args.channels
        seqs[channel] += 1
        sent = time.monotonic()
        data = json.dumps({"s": seqs[channel], "t": sent})
        body = orjson.dumps({"name": "soak", "channel": f"soak-{channel}", "data": data})
        head = f"POST {path}?{_sign('POST', path, body)} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = await reader.readuntil(b"\r\n\r\n")
        length = int(status.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        if not status.startswith(b"HTTP/1.1 200"):
            failures += 1
        else:
            log.setdefault(channel, []).append((seqs[channel], sent))
        n += 1
        delay = start + n / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    writer.close()
    return failures


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample(pid: int, args: argparse.Namespace, rss: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Sample the server's RSS every ``args.sample`` seconds."""
    while not stop.is_set():
        rss.append((round(time.monotonic() - args.t0, 1), round(rss_mib(pid), 1)))
        try:
            await asyncio.wait_for(stop.wait(), args.sample)
        except asyncio.TimeoutError:
            pass


# ---------------------------------------------------------------- main


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    """``soketi-impl start`` on a free port; returns once it listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKETI_")}
    env.update(
        SOKETI_HOST="127.0.0.1", SOKETI_PORT=str(port), SOKETI_DEFAULT_APP_ID=APP_ID,
        SOKETI_DEFAULT_APP_KEY=APP_KEY, SOKETI_DEFAULT_APP_SECRET=APP_SECRET,
        SOKETI_SHUTDOWN_GRACE_PERIOD="100",
    )
    if args.py:
        env["SOKETI_IMPL_NO_EXTENSIONS"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "soketi_impl", "start"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            break
    else:
        raise SystemExit("the server did not start")
    # keep draining its log so it never blocks on a full pipe
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    return proc, port


def lost_by_stayers(reports: list[dict[str, Any]], log: dict[int, list[tuple[int, float]]]) -> dict[str, int]:
    """Count deliveries missing from connections that stayed connected."""
    expected = lost = stayers = dropped = 0
    for report in reports:
        for channel, subscribed_at, seqs, closed in report["stayers"]:
            stayers += 1
            if closed:
                dropped += 1  # a stayer the server disconnected: every later event is lost
            got = set(seqs)
            for seq, sent in log.get(channel, ()):
                if subscribed_at and sent > subscribed_at:
                    expected += 1
                    lost += seq not in got
    return {"stayers": stayers, "expected": expected, "lost": lost, "stayers_disconnected": dropped}


def p99_by_window(reports: list[dict[str, Any]], window: float) -> list[tuple[float, float, int]]:
    """(window start s, p99 ms, deliveries) per window."""
    merged: dict[int, list[float]] = {}
    for report in reports:
        for w, values in report["latencies"].items():
            merged.setdefault(int(w), []).extend(values)
    out = []
    for w in sorted(merged):
        values = sorted(merged[w])
        out.append((w * window, round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 2), len(values)))
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """RSS and p99 latency over time, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a.plot([t for t, _ in result["rss_mib"]], [m for _, m in result["rss_mib"]])
    a.set_ylabel("server RSS (MiB)")
    a.set_ylim(bottom=0)
    b.plot([t for t, _, _ in result["p99_ms"]], [p for _, p, _ in result["p99_ms"]])
    b.set_ylabel("p99 latency (ms)")
    b.set_xlabel("seconds")
    b.set_ylim(bottom=0)
    cfg = result["config"]
    fig.suptitle(f"soak: {cfg['connections']} connections, {cfg['channels']} channels, {cfg['rate']} events/s, "
                 f"{cfg['churn'] * 100:g}% reconnecting/s; lost by stayers: {result['lost']['lost']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole soak; returns the result dict."""
    proc, port = start_server(args)
    try:
        return await _run(args, proc, port)
    finally:
        proc.terminate()
        proc.wait(20)


async def _run(args: argparse.Namespace, proc: subprocess.Popen[str], port: int) -> dict[str, Any]:
    pool = max(1, int(args.connections * args.churn_pool))
    plan = [(i % args.channels, i < pool) for i in range(args.connections)]
    random.shuffle(plan)
    args.churn_per_worker = max(1, round(args.connections * args.churn / args.workers))
    args.t0 = time.monotonic()
    ctx = mp.get_context("fork")
    pipes, procs = [], []
    for w in range(args.workers):
        here, there = ctx.Pipe()
        p = ctx.Process(target=worker, args=(w, args, port, plan[w::args.workers], there), daemon=True)
        p.start()
        pipes.append(here)
        procs.append(p)
    loop = asyncio.get_running_loop()
    for here in pipes:
        await loop.run_in_executor(None, here.recv)  # ready
    print(f"{args.connections} connections open; soaking for {args.minutes} min", flush=True)
    args.t0 = time.monotonic()
    for here in pipes:
        here.send("go")
    log: dict[int, list[tuple[int, float]]] = {}
    rss: list[tuple[float, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample(proc.pid, args, rss, stop))
    publisher = asyncio.ensure_future(publish(port, args, log, stop))
    await asyncio.sleep(args.minutes * 60)
    stop.set()
    failures = await publisher
    await sampler
    for here in pipes:
        here.send("stop")
    reports = [await loop.run_in_executor(None, here.recv) for here in pipes]
    for p in procs:
        p.join(10)
    published = sum(len(v) for v in log.values())
    return {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "t0")},
        "published": published, "publish_failures": failures,
        "lost": lost_by_stayers(reports, log),
        "rss_mib": rss, "p99_ms": p99_by_window(reports, args.sample),
    }


def main() -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--channels", type=int, default=1_000)
    ap.add_argument("--rate", type=float, default=100.0, help="events per second (all channels)")
    ap.add_argument("--churn", type=float, default=0.01, help="share of all connections reconnecting each second")
    ap.add_argument("--churn-pool", type=float, default=0.1, help="share of connections that ever reconnect")
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds per RSS sample and latency window")
    ap.add_argument("--drain", type=float, default=2.0, help="seconds for in-flight frames at the end")
    ap.add_argument("--py", action="store_true", help="run the server on the pure-Python twins")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 1024:
        raise SystemExit(f"need {args.connections + 1024} file descriptors, the limit is {hard}")
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    lost = result["lost"]
    rss = [m for _, m in result["rss_mib"]]
    print(f"published {result['published']} events ({result['publish_failures']} failed); stayers "
          f"{lost['stayers']}: {lost['expected']} deliveries expected, {lost['lost']} lost, "
          f"{lost['stayers_disconnected']} disconnected; RSS {rss[0] if rss else 0:.0f} -> {rss[-1] if rss else 0:.0f} MiB; "
          f"p99 max {max((p for _, p, _ in result['p99_ms']), default=0):.1f} ms; wrote {args.out}")
    return 0 if lost["lost"] == 0 and lost["stayers_disconnected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
