"""Compatibility names: ``from soketi_impl.pusher.server import PusherServer, new_socket_id``.

The core lives in :mod:`.core` (admission, dispatch, sweep, shutdown) and its
sibling modules; :mod:`.state` has :class:`Socket` and :class:`AppState`.
"""

from __future__ import annotations

from .core import PusherServer
from .state import AppState, Socket, new_socket_id

__all__ = ["AppState", "PusherServer", "Socket", "new_socket_id"]
