"""The public import surface: ``soketi_impl`` and a few documented modules, nothing else.

- every name in ``soketi_impl.__all__`` imports and is documented;
- the README's and the examples' Python code imports only public names: no module or
  name with a leading underscore, none of the internal packages (the compiled twins,
  the protocol core, adapters, hosts, the HTTP internals).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import soketi_impl

ROOT = Path(__file__).resolve().parent.parent

#: The modules an application may import from (each is named in soketi_impl's docstring).
PUBLIC_MODULES = {
    "soketi_impl",
    "soketi_impl.asgi",
    "soketi_impl.aiohttp",
    "soketi_impl.hooks",
    "soketi_impl.encryption",
    "soketi_impl.config",
}
INTERNAL_PARTS = {"twins", "pusher", "adapters", "hosts", "http", "service", "server", "webhooks", "metrics"}


@pytest.mark.parametrize("name", soketi_impl.__all__)
def test_every_public_name_imports_and_is_documented(name: str) -> None:
    obj = getattr(soketi_impl, name)
    if name == "__version__":
        assert isinstance(obj, str) and re.fullmatch(r"\d+\.\d+\.\d+.*", obj)
        return
    assert not name.startswith("_")
    doc = obj.__doc__ if (inspect.isclass(obj) or inspect.isroutine(obj)) else inspect.getdoc(obj)
    assert doc and doc.strip(), f"soketi_impl.{name} has no docstring"


@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES - {"soketi_impl"}))
def test_documented_modules_have_all_and_docstrings(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__doc__ and mod.__doc__.strip(), module
    names = getattr(mod, "__all__", None)
    assert names, f"{module} has no __all__"
    for name in names:
        assert not name.startswith("_"), (module, name)
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{module}.{name} has no docstring"


def test_the_package_docstring_names_the_documented_modules() -> None:
    assert soketi_impl.__doc__ is not None
    for module in PUBLIC_MODULES - {"soketi_impl"}:
        assert f":mod:`{module}`" in soketi_impl.__doc__, module
    assert set(soketi_impl.__all__) <= set(dir(soketi_impl))


def test_import_does_not_load_a_transport() -> None:
    # An app served through ASGI or aiohttp must not load the server's front door (and
    # its WebSocket twin) just by importing us; the server itself no longer needs picows.
    code = ("import sys, soketi_impl; print('soketi_impl.hosts.wslistener' in sys.modules); soketi_impl.Server; "
            "print('soketi_impl.hosts.wslistener' in sys.modules, 'picows' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True", "False"]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def _imports(source: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every soketi_impl import; names empty for ``import x``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "soketi_impl":
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "soketi_impl"]
    return found


def _problems(source: str) -> list[str]:
    problems = []
    for module, names in _imports(source):
        parts = module.split(".")
        if module not in PUBLIC_MODULES or any(p.startswith("_") or p in INTERNAL_PARTS for p in parts[1:]):
            problems.append(f"imports from {module}")
            continue
        mod = __import__(module, fromlist=["_"])
        public = getattr(mod, "__all__", None)
        for name in names:
            if name.startswith("_") or (public is not None and name not in public):
                problems.append(f"imports {name} from {module}")
    return problems


def test_a_private_import_is_caught() -> None:
    assert _problems("from soketi_impl.pusher import PusherServer") == ["imports from soketi_impl.pusher"]
    assert _problems("import soketi_impl.twins._speedups") == ["imports from soketi_impl.twins._speedups"]
    assert _problems("from soketi_impl import _x") == ["imports _x from soketi_impl"]
    assert _problems("from soketi_impl import Pusher, Server\nimport soketi_impl") == []


def test_readme_python_blocks_import_only_public_names() -> None:
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks, "the README has Python examples"
    problems = [f"README block {i + 1}: {p}" for i, block in enumerate(blocks) for p in _problems(block)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_examples_import_only_public_names(example: str) -> None:
    source = (ROOT / "examples" / example).read_text()
    assert not _problems(source), _problems(source)
    if example.startswith(("hooks_", "encrypted_", "auth_endpoint_")):  # the README's short examples
        assert len(source.splitlines()) <= 30, "README examples stay under 30 lines"
