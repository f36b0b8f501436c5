"""CORS for the HTTP API: the allowed origin of an answer and the preflight (``OPTIONS``) answer.

``SOKETI_CORS_ORIGIN`` lists the allowed origins; empty or ``*`` allows any.
"""

from __future__ import annotations

from collections.abc import Iterable

from .types import HttpRequest, HttpResponse

__all__ = ["Cors"]

_ALLOW_METHODS = "GET, POST, OPTIONS"
_ANY_ORIGIN = ("Access-Control-Allow-Origin", "*")
_ALLOW_HEADERS = "Content-Type, X-Pusher-Library, X-Requested-With, Authorization"


class Cors:
    """The CORS policy of one server."""

    __slots__ = ("_any", "_origins")

    def __init__(self, origins: Iterable[str]) -> None:
        listed = frozenset(origins)
        self._any = not listed or "*" in listed
        self._origins = listed

    def allow_origin(self, request: HttpRequest) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``request``, or None for none."""
        if self._any:
            return "*"
        origin = request.headers.get("origin")
        return origin if origin is not None and origin in self._origins else None

    def decorate(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        """Add the allow-origin headers to ``response`` (``Vary: Origin`` when it depends on it)."""
        if self._any:  # the default: every answer of every request
            response.headers.append(_ANY_ORIGIN)
            return response
        origin = self.allow_origin(request)
        if origin is not None:
            response.headers.append(("Access-Control-Allow-Origin", origin))
            if origin != "*":
                response.headers.append(("Vary", "Origin"))
        return response

    @staticmethod
    def preflight(request: HttpRequest) -> HttpResponse:
        """The ``204`` answer to an ``OPTIONS`` request (allow-origin added by :meth:`decorate`)."""
        headers = [
            ("Access-Control-Allow-Methods", _ALLOW_METHODS),
            (
                "Access-Control-Allow-Headers",
                request.headers.get("access-control-request-headers") or _ALLOW_HEADERS,
            ),
            ("Access-Control-Max-Age", "86400"),
        ]
        return HttpResponse(204, b"", "text/plain", headers)
