"""The README's code: every Python snippet is an excerpt of an example the tests run, or runs here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
EXAMPLES = {p.name: p.read_text() for p in (ROOT / "examples").glob("*.py")}
SEED_MARK = '@router.register_handler("onPing")'


def _code_lines(text: str) -> list[str]:
    """Stripped lines without comments, blank lines or the ``...`` that marks an omission."""
    out = []
    for line in text.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line and line != "..." and not line.startswith("#"):
            out.append(line)
    return out


def test_readme_has_snippets() -> None:
    assert len(BLOCKS) >= 4
    assert sum(SEED_MARK in b for b in BLOCKS) == 1


@pytest.mark.parametrize("block", [b for b in BLOCKS if SEED_MARK not in b])
def test_snippet_is_an_excerpt_of_one_example(block: str) -> None:
    lines = _code_lines(block)
    homes = [name for name, text in EXAMPLES.items() if set(lines) <= set(_code_lines(text))]
    assert homes, f"no file in examples/ holds every line of this README snippet:\n{block}"


async def test_seed_snippet_runs() -> None:
    """The seed snippet, executed: a connection is greeted and the custom handler answers."""
    [block] = [b for b in BLOCKS if SEED_MARK in b]
    scope: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), scope)

    class Native:
        def __init__(self) -> None:
            self.sent: list[Any] = []

        async def send(self, message: Any) -> None:
            self.sent.append(message)

        async def close(self, code: int | None = None, reason: str | None = None) -> None:
            pass

    native = Native()
    await scope["on_socket"](12345, native)  # a numeric id, as the seed uses
    assert native.sent == ["Hello!", "Pong!"]
    assert 12345 in scope["conns"]
