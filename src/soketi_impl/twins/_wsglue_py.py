"""picows glue, pure-Python twin of ``_wsglue_c``.

Python cannot reach picows's C buffers, so here :func:`shrink_idle_buffers` does
nothing and says so by returning 0.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IDLE_WRITE_BUFFER", "shrink_idle_buffers"]

#: Capacity the compiled twin leaves picows's per-connection write buffer with.
IDLE_WRITE_BUFFER = 64


def shrink_idle_buffers(transport: Any) -> int:
    """Give back the idle part of a picows transport's write buffer; returns bytes freed."""
    return 0
