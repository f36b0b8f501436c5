"""Shared fixtures.

- Every async test runs on plain asyncio and on uvloop (ids ``asyncio`` / ``uvloop``),
  through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook.
- ``impl`` gives the twin kind (``py`` / ``c``); ``twin(area)`` imports
  ``soketi_impl._{area}_{kind}``. A missing C twin fails the test unless
  ``SOKETI_IMPL_NO_EXTENSIONS`` is set, where the ``c`` cases are skipped.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import pytest
import uvloop

from soketi_impl import _speedups


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "c" and _speedups.NO_EXTENSIONS:
        pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
    return str(request.param)


@pytest.fixture
def twin(impl: str) -> Callable[[str], ModuleType]:
    """``twin("protocol")`` -> the module of that area for this test's kind."""

    def load(area: str) -> ModuleType:
        return importlib.import_module(f"soketi_impl._{area}_{impl}")

    return load
