"""Micro benchmarks of the protocol twins, C against py side by side.

Run: ``PYTHONPATH=src pytest bench/test_bench_protocol.py -n 0 --benchmark-enable``
(each case is its own benchmark group, so the C row sits next to its py
baseline). ``bench/protocol_ratio.py`` measures the same cases without pytest
and writes ``bench/results/micro_protocol.json`` with the C/py ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import orjson
import pytest

from soketi_impl.twins import _protocol_py, _speedups

# Frames as the real clients send them.
SUBSCRIBE = (
    b'{"event":"pusher:subscribe","data":{"auth":"app-key:'
    + b"0123456789abcdef" * 4
    + b'","channel":"private-chat"}}'
)
PRESENCE_SUBSCRIBE = orjson.dumps(
    {
        "event": "pusher:subscribe",
        "data": {
            "auth": "app-key:" + "0123456789abcdef" * 4,
            "channel_data": '{"user_id":"42","user_info":{"name":"Ann"}}',
            "channel": "presence-room",
        },
    }
)
CLIENT_EVENT = b'{"event":"client-typing","channel":"private-chat","data":{"user":"alice","text":"hello world"}}'
CURSOR_EVENT = b'{"event":"client-cursor","channel":"presence-doc","data":{"x":0.4521,"y":1203.25,"z":-3.5e-2}}'
PING = b'{"event":"pusher:ping","data":{}}'
# A 64-byte JSON payload, as the HTTP API hands it over (already encoded)...
PAYLOAD_64 = orjson.dumps({"message": "x" * 50}).decode()
assert len(PAYLOAD_64) == 64
# ... and as an object the server encodes itself.
OBJECT_64 = {"message": "x" * 50}

#: parse case -> its frame, for the orjson.loads baseline in protocol_ratio.py
FRAMES: dict[str, bytes] = {
    "parse_subscribe": SUBSCRIBE,
    "parse_presence_subscribe": PRESENCE_SUBSCRIBE,
    "parse_client_event": CLIENT_EVENT,
    "parse_client_event_floats": CURSOR_EVENT,
    "parse_ping": PING,
}

#: name -> (what it times, call on a module)
CASES: dict[str, tuple[str, Callable[[Any], object]]] = {
    "parse_subscribe": (
        "parse_client_message(private subscribe frame)",
        lambda m: m.parse_client_message(SUBSCRIBE),
    ),
    "parse_presence_subscribe": (
        "parse_client_message(presence subscribe frame)",
        lambda m: m.parse_client_message(PRESENCE_SUBSCRIBE),
    ),
    "parse_client_event": (
        "parse_client_message(client event)",
        lambda m: m.parse_client_message(CLIENT_EVENT),
    ),
    "parse_client_event_floats": (
        "parse_client_message(client event with floats)",
        lambda m: m.parse_client_message(CURSOR_EVENT),
    ),
    "parse_ping": ("parse_client_message(pusher:ping)", lambda m: m.parse_client_message(PING)),
    "encode_event_64B_str": (
        "encode_event(64-byte JSON text payload)",
        lambda m: m.encode_event("my-event", "my-channel", PAYLOAD_64),
    ),
    "encode_event_64B_object": (
        "encode_event(object encoding to 64 bytes)",
        lambda m: m.encode_event("my-event", "my-channel", OBJECT_64),
    ),
    "encode_error": (
        "encode_error(4301, message)",
        lambda m: m.encode_error(4301, "Client event rejected"),
    ),
    "channel_kind": (
        "channel_kind(presence-cache-room)",
        lambda m: m.channel_kind("presence-cache-room"),
    ),
    "valid_channel_name": (
        "valid_channel_name(private-encrypted-chat-42)",
        lambda m: m.valid_channel_name("private-encrypted-chat-42"),
    ),
}


def _modules() -> list[Any]:
    params: list[Any] = [pytest.param(_protocol_py, id="py")]
    if _speedups.NO_EXTENSIONS:
        params.append(pytest.param(None, id="c", marks=pytest.mark.skip("no extensions")))
    else:
        from soketi_impl.twins import _protocol_c

        params.append(pytest.param(_protocol_c, id="c"))
    return params


@pytest.mark.parametrize("mod", _modules())
@pytest.mark.parametrize("case", list(CASES))
def test_protocol(benchmark: Any, case: str, mod: ModuleType) -> None:
    what, fn = CASES[case]
    benchmark.group = what
    expected = fn(_protocol_py)
    assert benchmark(fn, mod) == expected
