"""Dispatcher for the trigger twins (see :mod:`soketi_impl.twins._speedups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

if TYPE_CHECKING:
    from ._trigger_py import TRIGGER_INFO, EventRequest, TriggerPath, parse_event, parse_info
else:
    _mod = load("trigger")
    TRIGGER_INFO = _mod.TRIGGER_INFO
    EventRequest = _mod.EventRequest
    TriggerPath = _mod.TriggerPath
    parse_event = _mod.parse_event
    parse_info = _mod.parse_info

__all__ = ["TRIGGER_INFO", "EventRequest", "TriggerPath", "parse_event", "parse_info"]
