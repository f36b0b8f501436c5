"""Extensions only: every ``src/soketi_impl/**/_*_c.pyx`` is compiled with one set of directives.

Knobs (environment):
- ``SOKETI_IMPL_NO_EXTENSIONS=1``: build nothing (the pure-Python twins are used).
- ``SOKETI_IMPL_DEBUG=1``: bounds checks and debug asserts on.
- ``SOKETI_IMPL_CYTHON_TRACE=1``: line tracing, for coverage of Cython code.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "False")


def _extensions() -> list[Extension]:
    if _flag("SOKETI_IMPL_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    debug = _flag("SOKETI_IMPL_DEBUG")
    trace = _flag("SOKETI_IMPL_CYTHON_TRACE")
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if trace else []
    if not debug:
        macros.append(("NDEBUG", "1"))
    root = Path(__file__).parent
    sources = sorted(p.relative_to(root) for p in (root / "src").rglob("_*_c.pyx"))
    exts = [
        Extension(
            ".".join(src.with_suffix("").parts[1:]),
            [str(src)],
            include_dirs=["csrc"],
            define_macros=macros,
            extra_compile_args=["-O2"] if not debug else ["-O0", "-g"],
        )
        for src in sources
    ]
    return cythonize(
        exts,
        language_level=3,
        include_path=["src"],
        compiler_directives={
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": True,
            "embedsignature": True,
            "linetrace": trace,
            "profile": trace,
        },
    )


setup(ext_modules=_extensions())
