"""Dispatcher for the WebSocket connection twins (see :mod:`soketi_impl.twins._speedups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

if TYPE_CHECKING:
    from ._ws_py import (
        MAX_FRAGMENTS,
        MAX_WRITE_BUFFER,
        WSConn,
        accept_response,
        frame,
        wire_close_code,
    )
else:
    _mod = load("ws")
    MAX_FRAGMENTS = _mod.MAX_FRAGMENTS
    MAX_WRITE_BUFFER = _mod.MAX_WRITE_BUFFER
    WSConn = _mod.WSConn
    accept_response = _mod.accept_response
    frame = _mod.frame
    wire_close_code = _mod.wire_close_code

__all__ = ["MAX_FRAGMENTS", "MAX_WRITE_BUFFER", "WSConn", "accept_response", "frame", "wire_close_code"]
