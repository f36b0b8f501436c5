"""The library examples (hooks, encrypted trigger, auth endpoint) run as real servers.

Each example is started as a subprocess on both builds (compiled twins and pure
Python), configured by soketi's variables, and a real pusher-js client talks to it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pusher
import pytest

from conftest import APP_ID, APP_KEY, APP_SECRET, base_env, free_port
from pjs_listen import Listener

ROOT = Path(__file__).resolve().parent.parent
MASTER_B64 = base64.b64encode(bytes(range(32))).decode()

pytestmark = [pytest.mark.clients, pytest.mark.timeout(90)]


class Example:
    """A running example: ``port`` from its "listening on port N" line, ``line()`` its next line."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port

    async def line_matching(self, pred: Callable[[str], bool], timeout: float = 15) -> str:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert raw, "the example exited"
            if pred(raw.decode()):
                return raw.decode().rstrip("\n")


@asynccontextmanager
async def run_example(name: str, mode: str, **env: str) -> AsyncIterator[Example]:
    full = {**base_env(0, **env)}
    full.pop("SOKETI_IMPL_NO_EXTENSIONS", None)
    if mode == "py":
        full["SOKETI_IMPL_NO_EXTENSIONS"] = "1"
    full["PYTHONUNBUFFERED"] = "1"
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / name), env=full, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if "Running on http://" in first:  # aiohttp's web.run_app
            yield Example(proc, int(first.split(":")[-1].split()[0]))
        else:
            assert first.startswith("listening on port "), first
            yield Example(proc, int(first.split()[-1]))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_hooks_example_prints_subscriptions_and_client_events(server_mode: str, node_modules: Path) -> None:
    async with run_example("hooks_picows.py", server_mode) as example:
        client = await Listener.start(
            example.port, channels=["private-chat"],
            clientEvents=[{"channel": "private-chat", "event": "client-typing", "data": {"who": "ann"}}],
        )
        try:
            ready = await client.until("ready")
            assert ready
            sub = await example.line_matching(lambda s: "subscribed to" in s)
            assert sub.endswith(" subscribed to private-chat")
            sid = sub.split()[0]
            said = await example.line_matching(lambda s: " sent " in s)
            assert said == f"{sid} sent client-typing on private-chat: {{'who': 'ann'}}"
        finally:
            await client.close()


async def test_encrypted_example_sends_what_only_pusher_js_can_read(server_mode: str, node_modules: Path) -> None:
    env = {"SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64": MASTER_B64}
    async with run_example("encrypted_trigger.py", server_mode, **env) as example:
        client = await Listener.start(
            example.port, channels=["private-encrypted-vault"], masterKey=MASTER_B64, until="welcome",
        )
        try:
            await client.until("done")
        finally:
            await client.close()
    (welcome,) = client.events()
    assert welcome["data"] == {"secret": "only you can read this"}


async def test_auth_endpoint_example_serves_pusher_and_signs_for_pusher_js(
    server_mode: str, node_modules: Path
) -> None:
    async with run_example("auth_endpoint_aiohttp.py", server_mode, PORT=str(free_port())) as example:
        endpoint = f"http://127.0.0.1:{example.port}/pusher/auth"
        client = await Listener.start(
            example.port, channels=["private-notes", "presence-room"], authEndpoint=endpoint,
            authHeaders={"X-User": "ann"}, until="hello",
        )
        try:
            await client.until("ready")
            # The same app serves the HTTP API: the official SDK triggers through it.
            sdk = pusher.Pusher(
                app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=example.port, ssl=False,
            )
            await asyncio.to_thread(sdk.trigger, "presence-room", "hello", {"to": "ann"})
            await client.until("done")
        finally:
            await client.close()
        assert [(e["channel"], e["data"]) for e in client.events()] == [("presence-room", {"to": "ann"})]
        # Without a session the endpoint refuses, and pusher-js reports the 403.
        anon = await Listener.start(example.port, channels=["private-notes"], authEndpoint=endpoint, allowErrors=True)
        try:
            err = await anon.until("sub_error")
        finally:
            await anon.close()
        assert (err["channel"], err["status"]) == ("private-notes", 403)
