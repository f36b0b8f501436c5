"""End-to-end encrypted channels (``private-encrypted-``), as the official SDKs do them.

The server never sees plaintext on these channels when an app's backend triggers
through the HTTP API: the SDK encrypts. An app that triggers in-process
(``await pusher.trigger(...)``) has no SDK in between, so :class:`~soketi_impl.Pusher`
encrypts here, the same way:

- the channel's shared secret is ``SHA256(channel name as UTF-8 + master key)``, the
  master key being the app's 32 random bytes (given in base64);
- the event's data (a ``str`` as is, ``bytes`` as UTF-8, anything else JSON-encoded)
  is sealed with NaCl ``secretbox`` under that secret with a random 24-byte nonce;
- what is sent as the event's data is the JSON string
  ``{"nonce": base64(nonce), "ciphertext": base64(ciphertext)}``.

pusher-js receives the shared secret in the channel authorization (the SDK's
``authorizeChannel`` adds ``shared_secret`` for these channels), decrypts, and hands
the application the plaintext. Example::

    key = parse_master_key("<32 bytes, base64>", "encryption_master_key_base64")
    data = encrypt("private-encrypted-vault", {"pin": "1234"}, key)
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import nacl.secret
import nacl.utils
import orjson

from .errors import ConfigError

# The channel's secretbox key is also what a channel authorization hands pusher-js
# (signing.authorize_channel), so it is derived in one place.
from .signing import shared_secret

__all__ = ["ENCRYPTED_PREFIX", "decrypt", "encrypt", "is_encrypted_channel", "parse_master_key", "shared_secret"]

#: Every end-to-end encrypted channel's name starts with this.
ENCRYPTED_PREFIX = "private-encrypted-"

_KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32
_NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE  # 24


def is_encrypted_channel(channel: str) -> bool:
    """Whether ``channel`` is end-to-end encrypted (its name starts with ``private-encrypted-``)."""
    return channel.startswith(ENCRYPTED_PREFIX)


def parse_master_key(key_base64: str, label: str = "encryption_master_key_base64") -> bytes:
    """The 32 bytes of a base64 master key; :class:`~soketi_impl.errors.ConfigError` naming ``label`` if bad."""
    try:
        raw = base64.b64decode(key_base64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ConfigError(label, "a base64 string (of 32 random bytes)", "<not base64>") from None
    if len(raw) != _KEY_SIZE:
        raise ConfigError(label, f"base64 of {_KEY_SIZE} bytes", f"<{len(raw)} bytes>")
    return raw


def _plaintext(data: Any) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return orjson.dumps(data)


def encrypt(channel: str, data: Any, master_key: bytes, nonce: bytes | None = None) -> str:
    """The event data to send on ``channel``: ``{"nonce","ciphertext"}`` as a JSON string.

    ``nonce`` is random unless given (tests only: never reuse a nonce with one key).
    """
    if nonce is None:
        nonce = nacl.utils.random(_NONCE_SIZE)
    elif len(nonce) != _NONCE_SIZE:
        raise ValueError(f"the nonce must be {_NONCE_SIZE} bytes")
    sealed = nacl.secret.SecretBox(shared_secret(channel, master_key)).encrypt(_plaintext(data), nonce)
    return orjson.dumps({
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "ciphertext": base64.b64encode(sealed.ciphertext).decode("ascii"),
    }).decode("ascii")


def decrypt(channel: str, data: str | bytes, master_key: bytes) -> bytes:
    """The plaintext of what :func:`encrypt` gave (what a client does with the shared secret).

    Raises ``ValueError`` for data that is not such an object and
    ``nacl.exceptions.CryptoError`` when the key or the channel does not match.
    """
    try:
        obj = orjson.loads(data)
        nonce = base64.b64decode(obj["nonce"], validate=True)
        ciphertext = base64.b64decode(obj["ciphertext"], validate=True)
    except (orjson.JSONDecodeError, binascii.Error, KeyError, TypeError) as exc:
        raise ValueError(f"not encrypted event data: {exc}") from None
    return bytes(nacl.secret.SecretBox(shared_secret(channel, master_key)).decrypt(ciphertext, nonce))
