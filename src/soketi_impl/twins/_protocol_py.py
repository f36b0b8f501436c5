"""Pusher message parsing and encoding: the pure-Python twin and test oracle.

The compiled twin ``_protocol_c`` exports the same names with the same
behaviour (same return values, same exception types and messages); property
tests in ``tests/test_protocol.py`` hold the two together. Keep this file the
readable one: when in doubt about what the C code must do, this is the answer.

Frames are UTF-8 JSON objects ``{"event": ..., "channel": ..., "data": ...}``.
Client-sent ``data`` may be any JSON value; in server-to-client events ``data``
is always a JSON-encoded *string* (clients parse it a second time).
"""

from __future__ import annotations

import re
from typing import Final

import orjson

from ..errors import ProtocolError

__all__ = [
    "ENCRYPTED",
    "PRESENCE",
    "PRIVATE",
    "PUBLIC",
    "SERVER_TO_USER",
    "channel_kind",
    "encode_error",
    "encode_event",
    "is_cache_channel",
    "parse_client_message",
    "raw_data",
    "valid_channel_name",
]

#: Channel kinds returned by :func:`channel_kind`.
PUBLIC: Final = 0
PRIVATE: Final = 1
PRESENCE: Final = 2
ENCRYPTED: Final = 3
SERVER_TO_USER: Final = 4

SERVER_TO_USER_PREFIX: Final = "#server-to-user-"

# fullmatch, not match with "$": "$" also matches before a trailing newline.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_\-=@,.;]+")
_CACHE_PREFIXES: Final = ("cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-")

# Error messages, shared word for word with the C twin.
MSG_NOT_UTF8: Final = "Message is not valid UTF-8"
MSG_NOT_JSON: Final = "Message is not valid JSON"
MSG_NOT_OBJECT: Final = "Message must be a JSON object"
MSG_NO_EVENT: Final = "Message has no event name"
MSG_EVENT_TYPE: Final = "Event name must be a string"
MSG_CHANNEL_TYPE: Final = "Channel must be a string"


