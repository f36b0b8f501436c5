"""What the one-port front door costs the WebSocket path: handshakes and round trips.

Two servers with the same minimal Pusher behaviour (greet, answer ``pusher:ping`` and
``pusher:subscribe``): ours, a ``Router`` behind our ``FrontDoor`` (which reads the
upgrade and answers it itself, then hands the socket to our WebSocket layer,
``twins/_ws``), and a picows listener on ``picows.ws_create_server`` directly (picows
reads the upgrade and the frames): the floor of a picows server. The native
load client measures connections per second (200 handshakes in flight) and ping
round trips with 50 connections. Server on core 0, client on core 1, the two servers
alternating, median of ``--runs``. Writes ``bench/results/frontdoor_cost.json``.

Run: ``python bench/frontdoor_cost.py`` (builds the load client if needed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOADCLIENT = HERE / "loadclient" / "loadclient"


def serve(kind: str, port: int) -> None:
    """Run one of the two servers (in a child process)."""
    import uvloop
    from picows import WSListener, WSMsgType, ws_create_server

    from soketi_impl import Router
    from soketi_impl.hosts.picows import FrontDoor, FrontDoorOptions, health_handler
    from soketi_impl.pusher.server import new_socket_id

    router = Router()
    established = b'{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.1\\",\\"activity_timeout\\":30}"}'
    pong = b'{"event":"pusher:pong","data":"{}"}'
    succeeded = b'{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}'
    frame = lambda p: bytes([0x81, len(p)]) + p  # noqa: E731 - every payload here is < 126 bytes
    established_f, pong_f, succeeded_f = frame(established), frame(pong), frame(succeeded)

    @router.on_new_connection
    def greet(conn: Any) -> None:
        conn.raw_write(established_f)

    @router.on_message
    def answer(conn: Any, message: bytes) -> None:
        if b"pusher:ping" in message:
            conn.raw_write(pong_f)
        elif b"pusher:subscribe" in message:
            conn.raw_write(succeeded_f)

    class Direct(WSListener):  # type: ignore[misc]
        """The same answers on picows's own listener."""

        def on_ws_connected(self, transport: Any) -> None:
            transport.send(WSMsgType.TEXT, established)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            message = frame.get_payload_as_bytes()
            if b"pusher:ping" in message:
                transport.send(WSMsgType.TEXT, pong)
            elif b"pusher:subscribe" in message:
                transport.send(WSMsgType.TEXT, succeeded)

    async def main() -> None:
        if kind == "frontdoor":
            loop = asyncio.get_running_loop()
            options = FrontDoorOptions()
            server = await loop.create_server(
                lambda: FrontDoor(router, health_handler, options, new_socket_id),
                "127.0.0.1", port, backlog=4096,
            )
        else:
            server = await ws_create_server(
                lambda request: Direct(), "127.0.0.1", port, use_aiofastnet=False, read_buffer_init_size=2048,
                logger_name="bench", backlog=4096,
            )
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def measure(kind: str, args: list[str], port: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, __file__, "--serve", kind, "--port", str(port)],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} server did not start")
        out = subprocess.run(
            ["taskset", "-c", "1", str(LOADCLIENT), *args, "--port", str(port), "--key", "k",
             "--secret", "s", "--app-id", "1"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        return dict(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1]))
    finally:
        server.kill()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--serve")
    ap.add_argument("--port", type=int, default=7401)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve, a.port)
        return
    sys.path.insert(0, str(HERE))
    from run import build_loadclient  # the e2e runner's build step (gcc -O2, libcrypto)

    build_loadclient()
    cases = {
        "connections_per_s": (["conns", "--conns", "3000", "--inflight", "200", "--timeout", "30", "--hold", "0"],
                              "connections_per_s"),
        "round_trips_per_s": (["ping", "--conns", "50", "--duration", "2", "--warmup", "0.3"], "round_trips_per_s"),
    }
    results: dict[str, Any] = {"runs": a.runs, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": {}}
    port = a.port
    for name, (args, key) in cases.items():
        got: dict[str, list[float]] = {"frontdoor": [], "picows": []}
        for _ in range(a.runs):
            for kind in got:
                port += 1
                got[kind].append(float(measure(kind, args, port).get(key, 0)))
        fd, pw = statistics.median(got["frontdoor"]), statistics.median(got["picows"])
        results["cases"][name] = {
            "frontdoor": {"median": fd, "min": min(got["frontdoor"]), "max": max(got["frontdoor"])},
            "picows_direct": {"median": pw, "min": min(got["picows"]), "max": max(got["picows"])},
            "frontdoor_over_direct": round(fd / pw, 3) if pw else None,
        }
        print(f"{name}: front door {fd:,.0f}  picows direct {pw:,.0f}  ratio {fd / pw if pw else 0:.2f}")
    out = HERE / "results" / "frontdoor_cost.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
