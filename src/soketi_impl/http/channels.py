"""``GET /apps/{id}/channels``, ``/channels/{channel}`` and ``/channels/{channel}/users``.

``info=user_count`` is for presence channels only (400 elsewhere). ``info=cache``
on a channel answers ``"cache": {"event", "data", "ttl"}`` (seconds left) when an
event is cached for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..twins._protocol import PRESENCE, channel_kind, valid_channel_name
from .errors import ApiError, echo
from .events import TRIGGER_INFO, parse_info
from .routes import Call

if TYPE_CHECKING:
    from ..pusher.state import AppState

__all__ = ["channel", "list_channels", "users"]

_CHANNEL_INFO = frozenset({"subscription_count", "user_count", "cache"})


def _channel_arg(call: Call) -> str:
    name = call.args["channel"]
    if not valid_channel_name(name, call.app.config.max_channel_name_length):
        raise ApiError(400, f"Invalid channel name {echo(name)!r}.")
    return name


async def list_channels(call: Call) -> Any:
    """``GET /apps/{id}/channels``: occupied channels, with ``filter_by_prefix`` and ``info``."""
    prefix = call.params.get("filter_by_prefix") or None
    info = parse_info(call.params.get("info"), TRIGGER_INFO)
    if "user_count" in info and (prefix is None or channel_kind(prefix) != PRESENCE):
        raise ApiError(400, "info=user_count needs filter_by_prefix=presence- (presence channels only).")
    channels = await call.api.pusher.channels(call.app.config.id, prefix)
    result: dict[str, dict[str, int]] = {}
    for name, state in channels.items():
        entry: dict[str, int] = {}
        if "subscription_count" in info:
            entry["subscription_count"] = state.get("subscription_count", 0)
        if "user_count" in info:
            entry["user_count"] = state.get("user_count", 0)
        result[name] = entry
    return {"channels": result}


def _cached(app: AppState, name: str, state: dict[str, Any]) -> dict[str, Any] | None:
    cached = app.cache.get(name)
    if cached is not None:
        left = cached[1] - app.clock()  # expiries are stamped with the core's clock
        if left <= 0:
            return None
        event = orjson.loads(cached[0])
        return {"event": event.get("event"), "data": event.get("data"), "ttl": int(left)}
    remote = state.get("cache")  # another node's answer, through the adapter
    if isinstance(remote, dict):
        return {"event": remote.get("event"), "data": remote.get("data"), "ttl": remote.get("ttl", 0)}
    return None


async def channel(call: Call) -> Any:
    """``GET /apps/{id}/channels/{channel}``: ``{"occupied", ...info}``."""
    name = _channel_arg(call)
    info = parse_info(call.params.get("info"), _CHANNEL_INFO)
    if "user_count" in info and channel_kind(name) != PRESENCE:
        raise ApiError(400, "info=user_count is only available for presence channels.")
    state = await call.api.pusher.channel(call.app.config.id, name)
    count = int(state.get("subscription_count", 0))
    result: dict[str, Any] = {"occupied": bool(state.get("occupied", count > 0))}
    if "subscription_count" in info:
        result["subscription_count"] = count
    if "user_count" in info:
        result["user_count"] = state.get("user_count", 0)
    if "cache" in info:
        cached = _cached(call.app, name, state)
        if cached is not None:
            result["cache"] = cached
    return result


async def users(call: Call) -> Any:
    """``GET /apps/{id}/channels/{channel}/users``: ``{"users": [{"id"}]}`` (presence only)."""
    name = _channel_arg(call)
    if channel_kind(name) != PRESENCE:
        raise ApiError(400, "Users can only be listed for presence channels.")
    ids = await call.api.pusher.presence_users(call.app.config.id, name)
    return {"users": [{"id": uid} for uid in ids]}
