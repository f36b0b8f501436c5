"""The dashboard's routes on the metrics port (``aiohttp.web``), under ``/dashboard``.

=================================  ======================================================
``GET /dashboard``                 the page (401 and the login form without the token)
``POST /dashboard/login``          form field ``token``: sets the session cookie
``POST /dashboard/logout``         clears it
``GET /dashboard/static/{name}``   the page's CSS and JavaScript (no data in them)
``GET /dashboard/api/info``        this node, the apps, whether channel lists are cluster-wide
``GET /dashboard/api/feed``        server-sent events: ``hello``, then ``log`` and ``sample``
``GET /dashboard/api/channels``    ``?app=ID``: occupied channels, counts, presence members
``POST /dashboard/api/trigger``    JSON ``{app, channel, event, data}``: a test event
=================================  ======================================================

Every route but the login form and the static files answers 401 without the token
(see :mod:`.auth`). The live feed is this node's (:mod:`.feed`); channel lists go
through the adapter, so with Redis they are the cluster's.
"""

from __future__ import annotations

import asyncio
import html
import os
import socket
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from ..errors import SoketiError
from ..http.errors import ApiError
from ..http.events import load_json, parse_event
from ..twins._protocol import PRESENCE, channel_kind
from .auth import COOKIE, TokenAuth
from .feed import Feed, Subscriber, TooManyPages

if TYPE_CHECKING:
    from .service import Dashboard

__all__ = ["PREFIX", "DashboardRoutes"]

