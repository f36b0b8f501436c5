"""picows glue: the idle write buffer is given back, and picows's own sends still work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import ModuleType
from typing import Any

from picows import WSListener, WSMsgType, ws_create_server
from websockets.asyncio.client import connect


async def test_shrink_then_send_large_frames(twin: Callable[[str], ModuleType]) -> None:
    glue = twin("wsglue")
    freed: list[int] = []

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: Any) -> None:
            freed.append(glue.shrink_idle_buffers(transport))
            freed.append(glue.shrink_idle_buffers(transport))  # twice: nothing more to give

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                # picows frames this itself, in the buffer that was just shrunk
                transport.send(WSMsgType.TEXT, frame.get_payload_as_bytes() * 2)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await ws_create_server(lambda r: Echo(), "127.0.0.1", 0, use_aiofastnet=False)
    port = server.sockets[0].getsockname()[1]
    try:
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
            for size in (10, 200, 70_000):
                await ws.send("x" * size)
                assert await asyncio.wait_for(ws.recv(), 10) == "x" * (2 * size)
            await ws.ping()
    finally:
        server.close()
        await server.wait_closed()
    expected_first = 1024 - glue.IDLE_WRITE_BUFFER if glue.__name__.endswith("_c") else 0
    assert freed == [expected_first, 0]
