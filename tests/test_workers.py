"""``soketi-impl start --workers N``: the supervisor, its restarts and stops, and one server
across workers through the shared port (the Python ``pusher`` SDK, raw WebSocket
clients and pusher-js).

Worker ``i`` also listens on a port of its own (``SOKETI_IMPL_WORKER_PORT_BASE``), so a
test puts a client on the worker it wants; the supervisor's ``N workers on`` line
says every worker listens. The multi-node suites (``test_cluster*.py``,
``test_webhooks_cluster.py``) run on this driver too (``workers``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cluster_util import TIMEOUT, Sub, free_ports, marker, run_workers, sdk, worker_pids
from conftest import ServerProcess, base_env, free_port, wait_until
from soketi_impl.adapters.local_ipc import wire
from soketi_impl.config import load_config
from soketi_impl.config.values import cpu_count
from soketi_impl.twins import _speedups

MODE = "py" if _speedups.NO_EXTENSIONS else "c"

pytestmark = pytest.mark.timeout(90)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------- one server across workers


def test_a_trigger_through_the_shared_port_reaches_every_worker() -> None:
    with run_workers(None, 2, MODE) as (sup, (w0, w1)):
        subs = [Sub(w0), Sub(w1), Sub(sup), Sub(sup)]
        try:
            for s in subs:
                assert s.subscribe("private-news")["event"] == "pusher_internal:subscription_succeeded"
            shared = sdk(sup)
            shared.trigger("private-news", "flash", {"n": 1})
            for s in subs:
                got = s.recv()
                assert (got["event"], json.loads(got["data"])) == ("flash", {"n": 1})
            # the HTTP API through the shared port counts every worker's subscribers
            assert shared.channel_info("private-news", ["subscription_count"]) == {
                "occupied": True, "subscription_count": 4,
            }
            # a client event from worker 0 reaches worker 1, not its sender
            subs[0].ws.send(json.dumps({"event": "client-hi", "channel": "private-news", "data": {}}))
            assert subs[1].recv()["event"] == "client-hi"
        finally:
            for s in subs:
                s.close()


def test_presence_across_workers_is_one_member_per_user() -> None:
    with run_workers({"SOKETI_PRESENCE_MAX_MEMBERS": "2"}, 2, MODE) as (sup, (w0, w1)):
        a, b, c = Sub(w0), Sub(w1), Sub(w1)
        try:
            assert a.join("presence-room", "ann")["ids"] == ["ann"]
            presence = b.join("presence-room", "ann")  # the same user on the other worker
            assert presence["ids"] == ["ann"] and presence["count"] == 1
            assert marker(sdk(sup), "presence-room", a, "m1") == []  # no second member_added
            assert c.join("presence-room", "bob")["count"] == 2
            assert a.recv()["event"] == "pusher_internal:member_added"
            users = sdk(sup).users_info("presence-room")["users"]
            assert sorted(u["id"] for u in users) == ["ann", "bob"]
            refused = Sub(w0)
            assert refused.subscribe("presence-room", {"user_id": "cid"})["event"] == "pusher:subscription_error"
            refused.close()
        finally:
            for s in (a, b, c):
                s.close()


def refused(server: ServerProcess) -> tuple[int, int | None]:
    """Connect and be refused: (the pusher:error code, the close code)."""
    with connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=1) as ws:
        msg = json.loads(ws.recv(timeout=TIMEOUT))
        assert msg["event"] == "pusher:error", msg
        data = msg["data"] if isinstance(msg["data"], dict) else json.loads(msg["data"])
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
    return int(data["code"]), closed.value.rcvd.code if closed.value.rcvd is not None else None


def test_max_connections_spans_the_workers() -> None:
    with run_workers({"SOKETI_DEFAULT_APP_MAX_CONNS": "3"}, 2, MODE) as (sup, (w0, w1)):
        a, b = Sub(w0), Sub(w0)
        c = Sub(w1)
        try:
            a.subscribe("on-w0")
            c.subscribe("on-w1")
            # a worker's count leaves before an event it publishes later: once the other
            # worker delivered the marker it has heard the count
            assert marker(sdk(w0), "on-w1", c, "w0 has 2") == []
            assert marker(sdk(w1), "on-w0", a, "w1 has 1") == []
            assert refused(w1) == (4004, 4004)
            assert refused(w0) == (4004, 4004)
            assert refused(sup) == (4004, 4004)  # the shared port, whichever worker takes it
            b.close()  # room for one, on either worker
            assert marker(sdk(w0), "on-w1", c, "w0 has 1") == []
            d = Sub(w1)
            assert marker(sdk(w1), "on-w0", a, "w1 has 2") == []
            assert refused(w0) == (4004, 4004)
            d.close()
        finally:
            for s in (a, b, c):
                s.close()


def scrape(port: int) -> dict[str, float]:
    """The metrics port's /metrics: sample name -> value, for the test app."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from conftest import APP_ID

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT * 2) as r:
        text = r.read().decode()
    return {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
        if s.labels.get("app_id") == APP_ID
    }


