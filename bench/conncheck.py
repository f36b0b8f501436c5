"""An independent check of run.py's ``conns`` figures: handshakes/s and RSS per connection.

run.py measures connection rate and memory with the C load client
(``loadclient conns``). This script measures the same two things with code that
shares nothing with it but the server start-up (run.py's ``running_server``,
so the servers run exactly as there: ``taskset -c 0``, the same environment):

* the client is Python, uvloop, raw sockets (``asyncio.Protocol``, no WebSocket
  library), pinned to the other core; every connection writes the upgrade
  request, waits for ``pusher:connection_established``, subscribes to a public
  channel of its own and waits for ``pusher_internal:subscription_succeeded``;
  at most ``--inflight`` connections are between their ``connect()`` and their
  ``subscription_succeeded`` at any time;
* opened/s = N / (last ``subscription_succeeded`` - first ``connect()``);
* RSS (``VmRSS`` of ``/proc/PID/status``, read from outside, nothing asked of
  the server): the baseline 2 s after the server has served ``--warm``
  connections and closed them; then "right after" (the moment the last
  subscription succeeded), minus the baseline, per connection. With ``--idle S``
  the baseline is read after S s idle instead, and "settled" after the
  connections have been held idle S s more (Node's V8 gives the slack of its
  heap back only after ~30 s or more of low activity).

The client reports its own CPU share over the storm: above ~0.9 the client, not
the server, set the rate, and the figure is a lower bound. Each run also records
how long the server waited for its core during the storm and the CPU that other
processes took on it (run.py's ``CpuWatch``): ``contended`` above 10% of the storm.

    python bench/conncheck.py --servers ours,soketi --inflight 64,200 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as e2e  # noqa: E402 - only for starting the servers as run.py does

_REQUEST = (
    "GET /app/{key}?protocol=7&client=js&version=8.4.0&flash=false HTTP/1.1\r\n"
    "Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked_text(payload: bytes) -> bytes:
    """One masked client TEXT frame, mask key 0 (the payload goes as it is)."""
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


class Conn(asyncio.Protocol):
    """Upgrade, connection_established, subscribe, subscription_succeeded; then idle.

    Frames are parsed (length-delimited), so a 101 and the first frame in one
    segment, or a frame split over two reads, are both handled.
    """

    def __init__(self, request: bytes, channel: str, done: asyncio.Future[None]) -> None:
        self.request = request
        self.subscribe = masked_text(
            json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()
        )
        self.done = done
        self.buf = bytearray()
        self.stage = 0  # 0 head, 1 waiting established, 2 waiting succeeded, 3 idle
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.stage == 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail(f"handshake refused: {bytes(buf[:80])!r}")
                return
            del buf[: end + 4]
            self.stage = 1
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            h = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, h = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, h = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < h + n:
                return
            opcode, payload = buf[0] & 0x0F, bytes(buf[h : h + n])
            del buf[: h + n]
            if opcode == 9:  # ping -> pong, masked, same payload
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 1:
                self._text(payload)

    def _text(self, payload: bytes) -> None:
        if self.stage == 1 and b"pusher:connection_established" in payload:
            self.stage = 2
            assert self.transport is not None
            self.transport.write(self.subscribe)
        elif self.stage == 2 and b"pusher_internal:subscription_succeeded" in payload:
            self.stage = 3
            if not self.done.done():
                self.done.set_result(None)
        elif b'"pusher:ping"' in payload:  # the server's activity check while idle
            assert self.transport is not None
            self.transport.write(masked_text(b'{"event":"pusher:pong","data":{}}'))
        elif b"pusher:error" in payload:
            self._fail(payload.decode(errors="replace")[:200])

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"closed by the server ({exc})")


def rss_kb(pid: int) -> int:
    return e2e.proc_rss_kb(pid)


async def open_all(
    port: int, n: int, inflight: int, prefix: str, timeout: float
) -> tuple[list[Any], float]:
    """Open n subscribed connections, at most ``inflight`` unfinished at a time."""
    loop = asyncio.get_running_loop()
    request = _REQUEST.format(key=e2e.APP_KEY, port=port).encode()
    gate = asyncio.Semaphore(inflight)
    transports: list[Any] = []

    async def one(i: int) -> None:
        async with gate:
            done: asyncio.Future[None] = loop.create_future()
            t, _ = await loop.create_connection(
                lambda: Conn(request, f"{prefix}-{i}", done), "127.0.0.1", port
            )
            transports.append(t)
            await done

    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout)
    return transports, time.monotonic() - t0


async def measure(pid: int, port: int, args: argparse.Namespace, inflight: int) -> dict[str, Any]:
    warm, _ = await open_all(port, args.warm, inflight, "warm", args.timeout)
    for t in warm:
        t.close()
    await asyncio.sleep(args.idle or 2.0)
    base = rss_kb(pid)
    ru0, cpu0 = resource.getrusage(resource.RUSAGE_SELF), e2e.proc_cpu_s(pid)
    watch = e2e.CpuWatch(pid)  # how long the server waited for its core, and for whom
    held, elapsed = await open_all(port, args.conns, inflight, "c", args.timeout)
    ru1, cpu1 = resource.getrusage(resource.RUSAGE_SELF), e2e.proc_cpu_s(pid)
    contention = watch.result()
    right_after = rss_kb(pid)
    if args.idle:
        await asyncio.sleep(args.idle)
    settled = rss_kb(pid)
    closed = sum(1 for t in held if t.is_closing())
    client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    for t in held:
        t.abort()
    n = args.conns
    return {
        "inflight": inflight,
        "conns": n,
        "closed_while_held": closed,
        "opened_per_s": round(n / elapsed, 1),
        "server_cpu_ms_per_conn": round((cpu1 - cpu0) * 1000 / n, 4),
        "client_cpu_share": round(client_cpu / elapsed, 3),
        "server_run_delay_s": contention["server_run_delay_s"],
        "others_server_cpu_s": contention["others_server_cpu_s"],
        "contended": contention["server_run_delay_s"] > 0.1 * elapsed,
        "idle_s": args.idle,
        "rss_base_kb": base,
        "rss_right_after_kb": right_after,
        "rss_settled_kb": settled,
        "kb_per_conn_right_after": round((right_after - base) / n, 2),
        "kb_per_conn_settled": round((settled - base) / n, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--servers", default="ours,soketi")
    p.add_argument("--inflight", default="64,200", help="comma-separated")
    p.add_argument("--conns", type=int, default=10_000)
    p.add_argument(
        "--warm", type=int, default=200, help="connections opened and closed before the baseline"
    )
    p.add_argument("--runs", type=int, default=1)
    p.add_argument(
        "--idle",
        type=float,
        default=0.0,
        help="seconds idle before the baseline and before a second read (0: 2 s, one read)",
    )
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--json", help="write every run here")
    args = p.parse_args(argv)
    e2e.raise_nofile()
    os.sched_setaffinity(0, {int(e2e.CLIENT_CPU)})
    import uvloop

    specs = e2e.server_specs()
    logs = e2e.CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for run in range(args.runs):
        for name in args.servers.split(","):
            spec = specs[name]
            if spec.prepare:
                spec.prepare()
            for k in (int(x) for x in args.inflight.split(",")):
                with e2e.running_server(
                    spec, e2e.BASE_PORT, logs / f"conncheck-{name}.log"
                ) as proc:
                    r = uvloop.run(measure(proc.pid, e2e.BASE_PORT, args, k))
                r.update(server=name, run=run + 1)
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(
        "\nserver   in flight  opened/s (median [min-max])   KiB/conn right after   KiB/conn settled   client CPU"
    )
    for name in args.servers.split(","):
        for k in (int(x) for x in args.inflight.split(",")):
            rs = [r for r in rows if r["server"] == name and r["inflight"] == k]

            def fmt(key: str, rs: list[dict[str, Any]] = rs) -> str:
                v = [r[key] for r in rs]
                return f"{statistics.median(v):,.2f} [{min(v):,.2f}-{max(v):,.2f}]"

            print(
                f"{name:8} {k:9}  {fmt('opened_per_s'):28} {fmt('kb_per_conn_right_after'):22} "
                f"{fmt('kb_per_conn_settled'):18} {fmt('client_cpu_share')}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
