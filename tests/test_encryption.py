"""Encrypted channels in-process: ``Pusher.trigger`` encrypts as the official SDKs do.

The end-to-end tests run a real pusher-js (tests/js/listen_driver.js) that is authorized
by the Node ``pusher`` SDK with the same master key: it can read an event only if the
server encrypted it the way the SDKs do.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nacl.exceptions
import orjson
import pusher.crypto
import pytest

from conftest import APP_ID, base_env
from pjs_listen import Listener
from soketi_impl import ConfigError, Pusher, Server, load_config
from soketi_impl.encryption import (
    decrypt,
    encrypt,
    is_encrypted_channel,
    parse_master_key,
    shared_secret,
)

MASTER = bytes(range(32))
MASTER_B64 = base64.b64encode(MASTER).decode()
OTHER_B64 = base64.b64encode(bytes(range(1, 33))).decode()


# ---------------------------------------------------------------- the cipher, against the Python SDK


@pytest.mark.parametrize("data", ["hello", '{"a":1}', "ünïcødé ☃", ""])
def test_same_ciphertext_as_the_python_sdk(data: str) -> None:
    nonce = bytes(range(24))
    ours = orjson.loads(encrypt("private-encrypted-x", data, MASTER, nonce))
    theirs = pusher.crypto.encrypt("private-encrypted-x", data, MASTER, nonce)
    assert ours == theirs


def test_non_string_data_is_json_and_round_trips() -> None:
    sealed = encrypt("private-encrypted-ch", {"pin": "1234", "n": [1, 2]}, MASTER)
    assert set(orjson.loads(sealed)) == {"nonce", "ciphertext"}
    assert orjson.loads(decrypt("private-encrypted-ch", sealed, MASTER)) == {"pin": "1234", "n": [1, 2]}
    assert decrypt("private-encrypted-ch", encrypt("private-encrypted-ch", b"raw", MASTER), MASTER) == b"raw"


def test_random_nonce_and_key_per_channel() -> None:
    a, b = encrypt("private-encrypted-a", "x", MASTER), encrypt("private-encrypted-a", "x", MASTER)
    assert orjson.loads(a)["nonce"] != orjson.loads(b)["nonce"]
    assert shared_secret("private-encrypted-a", MASTER) != shared_secret("private-encrypted-b", MASTER)
    with pytest.raises(nacl.exceptions.CryptoError):
        decrypt("private-encrypted-b", a, MASTER)  # another channel's secret cannot open it
    with pytest.raises(ValueError, match="not encrypted"):
        decrypt("private-encrypted-a", '{"data":"plain"}', MASTER)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("not base64!", "base64"), (base64.b64encode(b"short").decode(), "32 bytes"), ("", "32 bytes")],
)
def test_bad_master_key_is_a_config_error(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_master_key(value, "encryptionMasterKeyBase64")
    assert info.value.key == "encryptionMasterKeyBase64"
    with pytest.raises(ConfigError):
        Pusher(load_config(None, environ=base_env(0)), encryption_master_key_base64=value)


def test_prefix() -> None:
    assert is_encrypted_channel("private-encrypted-x")
    assert not is_encrypted_channel("private-encryptedx")
    assert not is_encrypted_channel("private-x")


def test_master_key_of_the_app_wins_over_the_pusher_wide_one() -> None:
    env = base_env(0, SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64=MASTER_B64)
    assert Pusher(load_config(None, environ=env), encryption_master_key_base64=OTHER_B64).master_key(APP_ID) == MASTER
    wide = Pusher(load_config(None, environ=base_env(0)), encryption_master_key_base64=OTHER_B64)
    assert wide.master_key(APP_ID) == base64.b64decode(OTHER_B64)
    with pytest.raises(ConfigError, match=f"app '{APP_ID}'"):
        Pusher(load_config(None, environ=base_env(0))).master_key(APP_ID)


# ---------------------------------------------------------------- end to end with pusher-js


async def _server(pusher: Pusher) -> Server:
    server = Server(pusher=pusher)
    await server.start()
    return server


@pytest.fixture(params=["app-key", "pusher-kwarg"])
async def encrypted_server(request: pytest.FixtureRequest, node_modules: Path) -> AsyncIterator[Server]:
    """An in-process server whose app has the master key: from config, or from ``Pusher(...)``."""
    if request.param == "app-key":
        env = base_env(0, SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64=MASTER_B64)
        service = Pusher(load_config(None, environ=env))
    else:
        service = Pusher(load_config(None, environ=base_env(0)), encryption_master_key_base64=MASTER_B64)
    server = await _server(service)
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("data", "expected"), [({"pin": "1234"}, {"pin": "1234"}), ("plain text", "plain text")])
async def test_pusher_js_reads_an_in_process_encrypted_trigger(
    encrypted_server: Server, data: Any, expected: Any
) -> None:
    channel = "private-encrypted-vault"
    client = await Listener.start(
        encrypted_server.port, channels=[channel, "news"], masterKey=MASTER_B64, until="done",
    )
    try:
        await client.until("ready")
        service = encrypted_server.service
        # One trigger on a plain and an encrypted channel: each gets its own form.
        assert await service.trigger(APP_ID, ["news", channel], "secret", data) == 2
        await service.trigger(APP_ID, channel, "done", {})
        await client.until("done")
    finally:
        await client.close()
    got = {(e["channel"], e["event"]): e["data"] for e in client.events()}
    assert got[(channel, "secret")] == expected
    assert got[("news", "secret")] == expected


@pytest.mark.timeout(60)
async def test_no_master_key_raises_and_sends_nothing(node_modules: Path) -> None:
    server = await _server(Pusher(load_config(None, environ=base_env(0))))
    client = await Listener.start(server.port, channels=["news"], until="done")
    try:
        await client.until("ready")
        with pytest.raises(ConfigError, match=f"app '{APP_ID}'.*private-encrypted-x"):
            await server.service.trigger(APP_ID, ["news", "private-encrypted-x"], "leak", {"pin": "1234"})
        await server.service.trigger(APP_ID, "news", "done", {})
        await client.until("done")
    finally:
        await client.close()
        await server.stop(0)
    assert [e["event"] for e in client.events()] == ["done"]  # "leak" reached no channel
