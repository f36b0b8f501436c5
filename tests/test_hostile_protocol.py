"""Numbers beyond double range in client frames (issue 9, row 10), on both parser twins
and end to end: ``1e400`` is valid JSON, and client-event data is forwarded as sent."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import APP_KEY, APP_SECRET
from hostile import frame, raw_ws, tracked_server
from soketi_impl.errors import ProtocolError
from soketi_impl.twins import _protocol_py, _speedups

pytestmark = pytest.mark.timeout(60)

BIG = sys.float_info.max


@pytest.mark.parametrize(
    "raw, data",
    [
        (b'{"event":"client-x","channel":"private-a","data":1e400}', BIG),
        (b'{"event":"client-x","data":-1E400}', -BIG),
        (b'{"event":"client-x","data":{"a":[1e400, 2, "1e400"]}}', {"a": [BIG, 2, "1e400"]}),
        ('{"event":"é","data":1e999999999}'.encode(), BIG),
        (b'{"event":"x","data":' + b"9" * 5000 + b"}", BIG),
        (b'{"event":"x","data":1e-400}', 0.0),
    ],
)
def test_out_of_range_numbers_parse(twin: Callable[[str], ModuleType], raw: bytes, data: Any) -> None:
    event, _, got = twin("protocol").parse_client_message(raw)
    assert got == data
    assert twin("protocol").raw_data(raw) == raw.decode().split('"data":', 1)[1][:-1]


def test_out_of_range_numbers_parse_from_str_too(twin: Callable[[str], ModuleType]) -> None:
    """The twins take ``str`` frames as well (hosts whose framework decodes text)."""
    raw = '{"event":"client-é","data":{"n":-1e400,"m":[1e400]}}'
    assert twin("protocol").parse_client_message(raw) == ("client-é", None, {"n": -BIG, "m": [BIG]})
    assert twin("protocol").raw_data(raw) == '{"n":-1e400,"m":[1e400]}'


@pytest.mark.parametrize(
    "raw",
    [b'{"event":"x","data":1e400e5}', b'{"event":"x","data":--1e400}', b'{"event":"x","data":1e400,}',
     b'{"event":"x","data":[1e400 1]}', b'{"event":"x","data":"\\ud800","y":1e400}', b'{"event":"x","data":01e400}'],
)
def test_invalid_json_with_big_numbers_still_refused(twin: Callable[[str], ModuleType], raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        twin("protocol").parse_client_message(raw)


_number = st.one_of(
    st.from_regex(r"-?[1-9](\.[0-9]{1,5})?[eE]\+?[3-9][0-9]{2,4}", fullmatch=True),  # mostly beyond range
    st.integers(-(10**400), 10**400).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?", fullmatch=True),
)
_value: st.SearchStrategy[str] = st.recursive(
    _number | st.sampled_from(['"1e400"', "true", "null", '"x\\"y"']),
    lambda inner: st.lists(inner, max_size=4).map(lambda v: "[" + ",".join(v) + "]")
    | st.lists(st.tuples(st.sampled_from(["a", "b", "1e400"]), inner), max_size=3).map(
        lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"
    ),
    max_leaves=8,
)


@pytest.mark.skipif(_speedups.NO_EXTENSIONS, reason="SOKETI_IMPL_NO_EXTENSIONS is set")
@settings(max_examples=400, deadline=None)
@given(data=_value, spaces=st.sampled_from(["", " ", "\n"]))
def test_twins_agree_on_big_numbers(data: str, spaces: str) -> None:
    from soketi_impl.twins import _protocol_c

    raw = f'{{"event":"client-x",{spaces}"data":{spaces}{data}{spaces}}}'.encode()
    outcomes = []
    for mod in (_protocol_py, _protocol_c):
        try:
            outcomes.append(("ok", repr(mod.parse_client_message(raw)), mod.raw_data(raw)))
        except ProtocolError as exc:
            outcomes.append(("error", str(exc), None))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == "ok", outcomes  # all of it is valid JSON
    assert outcomes[0][2] == data  # forwarded as sent
    parsed = json.loads(raw)["data"]  # Python's json reads beyond range as inf
    clamped = _clamp(parsed)
    assert outcomes[0][1] == repr(("client-x", None, clamped))


def _clamp(v: Any) -> Any:
    if isinstance(v, float) and math.isinf(v):
        return math.copysign(BIG, v)
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
        try:
            return float(v)  # orjson reads integers beyond 64 bits as doubles
        except OverflowError:
            return BIG if v > 0 else -BIG
    if isinstance(v, list):
        return [_clamp(x) for x in v]
    if isinstance(v, dict):
        return {k: _clamp(x) for k, x in v.items()}
    return v


async def test_client_event_with_1e400_is_forwarded_as_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    channel = "private-big"
    async with tracked_server(monkeypatch) as srv, raw_ws(srv.port) as a, raw_ws(srv.port) as b:
        for ws in (a, b):
            text = f"{ws.socket_id}:{channel}"
            auth = hmac.new(APP_SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
            sub = {"event": "pusher:subscribe", "data": {"channel": channel, "auth": f"{APP_KEY}:{auth}"}}
            ws.send(frame(0x1, json.dumps(sub).encode()))
            got = await ws.next_frame()
            assert got is not None and b"subscription_succeeded" in got[1], got
        data = '{"n":1e400,"m":-2E+999,"k":123456789012345678901234567890}'
        a.send(frame(0x1, f'{{"event":"client-big","channel":"{channel}","data":{data}}}'.encode()))
        got = await b.next_frame()
        assert got is not None, "nothing forwarded"
        msg = json.loads(got[1])
        assert msg["event"] == "client-big" and msg["data"] == data, msg
