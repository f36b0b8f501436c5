"""Prometheus exposition of the per-app counters and the metrics port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from soketi_impl.metrics import CONTENT_TYPE, MetricsRegistry, MetricsServer, memory_usage

WAIT = 10.0


@dataclass
class FakeStats:
    """Same attributes as ``_fanout.Stats``."""

    ws_messages_sent: int = 0
    ws_bytes_sent: int = 0
    ws_messages_received: int = 0
    ws_bytes_received: int = 0
    http_calls: int = 0
    http_bytes_received: int = 0
    http_bytes_sent: int = 0
    new_connections: int = 0
    disconnections: int = 0
    connected: int = 0
    deliveries: int = 0
    broadcasts: int = 0


@dataclass
class SnapshotStats(FakeStats):
    """A ``Stats`` whose ``snapshot()`` is what must be read (attributes are stale)."""

    snap: dict[str, int] | None = None

    def snapshot(self) -> dict[str, int]:
        assert self.snap is not None
        return self.snap


@dataclass
class FakeSender:
    queue_depth: int = 0
    sent: int = 0
    failed: int = 0
    retries: int = 0
    dropped: int = 0


# metric sample name -> Stats attribute (soketi's names, our prefix)
APP_SAMPLES = {
    "soketi_connected": "connected",
    "soketi_new_connections_total": "new_connections",
    "soketi_new_disconnections_total": "disconnections",
    "soketi_socket_received_bytes": "ws_bytes_received",
    "soketi_socket_transmitted_bytes": "ws_bytes_sent",
    "soketi_ws_messages_received_total": "ws_messages_received",
    "soketi_ws_messages_sent_total": "ws_messages_sent",
    "soketi_http_received_bytes": "http_bytes_received",
    "soketi_http_transmitted_bytes": "http_bytes_sent",
    "soketi_http_calls_received_total": "http_calls",
    "soketi_fanout_deliveries_total": "deliveries",
    "soketi_fanout_broadcasts_total": "broadcasts",
}


def samples(page: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(page.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def types(page: bytes) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(page.decode())}


def distinct_stats(base: int) -> FakeStats:
    # every counter a different value, so a swapped mapping cannot pass
    names = list(asdict(FakeStats()).keys())
    return FakeStats(**{n: base + i * 7 + 1 for i, n in enumerate(names)})


def test_figures_equal_the_stats_per_app() -> None:
    reg = MetricsRegistry(prefix="soketi_", port_label="6001")
    a, b = distinct_stats(100), distinct_stats(5000)
    reg.add_app("1", a)
    reg.add_app("2", b)
    got = samples(reg.render())
    for app_id, stats in (("1", a), ("2", b)):
        labels = (("app_id", app_id), ("port", "6001"))
        for name, attr in APP_SAMPLES.items():
            assert got[(name, labels)] == getattr(stats, attr), name
    # the values are read at render time, not copied at add_app
    a.connected = 424242
    a.ws_bytes_sent += 10
    got = samples(reg.render())
    labels = (("app_id", "1"), ("port", "6001"))
    assert got[("soketi_connected", labels)] == 424242
    assert got[("soketi_socket_transmitted_bytes", labels)] == a.ws_bytes_sent


def test_metric_types() -> None:
    reg = MetricsRegistry(process_metrics=False)
    reg.add_app("1", FakeStats())
    reg.set_webhook_source(FakeSender())
    t = types(reg.render())
    assert t["soketi_connected"] == "gauge"
    for name in (
        "new_connections",
        "new_disconnections",
        "ws_messages_received",
        "ws_messages_sent",
        "http_calls_received",
        "fanout_deliveries",
        "webhook_failures",
        "webhook_retries",
        "webhook_dropped",
    ):
        assert t[f"soketi_{name}"] == "counter", name
    assert t["soketi_webhook_queue_depth"] == "gauge"
    # soketi's counters without _total keep their exact sample names (see metrics.py)
    for name in (
        "socket_received_bytes",
        "socket_transmitted_bytes",
        "http_received_bytes",
        "http_transmitted_bytes",
    ):
        assert t[f"soketi_{name}"] == "unknown", name


def test_snapshot_is_preferred_over_attributes() -> None:
    reg = MetricsRegistry()
    snap = asdict(distinct_stats(900))
    reg.add_app("7", SnapshotStats(snap=snap))
    got = samples(reg.render())
    labels = (("app_id", "7"), ("port", "6001"))
    for name, attr in APP_SAMPLES.items():
        assert got[(name, labels)] == snap[attr], name


def test_prefix_port_label_and_remove_app() -> None:
    reg = MetricsRegistry(prefix="custom_", port_label="7001")
    reg.add_app("9", FakeStats(connected=3))
    page = reg.render()
    assert samples(page)[("custom_connected", (("app_id", "9"), ("port", "7001")))] == 3
    assert b"soketi_" not in page
    assert "custom_process_resident_memory_bytes" in types(page)
    reg.remove_app("9")
    reg.remove_app("not-there")
    assert not any(k[0] == "custom_connected" for k in samples(reg.render()))


def test_webhook_source() -> None:
    reg = MetricsRegistry(process_metrics=False)
    assert "soketi_webhook_queue_depth" not in types(reg.render())
    sender = FakeSender(queue_depth=4, sent=10, failed=2, retries=6, dropped=3)
    reg.set_webhook_source(sender)
    got = samples(reg.render())
    port = (("port", "6001"),)
    assert got[("soketi_webhook_queue_depth", port)] == 4
    assert got[("soketi_webhook_sent_total", port)] == 10
    assert got[("soketi_webhook_failures_total", port)] == 2
    assert got[("soketi_webhook_retries_total", port)] == 6
    assert got[("soketi_webhook_dropped_total", port)] == 3


def test_webhook_source_is_a_real_sender() -> None:
    from soketi_impl.webhooks import WebhookSender

    reg = MetricsRegistry(process_metrics=False)
    sender = WebhookSender()
    sender.sent, sender.retries = 5, 2
    reg.set_webhook_source(sender)
    got = samples(reg.render())
    assert got[("soketi_webhook_sent_total", (("port", "6001"),))] == 5
    assert got[("soketi_webhook_retries_total", (("port", "6001"),))] == 2
    assert got[("soketi_webhook_queue_depth", (("port", "6001"),))] == 0


def test_two_registries_do_not_collide() -> None:
    a, b = MetricsRegistry(), MetricsRegistry()
    a.add_app("1", FakeStats(connected=1))
    b.add_app("1", FakeStats(connected=2))
    key = ("soketi_connected", (("app_id", "1"), ("port", "6001")))
    assert samples(a.render())[key] == 1
    assert samples(b.render())[key] == 2


def test_other_processes_values_are_added_up() -> None:
    """Worker 0's page with the other workers' values (--workers N): sums per app, webhooks and
    hooks; an app another worker alone has is there; what is not shaped as values is skipped."""
    mine, other = MetricsRegistry(process_metrics=False), MetricsRegistry(process_metrics=False)
    a, b = distinct_stats(100), distinct_stats(5000)
    mine.add_app("1", a)
    other.add_app("1", b)
    other.add_app("2", FakeStats(connected=7))
    mine.set_webhook_source(FakeSender(queue_depth=1, sent=2))
    other.set_webhook_source(FakeSender(queue_depth=3, sent=4))
    sent = json.loads(json.dumps(other.values()))  # as it crosses the hub
    got = samples(mine.render([sent, "junk", {"apps": {"1": {"connected": "x", "deliveries": True}}}]))
    labels = (("app_id", "1"), ("port", "6001"))
    for name, attr in APP_SAMPLES.items():
        assert got[(name, labels)] == getattr(a, attr) + getattr(b, attr), name
    assert got[("soketi_connected", (("app_id", "2"), ("port", "6001")))] == 7
    assert got[("soketi_webhook_queue_depth", (("port", "6001"),))] == 4
    assert got[("soketi_webhook_sent_total", (("port", "6001"),))] == 6
    # the others' values count for that page only
    assert samples(mine.render())[("soketi_connected", labels)] == a.connected


async def test_render_all_asks_the_others() -> None:
    mine, other = MetricsRegistry(process_metrics=False), MetricsRegistry(process_metrics=False)
    mine.add_app("1", FakeStats(connected=1))
    other.add_app("1", FakeStats(connected=2))
    assert samples(await mine.render_all())[("soketi_connected", (("app_id", "1"), ("port", "6001")))] == 1

    async def others() -> list[object]:
        return [other.values()]

    mine.others = others
    assert samples(await mine.render_all())[("soketi_connected", (("app_id", "1"), ("port", "6001")))] == 3


def test_memory_usage_shape() -> None:
    mem = memory_usage()["memory"]
    for k in (
        "free",
        "used",
        "total",
        "percent",
        "rss",
        "heapTotal",
        "heapUsed",
        "external",
        "percentage",
    ):
        assert k in mem
    assert mem["rss"] > 0
    assert mem["total"] >= mem["rss"]
    assert 0 < mem["percentage"] <= 100


@pytest.fixture
async def server() -> AsyncIterator[tuple[MetricsServer, FakeStats]]:
    reg = MetricsRegistry(port_label="6001")
    stats = distinct_stats(10)
    reg.add_app("1", stats)
    srv = MetricsServer(reg)
    await srv.start("127.0.0.1", 0)
    yield srv, stats
    await srv.close()


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_http_metrics(server: tuple[MetricsServer, FakeStats]) -> None:
    srv, stats = server
    assert srv.port > 0
    status, ctype, body = await get(srv.port, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    assert ctype == CONTENT_TYPE
    got = samples(body)
    labels = (("app_id", "1"), ("port", "6001"))
    for name, attr in APP_SAMPLES.items():
        assert got[(name, labels)] == getattr(stats, attr), name
    stats.new_connections += 5
    _, _, body = await get(srv.port, "/metrics")
    assert samples(body)[("soketi_new_connections_total", labels)] == stats.new_connections


async def test_http_usage(server: tuple[MetricsServer, FakeStats]) -> None:
    srv, _ = server
    status, ctype, body = await get(srv.port, "/usage")
    assert status == 200
    assert ctype.startswith("application/json")
    mem = json.loads(body)["memory"]
    assert set(mem) >= {
        "rss",
        "heapTotal",
        "heapUsed",
        "external",
        "percentage",
        "free",
        "used",
        "total",
    }
    assert mem["rss"] > 0


async def test_http_anything_else_is_404(server: tuple[MetricsServer, FakeStats]) -> None:
    srv, _ = server
    for method, path in (
        ("GET", "/metricsx"),
        ("GET", "/accept-traffic"),  # main port only, as in soketi
        ("GET", "/apps/1/events"),
        ("POST", "/metrics"),
        ("DELETE", "/usage"),
    ):
        status, _, _ = await get(srv.port, path, method)
        assert status == 404, (method, path)


async def test_start_close_and_port_errors() -> None:
    srv = MetricsServer(MetricsRegistry())
    with pytest.raises(RuntimeError):
        _ = srv.port
    await srv.start("127.0.0.1", 0)
    port = srv.port
    try:
        with pytest.raises(RuntimeError):
            await srv.start("127.0.0.1", 0)
        # the port is taken: a second server cannot bind it
        other = MetricsServer(MetricsRegistry())
        with pytest.raises(OSError):
            await other.start("127.0.0.1", port)
    finally:
        await srv.close()
    await srv.close()  # idempotent
    # closed: nothing answers any more
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(get(port, "/metrics"), WAIT)


async def test_health_endpoints_and_ready_during_shutdown() -> None:
    """soketi's metrics port answers / and /ready; /ready turns 503 when not ready."""
    ready = [True]
    srv = MetricsServer(MetricsRegistry(), ready=lambda: ready[0])
    await srv.start("127.0.0.1", 0)
    try:
        assert (await get(srv.port, "/"))[::2] == (200, b"OK")
        assert (await get(srv.port, "/ready"))[::2] == (200, b"OK")
        ready[0] = False
        assert (await get(srv.port, "/ready"))[0] == 503
        assert (await get(srv.port, "/"))[0] == 200  # alive, only not ready
        assert (await get(srv.port, "/usage"))[0] == 200
    finally:
        await srv.close()


