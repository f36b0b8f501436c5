"""Drive one pusher-js client (tests/js/listen_driver.js) from an async test.

The server runs in the test's own event loop (in-process), so the client runs as an
asyncio subprocess and its JSON lines are awaited, never polled.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

from conftest import APP_ID, APP_KEY, APP_SECRET, JS_DIR

DRIVER = JS_DIR / "listen_driver.js"


class Listener:
    """A running driver: :meth:`next` awaits its next JSON line, :meth:`until` one of a type."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, port: int, **params: Any) -> Listener:
        node = shutil.which("node")
        assert node is not None, "node is needed"
        args = {"port": port, "key": APP_KEY, "secret": APP_SECRET, "appId": APP_ID, **params}
        proc = await asyncio.create_subprocess_exec(
            node, str(DRIVER), json.dumps(args), cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def next(self, timeout: float = 15) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            err = b""
            if self.proc.stderr is not None:
                err = await asyncio.wait_for(self.proc.stderr.read(), 5)
            raise AssertionError(f"driver ended early: {self.lines[-3:]} {err.decode()[-2000:]}")
        rec: dict[str, Any] = json.loads(line)
        self.lines.append(rec)
        if rec["t"] == "fail":
            raise AssertionError(f"driver failed: {rec['reason']} after {self.lines}")
        return rec

    async def until(self, kind: str, timeout: float = 15) -> dict[str, Any]:
        while True:
            rec = await self.next(timeout)
            if rec["t"] == kind:
                return rec

    def events(self) -> list[dict[str, Any]]:
        return [r for r in self.lines if r["t"] == "event"]

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
