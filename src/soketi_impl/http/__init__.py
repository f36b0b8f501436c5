"""The Pusher HTTP API, independent of any host: request/response types and the handlers."""

from __future__ import annotations

from .types import HttpHandler, HttpRequest, HttpResponse, health_handler

__all__ = ["HttpHandler", "HttpRequest", "HttpResponse", "health_handler"]
