"""picows glue, pure-Python twin of ``_wsglue_c``.

Python cannot reach picows's C buffers, so here :func:`shrink_idle_buffers` does
nothing and says so by returning 0, and :func:`drop_handshake_leftovers` only
empties the upgrade request and response. :func:`data_payload` reads the frame through
picows's Python API and gives the same answers as the compiled twin.
"""

from __future__ import annotations

from typing import Any

from picows import WSMsgType

__all__ = [
    "IDLE_READ_BUFFER", "IDLE_WRITE_BUFFER", "data_payload", "drop_handshake_leftovers",
    "drop_protocol_leftovers", "shrink_idle_buffers", "shrink_read_buffer",
]

#: Capacity the compiled twin leaves picows's per-connection write buffer with.
IDLE_WRITE_BUFFER = 64

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY


#: Capacity the compiled twin leaves an idle picows read buffer with.
IDLE_READ_BUFFER = 768


def shrink_read_buffer(ws: Any) -> int:
    """Shrink an idle picows read buffer; returns bytes freed (always 0 here)."""
    return 0


def drop_protocol_leftovers(ws: Any) -> int:
    """Let go of a picows protocol's unused objects; returns how many (always 0 here)."""
    return 0


def shrink_idle_buffers(transport: Any) -> int:
    """Give back the idle part of a picows transport's write buffer; returns bytes freed."""
    return 0


def drop_handshake_leftovers(transport: Any) -> int:
    """What Python can do of the compiled twin's work: the transport's slots are
    read-only here, so empty the upgrade request and response (their header maps
    are ~1.5 KB per connection that nothing reads after the upgrade). Returns 0:
    no object is let go."""
    for message in (transport.request, transport.response):
        if message is not None:
            message.headers = message.version = None
            if message is transport.request:
                message.path = message.method = None
    return 0


def data_payload(frame: Any) -> bytes | None:
    """The payload of a whole, clean data frame, else ``None``.

    Whole and clean: a final (FIN) TEXT or BINARY frame with no RSV bit set and a
    payload that is valid UTF-8. Every other frame (control frames, fragments, RSV
    bits, bad UTF-8) gives ``None`` and takes the listener's slow path, which says
    what is wrong with it. Binary frames count as text: uWebSockets, and so soketi,
    parses them as JSON too.
    """
    kind = frame.msg_type
    if (kind != _TEXT and kind != _BINARY) or not frame.fin or frame.rsv1 or frame.rsv2 or frame.rsv3:
        return None
    payload: bytes = frame.get_payload_as_bytes()
    if payload.isascii():
        return payload
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return payload
