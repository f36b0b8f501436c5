"""What TLS costs the server: handshakes and fan-out, plain ws:// against wss:// (same server).

Each run starts ``python -m soketi_impl start`` (server on core 0, ``taskset -c 0``) once
per variant and measurement, fresh, and drives it from a Python client on core 1
(uvloop + the picows client, ``ssl`` from the standard library):

- **handshakes**: ``--conns`` connections opened with ``--inflight`` in flight, each
  TCP connect (+ TLS handshake) + HTTP upgrade + ``pusher:connection_established`` +
  ``pusher:subscribe`` + ``pusher_internal:subscription_succeeded``: connections/s and
  server CPU per connection (from ``/proc/PID/stat``, user and system apart);
- **fan-out**: ``--subscribers`` connections on one public channel, publishes through
  the signed HTTP API (over https for TLS) at a steady ``--rate``: deliveries/s received,
  server CPU per delivery (user and system apart), p50/p99/max latency (publish request
  written -> frame read by the subscriber, same client process, ``time.monotonic_ns``).

The variants alternate within a run and the order flips every run, so that drift on a
shared machine hits both alike. The certificate is made at start (a CA and a server
certificate for 127.0.0.1, ECDSA P-256 by default, ``--key-type rsa`` for RSA-2048) in a
temporary directory that is removed at the end; the server reads it through
``SOKETI_SSL_CERT``, ``SOKETI_SSL_KEY`` and ``SOKETI_SSL_PASS`` (the key is encrypted).
Clients do a full handshake every time (TLS 1.3, no session resumption) and verify the
server certificate, as a browser would.

Writes ``bench/results/tls.json``: every run, the medians [min-max] per variant, and the
ratios TLS / plain (of the medians, and the median of the per-run ratios). Only to
127.0.0.1; every wait is bounded. Run: ``python bench/tls_cost.py`` (~2-3 min).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import run as e2e  # noqa: E402 - the e2e runner's helpers (env, pinning, nice, /proc readers)

CHANNEL = "tls-bench"
PASSPHRASE = "tls-bench-passphrase"
HZ = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- certificate


def make_pki(directory: Path, key_type: str) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it; paths as strings."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    def new_key() -> Any:
        if key_type == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = new_key(), new_key()

    def issue(subject: str, public: Any, ca: bool) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("soketi-impl bench CA"))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return b.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
    }
    paths["ca"].write_bytes(
        issue("soketi-impl bench CA", ca_key.public_key(), True).public_bytes(pem)
    )
    paths["cert"].write_bytes(issue("127.0.0.1", key.public_key(), False).public_bytes(pem))
    paths["key"].write_bytes(
        key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    paths["key"].chmod(0o600)
    return {k: str(v) for k, v in paths.items()}


def stdlib_handshake_floor(pki: dict[str, str], n: int = 300) -> float:
    """Server-side CPU ms of one TLS handshake done by the standard library alone.

    Client and server ``SSLObject`` on memory BIOs in this process (what uvloop's TLS
    transport drives), the server's ``do_handshake`` timed with ``thread_time``: the
    part of a handshake that is OpenSSL and ``ssl``, without sockets or an event loop.
    """
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(pki["cert"], pki["key"], password=PASSPHRASE)
    sctx.set_alpn_protocols(["http/1.1"])
    cctx = ssl.create_default_context(cafile=pki["ca"])
    spent = 0.0
    for _ in range(n):
        cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
        client = cctx.wrap_bio(cin, cout, server_hostname="127.0.0.1")
        t = time.thread_time()
        server = sctx.wrap_bio(sin, sout, server_side=True)
        spent += time.thread_time() - t
        client_done = server_done = False
        for _step in range(10):  # TLS 1.3 needs 2 flights each way; bounded all the same
            if client_done and server_done:
                break
            if not client_done:
                with contextlib.suppress(ssl.SSLWantReadError):
                    client.do_handshake()
                    client_done = True
            sin.write(cout.read())
            t = time.thread_time()
            if not server_done:
                with contextlib.suppress(ssl.SSLWantReadError):
                    server.do_handshake()
                    server_done = True
            data = sout.read()
            spent += time.thread_time() - t
            cin.write(data)
        if not (client_done and server_done):
            raise RuntimeError("in-memory TLS handshake did not complete")
    return round(1000 * spent / n, 4)


# --------------------------------------------------------------------------- /proc readers


def cpu_times(pid: int | str) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / HZ, int(fields[12]) / HZ


def run_delay(pid: int | str) -> float:
    """Seconds the process was runnable but waited for its core (/proc/PID/schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class Window:
    """Server and client CPU and run delay over one measured window."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.t = time.monotonic()
        self.server, self.client = cpu_times(server_pid), cpu_times("self")
        self.sdelay, self.cdelay = run_delay(server_pid), run_delay("self")

    def result(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t
        su, ss = (a - b for a, b in zip(cpu_times(self.pid), self.server))
        cu, cs = (a - b for a, b in zip(cpu_times("self"), self.client))
        sdelay, cdelay = run_delay(self.pid) - self.sdelay, run_delay("self") - self.cdelay
        return {
            "wall_s": round(wall, 3),
            "server_user_s": round(su, 3),
            "server_sys_s": round(ss, 3),
            "server_cpu_s": round(su + ss, 3),
            "client_cpu_s": round(cu + cs, 3),
            "client_cpu_share": round((cu + cs) / wall, 3) if wall else 0.0,
            # a Python client on one core: near 100% it, not the server, set the pace
            "client_bound": (cu + cs) > 0.9 * wall,
            "server_run_delay_s": round(sdelay, 3),
            "client_run_delay_s": round(cdelay, 3),
            "contended": sdelay > 0.1 * wall or cdelay > 0.1 * wall,
        }


# --------------------------------------------------------------------------- client


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


async def client_main(a: argparse.Namespace) -> dict[str, Any]:
    """Runs in the client process (core 1): one measurement, result as a dict."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(cafile=a.cafile) if a.cafile else None
    scheme = "wss" if ctx else "ws"
    url = f"{scheme}://127.0.0.1:{a.port}/app/{e2e.APP_KEY}?protocol=7&client=js&version=8.4.0"
    subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL}}).encode()
    latencies = array("q")  # µs, deliveries received in the measured window
    counting = [False]
    received = [0]

    class Client(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.established = loop.create_future()
            self.subscribed = loop.create_future()

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type != WSMsgType.TEXT:
                return
            p = frame.get_payload_as_bytes()
            i = p.find(b"ts=")
            if i >= 0:
                now = time.monotonic_ns()
                received[0] += 1
                if counting[0]:
                    latencies.append((now - int(p[i + 3 : p.index(b";", i)])) // 1000)
            elif b"connection_established" in p and not self.established.done():
                self.established.set_result(None)
            elif b"subscription_succeeded" in p and not self.subscribed.done():
                self.subscribed.set_result(None)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            for fut in (self.established, self.subscribed):
                if not fut.done():
                    fut.set_exception(ConnectionError("closed"))

    transports: list[Any] = []
    errors: list[str] = []
    open_us = array("q")  # µs from connect to subscription_succeeded
    sem = asyncio.Semaphore(a.inflight)

    async def open_one() -> None:
        async with sem:
            t0 = time.monotonic_ns()
            try:
                transport, listener = await ws_connect(
                    Client,
                    url,
                    ssl_context=ctx,
                    use_aiofastnet=False,
                    read_buffer_init_size=2048,
                    websocket_handshake_timeout=10,
                )
                transports.append(transport)
                await asyncio.wait_for(listener.established, 10)
                transport.send(WSMsgType.TEXT, subscribe)
                await asyncio.wait_for(listener.subscribed, 10)
                open_us.append((time.monotonic_ns() - t0) // 1000)
            except Exception as exc:  # counted and reported, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    async def open_all(n: int) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(n))), a.timeout)
        except asyncio.TimeoutError:
            errors.append(f"not every connection was open after {a.timeout} s (--timeout)")

    out: dict[str, Any] = {"mode": a.client, "variant": "tls" if ctx else "plain"}
    if a.client == "handshake":
        w = Window(a.server_pid)
        await open_all(a.conns)
        out.update(w.result())
        done = len(open_us)
        lat = sorted(open_us)
        out.update(
            connections=done,
            errors=len(errors),
            connections_per_s=round(done / out["wall_s"], 1),
            server_cpu_ms_per_conn=round(1000 * out["server_cpu_s"] / done, 4) if done else None,
            server_user_ms_per_conn=round(1000 * out["server_user_s"] / done, 4) if done else None,
            server_sys_ms_per_conn=round(1000 * out["server_sys_s"] / done, 4) if done else None,
            open_p50_ms=percentile(lat, 0.5) / 1000,
            open_p99_ms=percentile(lat, 0.99) / 1000,
        )
    else:
        await open_all(a.subscribers)
        subscribed = len(open_us)
        out.update(await publish_loop(a, ctx, counting, received, latencies, subscribed))
        out["subscribers"], out["errors"] = subscribed, len(errors)
    out["error_samples"] = sorted(set(errors))[:3]
    for t in transports:
        t.disconnect()
    return out


def signed_request(body: bytes) -> bytes:
    """A signed ``POST /apps/{id}/events`` (auth_version 1.0), keep-alive."""
    path = f"/apps/{e2e.APP_ID}/events"
    params = {
        "auth_key": e2e.APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    sig = hmac.new(e2e.APP_SECRET.encode(), f"POST\n{path}\n{query}".encode(), hashlib.sha256)
    head = (
        f"POST {path}?{query}&auth_signature={sig.hexdigest()} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def publish_loop(
    a: argparse.Namespace,
    ctx: ssl.SSLContext | None,
    counting: list[bool],
    received: list[int],
    latencies: array[int],
    subscribers: int,
) -> dict[str, Any]:
    """Publish at ``a.rate``/s for warm-up + duration over ``a.publishers`` keep-alive
    connections; measure the window after the warm-up."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(a.publishers):
        pool.put_nowait(
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", a.port, ssl=ctx), 10)
        )
    failures: list[str] = []
    sent = [0]

    async def publish(seq: int) -> None:
        reader, writer = await pool.get()
        try:
            body = json.dumps(
                {
                    "name": "bench",
                    "channel": CHANNEL,
                    "data": f"ts={time.monotonic_ns()};seq={seq};",
                }
            ).encode()
            writer.write(signed_request(body))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = next(
                (
                    int(ln.split(b":", 1)[1])
                    for ln in head.split(b"\r\n")
                    if ln.lower().startswith(b"content-length:")
                ),
                0,
            )
            await asyncio.wait_for(reader.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            sent[0] += 1
        finally:
            pool.put_nowait((reader, writer))

    interval = 1.0 / a.rate
    total = int((a.warmup + a.duration) * a.rate)
    warm = int(a.warmup * a.rate)
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    window: Window | None = None
    r0 = 0
    for seq in range(total):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing: the publish schedule, not synchronisation
        if seq == warm:
            window, r0, counting[0] = Window(a.server_pid), received[0], True
        task = asyncio.create_task(publish(seq))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # close the window one interval after the last publish, as a publish was due then
    delay = start + total * interval - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    assert window is not None
    res = window.result()
    counting[0] = False
    in_window = received[0] - r0
    # then wait (bounded) for the stragglers, to count what was lost
    expected = total * subscribers
    deadline = time.monotonic() + 2.0
    while (received[0] < expected or tasks) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    lat = sorted(latencies)
    res.update(
        publishes=sent[0],
        publish_failures=len(failures),
        failure_samples=failures[:3],
        deliveries=in_window,
        deliveries_per_s=round(in_window / res["wall_s"], 1),
        lost=max(0, expected - received[0]),
        server_cpu_us_per_delivery=round(1e6 * res["server_cpu_s"] / in_window, 3)
        if in_window
        else None,
        server_user_us_per_delivery=round(1e6 * res["server_user_s"] / in_window, 3)
        if in_window
        else None,
        server_sys_us_per_delivery=round(1e6 * res["server_sys_s"] / in_window, 3)
        if in_window
        else None,
        p50_ms=percentile(lat, 0.5) / 1000,
        p99_ms=percentile(lat, 0.99) / 1000,
        max_ms=(lat[-1] / 1000) if lat else 0.0,
    )
    while not pool.empty():
        pool.get_nowait()[1].close()
    return res


# --------------------------------------------------------------------------- coordinator


def server_env(variant: str, port: int, pki: dict[str, str]) -> dict[str, str]:
    # the metrics port is always served: keep it on loopback too, beside the main port
    extra = {
        "PYTHONPATH": str(REPO / "src"),
        "SOKETI_METRICS_HOST": "127.0.0.1",
        "SOKETI_METRICS_SERVER_PORT": str(port + 1000),
    }
    if variant == "tls":
        extra.update(
            SOKETI_SSL_CERT=pki["cert"], SOKETI_SSL_KEY=pki["key"], SOKETI_SSL_PASS=PASSPHRASE
        )
    return e2e.server_env(port, extra)


@contextlib.contextmanager
def running_server(variant: str, port: int, pki: dict[str, str], logfile: Path) -> Any:
    """``python -m soketi_impl start`` on core 0 until ``GET /`` answers; killed afterwards."""
    deadline = time.monotonic() + 5
    while not e2e.port_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    out = logfile.open("ab")
    proc = subprocess.Popen(
        [
            *e2e.priority_prefix(),
            "taskset",
            "-c",
            e2e.SERVER_CPU,
            sys.executable,
            "-m",
            "soketi_impl",
            "start",
        ],
        env=server_env(variant, port, pki),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        start_new_session=True,
    )
    scheme = "https" if variant == "tls" else "http"
    ctx = ssl.create_default_context(cafile=pki["ca"]) if variant == "tls" else None
    try:
        e2e.wait_answering(proc, f"{scheme}://127.0.0.1:{port}/", f"{variant} server", logfile, ctx)
        yield proc
    finally:
        e2e.kill_group(proc)
        out.close()


def measure(
    mode: str, variant: str, port: int, pki: dict[str, str], a: argparse.Namespace
) -> dict[str, Any]:
    """One fresh server, one client run (the client prints one JSON line)."""
    logfile = e2e.CACHE / "logs" / f"tls_cost-{variant}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with running_server(variant, port, pki, logfile) as proc:
        cmd = [
            *e2e.priority_prefix(),
            "taskset",
            "-c",
            e2e.CLIENT_CPU,
            sys.executable,
            __file__,
            "--client",
            mode,
            "--port",
            str(port),
            "--server-pid",
            str(proc.pid),
            "--conns",
            str(a.conns),
            "--inflight",
            str(a.inflight),
            "--subscribers",
            str(a.subscribers),
            "--rate",
            str(a.rate),
            "--duration",
            str(a.duration),
            "--warmup",
            str(a.warmup),
            "--publishers",
            str(a.publishers),
            "--timeout",
            str(a.timeout),
        ]
        if variant == "tls":
            cmd += ["--cafile", pki["ca"]]
        client = subprocess.run(
            cmd, capture_output=True, text=True, timeout=a.timeout + 30, check=False
        )
        lines = [ln for ln in client.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"{mode}/{variant} client printed no result: {client.stderr[-800:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        result["server_died"] = proc.poll() is not None
    return result


METRICS = {
    "handshake": {
        "connections_per_s": "connections/s",
        "server_cpu_ms_per_conn": "server CPU ms per connection",
        "server_user_ms_per_conn": "  of which user",
        "server_sys_ms_per_conn": "  of which system",
        "open_p50_ms": "open p50 (ms)",
        "open_p99_ms": "open p99 (ms)",
        "client_cpu_share": "client CPU share",
    },
    "fanout": {
        "deliveries_per_s": "deliveries/s",
        "server_cpu_us_per_delivery": "server CPU µs per delivery",
        "server_user_us_per_delivery": "  of which user",
        "server_sys_us_per_delivery": "  of which system",
        "p50_ms": "p50 latency (ms)",
        "p99_ms": "p99 latency (ms)",
        "max_ms": "max latency (ms)",
        "lost": "deliveries lost",
        "client_cpu_share": "client CPU share",
    },
}


def summarise(runs: dict[str, list[dict[str, Any]]], mode: str) -> dict[str, Any]:
    """Per metric: median/min/max per variant, TLS / plain of the medians and the median
    of the per-run ratios (run i's TLS against run i's plain)."""
    out: dict[str, Any] = {}
    for key in METRICS[mode]:
        row: dict[str, Any] = {}
        for variant, rs in runs.items():
            vals = [float(r[key]) for r in rs if r.get(key) is not None]
            if vals:
                row[variant] = {
                    "median": statistics.median(vals),
                    "min": min(vals),
                    "max": max(vals),
                }
        p, t = row.get("plain", {}).get("median"), row.get("tls", {}).get("median")
        row["tls_over_plain"] = round(t / p, 3) if p and t is not None else None
        paired = [
            float(tr[key]) / float(pr[key])
            for pr, tr in zip(runs.get("plain", []), runs.get("tls", []))
            if pr.get(key) and tr.get(key) is not None
        ]
        row["tls_over_plain_paired_median"] = (
            round(statistics.median(paired), 3) if paired else None
        )
        out[key] = row
    every = [r for rs in runs.values() for r in rs]
    out["client_bound_runs"] = sum(bool(r.get("client_bound")) for r in every)
    out["contended_runs"] = sum(bool(r.get("contended")) for r in every)
    out["runs"] = len(every)
    return out


def _cell(row: dict[str, Any], variant: str) -> str:
    c = row.get(variant)
    return f"{c['median']:,.4g} [{c['min']:,.4g}-{c['max']:,.4g}]" if c else "-"


def report(summary: dict[str, Any]) -> str:
    lines = []
    for mode, rows in summary.items():
        lines.append(
            f"\n{mode}:  metric | plain median [min-max] | tls median [min-max] | tls/plain (paired)"
        )
        lines.append(
            f"  ({rows['runs']} runs: client CPU > 90% of the window, so the client set the pace,"
            f" in {rows['client_bound_runs']}; server or client waited > 10% of the window for"
            f" its core in {rows['contended_runs']})"
        )
        for key, label in METRICS[mode].items():
            row = rows[key]
            lines.append(
                f"  {label:30} | {_cell(row, 'plain'):28} | {_cell(row, 'tls'):28} | "
                f"{row['tls_over_plain']} ({row['tls_over_plain_paired_median']})"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--conns", type=int, default=2000, help="handshakes: connections opened")
    ap.add_argument("--inflight", type=int, default=64, help="connections being opened at once")
    ap.add_argument(
        "--subscribers", type=int, default=1000, help="fan-out: subscribers on the channel"
    )
    ap.add_argument("--rate", type=float, default=25, help="fan-out: publishes per second")
    ap.add_argument("--duration", type=float, default=4, help="fan-out: measured seconds")
    ap.add_argument(
        "--warmup", type=float, default=0.5, help="fan-out: publishing seconds not measured"
    )
    ap.add_argument(
        "--publishers", type=int, default=2, help="fan-out: keep-alive HTTP API connections"
    )
    ap.add_argument(
        "--key-type", choices=["ec", "rsa"], default="ec", help="ECDSA P-256 or RSA-2048"
    )
    ap.add_argument("--timeout", type=float, default=60, help="bound on one client run (s)")
    ap.add_argument("--port", type=int, default=7601)
    ap.add_argument(
        "--nice", type=int, default=e2e.NICE, help="as bench/run.py (-10 when root; 0 = off)"
    )
    ap.add_argument("--out", type=Path, default=e2e.RESULTS / "tls.json")
    ap.add_argument("--client", choices=["handshake", "fanout"], help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cafile", help=argparse.SUPPRESS)
    a = ap.parse_args()
    e2e.raise_nofile()
    if a.client:
        import uvloop

        print(json.dumps(uvloop.run(client_main(a))), flush=True)
        return
    e2e.NICE = a.nice
    started = time.monotonic()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        m: {"plain": [], "tls": []} for m in METRICS
    }
    data: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": e2e.machine_info(),
        "settings": {
            k: v for k, v in vars(a).items() if k not in ("client", "server_pid", "cafile", "out")
        },
        "method": __doc__,
        # the compiled twins the server ran with (run.py's machine_info looks one level up)
        "extensions": sorted(p.name for p in (REPO / "src" / "soketi_impl").rglob("*.so")),
    }
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        pki = make_pki(Path(tmp), a.key_type)
        data["stdlib_handshake_floor_ms"] = stdlib_handshake_floor(pki)
        port = a.port
        for i in range(a.runs):
            order = ["plain", "tls"] if i % 2 == 0 else ["tls", "plain"]
            for mode in METRICS:
                for variant in order:
                    port = a.port + (port - a.port + 1) % 50
                    r = measure(mode, variant, port, pki, a)
                    runs[mode][variant].append(r)
                    key = "connections_per_s" if mode == "handshake" else "deliveries_per_s"
                    cpu = (
                        "server_cpu_ms_per_conn"
                        if mode == "handshake"
                        else "server_cpu_us_per_delivery"
                    )
                    e2e.log(
                        f"run {i + 1}/{a.runs} {mode:9} {variant:5}: {r.get(key)} {key}, {r.get(cpu)} {cpu}, "
                        f"client CPU {r['client_cpu_share']:.0%}, errors {r.get('errors')}, "
                        f"contended {r['contended']}"
                    )
    data["runs"] = runs
    data["summary"] = {mode: summarise(runs[mode], mode) for mode in METRICS}
    data["loadavg_at_end"] = os.getloadavg()
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(data, indent=2) + "\n")
    print(report(data["summary"]))
    print(
        f"\nstandard-library TLS handshake alone (OpenSSL + ssl, memory BIOs): "
        f"{data['stdlib_handshake_floor_ms']} ms server CPU per handshake"
    )
    print(f"wrote {a.out} in {data['elapsed_s']} s")


if __name__ == "__main__":
    main()
