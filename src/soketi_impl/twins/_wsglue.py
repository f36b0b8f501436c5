"""Dispatcher for the picows glue twins (see :mod:`soketi_impl.twins._speedups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

if TYPE_CHECKING:
    from ._wsglue_py import (
        IDLE_READ_BUFFER,
        IDLE_WRITE_BUFFER,
        data_payload,
        drop_handshake_leftovers,
        drop_protocol_leftovers,
        shrink_idle_buffers,
        shrink_read_buffer,
    )
else:
    _mod = load("wsglue")
    IDLE_READ_BUFFER = _mod.IDLE_READ_BUFFER
    IDLE_WRITE_BUFFER = _mod.IDLE_WRITE_BUFFER
    data_payload = _mod.data_payload
    drop_handshake_leftovers = _mod.drop_handshake_leftovers
    drop_protocol_leftovers = _mod.drop_protocol_leftovers
    shrink_idle_buffers = _mod.shrink_idle_buffers
    shrink_read_buffer = _mod.shrink_read_buffer

__all__ = [
    "IDLE_READ_BUFFER", "IDLE_WRITE_BUFFER", "data_payload", "drop_handshake_leftovers",
    "drop_protocol_leftovers", "shrink_idle_buffers", "shrink_read_buffer",
]
