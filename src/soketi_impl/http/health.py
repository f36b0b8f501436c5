"""The health endpoints, for every host and the metrics server: ``/``, ``/ready``, ``/accept-traffic``.

``/`` answers 200 while the process runs. ``/ready`` and ``/accept-traffic`` answer
503 once shutdown began, so a load balancer stops sending new connections while
the old ones are closed over the grace period.
"""

from __future__ import annotations

from .types import HttpRequest, HttpResponse

__all__ = ["HEALTH_PATHS", "health_handler", "health_response"]

#: The paths :func:`health_response` answers.
HEALTH_PATHS = frozenset({"/", "/ready", "/accept-traffic"})
_READINESS = frozenset({"/ready", "/accept-traffic"})


def health_response(path: str, accepting: bool) -> HttpResponse | None:
    """The answer to a health path (``200 OK``, or ``503`` when not ``accepting``), else None.

    ``path`` is the request path without its query string.
    """
    if path not in HEALTH_PATHS:
        return None
    if not accepting and path in _READINESS:
        return HttpResponse(503, b"Shutting down", "text/plain")
    return HttpResponse(200, b"OK", "text/plain")


def health_handler(request: HttpRequest) -> HttpResponse:
    """The default HTTP handler: health endpoints only, 404 for anything else."""
    response = health_response(request.path, True)
    return response if response is not None else HttpResponse(404, b'{"error":"Not found."}')
