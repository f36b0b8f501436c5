"""``Pusher``: the whole Pusher server without a transport.

It assembles what every host needs from a :class:`~soketi_impl.config.Config`:
the protocol core (:class:`~soketi_impl.pusher.PusherServer`), the adapter named
by ``SOKETI_ADAPTER_DRIVER``, the webhook sender, the metrics registry and the
HTTP API, with one lifecycle (:meth:`Pusher.start`, :meth:`Pusher.stop`). Hosts
only carry bytes: the native server (:class:`~soketi_impl.server.Server`), ASGI
(:mod:`soketi_impl.asgi`) and aiohttp (:mod:`soketi_impl.aiohttp`) all take a
``Pusher``::

    pusher = Pusher()                        # soketi's variables and config file
    await pusher.start()
    await pusher.trigger("app-id", ["news"], "update", {"a": 1})
    await pusher.stop()

Hooks (see :mod:`soketi_impl.hooks`) are decorators on it: ``@pusher.on_subscribed``,
``@pusher.on_client_event`` ... On ``private-encrypted-`` channels :meth:`Pusher.trigger`
encrypts with the app's master key (see :mod:`soketi_impl.encryption`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import Any

from .adapters.base import Adapter, LocalAdapter
from .apps import AppManager, app_manager_for
from .config import Config, load_config
from .encryption import encrypt, is_encrypted_channel, parse_master_key
from .errors import ConfigError
from .hooks import HookDecorators, HookHandler, Hooks
from .http.types import HttpRequest, HttpResponse
from .pusher.server import PusherServer, new_socket_id
from .router import Router

__all__ = ["Pusher", "adapter_for", "new_socket_id"]

log = logging.getLogger("soketi_impl.service")

_ANY_ENCRYPTED = "a private-encrypted- channel"


def adapter_for(config: Config) -> Adapter:
    """The adapter ``config.adapter_driver`` names: one node (local) or several through Redis or NATS."""
    if config.adapter_driver == "redis":
        from .adapters.redis import RedisAdapter

        return RedisAdapter(config)
    if config.adapter_driver == "nats":
        from .adapters.nats import NatsAdapter

        return NatsAdapter(config)
    return LocalAdapter()


class Pusher(HookDecorators):
    """The Pusher core with its adapter, webhooks, metrics registry and HTTP API.

    ``config=None`` reads soketi's environment variables and config file exactly as
    ``soketi-impl start`` does. ``pusher.core`` is the protocol core; the in-process
    API (``trigger``, ``channels``, ...) is available here directly.

    ``encryption_master_key_base64`` is the master key for ``private-encrypted-``
    channels of every app that has none of its own (``encryptionMasterKeyBase64``).
    ``hooks_queue_size`` bounds the hooks' queue (see :class:`~soketi_impl.hooks.Hooks`).

    Hooks are registered with the ``on_*`` decorators::

        @pusher.on_client_event
        async def said(ev: HookEvent) -> None:
            print(ev.channel, ev.event, ev.data)
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        router: Router | None = None,
        adapter: Adapter | None = None,
        encryption_master_key_base64: str | None = None,
        hooks_queue_size: int = 10_000,
    ) -> None:
        self.config = config if config is not None else load_config()
        self._master_key = (
            None if encryption_master_key_base64 is None
            else parse_master_key(encryption_master_key_base64, "encryption_master_key_base64")
        )
        self._app_master_keys: dict[str, bytes] = {}
        self._hooks: Hooks | None = None
        self._hooks_queue_size = hooks_queue_size
        #: where apps come from (``SOKETI_APP_MANAGER_DRIVER``; see :mod:`soketi_impl.apps`)
        self.app_manager: AppManager = app_manager_for(self.config)
        self.webhooks: Any = None
        #: the :class:`~soketi_impl.webhooks.worker.QueueWorker` with
        #: ``SOKETI_QUEUE_DRIVER=redis`` in ``SOKETI_MODE=full``
        self.queue_worker: Any = None
        self._make_webhooks()
        self.core = PusherServer(
            self.config, router, webhooks=self.webhooks,
            adapter=adapter if adapter is not None else adapter_for(self.config),
            app_manager=self.app_manager,
        )
        self.router = self.core.router
        self.metrics: Any = None
        if self.config.metrics_enabled:
            from .metrics import MetricsRegistry

            self.metrics = MetricsRegistry(self.config.metrics_prefix, str(self.config.port))
            for app in self.core.apps.values():
                self.metrics.add_app(app.config.id, app.stats)
            metrics = self.metrics
            self.core.app_added.append(lambda app: metrics.add_app(app.config.id, app.stats))
            if self.webhooks is not None or self.queue_worker is not None:
                self.metrics.set_webhook_source(self.webhooks or self.queue_worker)
            self.metrics.set_hooks_source(lambda: self._hooks)
        from .http.api import HttpApi

        self._api_object = HttpApi(self.core, self.config)
        self._api = self._api_object.handle
        self.metrics_server: Any = None
        #: The debug dashboard (:mod:`soketi_impl.dashboard`) when
        #: ``SOKETI_DASHBOARD_ENABLED``: served on the metrics port at ``/dashboard``.
        self.dashboard: Any = None
        if self.config.dashboard_enabled:
            from .dashboard import Dashboard

            self.dashboard = Dashboard(self)
        #: Serve the metrics port (``/``, ``/ready``, ``/usage``; ``/metrics`` when
        #: metrics are enabled). soketi always does and ``soketi-impl start`` sets this;
        #: an embedding app gets the port only with ``SOKETI_METRICS_ENABLED`` (or the dashboard).
        self.serve_metrics_port = bool(self.config.metrics_enabled or self.dashboard is not None)
        self.started = False

    def _make_webhooks(self) -> None:
        """The webhook sender: in memory (``sync``) or into Redis, with a worker in ``full`` mode."""
        cfg = self.config
        options: dict[str, Any] = {
            "batching": cfg.webhooks_batching,
            "batching_ms": cfg.webhooks_batching_duration_ms,
            "max_queue_bytes": cfg.webhooks_max_queue_bytes,
            "retry_for_s": cfg.webhooks_retry_for_ms / 1000,
            "max_backoff_s": cfg.webhooks_max_backoff_ms / 1000,
        }
        durable = cfg.queue_driver == "redis"
        # Apps from a database may have webhooks: the sender is needed from the start.
        if self.app_manager.dynamic or any(app.webhooks for app in cfg.apps):
            if durable:
                from .webhooks.durable import DurableSender

                self.webhooks = DurableSender(cfg, **options)
            else:
                from .webhooks import WebhookSender

                self.webhooks = WebhookSender(**options)
        if durable and cfg.mode == "full":
            from .webhooks.worker import QueueWorker

            self.queue_worker = QueueWorker(cfg, counters=self.webhooks)

    @property
    def accepting(self) -> bool:
        """False once :meth:`stop` began: new connections are refused with 4200."""
        return bool(self.core.accepting)

    async def start(self) -> None:
        """Connect the adapter (Redis), start the webhook sender and the queue worker (if any).

        Raises :class:`~soketi_impl.errors.SoketiError` when the adapter cannot connect.
        """
        if self.started:
            return
        if self._hooks is not None:
            self._hooks.start()
        await self.app_manager.start()
        await self.core.adapter.start()
        for app in list(self.core.apps.values()):
            if app.config.max_connections >= 0:  # the other nodes' connections, before any admission
                self.core.counts.learn(app)
        if self.webhooks is not None:
            await self.webhooks.start()
        if self.queue_worker is not None:
            await self.queue_worker.start()
        if self.serve_metrics_port:
            await self._start_metrics_server()
        self.started = True

    async def _start_metrics_server(self) -> None:
        """Listen on the metrics port. With metrics enabled a port that cannot be bound
        stops the start (:class:`~soketi_impl.errors.SoketiError`); without, only the
        health and usage endpoints are lost, so it is a warning."""
        from .errors import SoketiError
        from .metrics_server import MetricsServer

        cfg = self.config
        extend = self.dashboard.mount if self.dashboard is not None else None
        server = MetricsServer(self.metrics, ready=lambda: bool(self.core.accepting), extend=extend)
        try:
            await server.start(cfg.metrics_host, cfg.metrics_port)
        except OSError as exc:
            message = f"cannot listen on the metrics port {cfg.metrics_host}:{cfg.metrics_port}: {exc}"
            if cfg.metrics_enabled or self.dashboard is not None:
                raise SoketiError(message) from exc
            log.warning("%s; /ready and /usage are not served there (SOKETI_METRICS_SERVER_PORT)", message)
            return
        self.metrics_server = server

    async def stop(self, grace_ms: int | None = None) -> None:
        """Close every connection with 4200 over the grace period, flush webhooks, disconnect."""
        grace = self.config.shutdown_grace_period_ms if grace_ms is None else grace_ms
        await self.core.shutdown(grace)
        await self.core.adapter.close()
        await self.app_manager.close()
        if self.webhooks is not None:
            await self.webhooks.close(max(0.1, grace / 1000))
        if self.queue_worker is not None:
            await self.queue_worker.close(max(0.1, grace / 1000))
        if self.metrics_server is not None:
            await self.metrics_server.close()
            self.metrics_server = None
        if self._hooks is not None:
            await self._hooks.stop()
        self.started = False

    # -- hooks --

    @property
    def hooks(self) -> Hooks:
        """The :class:`~soketi_impl.hooks.Hooks` of this server (created at the first hook).

        Until a hook is registered the core has no hooks observer at all, so an app
        without hooks pays nothing for them. ``pusher.hooks.stats()`` has the counters.
        """
        if self._hooks is None:
            hooks = Hooks(self._hooks_queue_size)
            self.core.add_observer(hooks)
            self._hooks = hooks
            if self.started:
                hooks.start()
        return self._hooks

    @property
    def has_hooks(self) -> bool:
        """Whether a hook was registered (metrics read ``hooks.stats()`` only then)."""
        return self._hooks is not None

    def on(self, kind: str, handler: HookHandler) -> None:
        """Register a hook ``handler`` for ``kind``; the ``on_*`` decorators call this."""
        self.hooks.on(kind, handler)

    def handle_http(self, request: HttpRequest) -> Any:
        """Answer one HTTP request (the REST API and the health endpoints).

        Returns an :class:`HttpResponse` or an awaitable of one.
        """
        if not self.core.accepting and request.path in ("/ready", "/accept-traffic"):
            return HttpResponse(503, b"Shutting down", "text/plain")
        return self._api(request)

    def check_http_head(self, request: HttpRequest) -> HttpResponse | None:
        """An answer decided from the request head alone (unknown app, missing auth), or ``None``.

        Hosts call it before reading a body, so a large body to a request that will be
        refused anyway is never buffered. ``request.body`` is empty here.
        """
        check = getattr(self._api_object, "check_head", None)
        return check(request) if check is not None else None

    def http_entry_points(self) -> tuple[Any, Any]:
        """:meth:`handle_http` and :meth:`check_http_head` for a host that parses HTTP itself.

        The same answers, with the signed trigger's fast path tried first in compiled
        code (:class:`soketi_impl.twins._trigger_py.TriggerPath`): the native front door
        takes these.
        """
        fast = getattr(self._api_object, "fast", None)
        if fast is None:
            return self.handle_http, self.check_http_head
        fast.general_handle = self.handle_http
        fast.general_check = self.check_http_head
        return fast.handle_http, fast.check_http_head

    def http_express(self) -> Any:
        """The signed trigger's express path for a host that reads whole requests itself
        (:meth:`soketi_impl.twins._trigger_py.TriggerPath.express`: a trigger done from
        its path, query and body, no request object), or None where there is none."""
        fast = getattr(self._api_object, "fast", None)
        return None if fast is None else fast.express

    # -- the in-process API, delegated to the core --

    async def trigger(
        self, app_id: str, channels: Iterable[str] | str, event: str, data: Any,
        socket_id: str | None = None,
    ) -> int:
        """Trigger ``event`` on ``channels`` (a name or several); returns local deliveries.

        On ``private-encrypted-`` channels ``data`` is encrypted with the app's master
        key first, as the official SDKs do (each channel with its own shared secret).
        Without a master key this raises :class:`~soketi_impl.errors.ConfigError`
        naming the app, and nothing is sent to any channel.
        """
        await self.resolve_app(app_id)
        names = [channels] if isinstance(channels, str) else list(channels)
        encrypted = [c for c in names if is_encrypted_channel(c)]
        if not encrypted:
            return await self.core.trigger(app_id, names, event, data, socket_id)
        key = self.master_key(app_id, encrypted[0])
        plain = [c for c in names if not is_encrypted_channel(c)]
        sent = await self.core.trigger(app_id, plain, event, data, socket_id) if plain else 0
        for channel in encrypted:
            sent += await self.core.trigger(app_id, [channel], event, encrypt(channel, data, key), socket_id)
        return sent

    async def resolve_app(self, app_id: str) -> None:
        """Make an app from the app manager's database known to the core (the in-process
        API takes app ids; an unknown one stays a ``KeyError``, as with configured apps)."""
        if self.core.app_manager is not None:
            found = self.core.find_app(app_id=app_id)
            if inspect.isawaitable(found):
                await found

    def master_key(self, app_id: str, channel: str = _ANY_ENCRYPTED) -> bytes:
        """The app's master key for encrypted channels (its own, else the ``Pusher``-wide one).

        Raises :class:`~soketi_impl.errors.ConfigError` naming the app when it has none,
        ``KeyError`` for an unknown app.
        """
        key = self._app_master_keys.get(app_id)
        if key is not None:
            return key
        app = self.core.apps[app_id].config
        own = getattr(app, "encryption_master_key_base64", None)
        if own:
            key = parse_master_key(own, f"encryptionMasterKeyBase64 of app {app_id}")
        elif self._master_key is not None:
            key = self._master_key
        else:
            raise ConfigError(
                "encryption_master_key_base64",
                f"a master key for app {app_id!r} to trigger on {channel!r} (the app's "
                "encryptionMasterKeyBase64, SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64, "
                "or Pusher(encryption_master_key_base64=...))",
            )
        self._app_master_keys[app_id] = key
        return key

    async def channels(self, app_id: str, prefix: str | None = None) -> dict[str, dict[str, int]]:
        """Occupied channels with ``subscription_count`` (and ``user_count`` for presence)."""
        await self.resolve_app(app_id)
        return await self.core.channels(app_id, prefix)

    async def channel(self, app_id: str, channel: str) -> dict[str, Any]:
        """``occupied``, ``subscription_count``, ``user_count`` (presence), ``cache``."""
        await self.resolve_app(app_id)
        return await self.core.channel(app_id, channel)

    async def presence_users(self, app_id: str, channel: str) -> list[str]:
        """The user ids present in a presence channel."""
        await self.resolve_app(app_id)
        return await self.core.presence_users(app_id, channel)

    async def terminate_user_connections(self, app_id: str, user_id: str) -> int:
        """Close every connection signed in as ``user_id`` with 4009."""
        await self.resolve_app(app_id)
        return await self.core.terminate_user_connections(app_id, user_id)
