"""``POST /apps/{id}/events`` and ``/batch_events``: validating and triggering events.

- ``data`` must be a string (Pusher); soketi also takes an object. Others get 400.
- An event's ``data`` over ``max_event_payload_in_kb`` is 413 (Pusher), other limits 400.
- A batch is validated whole before any event is delivered: a refused batch
  delivers nothing.

:func:`parse_event` (and :class:`EventRequest`, :func:`parse_info`) live in the
trigger twins (``twins/_trigger``), compiled with the fast path that uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..twins._protocol import PRESENCE, channel_kind
from ..twins._trigger import TRIGGER_INFO, EventRequest, parse_event, parse_info
from .errors import ApiError
from .routes import Call

if TYPE_CHECKING:
    from ..pusher.state import AppState

__all__ = ["TRIGGER_INFO", "EventRequest", "batch_events", "load_json", "parse_event", "parse_info", "trigger"]

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
