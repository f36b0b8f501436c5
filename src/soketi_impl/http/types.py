"""HTTP request and response types shared by every host.

A host (the native front door, ASGI, aiohttp) turns its framework's request into an
:class:`HttpRequest`, calls the handler, and writes the :class:`HttpResponse` back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["REASONS", "HttpHandler", "HttpRequest", "HttpResponse"]

REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class HttpRequest:
    """One parsed HTTP request (header names lower-cased)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool = True


@dataclass(slots=True)
class HttpResponse:
    """What an HTTP handler answers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


HttpHandler = Callable[[HttpRequest], "Awaitable[HttpResponse] | HttpResponse"]

