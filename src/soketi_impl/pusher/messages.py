"""Every message a client receives from the core, built here and nowhere else.

Each function returns the encoded frame (JSON bytes); the fan-out sends the same
bytes to every recipient. Server events carry ``data`` as a JSON-encoded string,
as Pusher clients expect (they parse it a second time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ..twins._protocol import encode_error, encode_event
from .state import is_socket_id

__all__ = [
    "PING",
    "PONG",
    "cache_miss",
    "connection_established",
    "error",
    "member_added",
    "member_removed",
    "signin_success",
    "subscription_count",
    "subscription_error",
    "subscription_succeeded",
    "watchlist_events",
]

#: ``pusher:ping`` (the server asks a silent client to answer).
PING = encode_event("pusher:ping", None, "{}")
#: ``pusher:pong`` (the answer to a client's ``pusher:ping``).
PONG = b'{"event":"pusher:pong","data":"{}"}'


def _json(obj: Any) -> str:
    return orjson.dumps(obj).decode()


_ESTABLISHED_HEAD = '{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"'
_ESTABLISHED_MID = '\\",\\"activity_timeout\\":'
_ESTABLISHED_TAIL = '}"}'


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    """``pusher:connection_established``: the socket id and how long the client may stay silent.

    A ``digits.digits`` id and an ``int`` timeout (every connection) need no JSON
    escaping: the frame is put together from constant parts, byte for byte what
    ``encode_event`` writes (tests/test_core_protocol.py checks both ways).
    """
    if type(activity_timeout) is int and is_socket_id(socket_id):
        return f"{_ESTABLISHED_HEAD}{socket_id}{_ESTABLISHED_MID}{activity_timeout}{_ESTABLISHED_TAIL}".encode()
    return encode_event(
        "pusher:connection_established", None,
        _json({"socket_id": socket_id, "activity_timeout": activity_timeout}),
    )


def error(code: int | None, message: str) -> bytes:
    """``pusher:error`` with a code (or none) and a message."""
    return encode_error(code, message)


def subscription_succeeded(channel: str, members: Mapping[str, Any] | None = None) -> bytes:
    """``pusher_internal:subscription_succeeded``; with ``members`` (user id -> info) the presence form."""
    if members is None:
        return encode_event("pusher_internal:subscription_succeeded", channel, "{}")
    presence = {"ids": list(members), "hash": dict(members), "count": len(members)}
    return encode_event("pusher_internal:subscription_succeeded", channel, _json({"presence": presence}))


def subscription_error(channel: str, kind: str, message: str, status: int) -> bytes:
    """``pusher:subscription_error``: ``kind`` is ``AuthError``, ``LimitReached``, ``InvalidChannel`` ..."""
    return orjson.dumps(
        {
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": kind, "error": message, "status": status},
        }
    )


def subscription_count(channel: str, count: int) -> bytes:
    """``pusher_internal:subscription_count`` (the channel's subscriber count)."""
    return encode_event("pusher_internal:subscription_count", channel, _json({"subscription_count": count}))


def member_added(channel: str, user_id: str, user_info: Any) -> bytes:
    """``pusher_internal:member_added``: a user's first connection joined the presence channel."""
    return encode_event(
        "pusher_internal:member_added", channel, _json({"user_id": user_id, "user_info": user_info})
    )


def member_removed(channel: str, user_id: str) -> bytes:
    """``pusher_internal:member_removed``: a user's last connection left the presence channel."""
    return encode_event("pusher_internal:member_removed", channel, _json({"user_id": user_id}))


def cache_miss(channel: str) -> bytes:
    """``pusher:cache_miss``: nothing is cached for the cache channel just joined."""
    return orjson.dumps({"event": "pusher:cache_miss", "channel": channel})


def signin_success(user_data: str) -> bytes:
    """``pusher:signin_success`` with the user data the client signed in with."""
    return encode_event("pusher:signin_success", None, _json({"user_data": user_data}))


def watchlist_events(online: Iterable[str] = (), offline: Iterable[str] = ()) -> bytes:
    """``pusher_internal:watchlist_events``: which watched users are online or offline."""
    events = []
    on, off = list(online), list(offline)
    if on:
        events.append({"name": "online", "user_ids": on})
    if off:
        events.append({"name": "offline", "user_ids": off})
    return encode_event("pusher_internal:watchlist_events", None, _json({"events": events}))
