"""``Link`` (what the ASGI and aiohttp hosts share), without sockets: a fake framework send.

The framework's send is an async function the test controls: it can block (a client
that does not read) or fail (a socket that went away).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from soketi_impl.connection import Connection
from soketi_impl.hosts.link import Link
from soketi_impl.router import Router


class Framework:
    """Records what a host's framework was asked to send; ``gate`` blocks its sends."""

    def __init__(self) -> None:
        self.out: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False
        self.aborted = 0

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        if self.fail:
            raise ConnectionResetError("gone")
        self.out.append(text)

    async def send_close(self, code: int, reason: str) -> None:
        await self.gate.wait()
        self.out.append(("close", code, reason))

    def abort(self) -> None:
        self.aborted += 1


def make(limit: int = 4 * 1024 * 1024, close_timeout: float = 10.0) -> tuple[Link, Framework, list[Any]]:
    router = Router()
    seen: list[Any] = []
    router.on_new_connection(lambda conn: seen.append(("new", conn.path)))
    router.on_message(lambda conn, msg: seen.append(("msg", msg)))
    router.on_connection_closed(lambda conn, code, reason: seen.append(("closed", code, reason)))
    fw = Framework()
    link = Link(router, "/app/key?protocol=7", fw.send_text, fw.send_close, fw.abort,
                limit=limit, close_timeout=close_timeout)
    return link, fw, seen


async def settle(link: Link) -> None:
    """Until the writer task has nothing left to do."""
    for _ in range(100):
        await asyncio.sleep(0)
        if link._writer is None:
            return
    raise AssertionError("the writer did not finish")


async def test_text_frames_in_order_and_close_last() -> None:
    link, fw, seen = make()
    link.open()
    assert seen == [("new", "/app/key?protocol=7")]
    assert isinstance(link.conn, Connection) and link.conn.path == "/app/key?protocol=7"
    link.conn.send_nowait(b'{"event":"a"}')  # bytes from the core go out as text
    await link.conn.send('{"event":"b"}')
    await link.conn.close(4009, "Unauthorized.")
    link.conn.send_nowait("after the close")  # dropped
    await settle(link)
    assert fw.out == ['{"event":"a"}', '{"event":"b"}', ("close", 4009, "Unauthorized.")]
    assert all(isinstance(m, str) for m in fw.out[:2])
    # the core heard once, with the code the server closed with
    link.finish(4009, None)
    assert [s for s in seen if s[0] == "closed"] == [("closed", 4009, "Unauthorized.")]


async def test_over_the_limit_drops_the_queue_and_closes_4100() -> None:
    link, fw, seen = make(limit=1000)
    link.open()
    fw.gate.clear()  # the client stopped reading
    link.send("x" * 400)  # in flight
    await asyncio.sleep(0)
    for _ in range(3):
        link.send("y" * 400)
    assert link.closing and link.queued == 0
    await asyncio.sleep(0)  # the core is told on the next loop turn
    assert seen[-1] == ("closed", 4100, "Over capacity: the client is not reading fast enough.")
    fw.gate.set()
    await settle(link)
    assert fw.out == ["x" * 400, ("close", 4100, "Over capacity: the client is not reading fast enough.")]


async def test_messages_after_the_close_decision_do_not_reach_the_core() -> None:
    link, fw, seen = make()
    link.open()
    link.close(4200, "restart")
    link.receive('{"event":"pusher:ping"}')
    await settle(link)
    assert ("msg", '{"event":"pusher:ping"}') not in seen


async def test_a_failed_send_ends_quietly_and_finish_reports_once() -> None:
    link, fw, seen = make()
    link.open()
    fw.fail = True
    link.send("lost")
    await settle(link)
    assert link.conn.closed and link.closing
    link.finish(1006, None)
    link.finish(1006, None)
    assert [s for s in seen if s[0] == "closed"] == [("closed", 1006, None)]


async def test_unanswered_close_is_aborted_after_the_timeout() -> None:
    link, fw, seen = make(close_timeout=0.05)
    link.open()
    fw.gate.clear()
    link.send("stuck")
    link.close(4100, "slow")
    await asyncio.wait_for(_until(lambda: fw.aborted == 1), 5)
    assert link.gave_up
    link.finish(1006, None)  # the host's finally: writer cancelled, nothing more
    await asyncio.sleep(0)
    assert link._writer is None or link._writer.cancelled() or link._writer.done()


async def test_close_reason_fits_a_control_frame() -> None:
    link, fw, _ = make()
    link.close(1000, "é" * 100)  # 200 bytes of UTF-8
    await settle(link)
    _, _, reason = fw.out[-1]
    assert len(reason.encode()) <= 123


async def _until(pred: Any) -> None:
    while not pred():
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("message", ["plain", b"bytes \xc3\xa9"])
async def test_send_accepts_str_and_bytes(message: str | bytes) -> None:
    link, fw, _ = make()
    link.send(message)
    await settle(link)
    assert fw.out == [message if isinstance(message, str) else message.decode()]