def test_metrics_on_worker_0_add_up_every_worker() -> None:
    from soketi_impl.adapters.local_ipc.adapter import STATS_TIMEOUT

    metrics_port = free_port()
    env = {"SOKETI_METRICS_ENABLED": "true", "SOKETI_METRICS_HOST": "127.0.0.1",
           "SOKETI_METRICS_SERVER_PORT": str(metrics_port)}
    with run_workers(env, 2, MODE) as (sup, (w0, w1)):
        subs = [Sub(w0), Sub(w1), Sub(w1)]
        stopped = 0
        try:
            for s in subs:  # a ping each, answered: the counters moved
                s.send("pusher:ping", {})
                assert s.recv()["event"] == "pusher:pong"
            got = scrape(metrics_port)
            assert got["soketi_connected"] == 3
            assert got["soketi_new_connections_total"] == 3
            assert got["soketi_ws_messages_received_total"] == 3
            assert got["soketi_ws_messages_sent_total"] == 6  # established and pong, each
            # a worker that does not answer (stopped) is left out after the timeout, with a log line
            stopped = worker_pids(sup)[1]
            os.kill(stopped, signal.SIGSTOP)
            started = time.monotonic()
            got = scrape(metrics_port)
            assert time.monotonic() - started < STATS_TIMEOUT + 2
            assert got["soketi_connected"] == 1
            wait_until(lambda: any("worker(s) 1 did not send their statistics" in line for line in list(sup.log)),
                       TIMEOUT, "worker 0's line about worker 1")
            os.kill(stopped, signal.SIGCONT)
            stopped = 0
            assert scrape(metrics_port)["soketi_connected"] == 3
        finally:
            if stopped:
                os.kill(stopped, signal.SIGCONT)
            for s in subs:
                s.close()


@pytest.mark.clients
def test_pusher_js_follows_the_count_across_workers(node_modules: Path) -> None:
    from test_clients_pusherjs import check, run_scenario

    env = {"SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT": "true"}
    with run_workers(env, 2, MODE) as (_, (w0, w1)):
        records = run_scenario("subscription_count_cluster", w0.port, port2=w1.port)
    counts = check(records, "counts")
    assert counts["a"] == [1, 2, 3, 2] and counts["b"] == [2, 3, 2] and counts["c"] == [3]


def test_with_redis_each_worker_is_a_node_of_it() -> None:
    from cluster_util import cleanup, cluster_env, leftovers, need, new_prefix

    need("redis")
    prefix = new_prefix("redis")
    try:
        metrics_port = free_port()
        env = {**cluster_env("redis", prefix), "SOKETI_METRICS_ENABLED": "true",
               "SOKETI_METRICS_HOST": "127.0.0.1", "SOKETI_METRICS_SERVER_PORT": str(metrics_port)}
        with run_workers(env, 2, MODE) as (_, (w0, w1)):
            a, b = Sub(w0), Sub(w1)
            try:
                b.subscribe("news")
                sdk(w0).trigger("news", "via-redis", "x")
                assert b.recv()["event"] == "via-redis"
                a.join("presence-r", "ann")
                assert b.join("presence-r", "ann")["count"] == 1
                # the workers registered themselves in Redis (the hub carries nothing)
                assert asyncio.run(leftovers("redis", prefix)) != []
                # but worker 0's /metrics still asks worker 1 over the hub
                assert scrape(metrics_port)["soketi_connected"] == 2
            finally:
                a.close()
                b.close()
    finally:
        asyncio.run(cleanup("redis", prefix))


