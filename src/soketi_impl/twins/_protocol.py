"""Dispatcher for the protocol twins (see :mod:`soketi_impl.twins._speedups`).

Pusher message parsing and encoding: ``_protocol_c`` when the extension is
built and the switch is off, else ``_protocol_py``. Same names, same behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

_mod = load("protocol")

if TYPE_CHECKING:
    from ._protocol_py import (
        ENCRYPTED,
        PRESENCE,
        PRIVATE,
        PUBLIC,
        SERVER_TO_USER,
        channel_kind,
        encode_error,
        encode_event,
        is_cache_channel,
        parse_client_message,
        raw_data,
        valid_channel_name,
    )
else:
    PUBLIC = _mod.PUBLIC
    PRIVATE = _mod.PRIVATE
    PRESENCE = _mod.PRESENCE
    ENCRYPTED = _mod.ENCRYPTED
    SERVER_TO_USER = _mod.SERVER_TO_USER
    channel_kind = _mod.channel_kind
    is_cache_channel = _mod.is_cache_channel
    valid_channel_name = _mod.valid_channel_name
    parse_client_message = _mod.parse_client_message
    encode_event = _mod.encode_event
    encode_error = _mod.encode_error
    raw_data = _mod.raw_data

__all__ = [
    "ENCRYPTED",
    "PRESENCE",
    "PRIVATE",
    "PUBLIC",
    "SERVER_TO_USER",
    "channel_kind",
    "encode_error",
    "encode_event",
    "is_cache_channel",
    "parse_client_message",
    "raw_data",
    "valid_channel_name",
]
