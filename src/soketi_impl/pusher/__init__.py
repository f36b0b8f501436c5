"""The Pusher Channels protocol core, with no transport.

- :mod:`.core`: :class:`PusherServer` (admission, dispatch, close, ping sweep, shutdown)
- :mod:`.state`: :class:`Socket`, :class:`AppState`, socket ids
- :mod:`.messages`: every message a client receives
- :mod:`.channels`: one policy per channel kind
- :mod:`.subscriptions`, :mod:`.presence`, :mod:`.users`, :mod:`.client_events`,
  :mod:`.cache`: the protocol's features
- :mod:`.api`: the in-process API and the node-local query answers
- :mod:`.host`: what the core offers its adapter (frames, member events, join answers)
- :mod:`.events` and :mod:`.observing`: the :class:`Observer` interface and its safe calling
"""

from __future__ import annotations

from .core import PusherServer
from .events import Observer
from .state import AppState, Socket, new_socket_id

__all__ = ["AppState", "Observer", "PusherServer", "Socket", "new_socket_id"]
