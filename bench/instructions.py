"""CPU instructions per operation, the server under callgrind: deterministic on a noisy machine.

Wall-clock rates swing with whatever else the cores run; the number of instructions
the server executes for one operation does not (within a fraction of a percent). The
server runs under ``valgrind --tool=callgrind``; after a warm-up its counters are
zeroed (``callgrind_control -z``), the client runs N operations, the counters are
dumped (``callgrind_control -d``) and the dump's total is divided by N. Only the
server process is counted; the client runs outside valgrind.

Scenarios:

- ``publish``: ``POST /apps/1/events`` through the official ``pusher`` SDK (keep-alive,
  auth_version 1.0 signature with ``body_md5``, a JSON body) to a channel with
  ``--subscribers`` WebSocket subscribers (default 1), each of which receives it;
- ``ping``: one ``pusher:ping`` / ``pusher:pong`` round trip on one connection;
- ``handshake``: one connection opened, one after the other, by a raw-socket client
  (no WebSocket library on the client side to slow the loop): the HTTP upgrade request,
  the ``101`` with ``pusher:connection_established``, one masked ``pusher:subscribe``
  frame to a channel of its own, ``pusher_internal:subscription_succeeded``. The sockets
  stay open until the count is taken, so the figure has no closing cost in it.

Usage (needs valgrind; the client uses ``websockets`` and ``pusher`` from the ``test``
extra)::

    python bench/instructions.py                       # both scenarios, this checkout
    python bench/instructions.py publish -n 300
    python bench/instructions.py --src /path/to/other/checkout   # a baseline, same sitting

``--src`` is a checkout whose ``src/`` is put on ``PYTHONPATH`` (its compiled twins
must be built in place). ``SOKETI_IMPL_NO_EXTENSIONS=1`` in the environment measures
the pure-Python twins.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Callgrind:
    """The server under callgrind; :meth:`zero` and :meth:`total` work its counters."""

    def __init__(self, src: Path, port: int, outdir: str) -> None:
        env = dict(
            os.environ, PYTHONPATH=str(src / "src"), SOKETI_HOST="127.0.0.1", SOKETI_PORT=str(port),
            SOKETI_DEFAULT_APP_ID="1", SOKETI_DEFAULT_APP_KEY="k", SOKETI_DEFAULT_APP_SECRET="s",
            SOKETI_METRICS_SERVER_PORT=str(_free_port()),
        )
        self.outdir = outdir
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outdir}/cg.%p",
             sys.executable, "-m", "soketi_impl", "start"],
            env=env, cwd=outdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], capture_output=True, check=True)

    def zero(self) -> None:
        """Forget what was counted so far (start-up, warm-up)."""
        self._control("-z")

    def total(self) -> int:
        """Instructions since :meth:`zero`: dump and read the dump's summary."""
        before = set(Path(self.outdir).glob("cg.*"))
        self._control("-d")
        for dump in sorted(set(Path(self.outdir).glob("cg.*")) - before, key=os.path.getmtime):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        raise RuntimeError(f"no callgrind dump with a summary in {self.outdir}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _connect(port: int) -> Any:
    import websockets

    for _ in range(600):  # the server starts slowly under valgrind
        try:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/app/k?protocol=7", max_queue=None)
            await asyncio.wait_for(ws.recv(), 60)  # pusher:connection_established
            return ws
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError("the server under callgrind did not start within 120 s")


async def publish(server: Callgrind, port: int, n: int, subscribers: int) -> float:
    """Instructions per ``POST /apps/1/events`` delivered to ``subscribers`` sockets."""
    import pusher

    client = pusher.Pusher(app_id="1", key="k", secret="s", host="127.0.0.1", port=port, ssl=False)
    subs = [await _connect(port) for _ in range(max(subscribers, 1))]
    for ws in subs[:subscribers]:
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "fan"}}))
        await asyncio.wait_for(ws.recv(), 60)  # subscription_succeeded
    for i in range(20):  # warm-up: the keep-alive connection, caches
        await asyncio.to_thread(client.trigger, "fan", "warm", {"i": i})
        for ws in subs[:subscribers]:
            await asyncio.wait_for(ws.recv(), 60)
    server.zero()

    async def drain(ws: Any) -> None:
        for _ in range(n):
            await ws.recv()

    received = asyncio.gather(*(drain(ws) for ws in subs[:subscribers]))
    for i in range(n):
        await asyncio.to_thread(client.trigger, "fan", "ev", {"i": i, "pad": "x" * 100})
    await asyncio.wait_for(received, 600)
    total = server.total()
    for ws in subs:
        await ws.close()
    return total / n