#: Where the dashboard lives on the metrics port.
PREFIX = "/dashboard"
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".html": "text/html"}
_HEADERS = {
    # Everything the page loads comes from this server: it works with no internet,
    # and an injected script could not load anything anyway.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: Channels listed at most, and presence channels whose members are fetched.
MAX_CHANNELS = 500
MAX_PRESENCE_LISTED = 20
MAX_MEMBERS = 50
#: Seconds a page's write may take before the page is dropped; between keep-alives.
WRITE_TIMEOUT = 10.0
KEEPALIVE = 15.0
QUERY_TIMEOUT = 5.0
_THROTTLED = "Too many wrong tokens lately: try again in a minute."


def _static(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=_HEADERS
    )


def _redirect() -> web.Response:
    """303 to the page (after a login or logout form)."""
    return web.Response(status=303, headers={**_HEADERS, "Location": PREFIX + "/"})


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class DashboardRoutes:
    """The aiohttp handlers of one :class:`~soketi_impl.dashboard.Dashboard`."""

    def __init__(self, service: Dashboard, auth: TokenAuth, feed: Feed) -> None:
        self.service = service
        self.auth = auth
        self.feed = feed
        self._files: dict[str, bytes] = {}

    def add_to(self, app: web.Application) -> None:
        """Add the routes (before the metrics port's catch-all)."""
        app.router.add_get(PREFIX, self.page)
        app.router.add_get(PREFIX + "/", self.page)
        app.router.add_post(PREFIX + "/login", self.login)
        app.router.add_post(PREFIX + "/logout", self.logout)
        app.router.add_get(PREFIX + "/static/{name}", self.static)
        app.router.add_get(PREFIX + "/api/info", self.info)
        app.router.add_get(PREFIX + "/api/feed", self.live)
        app.router.add_get(PREFIX + "/api/channels", self.channels)
        app.router.add_post(PREFIX + "/api/trigger", self.trigger)

    # -- helpers ----------------------------------------------------------------

    def _denied(self, request: web.Request, page: bool = False) -> web.Response | None:
        """``None`` when the request carries the token, else the answer: 401 (429 when throttled)."""
        verdict = self.auth.check(request.headers, request.cookies)
        if verdict == "ok":
            return None
        if verdict == "throttled":
            if page:
                return self._login_page(429, _THROTTLED)
            return _error(429, _THROTTLED)
        if page:
            return self._login_page()
        response = _error(401, "The dashboard token is required (Authorization: Bearer <token>).")
        response.headers["WWW-Authenticate"] = 'Bearer realm="soketi-impl dashboard"'
        return response

    def _file(self, name: str) -> bytes:
        body = self._files.get(name)
        if body is None:
            body = self._files[name] = _static(name)
        return body

    def _html(self, name: str, status: int = 200, error: str = "") -> web.Response:
        body = self._file(name).replace(b"<!--error-->", html.escape(error).encode())
        return web.Response(status=status, body=body, content_type="text/html", headers=_HEADERS)

    def _login_page(self, status: int = 401, error: str = "") -> web.Response:
        response = self._html("login.html", status, error)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="soketi-impl dashboard"'
        return response

    # -- the page and the login ----------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        """The dashboard, or the login form with 401."""
        denied = self._denied(request, page=True)
        return denied if denied is not None else self._html("index.html")

    async def login(self, request: web.Request) -> web.Response:
        """Check the form's token: a cookie and a redirect to the page, or 401 (429 when throttled)."""
        form = await request.post()
        token = form.get("token")
        verdict = self.auth.login(token) if isinstance(token, str) else "wrong"
        if verdict != "ok":
            return self._login_page(429, _THROTTLED) if verdict == "throttled" else self._login_page(401, "Wrong token.")
        response = _redirect()
        response.set_cookie(COOKIE, self.auth.session, path=PREFIX, httponly=True, samesite="Strict")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """Forget the session cookie and go back to the login form."""
        response = _redirect()
        response.del_cookie(COOKIE, path=PREFIX)
        return response

    async def static(self, request: web.Request) -> web.Response:
        """One of the page's files (an allow-list: the files shipped in ``static/``)."""
        name = request.match_info["name"]
        kind = _STATIC_TYPES.get(os.path.splitext(name)[1])
        if kind is None or name not in self.service.static_names or name.endswith(".html"):
            return web.Response(status=404, text="Not Found")
        return web.Response(body=self._file(name), content_type=kind, headers=_HEADERS)

    # -- the API of the page ---------------------------------------------------------

    async def info(self, request: web.Request) -> web.Response:
        """This node, the apps and what the page shows of the cluster."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        return _json(self.service.info())

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``hello`` (node, apps, recent entries and samples), then
        ``log`` (entries with this page's drop count) and ``sample`` as they come."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        if request.method == "HEAD":  # no stream to hold a page's place open for
            return web.Response(headers={**_HEADERS, "Content-Type": "text/event-stream"})
        try:
            sub = self.feed.subscribe()
        except TooManyPages as exc:
            return _error(503, f"{exc}: close one and reload.")
        # Taken before the first await: entries made later are in the queue, not here.
        hello = {
            **self.service.info(),
            "recent": list(self.feed.recent),
            "samples": list(self.service.sampler.history),
        }
        response = web.StreamResponse(
            headers={**_HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        try:
            await response.prepare(request)
            await self._send(response, b"hello", hello)
            await self._pump(sub, response)
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the page went away or stopped reading: its queue goes with it
        finally:
            self.feed.unsubscribe(sub)
        return response

    async def _pump(self, sub: Subscriber, response: web.StreamResponse) -> None:
        while not sub.closed:
            items = await sub.take(KEEPALIVE)
            if sub.closed:
                return
            if not items:
                await asyncio.wait_for(response.write(b": keep-alive\n\n"), WRITE_TIMEOUT)
                continue
            logs = [item for kind, item in items if kind == "log"]
            if logs:
                await self._send(response, b"log", {"entries": logs, "dropped": sub.dropped})
            for kind, item in items:
                if kind == "sample":
                    await self._send(response, b"sample", item)

    @staticmethod
    async def _send(response: web.StreamResponse, event: bytes, body: Any) -> None:
        frame = b"event: %b\ndata: %b\n\n" % (event, orjson.dumps(body))
        await asyncio.wait_for(response.write(frame), WRITE_TIMEOUT)

    def _app_id(self, value: str | None) -> str | None:
        apps = self.service.core.apps
        if value is None or value == "":
            return next(iter(apps), None)
        return value if value in apps else None

    async def channels(self, request: web.Request) -> web.Response:
        """``?app=ID``: occupied channels (cluster-wide through the adapter), presence members."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        app_id = self._app_id(request.query.get("app"))
        if app_id is None:
            return _error(404, "No such app.")
        core = self.service.core
        try:
            found = await asyncio.wait_for(core.channels(app_id), QUERY_TIMEOUT)
            rows: list[dict[str, Any]] = []
            for name in sorted(found)[:MAX_CHANNELS]:
                row: dict[str, Any] = {"name": name, **found[name]}
                if channel_kind(name) == PRESENCE and sum("members" in r for r in rows) < MAX_PRESENCE_LISTED:
                    users = await asyncio.wait_for(core.presence_users(app_id, name), QUERY_TIMEOUT)
                    row["members"] = sorted(users)[:MAX_MEMBERS]
                rows.append(row)
        except asyncio.TimeoutError:
            return _error(504, "The adapter did not answer in time.")
        return _json(
            {"app": app_id, "channels": rows, "total": len(found), "cluster": self.service.cluster}
        )

    async def trigger(self, request: web.Request) -> web.Response:
        """A test event, checked as the HTTP API checks ``POST /apps/{id}/events``."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            return _error(403, "A test event must come from the dashboard page itself.")
        if request.content_type != "application/json":
            return _error(415, "Send the test event as application/json.")
        try:
            body = load_json(await request.read())
            if not isinstance(body, dict):
                raise ApiError(400, "Expected a JSON object {app, channel, event, data}.")
            requested = body.get("app")
            if isinstance(requested, str) and requested and requested not in self.service.core.apps:
                # an app of the app manager's database that nothing has used yet
                await self.service.pusher.resolve_app(requested[:255])
            app_id = self._app_id(requested)
            if app_id is None:
                raise ApiError(404, "No such app.")
            data = body.get("data", "")
            item = {"name": body.get("event"), "channel": body.get("channel"), "data": data}
            event = parse_event(item, self.service.core.apps[app_id].config)
            delivered = await self.service.pusher.trigger(app_id, event.channels, event.name, event.data)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        except SoketiError as exc:  # e.g. an encrypted channel and no master key
            return _error(400, exc.message)
        self.feed.add_payload(
            app_id, "test_event", event.data, channel=event.channels[0], event=event.name,
            delivered=delivered,
        )
        return _json({"ok": True, "delivered": delivered})


def node_name() -> str:
    """This process, as the page names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"
