"""Smoke tests of the end-to-end benchmark machinery: load client, raw server, runner.

Run from the repository root: ``pytest bench/test_e2e.py -q`` (a few seconds).
They check the measuring instruments, not performance: a load client that lost or
mis-signed messages would make every figure in results/e2e.json meaningless.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as e2e

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("taskset") is None, reason="needs gcc and taskset"
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def loadclient() -> Path:
    e2e.build_loadclient()
    return e2e.LOADCLIENT


@pytest.fixture(scope="module")
def raw_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    spec = e2e.server_specs()["raw"]
    with e2e.running_server(spec, port, tmp_path_factory.mktemp("logs") / "raw.log"):
        yield port


def client(port: int, *args: str, timeout: float = 30) -> dict[str, Any]:
    cmd = [
        str(e2e.LOADCLIENT),
        *args,
        "--port",
        str(port),
        "--key",
        e2e.APP_KEY,
        "--secret",
        e2e.APP_SECRET,
        "--app-id",
        e2e.APP_ID,
        "--timeout",
        "10",
    ]
    out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def test_fanout_fixed_rate_delivers_everything(loadclient: Path, raw_port: int) -> None:
    r = client(
        raw_port, "fanout", "--conns", "50", "--rate", "100", "--duration", "0.5", "--warmup", "0.1"
    )
    assert r["ok"] and r["errors"] == 0
    assert r["subscribers"] == 50
    assert r["published"] > 20
    assert r["publish_ok"] == r["published"]
    assert r["deliveries"] == r["published"] * 50
    assert r["lost"] == 0
    assert 0 < r["lat_us"]["p50"] <= r["lat_us"]["p99"] <= r["lat_us"]["max"]


def test_fanout_saturation_keeps_window(loadclient: Path, raw_port: int) -> None:
    r = client(
        raw_port,
        "fanout",
        "--conns",
        "20",
        "--http",
        "4",
        "--window",
        "8",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
    )
    assert r["ok"] and r["lost"] == 0
    assert r["deliveries"] == r["published"] * 20
    assert r["deliveries_per_s"] > 0


def test_ping(loadclient: Path, raw_port: int) -> None:
    r = client(raw_port, "ping", "--conns", "5", "--duration", "0.3", "--warmup", "0.1")
    assert r["ok"] and r["pongs_window"] > 0 and r["round_trips_per_s"] > 0


def test_presence_views(loadclient: Path, raw_port: int) -> None:
    r = client(raw_port, "presence", "--conns", "40")
    assert r["ok"] and r["wrong_views"] == 0
    # 40 joins: connection i sees the 39 - i members that join after it.
    assert r["member_added_received"] == 40 * 39 // 2


def test_client_events(loadclient: Path, raw_port: int) -> None:
    r = client(raw_port, "client", "--conns", "10", "--duration", "0.3", "--warmup", "0.1")
    assert r["ok"] and r["members"] == 10 and r["lost"] == 0
    assert r["deliveries"] == r["published"] * 9


def test_conns_hold_and_release(loadclient: Path, raw_port: int) -> None:
    cmd = [str(e2e.LOADCLIENT), "conns", "--port", str(raw_port), "--conns", "200", "--hold", "5"]
    proc = subprocess.run(cmd, input=b"go\n", capture_output=True, timeout=30, check=False)
    lines = proc.stdout.decode().splitlines()
    assert json.loads(lines[0])["phase"] == "ready"
    r = json.loads(lines[-1])
    assert r["ok"] and r["subscribed"] == 200 and r["dropped_while_held"] == 0


def test_conns_channel_per_connection(loadclient: Path, raw_port: int) -> None:
    cmd = [str(e2e.LOADCLIENT), "conns", "--port", str(raw_port), "--conns", "100"]
    cmd += ["--channels", "100", "--inflight", "16", "--hold", "5"]
    proc = subprocess.run(cmd, input=b"go\n", capture_output=True, timeout=30, check=False)
    r = json.loads(proc.stdout.decode().splitlines()[-1])
    assert r["ok"] and r["subscribed"] == 100 and r["channels"] == 100
    assert r["connections_per_s"] > 0 and r["errors"] == 0


def test_run_conns_reads_memory_and_cpu(loadclient: Path, tmp_path: Path) -> None:
    """run.py's conns path end to end on the raw server: warm-up, baseline, storm, reads."""
    sc = e2e.SCENARIOS["conns"]
    small = ["conns", "--conns", "100", "--inflight", "16", "--channels", "100"]
    small += ["--timeout", "10", "--hold", "20"]
    quick = e2e.Scenario(sc.name, sc.title, small, small, sc.metrics, sc.headline, {}, timeout=30)
    r = e2e.measure(quick, e2e.server_specs()["raw"], free_port(), False, tmp_path / "raw.log")
    assert r["ok"] and r["subscribed"] == 100 and r["channels"] == 100
    assert r["rss_right_after_kb"] > 0 and r["rss_before_kb"] > 0
    assert r["mem_per_conn_right_after_kb"] is not None and "mem_per_conn_kb" not in r
    assert r["server_cpu_ms_per_conn"] > 0 and r["warm_conns"] == e2e.WARM_CONNS
    # user and system apart, from the same reads: they add up to the total
    assert r["server_processes"] == 1
    assert r["server_user_s"] + r["server_system_s"] == pytest.approx(r["server_cpu_s"], abs=0.002)
    per_conn = r["server_user_ms_per_conn"] + r["server_system_ms_per_conn"]
    assert per_conn == pytest.approx(r["server_cpu_ms_per_conn"], abs=0.002)