async def ping(server: Callgrind, port: int, n: int, subscribers: int) -> float:
    """Instructions per ``pusher:ping`` round trip on one connection."""
    ws = await _connect(port)
    msg = '{"event":"pusher:ping","data":{}}'
    for _ in range(50):
        await ws.send(msg)
        await asyncio.wait_for(ws.recv(), 60)
    server.zero()
    for _ in range(n):
        await ws.send(msg)
        await asyncio.wait_for(ws.recv(), 60)
    total = server.total()
    await ws.close()
    return total / n


def _open_subscribed(port: int, channel: str) -> socket.socket:
    """A raw socket through upgrade, ``connection_established`` and one subscribe."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(
        b"GET /app/k?protocol=7&client=raw&version=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    _read_until(sock, b"connection_established")
    payload = json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes((0x81, 0x80 | len(payload))) + mask + masked)
    _read_until(sock, b"subscription_succeeded")
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> None:
    buf = b""
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"the server closed before {marker!r}: {buf[-200:]!r}")
        buf += chunk


async def handshake(server: Callgrind, port: int, n: int, subscribers: int) -> float:
    """Instructions per connection opened and subscribed (upgrade to subscription_succeeded)."""
    ws = await _connect(port)  # waits for the server to come up under valgrind
    await ws.close()

    def run(first: int, count: int) -> list[socket.socket]:
        return [_open_subscribed(port, f"hs-{i}") for i in range(first, first + count)]

    held = await asyncio.to_thread(run, 0, 50)  # warm-up: caches, the channel code paths
    server.zero()
    held += await asyncio.to_thread(run, 50, n)
    total = server.total()
    for sock in held:
        sock.close()
    return total / n


SCENARIOS: dict[str, Callable[[Callgrind, int, int, int], Awaitable[float]]] = {
    "publish": publish,
    "ping": ping,
    "handshake": handshake,
}


def measure(scenario: str, src: Path, n: int, subscribers: int, keep: Path | None = None) -> float:
    """Instructions per operation of ``scenario`` for the server in checkout ``src``;
    ``keep``: a folder to copy the callgrind dumps to (for ``callgrind_annotate``)."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="cg-") as outdir:
        server = Callgrind(src, port, outdir)
        try:
            return asyncio.run(SCENARIOS[scenario](server, port, n, subscribers))
        finally:
            server.stop()
            if keep is not None:
                shutil.copytree(outdir, keep / scenario, dirs_exist_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help=f"of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("-n", type=int, default=300, help="operations counted (default 300)")
    parser.add_argument("--subscribers", type=int, default=1, help="publish: sockets on the channel")
    parser.add_argument("--src", type=Path, default=REPO, help="checkout to run (default: this one)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here, a folder per scenario")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {sorted(unknown)[0]!r} (choose from {', '.join(SCENARIOS)})")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind (with callgrind_control) is needed: apt-get install valgrind")
    for scenario in args.scenarios or SCENARIOS:
        per_op = measure(scenario, args.src.resolve(), args.n, args.subscribers, args.keep)
        what = {
            "publish": f"publish to {args.subscribers} subscriber(s)",
            "ping": "ping round trip",
            "handshake": "connection opened and subscribed",
        }[scenario]
        print(f"{scenario:8} {per_op:>12,.0f} instructions per {what}  ({args.src})", flush=True)


if __name__ == "__main__":
    main()
