"""The one place that reads ``SOKETI_IMPL_NO_EXTENSIONS`` and picks twins.

Every hot module comes as a pair: ``_area_c`` (Cython) and ``_area_py`` (pure
Python, the reference). The dispatcher ``_area`` calls :func:`load` once at
import. One switch flips every pair together, because the C modules may cimport
each other's ``.pxd``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("SOKETI_IMPL_NO_EXTENSIONS", "") not in ("", "0", "false")

#: Areas whose compiled module failed to import, with the reason; the test
#: ``tests/test_speedups.py`` fails when this is not empty and the switch is off.
FAILED: dict[str, str] = {}


def load(area: str) -> ModuleType:
    """Return ``soketi_impl.twins._{area}_c``, or the ``_py`` twin when the switch is set
    or the extension is missing (recorded in :data:`FAILED`)."""
    if not NO_EXTENSIONS:
        try:
            return importlib.import_module(f"soketi_impl.twins._{area}_c")
        except ImportError as exc:
            FAILED[area] = str(exc)
    return importlib.import_module(f"soketi_impl.twins._{area}_py")


def using_extensions() -> bool:
    """True when every loaded area runs its compiled module."""
    return not NO_EXTENSIONS and not FAILED
