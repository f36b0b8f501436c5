"""Pusher message parsing and encoding (``_protocol``), both twins.

Unit tests run against each twin through the ``twin`` fixture; the property
tests at the bottom feed the same arbitrary inputs to both twins and demand the
same answer (same value, or same exception type and message).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from soketi_impl.errors import ProtocolError
from soketi_impl.twins import _protocol, _speedups

Twin = Callable[[str], ModuleType]

# ---------------------------------------------------------------- channel kinds

KINDS = [
    ("my-channel", "PUBLIC"),
    ("cache-x", "PUBLIC"),
    ("private-chat", "PRIVATE"),
    ("private-", "PRIVATE"),
    ("private-cache-x", "PRIVATE"),
    ("private-encrypted", "PRIVATE"),  # no dash after "encrypted": plain private
    ("private-encryptedx", "PRIVATE"),
    ("private-encrypted-", "ENCRYPTED"),
    ("private-encrypted-chat", "ENCRYPTED"),
    ("private-encrypted-cache-x", "ENCRYPTED"),
    ("presence-room", "PRESENCE"),
    ("presence-", "PRESENCE"),
    ("presence-cache-x", "PRESENCE"),
    ("presence", "PUBLIC"),
    ("#server-to-user-42", "SERVER_TO_USER"),
    ("#server-to-user-", "SERVER_TO_USER"),  # kind by prefix; validity is separate
    ("#server-to-user", "PUBLIC"),
    ("xprivate-chat", "PUBLIC"),
    (" private-chat", "PUBLIC"),
    ("Private-chat", "PUBLIC"),
    ("private_chat", "PUBLIC"),
    ("xpresence-room", "PUBLIC"),
    ("", "PUBLIC"),
    ("prïvate-chat", "PUBLIC"),
    ("private-é", "PRIVATE"),
    ("private-\U0001f600", "PRIVATE"),
    ("presence-\u4e16", "PRESENCE"),
    ("\u4e16private-", "PUBLIC"),
]


def test_kind_constants(twin: Twin) -> None:
    m = twin("protocol")
    assert (m.PUBLIC, m.PRIVATE, m.PRESENCE, m.ENCRYPTED, m.SERVER_TO_USER) == (0, 1, 2, 3, 4)


@pytest.mark.parametrize(("name", "kind"), KINDS)
def test_channel_kind(twin: Twin, name: str, kind: str) -> None:
    m = twin("protocol")
    assert m.channel_kind(name) == getattr(m, kind)


CACHE = [
    ("cache-x", True),
    ("cache-", True),
    ("private-cache-x", True),
    ("private-encrypted-cache-x", True),
    ("presence-cache-x", True),
    ("cache", False),
    ("cachex", False),
    ("xcache-x", False),
    ("private-cachex", False),
    ("private-encrypted-cachex", False),
    ("private-encrypted-x-cache-y", False),
    ("presence-cachex", False),
    ("presence-x", False),
    ("private-x", False),
    ("#server-to-user-cache-x", False),
    ("", False),
    ("cache-\u4e16", True),
    ("\u4e16cache-", False),
]


@pytest.mark.parametrize(("name", "expected"), CACHE)
def test_is_cache_channel(twin: Twin, name: str, expected: bool) -> None:
    assert twin("protocol").is_cache_channel(name) is expected


VALID = [
    ("my-channel", True),
    ("a", True),
    ("A-Za-z0-9_-=@,.;", True),
    ("private-encrypted-cache-x", True),
    ("#server-to-user-42", True),
    ("#server-to-user-a=b@c,d.e;f_g-h", True),
    ("#server-to-user-", False),
    ("#server-to-user-4 2", False),
    ("#server-to-user-#", False),
    ("#server-to-user", False),
    ("#other-42", False),
    ("#", False),
    ("", False),
    ("has space", False),
    ("tab\t", False),
    ("trailing-newline\n", False),
    ("slash/", False),
    ("colon:", False),
    ("star*", False),
    ("é", False),
    ("caf\u00e9", False),
    ("\u4e16", False),
    ("emoji-\U0001f600", False),
    ("nul\x00", False),
]


@pytest.mark.parametrize(("name", "expected"), VALID)
def test_valid_channel_name(twin: Twin, name: str, expected: bool) -> None:
    assert twin("protocol").valid_channel_name(name) is expected


def test_valid_channel_name_max_length(twin: Twin) -> None:
    m = twin("protocol")
    assert m.valid_channel_name("a" * 200)
    assert not m.valid_channel_name("a" * 201)
    assert m.valid_channel_name("abc", 3)
    assert not m.valid_channel_name("abcd", 3)
    assert m.valid_channel_name("abcd", max_length=4)
    assert not m.valid_channel_name("a", 0)
    assert not m.valid_channel_name("a", -1)
    # The prefix counts towards the length.
    assert m.valid_channel_name("#server-to-user-1", 17)
    assert not m.valid_channel_name("#server-to-user-1", 16)


def test_valid_channel_name_huge(twin: Twin) -> None:
    m = twin("protocol")
    huge = "a" * (10 * 1024 * 1024)
    assert not m.valid_channel_name(huge)
    assert m.valid_channel_name(huge, len(huge))
    assert not m.valid_channel_name(huge + " ", len(huge) + 1)
    assert not m.valid_channel_name(huge + "\u4e16", len(huge) + 1)
    assert m.valid_channel_name("#server-to-user-" + huge, len(huge) + 16)
    assert m.channel_kind("presence-" + huge) == m.PRESENCE
    assert m.is_cache_channel("presence-cache-" + huge)


@pytest.mark.parametrize("fn", ["channel_kind", "is_cache_channel", "valid_channel_name"])
@pytest.mark.parametrize("bad", [None, 5, b"private-x", ["private-x"]])
def test_channel_functions_want_str(twin: Twin, fn: str, bad: object) -> None:
    with pytest.raises(TypeError, match="^channel name must be str, not "):
        getattr(twin("protocol"), fn)(bad)


# ---------------------------------------------------------------- parsing

AUTH = "app-key:" + "ab" * 32


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # pusher-js
        (
            b'{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}',
            ("pusher:subscribe", None, {"auth": "", "channel": "my-channel"}),
        ),
        (
            b'{"event":"pusher:subscribe","data":{"auth":"'
            + AUTH.encode()
            + b'","channel":"private-chat"}}',
            ("pusher:subscribe", None, {"auth": AUTH, "channel": "private-chat"}),
        ),
        (
            orjson.dumps(
                {
                    "event": "pusher:subscribe",
                    "data": {
                        "auth": AUTH,
                        "channel_data": '{"user_id":"1","user_info":{"name":"Ann"}}',
                        "channel": "presence-room",
                    },
                }
            ),
            (
                "pusher:subscribe",
                None,
                {
                    "auth": AUTH,
                    "channel_data": '{"user_id":"1","user_info":{"name":"Ann"}}',
                    "channel": "presence-room",
                },
            ),
        ),
        (
            b'{"event":"pusher:unsubscribe","data":{"channel":"my-channel"}}',
            ("pusher:unsubscribe", None, {"channel": "my-channel"}),
        ),
        (
            b'{"event":"client-typing","data":{"user":"ann","n":3},"channel":"private-chat"}',
            ("client-typing", "private-chat", {"user": "ann", "n": 3}),
        ),
        (b'{"event":"pusher:ping","data":{}}', ("pusher:ping", None, {})),
        # pysher: json.dumps with its default separators
        (b'{"event": "pusher:ping", "data": ""}', ("pusher:ping", None, "")),
        (
            b'{"event": "pusher:subscribe", "data": {"channel": "c"}}',
            ("pusher:subscribe", None, {"channel": "c"}),
        ),
        # shapes of channel and data
        (b'{"event":"e"}', ("e", None, None)),
        (b'{"event":"e","channel":null,"data":null}', ("e", None, None)),
        (
            b'{"data":[1,2.5,"x",true,null],"channel":"c","event":"e"}',
            ("e", "c", [1, 2.5, "x", True, None]),
        ),
        (b'{"event":"e","data":"{\\"a\\":1}"}', ("e", None, '{"a":1}')),
        (b'{"event":"e","data":42}', ("e", None, 42)),
        (b'{"event":"e","data":false}', ("e", None, False)),
        (b' \t\r\n{"event":"e","extra":{"x":1}}\n ', ("e", None, None)),
        (b'{"event":"e","event":"f"}', ("f", None, None)),
        (
            '{"event":"caf\u00e9","channel":"\u4e16","data":"\U0001f600"}'.encode(),
            ("caf\u00e9", "\u4e16", "\U0001f600"),
        ),
        (b'{"event":"\\u00e9\\ud83d\\ude00"}', ("\u00e9\U0001f600", None, None)),
    ],
)
def test_parse(twin: Twin, raw: bytes, expected: tuple[str, str | None, object]) -> None:
    m = twin("protocol")
    assert m.parse_client_message(raw) == expected
    # Every accepted input type gives the same answer.
    assert m.parse_client_message(raw.decode()) == expected
    assert m.parse_client_message(bytearray(raw)) == expected
    assert m.parse_client_message(memoryview(raw)) == expected


def test_parse_size_limit(twin: Twin) -> None:
    m = twin("protocol")
    raw = b'{"event":"e","data":"' + b"x" * 100 + b'"}'
    assert m.parse_client_message(raw, max_size=len(raw))[0] == "e"
    with pytest.raises(
        ProtocolError, match=rf"^Message too large \({len(raw)} bytes, limit {len(raw) - 1}\)$"
    ):
        m.parse_client_message(raw, max_size=len(raw) - 1)
    big = b'{"event":"e","data":"' + b"x" * 102400 + b'"}'
    with pytest.raises(
        ProtocolError, match=rf"^Message too large \({len(big)} bytes, limit 102400\)$"
    ):
        m.parse_client_message(big)
    with pytest.raises(ProtocolError, match=r"^Message too large"):
        m.parse_client_message(big.decode())
    with pytest.raises(ProtocolError, match=r"^Message too large"):
        m.parse_client_message(memoryview(big))
    with pytest.raises(ProtocolError, match=r"^Message too large"):
        m.parse_client_message(bytearray(big))


def test_parse_size_of_str_counts_utf8_bytes(twin: Twin) -> None:
    m = twin("protocol")
    for ch, width in (("\u00e9", 2), ("\u4e16", 3), ("\U0001f600", 4), ("\ud800", 3)):
        raw = '{"event":"' + ch * 10 + '"}'
        size = len(raw) - 10 + 10 * width
        with pytest.raises(
            ProtocolError, match=rf"^Message too large \({size} bytes, limit {size - 1}\)$"
        ):
            m.parse_client_message(raw, size - 1)
    assert m.parse_client_message('{"event":"\u4e16"}', 15) == ("\u4e16", None, None)


def test_parse_huge_input_is_refused_before_parsing(twin: Twin) -> None:
    m = twin("protocol")
    with pytest.raises(ProtocolError, match="too large"):
        m.parse_client_message(b"[" * (10 * 1024 * 1024))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff", "Message is not valid UTF-8"),
        (b'{"event":"\xc3"}', "Message is not valid UTF-8"),
        (b'{"event":"\xed\xa0\x80"}', "Message is not valid UTF-8"),  # an encoded surrogate
        (b'{"event":"\xc0\x80"}', "Message is not valid UTF-8"),  # overlong
        ('{"event":"\ud800"}', "Message is not valid UTF-8"),
        (b"", "Message is not valid JSON"),
        (b"   ", "Message is not valid JSON"),
        (b"{", "Message is not valid JSON"),
        (b'{"event":"e"', "Message is not valid JSON"),
        (b'{"event":"e"} x', "Message is not valid JSON"),
        (b'{"event":"e",}', "Message is not valid JSON"),
        (b"{'event':'e'}", "Message is not valid JSON"),
        (b'{"event":"e","data":NaN}', "Message is not valid JSON"),
        (b'{"event":"a\x01b"}', "Message is not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, "Message is not valid JSON"),
        (b"pusher:ping", "Message is not valid JSON"),
        (b"[]", "Message must be a JSON object"),
        (b'"{\\"event\\":\\"e\\"}"', "Message must be a JSON object"),
        (b"null", "Message must be a JSON object"),
        (b"42", "Message must be a JSON object"),
        (b"{}", "Message has no event name"),
        (b'{"data":{}}', "Message has no event name"),
        (b'{"event":null}', "Message has no event name"),
        (b'{"event":""}', "Message has no event name"),
        (b'{"event":5}', "Event name must be a string"),
        (b'{"event":true}', "Event name must be a string"),
        (b'{"event":["e"]}', "Event name must be a string"),
        (b'{"event":{"name":"e"}}', "Event name must be a string"),
        (b'{"event":"e","channel":5}', "Channel must be a string"),
        (b'{"event":"e","channel":false}', "Channel must be a string"),
        (b'{"event":"e","channel":{}}', "Channel must be a string"),
        (b'{"event":"e","channel":["c"]}', "Channel must be a string"),
    ],
)
def test_parse_errors(twin: Twin, raw: bytes | str, message: str) -> None:
    m = twin("protocol")
    with pytest.raises(ProtocolError) as info:
        m.parse_client_message(raw)
    assert str(info.value) == message and info.value.message == message
    assert info.value.code is None


@pytest.mark.parametrize("bad", [None, 5, ["{}"], {"event": "e"}])
def test_parse_wants_bytes_or_str(twin: Twin, bad: object) -> None:
    with pytest.raises(TypeError, match="^raw must be bytes or str, not "):
        twin("protocol").parse_client_message(bad)


class StrSub(str):
    pass


class BytesSub(bytes):
    pass


def test_parse_subclasses_as_orjson_does(twin: Twin) -> None:
    # orjson.loads refuses subclasses of bytes and str; both twins follow it.
    m = twin("protocol")
    for raw in (StrSub('{"event":"e"}'), BytesSub(b'{"event":"e"}')):
        with pytest.raises(ProtocolError, match="^Message is not valid JSON$"):
            m.parse_client_message(raw)


# ---------------------------------------------------------------- encoding


def test_encode_event_exact_bytes(twin: Twin) -> None:
    m = twin("protocol")
    assert (
        m.encode_event("e", "c", '{"a":1}') == b'{"event":"e","channel":"c","data":"{\\"a\\":1}"}'
    )
    assert m.encode_event("e", None, "{}") == b'{"event":"e","data":"{}"}'
    assert (
        m.encode_event("pusher:cache_miss", "cache-x", None)
        == b'{"event":"pusher:cache_miss","channel":"cache-x"}'
    )
    assert m.encode_event("e", None, None) == b'{"event":"e"}'
    assert (
        m.encode_event("client-x", "presence-r", "", "42")
        == b'{"event":"client-x","channel":"presence-r","data":"","user_id":"42"}'
    )
    assert (
        m.encode_event("e", "c", {"a": [1, None]}, user_id="u")
        == b'{"event":"e","channel":"c","data":"{\\"a\\":[1,null]}","user_id":"u"}'
    )
    assert m.encode_event("e", None, b'{"b":2}') == b'{"event":"e","data":"{\\"b\\":2}"}'
    assert m.encode_event("e", None, 5) == b'{"event":"e","data":"5"}'
    assert m.encode_event("e", None, False) == b'{"event":"e","data":"false"}'
    assert m.encode_event("e", None, "") == b'{"event":"e","data":""}'


ESCAPES = '"\\/\b\f\n\r\t\x00\x01\x1f\x7f \u00e9\u2028\u4e16\U0001f600'


@pytest.mark.parametrize(
    "data",
    [
        "hello",
        ESCAPES,
        {"message": ESCAPES, "n": [1, 2.5, None, True]},
        [ESCAPES],
        ESCAPES.encode(),
        "x" * 200_000,
        {"k": "\u4e16" * 50_000},
        b"",
        0,
        -1.5,
    ],
)
def test_encode_event_round_trip(twin: Twin, data: object) -> None:
    m = twin("protocol")
    out = m.encode_event(ESCAPES, ESCAPES, data, ESCAPES)
    # Exactly orjson's bytes for the reference's dict.
    if isinstance(data, str):
        text = data
    elif isinstance(data, bytes):
        text = data.decode()
    else:
        text = orjson.dumps(data).decode()
    assert out == orjson.dumps(
        {"event": ESCAPES, "channel": ESCAPES, "data": text, "user_id": ESCAPES}
    )
    back = orjson.loads(out)
    assert list(back) == ["event", "channel", "data", "user_id"]
    assert back["event"] == back["channel"] == back["user_id"] == ESCAPES
    assert isinstance(back["data"], str)
    if not isinstance(data, str | bytes):
        assert orjson.loads(back["data"]) == data


def test_encode_event_takes_subclasses(twin: Twin) -> None:
    m = twin("protocol")
    out = m.encode_event(StrSub("ev"), StrSub("ch"), StrSub('{"a":"\u00e9"}'), StrSub("u"))
    assert (
        out
        == '{"event":"ev","channel":"ch","data":"{\\"a\\":\\"\u00e9\\"}","user_id":"u"}'.encode()
    )
    assert m.encode_event("e", None, BytesSub(b"xy")) == b'{"event":"e","data":"xy"}'
    assert m.channel_kind(StrSub("private-x")) == m.PRIVATE
    assert m.valid_channel_name(StrSub("private-x")) and m.is_cache_channel(StrSub("cache-x"))


def test_encode_event_data_parses_back(twin: Twin) -> None:
    m = twin("protocol")
    payload = {"message": "hi", "from": {"id": 1}}
    frame = m.encode_event("greet", "presence-room", orjson.dumps(payload).decode())
    assert orjson.loads(orjson.loads(frame)["data"]) == payload
    assert orjson.loads(orjson.loads(m.encode_event("greet", "c", payload))["data"]) == payload


def test_encode_event_errors(twin: Twin) -> None:
    m = twin("protocol")
    with pytest.raises(TypeError, match="^event must be str, not int$"):
        m.encode_event(5, None, None)
    with pytest.raises(TypeError, match="^channel must be str, not bytes$"):
        m.encode_event("e", b"c", None)
    with pytest.raises(TypeError, match="^user_id must be str, not int$"):
        m.encode_event("e", "c", "d", 42)
    with pytest.raises(UnicodeDecodeError):
        m.encode_event("e", "c", b"\xff")
    with pytest.raises(TypeError, match="not JSON serializable"):
        m.encode_event("e", "c", {"a": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        m.encode_event("e", "c", bytearray(b"x"))
    for args in (
        ("\ud800", None, None),
        ("e", "\udfff", None),
        ("e", None, "\ud800"),
        ("e", None, "d", "\ud800"),
    ):
        with pytest.raises(orjson.JSONEncodeError, match="surrogates not allowed"):
            m.encode_event(*args)
    with pytest.raises(orjson.JSONEncodeError, match="surrogates not allowed"):
        m.encode_event("e", None, {"a": "\ud800"})


def test_encode_error(twin: Twin) -> None:
    m = twin("protocol")
    assert (
        m.encode_error(4301, "Too many events")
        == b'{"event":"pusher:error","data":{"code":4301,"message":"Too many events"}}'
    )
    assert (
        m.encode_error(None, 'bad "json"\n')
        == b'{"event":"pusher:error","data":{"code":null,"message":"bad \\"json\\"\\n"}}'
    )
    back = orjson.loads(m.encode_error(4009, "\u4e16"))
    assert back == {"event": "pusher:error", "data": {"code": 4009, "message": "\u4e16"}}
    with pytest.raises(TypeError, match="^code must be int or None, not str$"):
        m.encode_error("4001", "x")
    with pytest.raises(TypeError, match="^code must be int or None, not bool$"):
        m.encode_error(True, "x")
    with pytest.raises(TypeError, match="^message must be str, not NoneType$"):
        m.encode_error(4001, None)


def test_dispatcher_exports() -> None:
    expected = "soketi_impl.twins._protocol_py" if _speedups.NO_EXTENSIONS else "soketi_impl.twins._protocol_c"
    assert _protocol.parse_client_message.__module__ == expected
    assert sorted(_protocol.__all__) == sorted(importlib.import_module(expected).__all__)
    for name in _protocol.__all__:
        assert getattr(_protocol, name) is getattr(importlib.import_module(expected), name)


# ---------------------------------------------------------------- twins agree

needs_c = pytest.mark.skipif(_speedups.NO_EXTENSIONS, reason="SOKETI_IMPL_NO_EXTENSIONS is set")


def _twins() -> tuple[ModuleType, ModuleType]:
    return (
        importlib.import_module("soketi_impl.twins._protocol_py"),
        importlib.import_module("soketi_impl.twins._protocol_c"),
    )


def _outcome(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def _agree(name: str, *args: Any) -> tuple[Any, ...]:
    py, c = _twins()
    a = _outcome(getattr(py, name), *args)
    b = _outcome(getattr(c, name), *args)
    assert a == b, (name, args)
    return a


# Text with everything hard in it: controls, quotes, astral planes and, in a
# share of the examples, a lone surrogate spliced in (which orjson refuses).
nice_text = st.text(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from('"\\\x00\x1f\x7f\u2028')), max_size=40
)
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.one_of(
    nice_text,
    st.tuples(nice_text, st.integers(0, 40), surrogate).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    ),
)
any_char = st.one_of(st.characters(codec="utf-8"), surrogate)
channelish = st.one_of(
    any_text,
    st.text(st.sampled_from("abcXYZ019_-=@,.;#: é\u4e16"), max_size=30),
    st.tuples(
        st.sampled_from(
            [
                "",
                "private-",
                "private-encrypted-",
                "private-encrypted",
                "private-cache-",
                "private-encrypted-cache-",
                "presence-",
                "presence-cache-",
                "cache-",
                "#server-to-user-",
                "#server-to-user",
                "xprivate-",
            ]
        ),
        st.text(st.sampled_from("abc01_-=@,.;#é\u4e16 \ud800"), max_size=10),
    ).map("".join),
)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field = st.one_of(json_value, st.text(max_size=20), st.just(""))
message_dict = st.fixed_dictionaries(
    {},
    optional={
        "event": field,
        "channel": field,
        "data": json_value,
        "extra": json_value,
    },
)


def _mutations(raw: bytes) -> st.SearchStrategy[bytes | bytearray | memoryview | str]:
    variants: list[Any] = [raw, bytearray(raw), memoryview(raw), raw.decode()]
    return st.one_of(
        st.sampled_from(variants),
        st.integers(0, len(raw)).map(lambda i: raw[:i]),
        st.tuples(st.integers(0, len(raw)), st.binary(min_size=1, max_size=3)).map(
            lambda t: raw[: t[0]] + t[1] + raw[t[0] :]
        ),
    )


good_message = st.fixed_dictionaries(
    {"event": st.text(min_size=1, max_size=20)},
    optional={"channel": st.one_of(st.none(), st.text(max_size=20)), "data": json_value},
)
frames = st.one_of(message_dict, good_message).map(orjson.dumps).flatmap(_mutations)
sizes = st.one_of(st.just(102400), st.integers(0, 300))


@needs_c
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(frames, st.binary(max_size=64), st.text(any_char, max_size=64)), max_size=sizes
)
@example(raw=b'{"event":"pusher:ping","data":{}}', max_size=102400)
@example(raw=b'{"event": "pusher:ping", "data": ""}', max_size=102400)
@example(raw=b'{"event":"e","channel":null}', max_size=102400)
@example(raw="\ud800" * 40, max_size=100)
@example(raw=b"\xff" * 10, max_size=102400)
def test_twins_parse_agree(raw: bytes | bytearray | memoryview | str, max_size: int) -> None:
    _agree("parse_client_message", raw, max_size)


# Hand-written JSON text, to reach what orjson.dumps never writes: odd
# whitespace, every escape (\u with surrogate pairs, lone surrogates, bad hex),
# number forms (-0, 01, 1e5, 20 digits), duplicate keys, near-misses (tru, [1,]).
# Mostly well-formed, so that the fast reader's successes get checked too.
good_ws = st.text(st.sampled_from(" \t\r\n"), max_size=2)


def _rarely(
    common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int = 30
) -> st.SearchStrategy[Any]:
    return st.integers(1, one_in).flatmap(lambda i: rare if i == one_in else common)


ws = _rarely(good_ws, st.sampled_from(["\x0c", "\xa0", "\x00"]))
good_escape = st.one_of(
    st.sampled_from(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]),
    st.one_of(st.integers(0, 0xD7FF), st.integers(0xE000, 0xFFFF)).map(lambda c: f"\\u{c:04x}"),
    st.integers(0, 0xFFFF).filter(lambda c: not 0xD800 <= c <= 0xDFFF).map(lambda c: f"\\u{c:04X}"),
    st.tuples(st.integers(0xD800, 0xDBFF), st.integers(0xDC00, 0xDFFF)).map(
        lambda t: f"\\u{t[0]:04x}\\u{t[1]:04X}"
    ),
)
bad_piece = st.one_of(
    st.sampled_from(
        [
            "\\x",
            "\\U0041",
            "\\u12",
            "\\u12g4",
            "\\",
            "\x00",
            "\x1f",
            "\n",
            "\\ud800x",
            "\\ud800\\u0041",
        ]
    ),
    st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}"),
    surrogate,
)
plain = st.text(
    st.characters(codec="utf-8", exclude_characters='"\\', exclude_categories=["Cc"]), max_size=12
)
good_string = st.lists(st.one_of(plain, plain, good_escape), max_size=4).map(
    lambda p: '"' + "".join(p) + '"'
)
bad_string = st.lists(st.one_of(plain, good_escape, bad_piece), min_size=1, max_size=4).map(
    lambda p: '"' + "".join(p) + '"'
)
string_lit = _rarely(good_string, bad_string, 15)
short_key = st.one_of(
    st.sampled_from(['"event"', '"channel"', '"data"', '"user_id"', '"ev\\u0065nt"']), string_lit
)
number_lit = _rarely(
    st.one_of(
        st.integers(-(10**19), 10**19).map(str),
        st.from_regex(
            r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?", fullmatch=True
        ),
    ),
    st.sampled_from(
        [
            "-0",
            "01",
            "-",
            "1.",
            ".5",
            "+1",
            "1e",
            "9223372036854775807",
            "18446744073709551616",
            "1e400",
            "-9223372036854775809",
            "999999999999999999",
            "1000000000000000000",
            "-999999999999999999",
        ]
    ),
    5,
)
literal = _rarely(
    st.sampled_from(["true", "false", "null"]), st.sampled_from(["tru", "nul", "True", "NaN"]), 10
)


def _json_array(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(ws, st.lists(inner, max_size=4), good_ws, st.integers(0, 9)).map(
        lambda t: (
            "[" + t[0] + ("," + t[2]).join(t[1]) + ("," if t[3] == 9 and t[1] else "") + t[2] + "]"
        )
    )


_NOTHING = st.just("")


def _json_object(
    inner: st.SearchStrategy[str], first: st.SearchStrategy[str] = _NOTHING
) -> st.SearchStrategy[str]:
    member = st.tuples(short_key, good_ws, inner).map(lambda t: t[0] + t[1] + ":" + t[1] + t[2])
    return st.tuples(ws, first, st.lists(member, max_size=5), good_ws, st.integers(0, 9)).map(
        lambda t: (
            "{"
            + t[0]
            + ("," + t[3]).join(([t[1]] if t[1] else []) + t[2])
            + ("," if t[4] == 9 and (t[1] or t[2]) else "")
            + t[3]
            + "}"
        )
    )


json_text = st.recursive(
    st.one_of(string_lit, number_lit, literal),
    lambda inner: st.one_of(_json_array(inner), _json_object(inner)),
    max_leaves=10,
)
event_member = st.one_of(
    good_string.map(lambda v: '"event":' + v),
    good_string.map(lambda v: '"event" : ' + v),
    st.just(""),
)
frame_text = st.tuples(
    ws,
    _json_object(json_text, event_member),
    ws,
    _rarely(st.just(""), st.sampled_from(["x", ",", "}"]), 10),
).map("".join)


@needs_c
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(text=frame_text)
@example(text='{"event":"a","event":"b","channel":"c","channel":null}')
@example(text='{"ev\\u0065nt":"\\ud83d\\ude00","data":[-0,1,{"a":[]}]}')
@example(text='{"event":"e","data":' + "[" * 70 + "]" * 70 + "}")
@example(text='{"event":"e","data":' + "[" * 1100 + "]" * 1100 + "}")
def test_twins_parse_hand_written_json(text: str) -> None:
    _agree("parse_client_message", text)
    _agree("parse_client_message", text.encode("utf-8", "surrogatepass"))
    outcome = _agree("parse_client_message", text.encode("utf-8", "surrogatepass"), 10**9)
    if outcome[0] == "ok":
        # The fast reader must build what orjson builds, down to the types.
        try:
            msg = orjson.loads(text.encode("utf-8", "surrogatepass"))
        except orjson.JSONDecodeError as exc:
            # Numbers beyond double range (1e400): orjson refuses them, the twins accept
            # them (the client's text is forwarded as sent) and agreed above.
            assert "infinity" in str(exc), exc
            return
        assert outcome[1] == (msg.get("event"), msg.get("channel"), msg.get("data"))
        assert repr(outcome[1]) == repr((msg.get("event"), msg.get("channel"), msg.get("data")))


@needs_c
@settings(max_examples=300)
@given(value=json_value)
def test_twins_parse_any_json_value(value: object) -> None:
    raw = orjson.dumps(value)
    _agree("parse_client_message", raw)
    _agree("parse_client_message", raw.decode())


@needs_c
@settings(max_examples=300)
@given(event=field, channel=field, data=json_value, extra=json_value)
def test_twins_parse_random_fields(
    event: object, channel: object, data: object, extra: object
) -> None:
    raw = orjson.dumps({"extra": extra, "channel": channel, "data": data, "event": event})
    outcome = _agree("parse_client_message", raw)
    if outcome[0] == "ok":
        assert outcome[1] == (event, channel, data)


@needs_c
@settings(max_examples=400)
@given(name=channelish, max_length=st.one_of(st.just(200), st.integers(-1, 40)))
def test_twins_channel_names_agree(name: str, max_length: int) -> None:
    _agree("channel_kind", name)
    _agree("is_cache_channel", name)
    _agree("valid_channel_name", name, max_length)
    _agree("valid_channel_name", name)


encode_data = st.one_of(
    st.none(),
    any_text,
    st.binary(max_size=40),
    json_value,
    st.sampled_from([object(), {1: "a"}, {"a": {1, 2}}, bytearray(b"x"), 2**70, float("nan")]),
)
maybe_text = st.one_of(st.none(), any_text, st.integers(), st.binary(max_size=4))


def _check_encoded(
    outcome: tuple[Any, ...], event: object, channel: object, data: object, user_id: object
) -> None:
    if outcome[0] == "ok":
        back = orjson.loads(outcome[1])
        assert list(back) == [
            k
            for k, v in [
                ("event", event),
                ("channel", channel),
                ("data", data),
                ("user_id", user_id),
            ]
            if v is not None
        ]
        assert back["event"] == event
        assert back.get("channel") == channel and back.get("user_id") == user_id
        assert isinstance(back.get("data", ""), str)


@needs_c
@settings(max_examples=500)
@given(
    event=nice_text,
    channel=st.one_of(st.none(), nice_text),
    data=encode_data,
    user_id=st.one_of(st.none(), nice_text),
)
def test_twins_encode_event_agree(
    event: str, channel: str | None, data: object, user_id: str | None
) -> None:
    _check_encoded(
        _agree("encode_event", event, channel, data, user_id), event, channel, data, user_id
    )


@needs_c
@settings(max_examples=500)
@given(
    event=st.one_of(any_text, st.integers()),
    channel=maybe_text,
    data=encode_data,
    user_id=maybe_text,
)
@example(event="e", channel=None, data=b"\xed\xa0\x80", user_id=None)
@example(event="\ud800", channel=None, data=object(), user_id=None)
@example(event="\ud800", channel=5, data=None, user_id=None)
def test_twins_encode_event_odd_args_agree(
    event: object, channel: object, data: object, user_id: object
) -> None:
    _check_encoded(
        _agree("encode_event", event, channel, data, user_id), event, channel, data, user_id
    )


@needs_c
@settings(max_examples=300)
@given(data=st.binary(max_size=64))
def test_twins_encode_event_bytes_agree(data: bytes) -> None:
    # Arbitrary bytes: the C twin's own UTF-8 validator must agree with bytes.decode.
    _agree("encode_event", "e", "c", data)
    _agree("encode_event", "e", "c", b"abcdefgh" * 3 + data + b"xyz")


@needs_c
@settings(max_examples=200)
@given(
    code=st.one_of(st.none(), st.integers(), st.text(max_size=3), st.booleans()), message=maybe_text
)
def test_twins_encode_error_agree(code: object, message: object) -> None:
    _agree("encode_error", code, message)


number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 20)).map(
        lambda t: f"{t[0]:.{t[1]}e}"
    ),
    st.tuples(st.floats(-1e6, 1e6), st.integers(0, 20)).map(lambda t: f"{t[0]:.{t[1]}f}"),
    st.from_regex(r"-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.integers(-(2**70), 2**70).map(str),
)


@needs_c
@settings(max_examples=400)
@given(numbers=st.lists(number_text, min_size=1, max_size=4))
@example(
    numbers=[
        "9007199254740993.0",
        "0.1",
        "1e22",
        "1e23",
        "-0.0",
        "5e-324",
        "1.7976931348623157e308",
    ]
)
@example(numbers=["123456789012345.6", "1234567890123456.7", "0.000001", "1e-22", "1e-23", "-0"])
def test_twins_parse_numbers_agree(numbers: list[str]) -> None:
    # The C reader parses simple floats itself: they must be orjson's, bit for bit.
    raw = '{"event":"e","data":[' + ",".join(numbers) + "]}"
    outcome = _agree("parse_client_message", raw.encode())
    if outcome[0] == "ok":
        try:
            expected = orjson.loads(raw)["data"]
        except orjson.JSONDecodeError:
            # beyond double range: read as the largest double of its sign (the raw
            # text is what client events forward)
            expected = [
                math.copysign(sys.float_info.max, v) if math.isinf(v := float(n)) else orjson.loads(n)
                for n in numbers
            ]
        assert repr(outcome[1][2]) == repr(expected)


@needs_c
def test_twins_agree_on_every_short_utf8_shape() -> None:
    # Every lead byte against every second byte, with continuation and
    # non-continuation bytes after: overlongs, surrogates, > U+10FFFF, truncations.
    py, c = _twins()
    tails = [b"", b"\x80", b"\xbf", b"\x80\x80", b"\xbf\xbf", b"\x7f", b"\xc0", b"\x80\x7f"]
    for lead in range(0x80, 0x100):
        for second in range(0x70, 0xD0):
            for tail in tails:
                data = b"abcdefgh" + bytes((lead, second)) + tail
                assert _outcome(py.encode_event, "e", None, data) == _outcome(
                    c.encode_event, "e", None, data
                ), data


@needs_c
def test_twins_agree_on_repeated_short_strings() -> None:
    # Keys and values of every length, over and over: strings the C reader
    # hands back from its cache must still be the right ones.
    py, c = _twins()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_:"
    words = [alphabet[i % 7 : i % 7 + n] + str(i) for n in range(30) for i in range(40)]
    for rnd in range(3):
        for i, w in enumerate(words):
            raw = orjson.dumps(
                {"event": w or "e", "channel": words[-i], "data": {w: i, words[i // 2]: [w]}}
            )
            expected = (w or "e", words[-i], {w: i, words[i // 2]: [w]})
            assert py.parse_client_message(raw) == expected
            assert c.parse_client_message(raw) == expected, (rnd, raw)


@needs_c
def test_twins_agree_on_huge_strings() -> None:
    huge = 'x\u00e9"' * 400_000
    _agree("encode_event", huge, huge, huge, huge)
    _agree("encode_event", "e", "c", huge.encode())
    _agree("encode_event", "e", "c", {"k": huge})
    _agree("parse_client_message", orjson.dumps({"event": huge}), 10**8)
    _agree("parse_client_message", orjson.dumps({"event": huge}).decode(), 10**8)
    _agree("parse_client_message", orjson.dumps({"event": huge}))
    _agree("valid_channel_name", "a" * 10_000_000, 10**8)
    _agree("channel_kind", "private-" + huge)
