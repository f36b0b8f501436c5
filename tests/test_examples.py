"""The examples are real servers: start each, connect two clients, broadcast."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("example", ["broadcast_picows.py", "broadcast_websockets.py"])
async def test_broadcast_example(example: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / example), "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("listening on "), line
        url = line.split()[-1]
        async with connect(url) as a, connect(url) as b:
            assert await asyncio.wait_for(a.recv(), 5) == "Hello!"
            assert await asyncio.wait_for(b.recv(), 5) == "Hello!"
            await a.send("from a")
            assert await asyncio.wait_for(a.recv(), 5) == "from a"
            assert await asyncio.wait_for(b.recv(), 5) == "from a"
        # after both left, a third client gets the greeting and its own echo only
        async with connect(url) as c:
            assert await asyncio.wait_for(c.recv(), 5) == "Hello!"
            await c.send("solo")
            assert await asyncio.wait_for(c.recv(), 5) == "solo"
    finally:
        proc.kill()
        await proc.wait()
