"""``POST /apps/{id}/events`` and ``/batch_events``: validating and triggering events.

- ``data`` must be a string (Pusher); soketi also takes an object. Others get 400.
- An event's ``data`` over ``max_event_payload_in_kb`` is 413 (Pusher), other limits 400.
- A batch is validated whole before any event is delivered: a refused batch
  delivers nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..pusher.state import is_socket_id
from ..twins._protocol import ENCRYPTED, PRESENCE, channel_kind, valid_channel_name
from .errors import ApiError, echo
from .routes import Call

if TYPE_CHECKING:
    from ..config import AppConfig
    from ..pusher.state import AppState

__all__ = ["EventRequest", "batch_events", "load_json", "parse_event", "parse_info", "trigger"]

TRIGGER_INFO = frozenset({"subscription_count", "user_count"})
_NO_INFO: frozenset[str] = frozenset()


class EventRequest:
    """One validated event: where it goes, what it is, who is excluded, what to answer."""

    __slots__ = ("channels", "data", "info", "name", "socket_id")

    def __init__(
        self, channels: list[str], name: str, data: str, socket_id: str | None, info: frozenset[str]
    ) -> None:
        self.channels = channels
        self.name = name
        self.data = data
        self.socket_id = socket_id
        self.info = info

    def __repr__(self) -> str:
        return f"<EventRequest {self.name!r} on {self.channels!r}>"


def load_json(body: bytes) -> Any:
    """The JSON of a request body; 400 when empty, not UTF-8 or not JSON."""
    if not body:
        raise ApiError(400, "The request body is empty: expected a JSON object.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "The request body is not valid UTF-8.") from None
        raise ApiError(400, "The request body is not valid JSON.") from None


def parse_info(value: Any, allowed: frozenset[str], where: str = "") -> frozenset[str]:
    """An ``info`` attribute list (``"a,b"``); 400 for an attribute not in ``allowed``."""
    if value is None or value == "":
        return frozenset()
    if not isinstance(value, str):
        raise ApiError(400, f"{where}info must be a comma-separated string.")
    attrs = frozenset(a.strip() for a in value.split(",") if a.strip())
    unknown = attrs - allowed
    if unknown:
        raise ApiError(
            400,
            f"{where}info: unknown attribute {echo(min(unknown))!r} "
            f"(allowed: {', '.join(sorted(allowed))}).",
        )
    return attrs


def _channels(item: dict[str, Any], where: str, batch: bool) -> list[Any]:
    if batch:
        channel = item.get("channel")
        if channel is None:
            raise ApiError(400, f"{where}channel is required.")
        return [channel]
    channels = item.get("channels")
    if channels is None:
        channel = item.get("channel")
        if channel is None:
            raise ApiError(400, "channels (a list) or channel (a string) is required.")
        return [channel]
    if not isinstance(channels, list):
        raise ApiError(400, "channels must be a list of channel names.")
    return channels


def parse_event(item: Any, cfg: AppConfig, *, batch_index: int | None = None) -> EventRequest:
    """Validate one event (the body of ``/events`` or one item of a batch) against the app's limits.

    Raises :class:`ApiError`: 400 for a missing or mistyped field, a bad channel name,
    too many channels, a too-long name, a multi-channel trigger with an encrypted
    channel; 413 for ``data`` over the payload limit.
    """
    where = "" if batch_index is None else f"batch[{batch_index}]: "
    if not isinstance(item, dict):
        raise ApiError(400, f"{where}expected a JSON object.")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"{where}name must be a non-empty string.")
    if len(name) > cfg.max_event_name_length:
        raise ApiError(400, f"{where}event name longer than {cfg.max_event_name_length} characters.")
    data = item.get("data")
    if not isinstance(data, str):
        raise ApiError(400, f"{where}data must be a string (JSON-encode objects).")
    limit = int(cfg.max_event_payload_in_kb * 1024)
    # A str holds at most 4 bytes per character: measure only when it could be over.
    if len(data) * 4 > limit and len(data.encode("utf-8", "surrogatepass")) > limit:
        raise ApiError(413, f"{where}data is over the {cfg.max_event_payload_in_kb:g} KB limit.")
    channels = _channels(item, where, batch_index is not None)
    if not channels:
        raise ApiError(400, f"{where}channels must not be empty.")
    if len(channels) > cfg.max_event_channels_at_once:
        raise ApiError(400, f"{where}more than {cfg.max_event_channels_at_once} channels at once.")
    max_len = cfg.max_channel_name_length
    for ch in channels:
        if not isinstance(ch, str):
            raise ApiError(400, f"{where}channel names must be strings.")
        if not valid_channel_name(ch, max_len):
            raise ApiError(
                400,
                f"{where}invalid channel name {echo(ch)!r} "
                f"(allowed: A-Z a-z 0-9 _-=@,.; up to {max_len} characters).",
            )
    if len(channels) > 1:
        # Pusher's rule: the SDKs encrypt per channel, so one payload cannot go to two.
        if any(channel_kind(ch) == ENCRYPTED for ch in channels):
            raise ApiError(400, f"{where}an encrypted channel cannot be triggered with other channels.")
        if len(set(channels)) != len(channels):
            channels = list(dict.fromkeys(channels))
    socket_id = item.get("socket_id")
    if socket_id is not None and not is_socket_id(socket_id):
        raise ApiError(400, f"{where}socket_id must be a string like '123.456'.")
    info = item.get("info")
    info = _NO_INFO if info is None else parse_info(info, TRIGGER_INFO, where)
    return EventRequest(channels, name, data, socket_id, info)


def _take_events(call: Call, n: int) -> None:
    cfg = call.app.config
    limit = cfg.max_backend_events_per_second
    if limit >= 0:  # (a negative limit is none)
        call.api.rates.take(cfg.id, "events (one per channel)", n, limit)


async def event_info(call: Call, app: AppState, channel: str, info: frozenset[str]) -> dict[str, int]:
    """The ``info`` attributes of one channel after a trigger."""
    if not info:
        return {}
    state = await call.api.pusher.channel(app.config.id, channel)
    result: dict[str, int] = {}
    if "subscription_count" in info:
        result["subscription_count"] = state.get("subscription_count", 0)
    if "user_count" in info and channel_kind(channel) == PRESENCE:
        result["user_count"] = state.get("user_count", 0)
    return result


async def trigger(call: Call) -> Any:
    """``POST /apps/{id}/events``: ``{}``, or the channels' ``info`` when asked."""
    app = call.app
    event = parse_event(load_json(call.request.body), app.config)
    _take_events(call, len(event.channels))
    await call.api.pusher.trigger(app.config.id, event.channels, event.name, event.data, event.socket_id)
    if not event.info:
        return {}
    return {"channels": {ch: await event_info(call, app, ch, event.info) for ch in event.channels}}


async def batch_events(call: Call) -> Any:
    """``POST /apps/{id}/batch_events``: ``{"batch": [info of each event]}``."""
    body = load_json(call.request.body)
    if not isinstance(body, dict):
        raise ApiError(400, 'Expected a JSON object {"batch": [...]}.')
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise ApiError(400, "batch must be a list of events.")
    app = call.app
    cfg = app.config
    if len(batch) > cfg.max_event_batch_size:
        raise ApiError(400, f"batch has more than {cfg.max_event_batch_size} events.")
    events = [parse_event(item, cfg, batch_index=i) for i, item in enumerate(batch)]
    _take_events(call, len(events))
    for event in events:
        await call.api.pusher.trigger(cfg.id, event.channels, event.name, event.data, event.socket_id)
    return {"batch": [await event_info(call, app, ev.channels[0], ev.info) for ev in events]}