# ---------------------------------------------------------------- the supervisor


def test_a_worker_killed_with_sigkill_is_restarted_and_the_port_keeps_serving() -> None:
    with run_workers(None, 2, MODE) as (sup, (w0, w1)):
        before = worker_pids(sup)
        assert sorted(before) == [0, 1]
        os.kill(before[1], signal.SIGKILL)
        # once it is gone (a connection queued on its socket as it died is reset: a
        # SO_REUSEPORT property) worker 0 alone serves the shared port meanwhile. Gone: the
        # supervisor reaped it: /proc can show the main thread a zombie while the worker's other
        # threads still exit with its sockets open, so alive() is not enough here.
        wait_until(lambda: any(f"worker 1 (pid {before[1]}) was killed by SIGKILL" in line
                               for line in list(sup.log)), 10, "the supervisor to reap worker 1")
        assert sdk(sup).channels_info()["channels"] == {}
        wait_until(lambda: sum("worker 1 listening on" in line for line in list(sup.log)) >= 2,
                   20, "worker 1 restarted")
        after = worker_pids(sup)
        assert after[0] == before[0] and after[1] != before[1]
        assert any("worker 1 (pid" in line and "SIGKILL" in line and "restarting" in line for line in sup.log)
        s = Sub(w1)  # the new worker 1 on its own port, and the cluster works again
        try:
            s.subscribe("again")
            sdk(sup).trigger("again", "e", "x")
            assert s.recv()["event"] == "e"
        finally:
            s.close()


def test_workers_that_keep_dying_stop_everything_with_exit_1() -> None:
    from soketi_impl.workers import CRASH_WINDOW, MAX_CRASHES

    with run_workers(None, 2, MODE) as (sup, _):
        for n in range(1, MAX_CRASHES + 1):
            wait_until(lambda n=n: sum("worker 1 listening on" in line for line in list(sup.log)) >= n,
                       20, f"worker 1 started {n} times")
            os.kill(worker_pids(sup)[1], signal.SIGKILL)
        assert sup.proc.wait(TIMEOUT * 3) == 1
        sup.log_closed.wait(TIMEOUT)
        assert any(f"workers died {MAX_CRASHES} times within {CRASH_WINDOW:.0f} s: stopping" in line
                   for line in sup.log), sup.log
        assert not worker_pids(sup)


def test_sigterm_stops_every_worker_and_exits_0() -> None:
    with run_workers(None, 2, MODE) as (sup, (w0, _)):
        pids = list(worker_pids(sup).values())
        s = Sub(w0)
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(TIMEOUT * 3) == 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                s.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4200
        assert not any(alive(pid) for pid in pids)
        sup.log_closed.wait(TIMEOUT)
        assert sup.log[-1].endswith("soketi_impl.workers: stopped")
        assert not any("while stopping" in line for line in sup.log), sup.log  # every worker exited 0


def test_the_supervisor_killed_takes_its_workers_with_it() -> None:
    with run_workers(None, 2, MODE) as (sup, _):
        pids = list(worker_pids(sup).values())
        sup.proc.kill()
        sup.proc.wait(TIMEOUT)
        wait_until(lambda: not any(alive(pid) for pid in pids), 15, "the workers to stop")


