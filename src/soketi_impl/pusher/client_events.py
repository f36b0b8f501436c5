"""Client events (``client-*``): who may send them, the per-connection rate limit, forwarding.

A rejected client event is answered with ``pusher:error`` 4301 and the connection
stays open. The rate window counts events per second of the core's clock; the
window object is made at a connection's first client event, so connections that
never send one pay nothing for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ClientEventError
from ..twins._protocol import encode_event, raw_data
from .channels import policy_for
from .state import RateWindow, Socket

if TYPE_CHECKING:
    from .core import PusherServer

__all__ = ["client_event"]


def client_event(
    core: PusherServer, sock: Socket, event: str, channel: str | None, data: Any, raw: bytes | str
) -> None:
    """Check and forward one client event; :class:`ClientEventError` (4301) when refused."""
    app = sock.app
    assert app is not None
    cfg = app.config
    if not cfg.enable_client_messages:
        raise ClientEventError("Client events are not enabled for this app.")
    if channel is None or not sock.in_channel(channel):
        raise ClientEventError("Client events need a channel the connection is subscribed to.")
    policy = policy_for(channel)
    if not policy.client_events:
        raise ClientEventError("Client events are only allowed on private and presence channels.")
    if len(event) > cfg.max_event_name_length:
        raise ClientEventError(f"Event name longer than {cfg.max_event_name_length} characters.")
    limit = cfg.max_client_events_per_second
    if limit >= 0:
        rate = sock.rate
        if rate is None:
            rate = sock.rate = RateWindow()
        if not rate.take(1, limit, sock.last_seen):
            raise ClientEventError(f"Client event rate limit reached ({limit} per second).")
    user_id = sock.presence.get(channel) if (policy.presence and sock.presence) else None
    # Forward the client's own JSON text of data (Pusher relays it untouched): a
    # re-encoding would change integers beyond 64 bits and number spellings.
    forwarded = data if isinstance(data, str) else raw_data(raw)
    payload = encode_event(event, channel, data if forwarded is None else forwarded, user_id)
    if len(payload) > cfg.max_event_payload_in_kb * 1024:
        raise ClientEventError(f"Client event over {cfg.max_event_payload_in_kb} KB.")
    core.deliver_and_publish(app, channel, payload, sock.id, cache=False)
    if core.observers:
        core.observers.tell("client_event", cfg, channel, event, data, sock.id, user_id)
