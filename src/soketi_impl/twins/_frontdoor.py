"""Dispatcher for the HTTP front door twins (see :mod:`soketi_impl.twins._speedups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._speedups import load

if TYPE_CHECKING:
    from ._frontdoor_py import FrontDoorBase
else:
    FrontDoorBase = load("frontdoor").FrontDoorBase

__all__ = ["FrontDoorBase"]
