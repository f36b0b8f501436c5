"""One port for the WebSocket endpoint and the HTTP API.

:class:`FrontDoor` is the asyncio protocol every accepted socket starts with. It
parses the request head with httptools. A WebSocket upgrade is answered here (the
``101``) and the transport is switched to a ``WSConn`` (:mod:`.wslistener`; the
compiled twin ``twins/_ws_c.pyx``), which from then on reads the socket directly,
so the front door costs the WebSocket path nothing. Every other request stays here
and goes to the HTTP handler, with keep-alive. (The module keeps its name from the
time the WebSocket side was picows's; the host is still called ``picows`` in tests.)

Bounds against a hostile client (all in :class:`FrontDoorOptions`):

- time: the head (``head_timeout``), the body (``body_timeout``, from the end of the
  head), a keep-alive connection between requests (``idle_timeout``); a connection
  past its deadline is closed (408 when a body was coming);
- memory: at most ``max_pipeline`` requests wait for an answer (more: 429 and close);
  reading stops while the transport's write buffer is over its high-water mark (a
  client that pipelines requests and never reads), and while answers are pending;
  a body is held once (one ``bytes`` or one ``bytearray``), up to ``max_body``;
- ``check_head``: an answer decided from the head (unknown app, no credentials) goes
  out before any body is read; the socket then lingers briefly, discarding input,
  so the answer is not lost to a TCP reset.

``tests/test_protocol_ws.py``, ``tests/test_hostile_ws.py`` and ``tests/test_ws_frames.py``
exercise the WebSocket side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..http.health import health_handler
from ..http.types import HttpRequest, HttpResponse
from ..twins._frontdoor import FrontDoorBase
from .wslistener import MAX_WRITE_BUFFER, PusherListener, hand_off

__all__ = ["MAX_WRITE_BUFFER", "FrontDoor", "FrontDoorOptions", "HeadCheck", "PusherListener", "health_handler"]

HeadCheck = Callable[[HttpRequest], "HttpResponse | None"]


@dataclass(slots=True)
class FrontDoorOptions:
    """Limits shared by every connection of one listening socket."""

    max_head: int = 16 * 1024
    max_body: int = 100 * 1024 * 1024
    #: seconds for a request head to arrive (from the connection or the request's first byte)
    head_timeout: float = 10.0
    #: seconds for a request body to arrive, from the end of its head
    body_timeout: float = 30.0
    #: seconds a keep-alive connection may sit idle between requests
    idle_timeout: float = 10.0
    #: requests read but not yet answered, per connection
    max_pipeline: int = 32
    #: seconds a connection refused from its head keeps discarding input before it is cut
    linger: float = 2.0
    #: largest client frame, and largest message reassembled from fragments (1009 over it)
    max_frame_size: int = 100 * 1024
    #: the compiled front door's one timer for every connection's first head (set by it)
    first_heads: Any = field(default=None, repr=False, compare=False)
    #: a callable ``(path, query, body) -> bool`` offered every whole plain request before
    #: a request object is made; True: it was done and is answered ``200 {}`` with
    #: ``Access-Control-Allow-Origin: *`` (the server sets the signed trigger's
    #: :meth:`~soketi_impl.twins._trigger_py.TriggerPath.express`, see
    #: :meth:`soketi_impl.service.Pusher.http_express`)
    express: Any = field(default=None, repr=False, compare=False)



class FrontDoor(FrontDoorBase, asyncio.Protocol):
    """Reads a request head; upgrades go to a ``WSConn``, other requests to ``http_handler``.

    ``check_head`` (optional) may answer a request from its head alone, before the
    body is read: see :meth:`soketi_impl.service.Pusher.check_http_head`. The HTTP
    side is :class:`~soketi_impl.twins._frontdoor_py.FrontDoorBase` (compiled twin:
    ``_frontdoor_c``).
    """

    __slots__ = ()

    def _hand_off(self, transport: asyncio.Transport, response: bytes, rest: bytes, path: str) -> None:
        """Switch ``transport`` to a ``WSConn`` (the fuzz harness replaces this)."""
        hand_off(transport, response, rest, self.router, path, self.new_socket_id(), self.options)
