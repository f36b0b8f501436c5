"""The command line: ``soketi-impl start [--config FILE]`` and ``--version``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from soketi_impl import __version__
from soketi_impl.cli import main
from soketi_impl.config import Config

SRC = str(Path(__file__).resolve().parent.parent / "src")


def clean_env() -> dict[str, str]:
    """The current environment without soketi's variables, with our sources importable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SOKETI_") or k.startswith("SOKETI_IMPL_")
    }
    env["PYTHONPATH"] = SRC
    return env


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soketi_impl", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- as a process --------------------------------------------------------------------


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"port": "abc"}), encoding="utf-8")
    proc = run_module("start", "--config", str(bad))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("soketi-impl: configuration error: ")
    assert "'port'" in lines[0] and "'abc'" in lines[0]


def test_invalid_json_exits_2_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"port": 6001,', encoding="utf-8")
    proc = run_module("start", f"--config={bad}")
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith("soketi-impl: configuration error: ") and str(bad) in line


def test_version_as_a_process() -> None:
    proc = run_module("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"soketi-impl {__version__}"


# -- in process ----------------------------------------------------------------------


@pytest.fixture
def no_soketi_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SOKETI_") and not name.startswith("SOKETI_IMPL_"):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Stand in for ``soketi_impl.server`` (the real one may not exist yet)."""
    calls: list[Config] = []
    module = types.ModuleType("soketi_impl.server")

    def run(config: Config) -> int:
        calls.append(config)
        return 0

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "soketi_impl.server", module)
    return calls


def test_start_runs_the_server_with_the_loaded_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_soketi_env: None, fake_server: list[Config]
) -> None:
    cfg_file = tmp_path / "soketi.json"
    cfg_file.write_text(
        json.dumps({"port": 7000, "appManager.array.apps": [{"id": 1, "key": "k", "secret": "s"}]}),
        encoding="utf-8",
    )
    monkeypatch.setenv("SOKETI_PORT", "7100")
    assert main(["start", f"--config={cfg_file}"]) == 0
    [config] = fake_server
    assert config.port == 7100  # the environment overrides the file
    assert config.app_by_key("k") is not None and config.app_by_key("k").id == "1"  # type: ignore[union-attr]


def test_start_without_config_uses_the_defaults(
    no_soketi_env: None, fake_server: list[Config]
) -> None:
    assert main(["start"]) == 0
    assert fake_server == [Config()]


def test_the_server_exit_code_is_returned(
    monkeypatch: pytest.MonkeyPatch, no_soketi_env: None, fake_server: list[Config]
) -> None:
    server = sys.modules["soketi_impl.server"]
    monkeypatch.setattr(server, "run", lambda config: 3)
    assert main(["start"]) == 3

    def interrupted(config: Config) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "run", interrupted)
    assert main(["start"]) == 130


def test_debug_turns_on_debug_logging(
    monkeypatch: pytest.MonkeyPatch, no_soketi_env: None, fake_server: list[Config]
) -> None:
    monkeypatch.setenv("SOKETI_DEBUG", "true")
    levels: list[int] = []
    server = sys.modules["soketi_impl.server"]
    monkeypatch.setattr(server, "run", lambda config: levels.append(logging.getLogger().level) or 0)
    assert main(["start"]) == 0
    assert levels == [logging.DEBUG]


def test_config_error_in_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_soketi_env: None,
    fake_server: list[Config],
) -> None:
    monkeypatch.setenv("SOKETI_DEFAULT_APP_MAX_CONNS", "lots")
    assert main(["start"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("soketi-impl: configuration error: ")
    assert "SOKETI_DEFAULT_APP_MAX_CONNS" in err
    assert fake_server == []  # nothing started

    assert main(["start", "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_usage_errors_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2  # a command is required
    assert main(["serve"]) == 2
    assert main(["start", "--config"]) == 2
    capsys.readouterr()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"soketi-impl {__version__}"
    assert main(["start", "--help"]) == 0
    assert "--config" in capsys.readouterr().out
