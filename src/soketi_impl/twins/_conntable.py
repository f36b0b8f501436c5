"""Dispatcher for the connection table twins (see :mod:`soketi_impl.twins._speedups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

if TYPE_CHECKING:
    from ._conntable_py import ConnectionTable
else:
    ConnectionTable = load("conntable").ConnectionTable

__all__ = ["ConnectionTable"]
