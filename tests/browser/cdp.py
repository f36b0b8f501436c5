"""Headless Chromium driven over the Chrome DevTools Protocol, for the dashboard tests.

Debian's ``chromium`` is started with ``--remote-debugging-port=0``; the browser
prints its DevTools WebSocket URL on stderr and this module talks CDP to it with
the ``websockets`` client of the test dependencies (no Selenium, no driver binary).
Every step has a timeout. A missing browser fails the test with the command that
installs it.

    browser = await Chromium.launch(tmp_path)
    await browser.goto("http://127.0.0.1:9601/dashboard")
    await browser.wait("document.querySelector('#log')", "the console")
    png = await browser.screenshot()
    await browser.close()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import websockets

INSTALL_HINT = (
    "chromium is needed for the dashboard's browser tests and was not found on PATH; "
    "install it with: apt-get install -y chromium"
)
_DEVTOOLS = re.compile(r"DevTools listening on (ws://\S+)")


def find_chromium() -> str:
    """The browser's executable; fails the test (not skips) when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail(INSTALL_HINT)


class CdpError(AssertionError):
    """A CDP command failed, or the page threw."""


class Chromium:
    """One headless browser with one page (a flattened CDP session)."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: Any, stderr: deque[str]) -> None:
        self.proc = proc
        self.ws = ws
        self.stderr = stderr
        self.session: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._waiters: list[tuple[str, asyncio.Future[Any]]] = []
        self._reader = asyncio.ensure_future(self._read())
        #: messages the page logged (console.* and uncaught exceptions)
        self.console: list[str] = []

    @classmethod
    async def launch(cls, profile: Path, width: int = 1440, height: int = 1000, timeout: float = 30) -> Chromium:
        """Start the browser with its profile in ``profile`` and open a blank page."""
        exe = find_chromium()
        args = [
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank",
        ]
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "LANG": "en_US.UTF-8"},
        )
        lines: deque[str] = deque(maxlen=200)
        try:
            url = await asyncio.wait_for(cls._devtools_url(proc, lines), timeout)
        except (asyncio.TimeoutError, EOFError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise AssertionError(f"chromium did not start ({exc!r}):\n" + "\n".join(lines)) from None
        # keep reading stderr, or the browser blocks on a full pipe
        asyncio.ensure_future(cls._drain(proc, lines))
        ws = await websockets.connect(url, max_size=64 * 1024 * 1024, open_timeout=timeout)
        browser = cls(proc, ws, lines)
        target = await browser.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = await browser.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False
        )
        browser.session = attached["sessionId"]
        await browser.send("Page.enable")
        await browser.send("Runtime.enable")
        await browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return browser

    @staticmethod
    async def _devtools_url(proc: asyncio.subprocess.Process, lines: deque[str]) -> str:
        assert proc.stderr is not None
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                raise EOFError("chromium exited")
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            found = _DEVTOOLS.search(line)
            if found:
                return found.group(1)

    @staticmethod
    async def _drain(proc: asyncio.subprocess.Process, lines: deque[str]) -> None:
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            lines.append(raw.decode(errors="replace").rstrip())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._pending.pop(msg["id"], None)
                    if fut is not None and not fut.done():
                        if "error" in msg:
                            fut.set_exception(CdpError(f"CDP error: {msg['error']}"))
                        else:
                            fut.set_result(msg.get("result", {}))
                    continue
                method = msg.get("method", "")
                params = msg.get("params", {})
                if method == "Runtime.consoleAPICalled":
                    self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
                elif method == "Runtime.exceptionThrown":
                    self.console.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:2000])
                for name, fut in list(self._waiters):
                    if name == method and not fut.done():
                        fut.set_result(params)
                        self._waiters.remove((name, fut))
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CdpError("the browser connection closed"))

    async def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True, timeout: float = 15) -> Any:
        """One CDP command; its result (raises :class:`CdpError` on an error answer)."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session and self.session is not None:
            msg["sessionId"] = self.session
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self.ws.send(json.dumps(msg))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise CdpError(f"no answer to {method} within {timeout} s") from None
        finally:
            self._pending.pop(msg_id, None)

    def expect(self, method: str) -> asyncio.Future[Any]:
        """A future for the next event ``method`` (make it before the action that causes it)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, fut))
        return fut

    async def goto(self, url: str, timeout: float = 15) -> None:
        """Navigate and wait for the load event."""
        loaded = self.expect("Page.loadEventFired")
        result = await self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(loaded, timeout)

    async def js(self, expression: str, timeout: float = 15) -> Any:
        """Evaluate ``expression`` in the page (promises awaited); its JSON value."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout + 1,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{text}\npage console: {self.console[-10:]}")
        return result["result"].get("value")

    async def wait(self, predicate: str, what: str, timeout: float = 15) -> Any:
        """Wait until the JS expression ``predicate`` is truthy, checked on every DOM change."""
        script = f"""new Promise((resolve, reject) => {{
          const check = () => {{
            let v; try {{ v = ({predicate}); }} catch (e) {{ v = null; }}
            if (v) {{ obs.disconnect(); clearTimeout(timer); resolve(v); }}
          }};
          const obs = new MutationObserver(check);
          obs.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});
          const timer = setTimeout(() => {{ obs.disconnect(); reject(new Error({json.dumps('timed out waiting for ' + what)})); }}, {int(timeout * 1000)});
          check();
        }})"""
        return await self.js(script, timeout + 2)

    async def screenshot(self) -> bytes:
        """A PNG of the page as it is now."""
        result = await self.send("Page.captureScreenshot", {"format": "png"}, timeout=30)
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        """Close the browser (and kill it if it does not go)."""
        with contextlib.suppress(Exception):
            await self.send("Browser.close", session=False, timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self._reader.cancel()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
