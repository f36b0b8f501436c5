"""``python -m soketi_impl start [--config FILE]``: the same as the ``soketi-impl`` command."""

from __future__ import annotations

import sys

from soketi_impl.cli import main

if __name__ == "__main__":
    sys.exit(main())