async def test_without_a_registry_metrics_is_404_and_the_rest_answers() -> None:
    srv = MetricsServer(None)
    await srv.start("127.0.0.1", 0)
    try:
        assert (await get(srv.port, "/metrics"))[0] == 404
        for path in ("/", "/ready", "/usage"):
            assert (await get(srv.port, path))[0] == 200, path
        assert (await get(srv.port, "/ready", "HEAD"))[0] == 200
    finally:
        await srv.close()


def test_hooks_source_counts_what_a_full_queue_dropped() -> None:
    from soketi_impl.config import AppConfig
    from soketi_impl.hooks import Hooks

    hooks = Hooks(maxsize=2)  # not started: nothing drains the queue
    hooks.on_subscribed(lambda ev: None)
    app = AppConfig(id="1", key="k", secret="s")
    for i in range(5):
        hooks.subscribed(app, f"1.{i}", "news")
    reg = MetricsRegistry(process_metrics=False)
    current: list[Hooks | None] = [None]
    reg.set_hooks_source(lambda: current[0])
    assert not any(name.startswith("soketi_hooks") for name, _ in samples(reg.render()))
    current[0] = hooks
    got = samples(reg.render())
    port = (("port", "6001"),)
    assert got[("soketi_hooks_dropped_total", port)] == 3
    assert got[("soketi_hooks_queued_total", port)] == 2
    assert got[("soketi_hooks_pending", port)] == 2
    assert got[("soketi_hooks_failed_total", port)] == 0
