""":class:`Dashboard`: the live feed, the chart sampler and the routes, wired to one ``Pusher``.

``Pusher`` makes one when ``SOKETI_DASHBOARD_ENABLED`` is true and hands
:meth:`Dashboard.mount` to the metrics port's server, which adds the routes before
its own; the sampler runs while that server runs.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import ConfigError
from .auth import TokenAuth
from .feed import Feed, client_of
from .sampler import Sampler
from .web import PREFIX, DashboardRoutes, node_name

if TYPE_CHECKING:
    from ..pusher.server import PusherServer
    from ..service import Pusher

__all__ = ["Dashboard"]


class Dashboard:
    """The debug dashboard of ``pusher`` (a :class:`~soketi_impl.Pusher`), behind ``token``.

    ``token`` defaults to ``pusher.config.dashboard_token``; an empty one is a
    :class:`~soketi_impl.errors.ConfigError`. Creating it registers the feed as an
    observer of the core (and as the webhook sender's listener), so the feed starts
    at once; pages and charts are served once :meth:`mount` was called on the
    metrics port's application::

        dashboard = Dashboard(pusher, token="s3cret")
        app = web.Application()
        dashboard.mount(app)          # GET /dashboard ...
    """

    def __init__(
        self,
        pusher: Pusher,
        token: str | None = None,
        *,
        history: int = 300,
        queue_size: int = 2000,
        max_pages: int = 16,
        sample_interval: float = 1.0,
    ) -> None:
        token = token if token is not None else getattr(pusher.config, "dashboard_token", None)
        if not token:
            raise ConfigError(
                "SOKETI_DASHBOARD_TOKEN", "a token when the dashboard is enabled (SOKETI_DASHBOARD_ENABLED)"
            )
        self.pusher = pusher
        self.core: PusherServer = pusher.core
        self.feed = Feed(
            history=history, queue_size=queue_size, max_pages=max_pages, socket_info=self._client_of
        )
        self.core.add_observer(self.feed)
        webhooks = pusher.webhooks
        if webhooks is not None:
            webhooks.listener = self.feed.webhook
        self.sampler = Sampler(
            lambda: {app_id: state.stats for app_id, state in self.core.apps.items()},
            self._webhook_depth, self.feed.sample, interval=sample_interval,
        )
        self.auth = TokenAuth(token)
        self.routes = DashboardRoutes(self, self.auth, self.feed)
        static = resources.files(__package__) / "static"
        #: the files of ``static/`` (the only names ``/dashboard/static/`` serves)
        self.static_names = frozenset(p.name for p in static.iterdir() if p.is_file())
        self.node = node_name()

    @property
    def cluster(self) -> bool:
        """Whether other nodes share the apps (the Redis adapter): channel lists are theirs too."""
        return self.pusher.config.adapter_driver != "local"

    def info(self) -> dict[str, Any]:
        """What the page says about where it looks: this node, the apps, the adapter."""
        return {
            "node": self.node,
            "adapter": self.pusher.config.adapter_driver,
            "cluster": self.cluster,
            "apps": list(self.core.apps),
            "sample_interval_ms": int(self.sampler.interval * 1000),
            "webhooks": self.pusher.webhooks is not None,
            "feed": {"history": self.feed.recent.maxlen, "queue": self.feed.queue_size},
        }

    def mount(self, app: web.Application) -> None:
        """Add the routes under ``/dashboard`` and run the sampler with ``app``."""
        self.routes.add_to(app)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)

    @property
    def path(self) -> str:
        """The dashboard's path on the metrics port."""
        return PREFIX

    async def _on_startup(self, app: web.Application) -> None:
        self.sampler.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        self.feed.close()  # open pages' streams end, so the server can close them

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.sampler.stop()

    def _webhook_depth(self) -> int | None:
        webhooks = self.pusher.webhooks
        return None if webhooks is None else int(webhooks.queue_depth)

    def _client_of(self, app_id: str, socket_id: str) -> str | None:
        state = self.core.apps.get(app_id)
        sock = state.sockets.get(socket_id) if state is not None else None
        return client_of(getattr(getattr(sock, "conn", None), "path", None))
