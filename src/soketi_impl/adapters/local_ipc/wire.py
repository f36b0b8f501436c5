"""The hub's framing: length-prefixed frames over a unix stream socket.

A frame is a 4-byte big-endian length, then the body. The body's first byte says
what it is:

- ``E`` an event frame: ``E`` + a JSON header ``[app id, channel, except socket id,
  cache]`` + ``\\n`` + the encoded client frame, as the core delivered it. The hub
  forwards the whole frame to the other workers without reading it.
- ``J`` a control message: ``J`` + one JSON object (orjson) with its type in ``"t"``
  (see :mod:`.hub` for the list).

A frame larger than :data:`MAX_FRAME` is never sent (the sender drops it with a
warning) and, received, ends the connection (:class:`FrameTooLarge`): a reader's
buffer never holds more than one frame of that size.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, cast

import orjson

__all__ = [
    "CONTROL",
    "EVENT",
    "MAX_FRAME",
    "FrameReader",
    "FrameTooLarge",
    "FramedProtocol",
    "control",
    "event",
    "kind",
    "read_control",
    "read_event",
]

#: the largest frame body, in bytes (a query's answer with many channels is the largest)
MAX_FRAME = 32 * 1024 * 1024

EVENT = ord("E")
CONTROL = ord("J")

_LENGTH = struct.Struct("!I")


class FrameTooLarge(ValueError):
    """A frame announced a body larger than :data:`MAX_FRAME`."""


def control(message: dict[str, Any]) -> bytes:
    """One framed control message."""
    body = b"J" + orjson.dumps(message)
    return _LENGTH.pack(len(body)) + body


def event(app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool) -> bytes:
    """One framed event (``payload``: the encoded client frame)."""
    header = orjson.dumps([app_id, channel, except_socket_id, cache])
    return _LENGTH.pack(len(header) + len(payload) + 2) + b"E" + header + b"\n" + payload


def kind(frame: bytes) -> int:
    """What a whole frame (length prefix included) carries: :data:`EVENT` or :data:`CONTROL`."""
    return frame[4]


def read_control(frame: bytes) -> dict[str, Any]:
    """The message of a whole ``J`` frame; ValueError if it is not a JSON object with a type."""
    message = orjson.loads(memoryview(frame)[5:])
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ValueError("a control message is a JSON object with a type 't'")
    return message


def read_event(frame: bytes) -> tuple[str, str, bytes, str | None, bool]:
    """(app id, channel, payload, except socket id, cache) of a whole ``E`` frame."""
    end = frame.index(b"\n", 5)
    app_id, channel, except_socket_id, cache = orjson.loads(memoryview(frame)[5:end])
    if not isinstance(app_id, str) or not isinstance(channel, str):
        raise ValueError("an event needs an app id and a channel")
    if except_socket_id is not None and not isinstance(except_socket_id, str):
        raise ValueError("an event's excluded socket id is a string or null")
    return app_id, channel, frame[end + 1:], except_socket_id, bool(cache)


class FrameReader:
    """Cuts a byte stream into whole frames.

    ``feed(data)`` returns the frames the data completed, each with its length
    prefix, so a relay forwards one as it is; :func:`kind`, :func:`read_control`
    and :func:`read_event` read them.
    """

    __slots__ = ("_buffer", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """The complete frames (length prefix included) in what was fed so far."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        at, end = 0, len(buffer)
        while end - at >= 4:
            (size,) = _LENGTH.unpack_from(buffer, at)
            if size > self.max_frame or size == 0:
                raise FrameTooLarge(f"a frame of {size} bytes (at most {self.max_frame})")
            if end - at - 4 < size:
                break
            frames.append(bytes(buffer[at:at + 4 + size]))
            at += 4 + size
        if at:
            del buffer[:at]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buffer)


class FramedProtocol(asyncio.Protocol):
    """A unix stream connection that speaks frames: the hub's side and a worker's.

    A subclass sets :attr:`log`, :attr:`index` and :attr:`reader` and implements
    :meth:`frame_received`; a frame over the bound ends the connection, and a frame
    that cannot be handled is logged and skipped (it never stops the other side).
    """

    log: logging.Logger
    index: int
    reader: FrameReader
    transport: asyncio.Transport | None
    #: how the log lines name the other side ("the hub", "worker 1")
    peer_name = "the peer"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's unix transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FrameTooLarge as exc:
            self.log.error("worker %d: %s sent %s; closing the connection", self.index, self.peer_name, exc)
            assert self.transport is not None
            self.transport.abort()
            return
        for frame in frames:
            try:
                self.frame_received(frame)
            except Exception:  # a bad frame must not stop this side
                self.log.exception("worker %d: a frame from %s could not be handled", self.index, self.peer_name)

    def frame_received(self, frame: bytes) -> None:
        """One whole frame (length prefix included)."""
        raise NotImplementedError
