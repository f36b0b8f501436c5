"""Dispatcher for the fan-out twins (see :mod:`soketi_impl.twins._speedups`).

``Stats``, ``frame_text``, ``Outbox``, ``Sink`` and ``ChannelTable`` come from
``_fanout_c`` unless ``SOKETI_IMPL_NO_EXTENSIONS`` is set or it failed to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

if TYPE_CHECKING:
    from ._fanout_py import ChannelTable, Outbox, Sink, Stats, frame_text
else:
    _mod = load("fanout")
    Stats = _mod.Stats
    frame_text = _mod.frame_text
    Outbox = _mod.Outbox
    Sink = _mod.Sink
    ChannelTable = _mod.ChannelTable
    del _mod

__all__ = ["ChannelTable", "Outbox", "Sink", "Stats", "frame_text"]
