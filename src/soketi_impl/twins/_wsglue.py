"""Dispatcher for the picows glue twins (see :mod:`soketi_impl.twins._speedups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

if TYPE_CHECKING:
    from ._wsglue_py import IDLE_WRITE_BUFFER, data_payload, shrink_idle_buffers
else:
    _mod = load("wsglue")
    IDLE_WRITE_BUFFER = _mod.IDLE_WRITE_BUFFER
    data_payload = _mod.data_payload
    shrink_idle_buffers = _mod.shrink_idle_buffers

__all__ = ["IDLE_WRITE_BUFFER", "data_payload", "shrink_idle_buffers"]
