"""The Pusher HTTP API, independent of any host.

- :mod:`.types`: :class:`HttpRequest`, :class:`HttpResponse`, what every host converts to and from;
- :mod:`.api`: :class:`HttpApi`, the REST API (its route table :data:`~.api.ROUTES`);
- :mod:`.health`: :func:`health_response`, the health endpoints for every host;
- :mod:`.routes`, :mod:`.events`, :mod:`.channels`, :mod:`.users`, :mod:`.cors`,
  :mod:`.rates`, :mod:`.query`, :mod:`.errors`: the API's parts, one concern each.
"""

from __future__ import annotations

from .health import health_handler, health_response
from .types import HttpHandler, HttpRequest, HttpResponse

__all__ = ["HttpHandler", "HttpRequest", "HttpResponse", "health_handler", "health_response"]