def test_conns_in_flight_until_subscribed(loadclient: Path) -> None:
    """A connection counts against --inflight until its subscription succeeded.

    A stub server answers the upgrade at once and each subscribe 20 ms later; it
    records how many connections were between accept and their answer at once.
    """
    import asyncio

    async def scenario() -> tuple[int, dict[str, Any]]:
        pending = 0
        peak = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal pending, peak
            pending += 1
            peak = max(peak, pending)
            await reader.readuntil(b"\r\n\r\n")
            hello = b'{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.2\\"}"}'
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + bytes([0x81, len(hello)]) + hello)
            head = await reader.readexactly(2)
            await reader.readexactly(4 + (head[1] & 0x7F))  # the masked subscribe
            await asyncio.sleep(0.02)  # the server's own pace, not a synchronisation
            ok = b'{"event":"pusher_internal:subscription_succeeded","channel":"c"}'
            writer.write(bytes([0x81, len(ok)]) + ok)
            pending -= 1
            await reader.read()  # until the client closes
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cmd = [str(e2e.LOADCLIENT), "conns", "--port", str(port), "--conns", "60"]
        cmd += ["--inflight", "8", "--hold", "0", "--timeout", "20"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        server.close()
        return peak, json.loads(out.decode().splitlines()[-1])

    peak, r = asyncio.run(scenario())
    assert r["subscribed"] == 60
    assert peak <= 8


@pytest.mark.skipif(
    not (e2e.NODE.exists() and e2e.SOKETI_JS.exists()),
    reason="soketi not installed in bench/.cache (python bench/run.py installs it)",
)
def test_signed_publish_accepted_by_soketi(loadclient: Path, tmp_path: Path) -> None:
    """soketi checks the HTTP API signature: a mis-signed publish would be refused."""
    port = free_port()
    with e2e.running_server(e2e.server_specs()["soketi"], port, tmp_path / "soketi.log"):
        r = client(
            port, "fanout", "--conns", "5", "--rate", "50", "--duration", "0.3", "--warmup", "0.1"
        )
        assert r["publish_bad"] == 0 and r["publish_ok"] == r["published"] > 0
        assert r["deliveries"] == r["published"] * 5
        p = client(port, "presence", "--conns", "10")
        assert p["ok"] and p["wrong_views"] == 0 and p["errors"] == 0
        c = client(port, "client", "--conns", "5", "--duration", "0.3", "--warmup", "0.1")
        assert c["ok"] and c["errors"] == 0 and c["deliveries"] == c["published"] * 4


def test_table_ratios() -> None:
    def cell(v: float) -> dict[str, Any]:
        return {"summary": {"deliveries_per_s": {"median": v, "min": v, "max": v, "n": 3}}}

    data = {
        "meta": {},
        "scenarios": {"fanout": {"ours": cell(300.0), "soketi": cell(100.0), "raw": cell(600.0)}},
    }
    out = e2e.table(data)
    row = next(line for line in out.splitlines() if "deliveries/s" in line)
    assert "3.00×" in row and "0.50×" in row


def test_cpu_split_per_operation() -> None:
    """derive: server user and system CPU per delivery and per connection; the table gives
    them rows with a ratio to the pure-Python build, and leaves the seconds out."""
    cpu = {"server_cpu_s": 2.5, "server_user_s": 2.0, "server_system_s": 0.5}
    f = e2e.derive({"mode": "fanout", "deliveries": 2_000_000, **cpu})
    assert (f["server_user_us_per_delivery"], f["server_system_us_per_delivery"]) == (1.0, 0.25)
    c = e2e.derive({"mode": "conns", "subscribed": 10_000, **cpu})
    assert (c["server_user_ms_per_conn"], c["server_system_ms_per_conn"]) == (0.2, 0.05)

    def cell(user: float) -> dict[str, Any]:
        m = {"median": user, "min": user, "max": user, "n": 1}
        return {"summary": {"server_user_us_per_delivery": m, "server_user_s": m}}

    data = {
        "meta": {},
        "scenarios": {"fanout": {"ours": cell(1.0), "ours-py": cell(2.0), "soketi": cell(4.0)}},
    }
    lines = e2e.table(data).splitlines()
    assert "ours ÷ pure Python" in lines[0]
    row = next(line for line in lines if "server user CPU per delivery (µs)" in line)
    assert row.endswith("| 0.25× | — | 0.50× |")
    assert not any("| server CPU s |" in line for line in lines)


def test_summarise_median_min_max() -> None:
    sc = e2e.SCENARIOS["ping_1"]
    runs = [{"round_trips_per_s": v, "ok": True} for v in (3.0, 1.0, 2.0)] + [
        {"ok": False, "round_trips_per_s": 9.0}
    ]
    s = e2e.summarise(runs, sc)["round_trips_per_s"]
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
