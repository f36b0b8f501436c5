"""Extensions only: every ``src/soketi_impl/**/_*_c.pyx`` is compiled with one set of directives.

Knobs (environment):
- ``SOKETI_IMPL_NO_EXTENSIONS=1``: build nothing (the pure-Python twins are used).
- ``SOKETI_IMPL_DEBUG=1``: bounds checks and debug asserts on, symbols kept.
- ``SOKETI_IMPL_CYTHON_TRACE=1``: line tracing, for coverage of Cython code.

The sdist carries the ``.pyx``/``.pxd`` sources (MANIFEST.in), not generated C:
Cython is a build requirement, and :class:`OptionalBuildExt` runs it only when it
builds, so making an sdist generates nothing. Where no C compiler works (a quick probe
first), the build does not fail: one warning, and the pure-Python twins are installed,
as yarl and multidict do. The server's start log says which twins run. Release builds
link with ``-s`` (stripped ``.so``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

ROOT = Path(__file__).parent
# GNU ld and gold take -s; macOS's linker ignores it with a warning, so Linux only.
STRIP = sys.platform.startswith("linux")

WARNING = """
**********************************************************************
WARNING: soketi-impl's C extensions could not be compiled ({reason}).
Installing the pure-Python twins instead: everything works, slower.
To get the compiled build, install a wheel, or a C compiler and the
Python headers, then reinstall.
**********************************************************************
"""


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "False")


class OptionalBuildExt(build_ext):
    """``build_ext`` that falls back to no extensions, with one warning, when compiling fails.

    The compiled twins may cimport each other's ``.pxd`` and are switched on together,
    so a partial build is worse than none: after any failure, every extension that did
    build is removed as well.
    """

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            # one compiler process per core: the four modules build in about half the time
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            self._fall_back(exc)

    def build_extensions(self) -> None:
        # Called by run() once the compiler is set up: probe it before Cython spends
        # its seconds, then compile the generated C.
        self._probe_compiler()
        from Cython.Build import cythonize

        generated = cythonize(
            self.extensions,
            nthreads=self.parallel if isinstance(self.parallel, int) else 0,
            **_cython_options(),
        )
        # Keep setuptools' own Extension objects (finalize_options annotated them):
        # only their sources change, from .pyx to the generated .c.
        by_name = {ext.name: ext for ext in generated}
        for ext in self.extensions:
            ext.sources = by_name[ext.name].sources
        super().build_extensions()

    def _probe_compiler(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.c"
            probe.write_text("int soketi_impl_probe(void) { return 0; }\n", encoding="ascii")
            self.compiler.compile([str(probe)], output_dir=tmp)

    def _fall_back(self, exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            if built.exists():
                built.unlink()
        self.extensions = []
        sys.stderr.write(WARNING.format(reason=reason))
        sys.stderr.flush()


def _cython_options() -> dict[str, object]:
    debug = _flag("SOKETI_IMPL_DEBUG")
    trace = _flag("SOKETI_IMPL_CYTHON_TRACE")
    return {
        "language_level": 3,
        "include_path": ["src"],
        "compiler_directives": {
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": True,
            "embedsignature": True,
            "linetrace": trace,
            "profile": trace,
        },
    }


def _extensions() -> list[Extension]:
    """One extension per ``_*_c.pyx``, with its ``.pyx`` as the source (cythonized at build)."""
    if _flag("SOKETI_IMPL_NO_EXTENSIONS"):
        return []
    debug = _flag("SOKETI_IMPL_DEBUG")
    trace = _flag("SOKETI_IMPL_CYTHON_TRACE")
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if trace else []
    if not debug:
        macros.append(("NDEBUG", "1"))
    sources = sorted(p.relative_to(ROOT) for p in (ROOT / "src").rglob("_*_c.pyx"))
    return [
        Extension(
            ".".join(src.with_suffix("").parts[1:]),
            [str(src)],
            define_macros=macros,
            include_dirs=["csrc"],  # hand-written C headers (csrc/soketi_digest.h)
            extra_compile_args=["-O2"] if not debug else ["-O0", "-g"],
            # release builds ship stripped: the symbol tables are most of a .so's size
            extra_link_args=["-s"] if STRIP and not (debug or trace) else [],
        )
        for src in sources
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