def _check_str(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")


def channel_kind(name: str) -> int:
    """The kind of channel ``name`` is, from its prefix (matched at the start only).

    >>> channel_kind("private-encrypted-chat") == ENCRYPTED
    True
    >>> channel_kind("presence-cache-room") == PRESENCE
    True
    >>> channel_kind("xprivate-room") == PUBLIC
    True
    """
    _check_str("channel name", name)
    if name.startswith("private-"):
        # "private-encrypted-" is a longer "private-" prefix, so test it inside.
        if name.startswith("encrypted-", 8):
            return ENCRYPTED
        return PRIVATE
    if name.startswith("presence-"):
        return PRESENCE
    if name.startswith(SERVER_TO_USER_PREFIX):
        return SERVER_TO_USER
    return PUBLIC


def is_cache_channel(name: str) -> bool:
    """True for ``cache-``, ``private-cache-``, ``private-encrypted-cache-`` and
    ``presence-cache-`` channels.

    >>> is_cache_channel("private-encrypted-cache-x"), is_cache_channel("cachex")
    (True, False)
    """
    _check_str("channel name", name)
    return name.startswith(_CACHE_PREFIXES)


def valid_channel_name(name: str, max_length: int = 200) -> bool:
    """True when ``name`` is a usable channel name.

    It must be non-empty, at most ``max_length`` characters, and either made only
    of ``A-Z a-z 0-9 _ - = @ , . ;`` or be ``#server-to-user-`` followed by a
    non-empty user id of those characters.

    >>> valid_channel_name("presence-room.1"), valid_channel_name("bad name")
    (True, False)
    >>> valid_channel_name("#server-to-user-42"), valid_channel_name("#server-to-user-")
    (True, False)
    """
    _check_str("channel name", name)
    n = len(name)
    # Length first: a 10 MB name must be refused without being scanned.
    if n == 0 or n > max_length:
        return False
    if name.startswith(SERVER_TO_USER_PREFIX):
        return _NAME_RE.fullmatch(name, len(SERVER_TO_USER_PREFIX)) is not None
    return _NAME_RE.fullmatch(name) is not None


def _utf8_size(raw: str) -> int:
    """Bytes ``raw`` takes in UTF-8; a lone surrogate counts 3, as its encoding would."""
    if raw.isascii():
        return len(raw)
    return len(raw.encode("utf-8", "surrogatepass"))


def _is_utf8(raw: bytes | bytearray | memoryview | str) -> bool:
    try:
        if isinstance(raw, str):
            raw.encode("utf-8")
        else:
            bytes(raw).decode("utf-8")
    except UnicodeError:
        return False
    return True


# A JSON number token, outside strings: the string alternative comes first so the
# scan steps over strings whole. The look-arounds keep a token that runs into other
# number characters ("1e400e5", "--1e400") as it is: that text is invalid anyway.
_TOKEN_RE: Final = re.compile(
    r'"[^"\\]*(?:\\.[^"\\]*)*"|(?<![\w.+-])-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?(?![\w.+-])'
)
_DBL_MAX: Final = "1.7976931348623157e308"


def _clamp_number(m: re.Match[str]) -> str:
    token = m.group()
    if token[0] == '"' or float(token) not in (float("inf"), float("-inf")):
        return token
    return "-" + _DBL_MAX if token[0] == "-" else _DBL_MAX


def loads_after_error(raw: bytes | bytearray | memoryview | str, exc: ValueError) -> object:
    """The error path of :func:`parse_client_message`, shared word for word by both twins.

    orjson refuses a number beyond double range (``1e400``) although it is valid
    JSON, and Pusher forwards client-event data as sent: such a number is read as
    the largest double of its sign (the nearest value JSON can spell; ``1e-400``
    already reads as 0.0), and the raw text still goes out unchanged
    (:func:`raw_data`). Everything else raises the reference's ProtocolError.
    """
    if not _is_utf8(raw):
        raise ProtocolError(MSG_NOT_UTF8) from None
    if "infinity" not in str(exc):
        raise ProtocolError(MSG_NOT_JSON) from None
    if isinstance(raw, str):
        text = raw
    else:
        text = bytes(raw).decode("utf-8")
    try:
        return orjson.loads(_TOKEN_RE.sub(_clamp_number, text))
    except orjson.JSONDecodeError:
        raise ProtocolError(MSG_NOT_JSON) from None


def parse_client_message(
    raw: bytes | bytearray | memoryview | str, max_size: int = 102400
) -> tuple[str, str | None, object]:
    """Parse one client frame into ``(event, channel, data)``.

    ``channel`` is None when absent or null; ``data`` is whatever the client sent
    (object, string, number ...) or None when absent. Anything malformed raises
    :class:`~soketi_impl.errors.ProtocolError` whose message says what was wrong.
    ``raw`` of another type than bytes, bytearray, memoryview or str is a
    programming error: TypeError.

    >>> parse_client_message(b'{"event":"pusher:ping","data":{}}')
    ('pusher:ping', None, {})
    """
    if isinstance(raw, bytes):
        size = len(raw)
    elif isinstance(raw, str):
        size = _utf8_size(raw)
    elif isinstance(raw, bytearray):
        size = len(raw)
    elif isinstance(raw, memoryview):
        size = raw.nbytes
    else:
        raise TypeError(f"raw must be bytes or str, not {type(raw).__name__}")
    if size > max_size:
        raise ProtocolError(f"Message too large ({size} bytes, limit {max_size})")
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = loads_after_error(raw, exc)
    if not isinstance(msg, dict):
        raise ProtocolError(MSG_NOT_OBJECT)
    event = msg.get("event")
    if not isinstance(event, str):
        raise ProtocolError(MSG_NO_EVENT if event is None else MSG_EVENT_TYPE)
    if not event:
        raise ProtocolError(MSG_NO_EVENT)
    channel = msg.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise ProtocolError(MSG_CHANNEL_TYPE)
    return event, channel, msg.get("data")


def encode_event(
    event: str, channel: str | None, data: object, user_id: str | None = None
) -> bytes:
    """The server-to-client frame ``{"event","channel","data","user_id"}`` as compact JSON.

    ``channel``, ``data`` and ``user_id`` are left out when None. ``data`` always
    becomes a JSON *string*: a ``str`` is taken as the already-encoded payload,
    ``bytes`` are decoded as UTF-8 and taken likewise, anything else is encoded
    with orjson first. A lone surrogate anywhere raises orjson's TypeError.

    >>> encode_event("greet", "chat", {"a": 1})
    b'{"event":"greet","channel":"chat","data":"{\\\\"a\\\\":1}"}'
    """
    _check_str("event", event)
    if channel is not None:
        _check_str("channel", channel)
    if user_id is not None:
        _check_str("user_id", user_id)
    msg: dict[str, object] = {"event": event}
    if channel is not None:
        msg["channel"] = channel
    if data is not None:
        if isinstance(data, str):
            msg["data"] = data
        elif isinstance(data, bytes):
            msg["data"] = data.decode("utf-8")
        else:
            msg["data"] = orjson.dumps(data).decode("utf-8")
    if user_id is not None:
        msg["user_id"] = user_id
    return orjson.dumps(msg)


def encode_error(code: int | None, message: str) -> bytes:
    """A ``pusher:error`` frame; its ``data`` is an object ``{"code","message"}``.

    >>> encode_error(4301, "Too many events")
    b'{"event":"pusher:error","data":{"code":4301,"message":"Too many events"}}'
    """
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise TypeError(f"code must be int or None, not {type(code).__name__}")
    _check_str("message", message)
    return orjson.dumps({"event": "pusher:error", "data": {"code": code, "message": message}})


# ---------------------------------------------------------------- raw data span

_WS = b" \t\r\n"
_DATA_KEY = b'"data"'


def _skip_ws(raw: bytes, i: int) -> int:
    n = len(raw)
    while i < n and raw[i] in _WS:
        i += 1
    return i


def _skip_string(raw: bytes, i: int) -> int:
    """``raw[i]`` is an opening quote; returns the index just past the closing one."""
    i += 1
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == 0x5C:  # backslash: the next byte is escaped
            i += 2
        elif c == 0x22:
            return i + 1
        else:
            i += 1
    return n


def _skip_value(raw: bytes, i: int) -> int:
    """Index just past the JSON value that starts at ``raw[i]``."""
    n = len(raw)
    c = raw[i]
    if c == 0x22:
        return _skip_string(raw, i)
    if c == 0x7B or c == 0x5B:  # { or [: count brackets, skipping strings
        depth = 0
        while i < n:
            c = raw[i]
            if c == 0x22:
                i = _skip_string(raw, i)
                continue
            if c == 0x7B or c == 0x5B:
                depth += 1
            elif c == 0x7D or c == 0x5D:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    while i < n and raw[i] not in b",}] \t\r\n":  # number, true, false, null
        i += 1
    return i


def _is_data_key(key: bytes) -> bool:
    if key == _DATA_KEY:
        return True
    # an escaped spelling ("d\u0061ta") is the same key to a JSON parser
    return b"\\" in key and orjson.loads(key) == "data"


def raw_data(raw: bytes | bytearray | memoryview | str) -> str | None:
    """The exact JSON text of the top-level ``data`` value of a client frame, or ``None``.

    Call it only on a frame :func:`parse_client_message` accepted (a JSON object).
    Forwarding this text, rather than re-encoding the parsed value, keeps what the
    client sent byte for byte: integers beyond 64 bits, ``1e400``, number spellings.
    With duplicate keys the last ``data`` wins, as in the parser.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    buf = bytes(raw)
    i = _skip_ws(buf, 0)
    if i >= len(buf) or buf[i] != 0x7B:
        return None
    i += 1
    found: tuple[int, int] | None = None
    n = len(buf)
    while True:
        i = _skip_ws(buf, i)
        if i >= n or buf[i] != 0x22:
            break
        key_start = i
        i = _skip_string(buf, i)
        key = buf[key_start:i]
        i = _skip_ws(buf, i)
        if i >= n or buf[i] != 0x3A:
            break
        i = _skip_ws(buf, i + 1)
        if i >= n:
            break
        start = i
        i = _skip_value(buf, i)
        if _is_data_key(key):
            found = (start, i)
        i = _skip_ws(buf, i)
        if i >= n or buf[i] != 0x2C:
            break
        i += 1
    if found is None:
        return None
    return buf[found[0]:found[1]].decode("utf-8")
