"""The HTTP API's route table: method and path pattern to handler.

A pattern is a path whose ``{name}`` segments match any one non-empty segment
(percent-decoded, so ``%2F`` stays inside its segment)::

    table = RouteTable([
        Route("POST", "/apps/{app_id}/events", events.trigger),
        Route("GET", "/apps/{app_id}/channels/{channel}", channels.channel),
    ])
    match = table.match("GET", "/apps/1/channels/news")   # .route, .args == {"app_id": "1", ...}

A new endpoint is one more :class:`Route`. :meth:`RouteTable.match` raises
:class:`~soketi_impl.http.errors.ApiError`: 404 for a path no route has, 405 (with
``Allow``) for a path some route has under another method.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .types import HttpRequest

if TYPE_CHECKING:
    from ..pusher.state import AppState

__all__ = ["Call", "Handler", "Match", "Route", "RouteTable"]


@dataclass(slots=True)
class Call:
    """What a handler gets: the API, the app, the request, its query and path arguments."""

    api: Any  # the HttpApi (typed loosely: the handlers' modules must not import api.py)
    app: AppState
    request: HttpRequest
    params: dict[str, str]
    args: dict[str, str]


#: A handler: a coroutine function of a :class:`Call`, returning what is sent as JSON.
Handler = Callable[[Call], Coroutine[Any, Any, Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """``method`` and ``pattern`` to ``handler``.

    The app is named by the ``{app_id}`` argument; a pattern without one is served
    for the app whose key signed the request (``auth_key``).
    """

    method: str
    pattern: str
    handler: Handler

    @property
    def segments(self) -> tuple[str | None, ...]:
        """The pattern's segments: a literal, or None for an argument."""
        return tuple(None if _is_arg(s) else s for s in self.pattern.split("/"))

    @property
    def names(self) -> tuple[str, ...]:
        """The argument names, in order."""
        return tuple(s[1:-1] for s in self.pattern.split("/") if _is_arg(s))


def _is_arg(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is slower, and this is per request
class Match:
    """A route and the path arguments it matched."""

    route: Route
    args: dict[str, str]


class RouteTable:
    """Routes grouped by segment count; a lookup compares the few with the path's count."""

    __slots__ = ("_by_length", "_routes")

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = tuple(routes)
        self._by_length: dict[int, list[tuple[tuple[str | None, ...], tuple[str, ...], Route]]] = {}
        for route in self._routes:
            segments = route.segments
            self._by_length.setdefault(len(segments), []).append((segments, route.names, route))

    def __iter__(self) -> Iterator[Route]:
        """The routes, in the order given (``RouteTable([*ROUTES, Route(...)])`` extends a table)."""
        return iter(self._routes)

    def match(self, method: str, parts: list[str]) -> Match:
        """The route for ``method`` and the decoded path ``parts`` (``path.split("/")``)."""
        allowed: list[str] = []
        for segments, names, route in self._by_length.get(len(parts), ()):
            values: list[str] = []
            for want, got in zip(segments, parts):
                if want is None:
                    if not got:
                        break
                    values.append(got)
                elif want != got:
                    break
            else:
                if route.method == method:
                    return Match(route, dict(zip(names, values)))
                allowed.append(route.method)
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise ApiError(
                405, f"{method} is not allowed here ({allow}).", [("Allow", f"{allow}, OPTIONS")]
            )
        raise ApiError(404, "Not found.")