def run_start(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    if MODE == "py":
        env = {**env, "SOKETI_IMPL_NO_EXTENSIONS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "soketi_impl", "start", *args], env=env,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def test_a_port_in_use_exits_1_with_one_line_and_no_worker() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_start("--workers", "2", env=base_env(port))
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}: " in errors[0]
    assert "listening on" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_worker_that_cannot_start_stops_everything_with_exit_1() -> None:
    # metrics enabled on a taken metrics port: worker 0 cannot start; no restart loop
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = base_env(free_port(), SOKETI_METRICS_ENABLED="true", SOKETI_METRICS_HOST="127.0.0.1",
                       SOKETI_METRICS_SERVER_PORT=str(taken.getsockname()[1]))
        started = time.monotonic()
        proc = run_start("--workers", "2", env=env)
    assert proc.returncode == 1
    assert "worker 0 (pid" in proc.stderr and "before it listened: stopping" in proc.stderr
    assert proc.stderr.count("cannot listen on the metrics port") == 1, proc.stderr
    assert "restarting" not in proc.stderr
    assert time.monotonic() - started < 25


def test_workers_share_one_os_chosen_port() -> None:
    """Port 0: the supervisor resolves it once; every worker listens on it."""
    base = free_ports(2)
    env = {"SOKETI_IMPL_WORKER_PORT_BASE": str(base)}
    from conftest import run_process

    argv = [sys.executable, "-m", "soketi_impl", "start", "--workers", "2"]
    with run_process(argv, "workers on", 0, env, mode=MODE) as sup:
        line = next(line for line in sup.log if "2 workers on 127.0.0.1:" in line)
        port = int(line.rsplit(":", 1)[1])
        assert port != 0
        assert sum(f"127.0.0.1:{port}/app" in line for line in sup.log) == 2


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("value", ["0", "auto", "AUTO"])
def test_zero_and_auto_mean_one_worker_per_core(value: str) -> None:
    assert load_config(None, environ={"SOKETI_WORKERS": value}).workers == cpu_count()
    assert cpu_count() == len(os.sched_getaffinity(0))


def test_workers_from_the_file_the_environment_and_the_default(tmp_path: Path) -> None:
    assert load_config(None, environ={}).workers == 1
    assert load_config(None, environ={"SOKETI_WORKERS": "3"}).workers == 3
    path = tmp_path / "soketi.json"
    path.write_text(json.dumps({"workers": 4}), encoding="utf-8")
    assert load_config(str(path), environ={}).workers == 4
    assert load_config(str(path), environ={"SOKETI_WORKERS": "2"}).workers == 2


def test_bad_worker_counts_exit_2_with_one_line() -> None:
    for args, env in ((("--workers", "many"), {}), ((), {"SOKETI_WORKERS": "-2"})):
        proc = run_start(*args, env=base_env(free_port(), **env))
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.splitlines()
        assert line.startswith("soketi-impl: configuration error: ") and "auto" in line


def test_cli_workers_overrides_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from soketi_impl import cli, workers

    calls: list[tuple[int, list[str]]] = []
    monkeypatch.setenv("SOKETI_WORKERS", "5")
    monkeypatch.delenv(workers.WORKER_ENV, raising=False)
    monkeypatch.setattr(workers, "supervise", lambda config, n, argv: calls.append((n, argv)) or 0)
    assert cli.main(["start", "--workers", "3"]) == 0
    assert calls == [(3, ["start"])]
    assert cli.main(["start", "--workers", "auto"]) == 0
    assert calls[-1][0] == cpu_count()


# ---------------------------------------------------------------- the wire


def test_frames_cut_from_any_chunks_and_bounded() -> None:
    frames = [wire.control({"t": "hello", "i": 1}), wire.event("app", "news", b"\x81\x02hi", None, True)]
    stream = b"".join(frames)
    reader = wire.FrameReader()
    got = [f for i in range(len(stream)) for f in reader.feed(stream[i:i + 1])]
    assert got == frames and reader.buffered == 0
    assert wire.read_control(got[0]) == {"t": "hello", "i": 1}
    assert wire.read_event(got[1]) == ("app", "news", b"\x81\x02hi", None, True)
    with pytest.raises(wire.FrameTooLarge):
        wire.FrameReader(max_frame=16).feed(wire.control({"t": "x" * 32}))


async def test_a_worker_over_its_queue_bound_drops_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from soketi_impl.adapters.local_ipc import Hub, HubLink

    path = str(tmp_path / "hub.sock")
    hub = Hub(path)
    await hub.start()
    link = HubLink(path, 0, max_queue=1024)
    try:
        await link.connect()
        big = wire.event("app", "c", b"x" * 600, None, False)
        assert link.send(big)
        assert not link.send(big)  # over 1024 bytes waiting: dropped
        assert link.dropped == 1
        assert "dropped" in caplog.text
        await asyncio.sleep(0)  # the queue is written at the end of the iteration
        assert link.send(big)
    finally:
        await link.close()
        await hub.close()


# ---------------------------------------------------------------- the hub, driven by bare links


class FakeWorker:
    """A worker reduced to its hub link: what the hub sends is queued, decoded."""

    def __init__(self, path: str, index: int, answer: bool = True) -> None:
        from soketi_impl.adapters.local_ipc import HubLink

        self.got: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.answer = answer
        self.link = HubLink(path, index, self._frame)

    def _frame(self, frame: bytes) -> None:
        msg = wire.read_control(frame)
        if msg["t"] == "q" and self.answer:
            self.send({"t": "a", "id": msg["id"], "data": f"from {self.link.index}"})
        self.got.put_nowait(msg)

    def send(self, msg: dict[str, object]) -> None:
        assert self.link.send(wire.control(msg))

    async def next(self, t: str) -> dict[str, object]:
        while True:
            msg = await asyncio.wait_for(self.got.get(), TIMEOUT)
            if msg["t"] == t:
                return msg


async def fake_workers(path: str, n: int, **kw: bool) -> list[FakeWorker]:
    workers = [FakeWorker(path, i, **kw) for i in range(n)]
    for w in workers:
        await w.link.connect()
    # a round trip each: the hub has seen every hello before the test speaks
    for w in workers:
        w.send({"t": "totals", "id": 0, "app": "a", "k": "channel", "names": ["x"]})
        await w.next("T")
    return workers


async def test_the_hub_decides_presence_and_withdraws_a_lost_worker(tmp_path: Path) -> None:
    from soketi_impl.adapters.local_ipc import Hub

    hub = Hub(str(tmp_path / "hub.sock"))
    await hub.start()
    w0, w1 = await fake_workers(hub.path, 2)
    try:
        join = {"t": "join", "app": "a", "c": "presence-x", "info": {"n": 1}, "first": True, "max": 2}
        w0.send({**join, "tok": 1, "u": "ann"})
        assert await w0.next("m+") == {"t": "m+", "app": "a", "c": "presence-x", "u": "ann", "info": {"n": 1}, "o": 1}
        assert (await w0.next("joined"))["s"] == 1
        assert "o" not in await w1.next("m+")
        w1.send({**join, "tok": 2, "u": "ann"})  # the same user on the other worker: no event
        assert await w1.next("joined") == {"t": "joined", "tok": 2, "s": 0, "m": {"ann": {"n": 1}}}
        w1.send({**join, "tok": 3, "u": "bob"})
        assert (await w1.next("joined"))["s"] == 1
        w0.send({**join, "tok": 4, "u": "cid"})  # max 2
        assert await w0.next("joined") == {"t": "joined", "tok": 4, "s": -1, "m": {}}
        # counts: shares per worker, the total's changes to the origin (and to all across zero)
        w1.send({"t": "n", "app": "a", "k": "channel", "c": "news", "v": 2})
        assert (await w1.next("N"))["t2"] == 2 and (await w0.next("N"))["t2"] == 2
        w0.send({"t": "n", "app": "a", "k": "channel", "c": "news", "v": 1})
        fact = await w0.next("N")
        assert (fact["t2"], fact["p"], fact["o"]) == (3, 2, 1)
        # worker 1 dies: bob leaves (ann is still on worker 0), its share goes, told on worker 0
        assert w1.link.transport is not None
        w1.link.transport.abort()
        removed = await w0.next("m-")
        assert (removed["u"], removed["o"]) == ("bob", 1)
        fact = await w0.next("N")
        assert (fact["t2"], fact["p"], fact["o"]) == (1, 3, 1)
        assert hub.members[("a", "presence-x")].keys() == {"ann"}
        # a clean leave: bye withdraws the rest, told on the leaver, then confirmed
        w0.send({"t": "bye"})
        assert (await w0.next("m-"))["o"] == 1
        assert (await w0.next("N"))["t2"] == 0
        await w0.next("bye")
        assert hub.members == {} and hub.shares == {}
    finally:
        for w in (w0, w1):
            await w.link.close()
        await hub.close()


async def test_a_query_returns_the_answers_that_came_in_time(tmp_path: Path) -> None:
    from soketi_impl.adapters.local_ipc import Hub

    hub = Hub(str(tmp_path / "hub.sock"), ask_timeout=0.3)
    await hub.start()
    asker, helpful = await fake_workers(hub.path, 2)
    silent = FakeWorker(hub.path, 2, answer=False)
    await silent.link.connect()
    try:
        silent.send({"t": "totals", "id": 0, "app": "a", "k": "channel", "names": []})
        await silent.next("T")
        asker.send({"t": "ask", "id": 7, "app": "a", "op": "channels", "arg": None})
        assert await asker.next("answers") == {"t": "answers", "id": 7, "data": ["from 1"], "missing": [2]}
        await silent.next("q")  # it was asked, and never answered
        # a worker that leaves is not waited for
        asker.send({"t": "ask", "id": 8, "app": "a", "op": "channels", "arg": None})
        await silent.next("q")
        assert silent.link.transport is not None
        silent.link.transport.abort()
        assert await asker.next("answers") == {"t": "answers", "id": 8, "data": ["from 1"]}
    finally:
        for w in (asker, helpful, silent):
            await w.link.close()
        await hub.close()


async def test_the_hub_drops_frames_to_a_worker_that_does_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hub's bound per worker: frames to a worker that stopped reading are dropped (with a
    warning) once its buffer passes ``max_buffer``; the hub keeps serving the others, and the
    worker gets new frames again once it reads."""
    from soketi_impl.adapters.local_ipc import Hub, HubLink

    hub = Hub(str(tmp_path / "hub.sock"), max_buffer=64 * 1024)
    await hub.start()
    sender = FakeWorker(hub.path, 0)
    payloads: asyncio.Queue[bytes] = asyncio.Queue()

    def on_frame(frame: bytes) -> None:
        if wire.kind(frame) == wire.EVENT:
            payloads.put_nowait(wire.read_event(frame)[2])

    stalled = HubLink(hub.path, 1, on_frame)
    try:
        await sender.link.connect()
        await stalled.connect()
        stalled.send(wire.control({"t": "totals", "id": 0, "app": "a", "k": "channel", "names": ["x"]}))
        sender.send({"t": "totals", "id": 0, "app": "a", "k": "channel", "names": ["x"]})
        await sender.next("T")  # the hub knows both workers
        assert stalled.transport is not None
        stalled.transport.pause_reading()
        frame = wire.event("a", "news", b"x" * 16 * 1024, None, False)
        peer = next(p for p in hub.peers.values() if p.index == 1)

        async def dropping() -> None:
            while peer.dropped == 0:
                assert sender.link.send(frame)
                await asyncio.sleep(0.001)  # let the hub read and relay (a loop iteration)

        await asyncio.wait_for(dropping(), TIMEOUT)
        assert "does not read what the hub sends" in caplog.text
        assert hub.peers  # the hub still serves the sender
        sender.send({"t": "totals", "id": 1, "app": "a", "k": "channel", "names": ["x"]})
        await sender.next("T")
        stalled.transport.resume_reading()

        async def gets_new_frames() -> None:
            while True:
                assert sender.link.send(wire.event("a", "news", b"after", None, False))
                try:
                    while True:
                        if await asyncio.wait_for(payloads.get(), 0.05) == b"after":
                            return
                except TimeoutError:
                    continue  # the hub's buffer still drains: send another

        await asyncio.wait_for(gets_new_frames(), TIMEOUT)
    finally:
        await sender.link.close()
        await stalled.close()
        await hub.close()
