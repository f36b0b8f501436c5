"""Fuzz target: the HTTP request path of the picows host, from raw bytes to the API.

Each input is the byte stream of one client connection (the first byte says where
to cut it into two reads). It goes through the front door (httptools head parse,
body, pipelining, the WebSocket upgrade checks) into a real :class:`Pusher`
service: the route table, the head check and the request signature check (the
API's clock is fixed, so the seed corpus's signed requests stay valid).

Findings: any exception out of the front door, any 5xx answer (client input must
never produce one), a queue or buffer over its bound.

Run: ``python fuzz/fuzz_http.py fuzz/corpus/http -max_total_time=60``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["soketi_impl"]):
    from soketi_impl.config import load_config
    from soketi_impl.hosts.picows import FrontDoor, FrontDoorOptions
    from soketi_impl.router import Router
    from soketi_impl.service import Pusher

#: The app and the clock of the seed corpus (fuzz/seeds.py signs with them).
APP_ID, APP_KEY, APP_SECRET, NOW = "123456", "fuzz-key", "fuzz-secret", 1_700_000_000
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


class FakeTransport:
    """Just enough of an asyncio transport for the front door; records what is written."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False
        self.handed_off = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Door(FrontDoor):
    """A front door whose WebSocket hand-off only records that it happened."""

    __slots__ = ()

    def _hand_off(self, transport: Any, response: bytes, rest: bytes, path: str) -> None:
        transport.handed_off = True


logging.disable(logging.CRITICAL)  # a 5xx is found from the answer, not the log
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
env = {"SOKETI_DEFAULT_APP_ID": APP_ID, "SOKETI_DEFAULT_APP_KEY": APP_KEY, "SOKETI_DEFAULT_APP_SECRET": APP_SECRET}
service = Pusher(load_config(None, environ=env))
service._api_object.clock = lambda: float(NOW)  # the seeds' timestamps stay fresh
options = FrontDoorOptions(max_body=64 * 1024, max_pipeline=8)
# as the server wires them: the signed trigger's fast path first (twins/_trigger)
handle_http, check_http_head = service.http_entry_points()
options.express = service.http_express()  # (a whole signed trigger, no request object)


async def _feed(data: bytes) -> FakeTransport:
    transport = FakeTransport()
    door = Door(Router(), handle_http, options, lambda: "1.1", check_http_head)
    door.connection_made(transport)  # type: ignore[arg-type]
    cut = data[0] if data else 0
    for chunk in (data[1:1 + cut], data[1 + cut:]):
        if chunk and not transport.closing:
            door.data_received(chunk)
        for _ in range(50):  # let async handlers finish
            if not door.flags & 2:  # _BUSY
                break
            await asyncio.sleep(0)
        queued, held = door.pending()
        if queued > options.max_pipeline or held > len(data) + len(transport.out) + 4096:
            raise AssertionError(f"front door over its bounds: {queued} queued, {held} bytes held")
    door.connection_lost(None)
    if door.pending() != (0, 0):
        raise AssertionError(f"front door still holds {door.pending()} after close")
    return transport


def test_one_input(data: bytes) -> None:
    """libFuzzer entry point."""
    transport = loop.run_until_complete(_feed(data))
    for status in _STATUS.findall(bytes(transport.out)):
        if int(status) >= 500:
            raise AssertionError(f"client input got a {int(status)}:\n{bytes(transport.out)[:2000]!r}")


def main() -> None:
    """Run libFuzzer with this target (arguments as libFuzzer takes them)."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
