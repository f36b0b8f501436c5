"""Prometheus metrics: soketi's names, read from the counters the core keeps.

The hot path never touches Prometheus objects: it bumps plain ints on each app's
compiled ``Stats`` (``_fanout``). :class:`MetricsRegistry` reads them only when
scraped, through a custom collector on a private ``CollectorRegistry``, so a
scrape costs one ``snapshot()`` per app and a publish costs nothing extra.

Families (``{prefix}`` is ``soketi_`` by default; labels ``app_id`` and ``port``):

============================== ========= ===================================
name                           type      from ``Stats``
============================== ========= ===================================
connected                      gauge     connected
new_connections_total          counter   new_connections
new_disconnections_total       counter   disconnections
socket_received_bytes          untyped*  ws_bytes_received
socket_transmitted_bytes       untyped*  ws_bytes_sent
ws_messages_received_total     counter   ws_messages_received
ws_messages_sent_total         counter   ws_messages_sent
http_received_bytes            untyped*  http_bytes_received
http_transmitted_bytes         untyped*  http_bytes_sent
http_calls_received_total      counter   http_calls
fanout_deliveries_total        counter   deliveries (ours)
fanout_broadcasts_total        counter   broadcasts (ours)
============================== ========= ===================================

Ours, label ``port`` only (one sender serves every app): ``webhook_queue_depth``
(gauge), ``webhook_sent_total``, ``webhook_failures_total``,
``webhook_retries_total``, ``webhook_dropped_total``; and the process collector
of prometheus_client (``{prefix}process_resident_memory_bytes`` ...), as soketi
exposes Node's default metrics under its prefix.

\\* soketi declares these four as counters without the ``_total`` suffix.
prometheus_client always writes a counter's samples as ``name_total``, which
would rename them and break dashboards written for soketi, so we keep soketi's
exact sample names and declare them ``untyped`` (``rate()`` works the same).

With ``--workers N`` only worker 0 serves the metrics port; at each scrape it asks
the other workers for their counters over the hub (:attr:`MetricsRegistry.others`,
each answers :meth:`MetricsRegistry.values`), with a timeout, and the page shows the
sums: per app, the webhook sender's and the hooks' figures. A worker that does not
answer in time is left out of that scrape (a log line names it). The process
collector's figures (memory, CPU, file descriptors) stay worker 0's own.

:class:`~soketi_impl.metrics_server.MetricsServer` serves the metrics port
(``/metrics`` from a registry, plus ``/``, ``/ready`` and ``/usage``); it and
:func:`~soketi_impl.metrics_server.memory_usage` are re-exported here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "MetricsRegistry", "MetricsServer", "memory_usage"]

#: Content type of ``/metrics``: Prometheus text format 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_COUNTER, _GAUGE, _UNTYPED = "counter", "gauge", "untyped"

# (name without prefix, kind, Stats attribute, help)
_APP_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("connected", _GAUGE, "connected", "The number of currently connected sockets."),
    (
        "new_connections_total",
        _COUNTER,
        "new_connections",
        "Total amount of soketi connection requests.",
    ),
    (
        "new_disconnections_total",
        _COUNTER,
        "disconnections",
        "Total amount of soketi disconnections.",
    ),
    (
        "socket_received_bytes",
        _UNTYPED,
        "ws_bytes_received",
        "Total amount of bytes that soketi received.",
    ),
    (
        "socket_transmitted_bytes",
        _UNTYPED,
        "ws_bytes_sent",
        "Total amount of bytes that soketi transmitted.",
    ),
    (
        "ws_messages_received_total",
        _COUNTER,
        "ws_messages_received",
        "The total amount of WS messages received from connections by the server.",
    ),
    (
        "ws_messages_sent_total",
        _COUNTER,
        "ws_messages_sent",
        "The total amount of WS messages sent to the connections from the server.",
    ),
    (
        "http_received_bytes",
        _UNTYPED,
        "http_bytes_received",
        "Total amount of bytes that soketi's REST API received.",
    ),
    (
        "http_transmitted_bytes",
        _UNTYPED,
        "http_bytes_sent",
        "Total amount of bytes that soketi's REST API sent back.",
    ),
    (
        "http_calls_received_total",
        _COUNTER,
        "http_calls",
        "Total amount of received REST API calls.",
    ),
    (
        "fanout_deliveries_total",
        _COUNTER,
        "deliveries",
        "Total amount of messages queued to subscribers by channel broadcasts.",
    ),
    ("fanout_broadcasts_total", _COUNTER, "broadcasts", "Total amount of channel broadcasts."),
)

# (name without prefix, kind, WebhookSender attribute, help)
_WEBHOOK_METRICS: tuple[tuple[str, str, str, str], ...] = (
    (
        "webhook_queue_depth",
        _GAUGE,
        "queue_depth",
        "Webhook events not delivered yet (queued, in flight or waiting for a retry).",
    ),
    ("webhook_sent_total", _COUNTER, "sent", "Webhook events delivered."),
    ("webhook_failures_total", _COUNTER, "failed", "Webhook events given up after retrying."),
    ("webhook_retries_total", _COUNTER, "retries", "Webhook request retries."),
    (
        "webhook_dropped_total",
        _COUNTER,
        "dropped",
        "Webhook events dropped because the queue was full or at shutdown.",
    ),
)

# (name without prefix, kind, key of Hooks.stats(), help)
_HOOK_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("hooks_pending", _GAUGE, "pending", "Hook events queued and not handled yet."),
    ("hooks_queued_total", _COUNTER, "queued", "Hook events queued for the handlers."),
    (
        "hooks_dropped_total",
        _COUNTER,
        "dropped",
        "Hook events dropped because the hooks' queue was full (the newest is dropped).",
    ),
    ("hooks_failed_total", _COUNTER, "failed", "Hook handler calls that raised."),
)


class StatsLike(Protocol):
    """What is read from one app's counters (``_fanout.Stats``); ``snapshot()`` is
    used when present, for one consistent read."""

    connected: int
    new_connections: int
    disconnections: int


class WebhookSourceLike(Protocol):
    """What is read from the webhook sender."""

    @property
    def queue_depth(self) -> int: ...

    sent: int
    failed: int
    retries: int
    dropped: int


_Family = CounterMetricFamily | GaugeMetricFamily | UnknownMetricFamily


def _family(kind: str, name: str, doc: str, labels: list[str]) -> _Family:
    if kind == _COUNTER:
        return CounterMetricFamily(name, doc, labels=labels)
    if kind == _GAUGE:
        return GaugeMetricFamily(name, doc, labels=labels)
    return UnknownMetricFamily(name, doc, labels=labels)


def _read(stats: object) -> dict[str, int]:
    snapshot = getattr(stats, "snapshot", None)
    values: dict[str, int] = {}
    if callable(snapshot):
        snap = snapshot()
        if isinstance(snap, dict):
            values = snap
    out: dict[str, int] = {}
    for _name, _kind, attr, _doc in _APP_METRICS:
        value = values.get(attr)
        if value is None:
            value = getattr(stats, attr, 0)
        out[attr] = int(value)
    return out


class _Collector(Collector):
    def __init__(self, owner: MetricsRegistry) -> None:
        self._owner = owner

    def collect(self) -> Iterable[Metric]:
        return self._owner._collect()

    def describe(self) -> Iterable[Metric]:
        # no up-front description: the set of apps changes at run time
        return ()


class MetricsRegistry:
    """Per-app counters and the webhook sender, exposed in Prometheus text format.

    Example::

        metrics = MetricsRegistry(prefix=cfg.metrics_prefix, port_label=str(cfg.port))
        metrics.add_app(app.id, app_stats)
        metrics.set_webhook_source(sender)
        page = metrics.render()

    ``others``, when set (worker 0 of ``--workers N``), gives the other processes'
    :meth:`values`; :meth:`render_all` adds them up.
    """

    def __init__(
        self, prefix: str = "soketi_", port_label: str = "6001", *, process_metrics: bool = True
    ) -> None:
        self.prefix = prefix
        self.port_label = str(port_label)
        self._apps: dict[str, object] = {}
        self._webhooks: object | None = None
        self._hooks: Callable[[], object | None] | None = None
        #: the other processes' :meth:`values` (those that answered in time), or None: this one alone
        self.others: Callable[[], Awaitable[list[Any]]] | None = None
        #: what :meth:`render` adds to this process's counters (only while it runs)
        self._extra: list[dict[str, Any]] = []
        #: The private registry (not prometheus_client's global one), so several
        #: servers in one process, as in the tests, do not collide.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        if process_metrics:
            ProcessCollector(namespace=prefix.rstrip("_"), registry=self.registry)

    def add_app(self, app_id: str, stats: object) -> None:
        """Expose ``stats`` (an object with the ``Stats`` counters) under ``app_id``."""
        self._apps[str(app_id)] = stats

    def remove_app(self, app_id: str) -> None:
        """Stop exposing an app (no error if it was not there)."""
        self._apps.pop(str(app_id), None)

    def set_webhook_source(self, sender: object | None) -> None:
        """Expose the webhook sender's queue depth and counters (None to stop)."""
        self._webhooks = sender

    def set_hooks_source(self, hooks: Callable[[], object | None] | None) -> None:
        """Expose the hooks' counters: ``hooks()`` returns a :class:`~soketi_impl.hooks.Hooks`
        (its ``stats()``) or None while no hook is registered."""
        self._hooks = hooks

    def render(self, extra: Iterable[Any] = ()) -> bytes:
        """The page for ``GET /metrics``, in Prometheus text format 0.0.4; ``extra``: other
        processes' :meth:`values`, added to this one's (anything not shaped so is skipped)."""
        self._extra = [e for e in extra if isinstance(e, dict)]
        try:
            return generate_latest(self.registry)
        finally:
            self._extra = []

    async def render_all(self) -> bytes:
        """:meth:`render` with the other processes' counters (:attr:`others`) added."""
        extra = await self.others() if self.others is not None else []
        return self.render(extra)

    def values(self) -> dict[str, Any]:
        """This process's counters, JSON-able: what another process's page adds up
        (``apps``: app id -> counter -> value; ``webhooks`` and ``hooks``: name -> value, or None)."""
        sender = self._webhooks
        hooks = self._hooks() if self._hooks is not None else None
        stats = getattr(hooks, "stats", None)
        hook_values = stats() if callable(stats) else None
        return {
            "apps": {app_id: _read(counters) for app_id, counters in list(self._apps.items())},
            "webhooks": None if sender is None else {
                attr: int(getattr(sender, attr, 0)) for _, _, attr, _ in _WEBHOOK_METRICS
            },
            "hooks": None if not isinstance(hook_values, dict) else {
                key: int(hook_values.get(key, 0)) for _, _, key, _ in _HOOK_METRICS
            },
        }

    def _collect(self) -> Iterator[Metric]:
        labels = ["app_id", "port"]
        mine = self.values()
        parts = [mine, *self._extra]
        rows: dict[str, dict[str, int]] = {}
        for part in parts:
            apps = part.get("apps")
            if isinstance(apps, dict):
                for app_id, values in apps.items():
                    _add(rows.setdefault(str(app_id), {}), values)
        for name, kind, attr, doc in _APP_METRICS:
            family = _family(kind, self.prefix + name, doc, labels)
            for app_id, values in rows.items():
                family.add_metric([app_id, self.port_label], values.get(attr, 0))
            yield family
        for key, table in (("webhooks", _WEBHOOK_METRICS), ("hooks", _HOOK_METRICS)):
            if mine[key] is None:
                continue  # none here, so none in the other workers (the same configuration)
            sums: dict[str, int] = {}
            for part in parts:
                _add(sums, part.get(key))
            for name, kind, attr, doc in table:
                family = _family(kind, self.prefix + name, doc, ["port"])
                family.add_metric([self.port_label], sums.get(attr, 0))
                yield family


def _add(into: dict[str, int], values: object) -> None:
    """Add the int values of ``values`` (a dict from another process, maybe) into ``into``."""
    if isinstance(values, dict):
        for name, value in values.items():
            if isinstance(value, int) and not isinstance(value, bool):
                into[name] = into.get(name, 0) + value


# The metrics port lives in its own module; its names are kept importable from here.
from .metrics_server import MetricsServer, memory_usage  # noqa: E402
