"""soketi_impl.signing against the official SDKs, byte for byte, and the API request window.

- ``authorize_channel`` / ``authenticate_user`` give what the Python ``pusher`` SDK's
  ``authenticate`` / ``authenticate_user`` give (and the Node SDK's
  ``authorizeChannel`` / ``authenticateUser`` for the same signed strings);
- what they return is accepted by our own server's checks (``check_auth``);
- ``check_api_request`` accepts the Python SDK's signed requests and refuses a
  timestamp more than 600 s away on either side, Unicode digits, 5,000 digits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pusher
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pusher.http import Request

from conftest import JS_DIR
from soketi_impl.http.query import parse_query
from soketi_impl.signing import (
    HmacSha256,
    SignatureError,
    api_string_to_sign,
    authenticate_user,
    authorize_channel,
    channel_auth_string,
    check_api_request,
    check_auth,
    sign_api_request,
    user_auth_string,
    webhook_signature,
)

APP_ID, KEY, SECRET = "123", "app-key", "app-secret"
MASTER = bytes(range(32))
MASTER_B64 = base64.b64encode(MASTER).decode()
SOCKET = "1234.5678"


def sdk() -> pusher.Pusher:
    return pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, encryption_master_key_base64=MASTER_B64)


def _text(answer: dict[str, Any]) -> str:
    """An auth answer as the JSON an endpoint sends (the Python SDK gives shared_secret as bytes)."""
    return json.dumps({k: v.decode() if isinstance(v, bytes) else v for k, v in answer.items()}, sort_keys=True)


CHANNELS: list[tuple[str, dict[str, Any] | None]] = [
    ("private-chat", None),
    ("private-encrypted-secrets", None),
    ("presence-room", {"user_id": "42", "user_info": {"name": "Ada", "tags": ["x", 1]}}),
    ("presence-room", {"user_id": 7, "user_info": {"name": "Zoë ✓"}}),
    ("private-a=b@c,d.e;f", None),
]


@pytest.mark.parametrize(("channel", "data"), CHANNELS)
def test_authorize_channel_matches_the_python_sdk(channel: str, data: dict[str, Any] | None) -> None:
    theirs = sdk().authenticate(channel, SOCKET, data)
    ours = authorize_channel(KEY, SECRET, SOCKET, channel, data, encryption_master_key=MASTER)
    assert json.dumps(ours, sort_keys=True) == _text(theirs)
    # and our server accepts it
    assert check_auth(KEY, SECRET, channel_auth_string(SOCKET, channel, ours.get("channel_data")), ours["auth"])


def test_shared_secret_is_sha256_of_channel_and_master_key() -> None:
    got = authorize_channel(KEY, SECRET, SOCKET, "private-encrypted-x", encryption_master_key=MASTER)
    assert base64.b64decode(got["shared_secret"]) == hashlib.sha256(b"private-encrypted-x" + MASTER).digest()
    assert set(authorize_channel(KEY, SECRET, SOCKET, "private-x")) == {"auth"}
    with pytest.raises(ValueError, match="master"):
        authorize_channel(KEY, SECRET, SOCKET, "private-encrypted-x")


@pytest.mark.parametrize(
    "user",
    [{"id": "42"}, {"id": "u", "user_info": {"name": "Zoë"}, "watchlist": ["a", "b"]}, {"id": "5", "x": None}],
)
def test_authenticate_user_matches_the_python_sdk(user: dict[str, Any]) -> None:
    theirs = sdk().authenticate_user(SOCKET, user)
    ours = authenticate_user(KEY, SECRET, SOCKET, user)
    assert json.dumps(ours, sort_keys=True) == _text(theirs)
    # a JSON string is signed as given
    as_text = authenticate_user(KEY, SECRET, SOCKET, theirs["user_data"])
    assert as_text == ours
    assert check_auth(KEY, SECRET, user_auth_string(SOCKET, ours["user_data"]), ours["auth"])


def test_bad_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="socket id"):
        authorize_channel(KEY, SECRET, "nope", "private-x")
    with pytest.raises(ValueError, match="id"):
        authenticate_user(KEY, SECRET, SOCKET, {"name": "no id"})
    with pytest.raises(ValueError, match="id"):
        authenticate_user(KEY, SECRET, SOCKET, "[1, 2]")


def test_matches_the_node_sdk(node_modules: Path) -> None:
    """The Node SDK's answers for the same strings (JSON.stringify's form passed verbatim)."""
    script = """
    const Pusher = require("pusher");
    const p = new Pusher({appId: "123", key: "app-key", secret: "app-secret",
                          encryptionMasterKeyBase64: process.argv[1]});
    const s = "1234.5678";
    console.log(JSON.stringify([
      p.authorizeChannel(s, "private-chat"),
      p.authorizeChannel(s, "private-encrypted-secrets"),
      p.authorizeChannel(s, "presence-room", {user_id: "42", user_info: {name: "Zoë ✓"}}),
      p.authenticateUser(s, {id: "42", watchlist: ["a"]}),
    ]));
    """
    out = subprocess.run(
        ["node", "-e", script, MASTER_B64], cwd=JS_DIR, capture_output=True, text=True, timeout=30,
        env={**os.environ, "NODE_PATH": str(node_modules)}, check=True,
    ).stdout
    private, encrypted, presence, user = json.loads(out)
    assert authorize_channel(KEY, SECRET, SOCKET, "private-chat") == private
    assert authorize_channel(KEY, SECRET, SOCKET, "private-encrypted-secrets", encryption_master_key=MASTER) == encrypted
    assert authorize_channel(KEY, SECRET, SOCKET, "presence-room", presence["channel_data"]) == presence
    assert authenticate_user(KEY, SECRET, SOCKET, user["user_data"]) == user


def test_webhook_signature_is_what_the_sdk_validates() -> None:
    # the SDK also refuses a time_ms older than 5 minutes
    body = b'{"time_ms":%d,"events":[{"name":"channel_occupied","channel":"c"}]}' % (time.time() * 1000)
    sig = webhook_signature(SECRET, body)
    assert sdk().validate_webhook(KEY, sig, body.decode()) is not None
    assert sdk().validate_webhook(KEY, sig, body.decode().replace('"c"', '"d"')) is None


# ---------------------------------------------------------------- API requests


def _sdk_request(method: str, path: str, params: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    req = Request(sdk()._pusher_client, method, path, params)
    return parse_query(req.query_string), req.body


def test_check_api_request_accepts_the_python_sdk() -> None:
    params, body = _sdk_request("POST", f"/apps/{APP_ID}/events", {"name": "e", "channels": ["c"], "data": "d"})
    check_api_request("POST", [f"/apps/{APP_ID}/events"], params, body, KEY, SECRET, time.time())
    params, body = _sdk_request("GET", f"/apps/{APP_ID}/channels", {"filter_by_prefix": "presence-"})
    check_api_request("GET", [f"/apps/{APP_ID}/channels"], params, body, KEY, HmacSha256(SECRET.encode()), time.time())


def _signed(offset: float = 0, **extra: str) -> dict[str, str]:
    now = int(time.time())
    params = sign_api_request(KEY, SECRET, "GET", "/apps/1/channels", extra, timestamp=int(now + offset))
    return params


@pytest.mark.parametrize("offset", [-599, 0, 599])
def test_timestamp_inside_the_window(offset: int) -> None:
    check_api_request("GET", ["/apps/1/channels"], _signed(offset), b"", KEY, SECRET, time.time())


@pytest.mark.parametrize("offset", [-700, -601, 601, 700, 10**9])
def test_timestamp_outside_the_window_either_side(offset: int) -> None:
    with pytest.raises(SignatureError, match="600 s"):
        check_api_request("GET", ["/apps/1/channels"], _signed(offset), b"", KEY, SECRET, time.time())


def test_timestamp_exactly_600_s_away_is_inside() -> None:
    """"More than 600 s away" is refused: 600 exactly, either side, is not."""
    stamp = 1_700_000_000
    params = sign_api_request(KEY, SECRET, "GET", "/apps/1/channels", timestamp=stamp)
    for now in (stamp - 600, stamp + 600):
        check_api_request("GET", ["/apps/1/channels"], params, b"", KEY, SECRET, now)
    for now in (stamp - 600.5, stamp + 600.5):
        with pytest.raises(SignatureError, match="600 s"):
            check_api_request("GET", ["/apps/1/channels"], params, b"", KEY, SECRET, now)


@pytest.mark.parametrize("stamp", ["\u00b2", "1\u0663", "\uff11" * 10, "9" * 5000, "", "-5", "1e9", " 1", "0x10"])
def test_timestamp_garbage_is_a_signature_error(stamp: str) -> None:
    params = _signed()
    params["auth_timestamp"] = stamp
    with pytest.raises(SignatureError, match="auth_timestamp"):
        check_api_request("GET", ["/apps/1/channels"], params, b"", KEY, SECRET, time.time())


def test_other_refusals() -> None:
    def refused(params: dict[str, str], body: bytes = b"", words: str = "") -> None:
        with pytest.raises(SignatureError, match=words):
            check_api_request("POST", ["/apps/1/events"], params, body, KEY, SECRET, time.time())

    body = b'{"a":1}'
    good = sign_api_request(KEY, SECRET, "POST", "/apps/1/events", body=body)
    check_api_request("POST", ["/apps/1/events"], good, body, KEY, SECRET, time.time())
    refused({**good, "auth_key": "other"}, body, "auth_key")
    refused({k: v for k, v in good.items() if k != "auth_signature"}, body, "auth_signature is missing")
    refused({**good, "auth_signature": "zz\u00e9"}, body, "not hex")
    refused({**good, "auth_version": "2.0"}, body, "auth_version")
    refused({k: v for k, v in good.items() if k != "body_md5"}, body, "body_md5")
    refused({**good, "body_md5": "\u00e9" * 32}, body, "body_md5")
    refused(good, body + b" ", "body_md5")
    refused({**good, "extra": "1"}, body, "Invalid signature")


def test_refusals_echo_at_most_64_characters_of_the_input() -> None:
    params = _signed()
    for value, echoed in (("v" * 64, "'" + "v" * 64 + "'"), ("w" * 65, "'" + "w" * 64 + "...'")):
        with pytest.raises(SignatureError) as refused:
            check_api_request("GET", ["/apps/1/channels"], {**params, "auth_version": value}, b"", KEY, SECRET, time.time())
        assert echoed in refused.value.message, refused.value.message


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.text(min_size=1, max_size=40),
    extra=st.dictionaries(st.text(st.characters(blacklist_characters="&=%"), min_size=1, max_size=8), st.text(max_size=20), max_size=4),
    body=st.binary(max_size=50),
)
def test_sign_then_check_round_trips(method: str, path: str, extra: dict[str, str], body: bytes) -> None:
    params = sign_api_request(KEY, SECRET, method, path, extra, body)
    lowered = {k.lower(): v for k, v in params.items()}
    if len(lowered) == len(params):  # keys that collide once lower-cased are a different request
        check_api_request(method, [path], lowered, body, KEY, SECRET, time.time())
    expected = hmac.new(SECRET.encode(), api_string_to_sign(method, path, params).encode("utf-8", "surrogatepass"), hashlib.sha256)
    assert params["auth_signature"] == expected.hexdigest()


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=200), msg=st.binary(max_size=300))
def test_prepared_hmac_matches_stdlib(key: bytes, msg: bytes) -> None:
    mac = HmacSha256(key)
    assert mac.digest(msg) == hmac.digest(key, msg, "sha256")
    assert mac.digest(msg + b"x") == hmac.digest(key, msg + b"x", "sha256")  # reusable
