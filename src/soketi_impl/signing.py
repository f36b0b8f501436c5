"""Every Pusher signature, in one place: ``hex(HMAC-SHA256(secret, string))``.

- channel authorization (``private-``, ``presence-``, ``private-encrypted-``):
  :func:`channel_auth_string`, :func:`check_auth`, and :func:`authorize_channel`,
  what an app's auth endpoint returns to pusher-js;
- user authentication (``pusher:signin``): :func:`user_auth_string`,
  :func:`authenticate_user`;
- HTTP API requests (auth_version 1.0): :func:`api_string_to_sign`,
  :func:`sign_api_request`, :func:`check_api_request`;
- webhooks (``X-Pusher-Signature``): :func:`webhook_signature`.

Every check compares in constant time. An embedding app signs its auth endpoint's
answers with the same code the server checks them with::

    from soketi_impl.signing import authorize_channel
    return authorize_channel(key, secret, socket_id, "presence-room",
                             {"user_id": "42", "user_info": {"name": "Ada"}})
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import SoketiError

__all__ = [
    "API_MAX_SKEW_S",
    "HmacSha256",
    "SignatureError",
    "api_string_to_sign",
    "authenticate_user",
    "authorize_channel",
    "channel_auth_string",
    "check_api_head",
    "check_api_request",
    "check_api_signature",
    "check_auth",
    "shared_secret",
    "sign",
    "sign_api_request",
    "user_auth_string",
    "webhook_signature",
]

#: How far an API request's ``auth_timestamp`` may be from the server's clock, either side.
API_MAX_SKEW_S = 600.0

_MD5_EMPTY = hashlib.md5(b"").hexdigest()
#: The largest piece of client input echoed back in an error message.
_ECHO = 64
#: Longer than any timestamp for the next few thousand years: a 5,000-digit value
#: is refused before ``int()`` spends time on it.
_MAX_STAMP_DIGITS = 12


class SignatureError(SoketiError):
    """A request whose signature, key or timestamp is wrong (HTTP 401); ``message`` says which."""


def _bytes(text: str | bytes) -> bytes:
    # surrogatepass: a lone surrogate decoded from client input must not raise here.
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")


def sign(secret: str, message: str | bytes) -> str:
    """The hex HMAC-SHA256 of ``message`` under ``secret``."""
    return hmac.new(_bytes(secret), _bytes(message), hashlib.sha256).hexdigest()


def webhook_signature(secret: str, body: bytes) -> str:
    """``X-Pusher-Signature`` of a webhook body: the hex HMAC-SHA256 of the raw body."""
    return sign(secret, body)


def check_auth(key: str, secret: str, message: str, auth: object) -> bool:
    """Whether ``auth`` is ``"{key}:{signature of message}"``; constant time in the signature."""
    if not isinstance(auth, str):
        return False
    expected = f"{key}:{sign(secret, message)}"
    return hmac.compare_digest(expected.encode(), _bytes(auth))


def channel_auth_string(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """What a private (``socket:channel``) or presence (``socket:channel:data``) auth signs."""
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_auth_string(socket_id: str, user_data: str) -> str:
    """What a ``pusher:signin`` auth signs."""
    return f"{socket_id}::user::{user_data}"


def shared_secret(channel: str, master_key: bytes) -> bytes:
    """The key of a ``private-encrypted-`` channel: SHA256(channel name bytes + master key)."""
    return hashlib.sha256(channel.encode() + master_key).digest()


def _check_socket_id(socket_id: object) -> str:
    # imported here: the core imports this module, and the pattern lives with the core
    from .pusher.state import is_socket_id

    if not isinstance(socket_id, str) or not is_socket_id(socket_id):
        raise ValueError(f"invalid socket id {socket_id!r} (expected digits.digits)")
    return socket_id


def _json_text(value: Mapping[str, Any] | str) -> str:
    # json.dumps with its default separators: byte for byte what the Python SDK sends.
    return value if isinstance(value, str) else json.dumps(value)


def authorize_channel(
    key: str,
    secret: str,
    socket_id: str,
    channel: str,
    channel_data: Mapping[str, Any] | str | None = None,
    *,
    encryption_master_key: bytes | None = None,
) -> dict[str, str]:
    """What an auth endpoint answers pusher-js for a private, presence or encrypted channel.

    ``{"auth": "key:hex"}``; with ``channel_data`` (presence: ``{"user_id", "user_info"}``,
    a dict or its JSON text, signed exactly as returned) also ``"channel_data"``; for a
    ``private-encrypted-`` channel also ``"shared_secret"``, the base64 of the channel's
    key derived from ``encryption_master_key`` (32 bytes). Raises ``ValueError`` for a
    malformed socket id, or an encrypted channel without a master key.
    """
    _check_socket_id(socket_id)
    data = None if channel_data is None else _json_text(channel_data)
    answer = {"auth": f"{key}:{sign(secret, channel_auth_string(socket_id, channel, data))}"}
    if channel.startswith("private-encrypted-"):
        if encryption_master_key is None:
            raise ValueError(f"{channel!r} is encrypted: encryption_master_key is needed")
        answer["shared_secret"] = base64.b64encode(
            shared_secret(channel, encryption_master_key)
        ).decode()
    if data is not None:
        answer["channel_data"] = data
    return answer


def authenticate_user(
    key: str, secret: str, socket_id: str, user_data: Mapping[str, Any] | str
) -> dict[str, str]:
    """What a user-authentication endpoint answers pusher-js: ``{"auth", "user_data"}``.

    ``user_data`` (a dict or its JSON text) must have an ``id``: the server closes a
    sign-in without one with 4009, so this raises ``ValueError`` instead.
    """
    _check_socket_id(socket_id)
    text = _json_text(user_data)
    parsed = json.loads(text) if isinstance(user_data, str) else user_data
    if not isinstance(parsed, Mapping) or parsed.get("id") in (None, ""):
        raise ValueError("user_data must be an object with an id")
    return {"auth": f"{key}:{sign(secret, user_auth_string(socket_id, text))}", "user_data": text}


# ---------------------------------------------------------------- HTTP API requests

_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class HmacSha256:
    """HMAC-SHA256 under one key, with the key's two padded blocks hashed once (RFC 2104).

    ``HmacSha256(key).digest(msg) == hmac.digest(key, msg, "sha256")``. Every API
    request of an app is signed with the same secret, so the HTTP API keeps one per
    app and saves the key setup on each request (see bench/test_bench_http.py).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        """The 32-byte HMAC of ``msg``."""
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _echo(value: str) -> str:
    return value if len(value) <= _ECHO else value[:_ECHO] + "..."


def api_string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\nPATH\\nQUERY``: QUERY is every parameter but ``auth_signature``,
    keys lower-cased and sorted, ``k=v`` joined by ``&``, values not escaped."""
    lowered = {k.lower(): v for k, v in params.items() if k.lower() != "auth_signature"}
    query = "&".join(f"{k}={lowered[k]}" for k in sorted(lowered))
    return f"{method}\n{path}\n{query}"


def sign_api_request(
    key: str,
    secret: str,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The query parameters of a signed API request, ``auth_signature`` included.

    ``body_md5`` is added when there is a body (as the Node SDK does).
    """
    query = dict(params or {})
    query.update(
        auth_key=key,
        auth_timestamp=str(int(time.time()) if timestamp is None else timestamp),
        auth_version="1.0",
    )
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    query["auth_signature"] = sign(secret, api_string_to_sign(method, path, query))
    return query


def check_api_head(
    params: Mapping[str, str], key: str, now: float, max_skew: float = API_MAX_SKEW_S,
    has_body: bool = False,
) -> None:
    """The checks that need no body: key, presence of a signature, version, timestamp.

    Raises :class:`SignatureError`. ``has_body``: the head announces a body, so
    ``body_md5`` must be there. Part of :func:`check_api_request`; hosts run it
    (through the HTTP API's ``check_head``) before reading a body.
    """
    if params.get("auth_key") != key:
        raise SignatureError("auth_key is missing or is not this app's key.")
    if not params.get("auth_signature"):
        raise SignatureError("auth_signature is missing.")
    version = params.get("auth_version")
    if version is not None and version != "1.0":
        raise SignatureError(f"Unsupported auth_version {_echo(version)!r} (expected 1.0).")
    stamp = params.get("auth_timestamp")
    # isascii: str.isdigit() is also true of "²" and other Unicode digits int() refuses.
    if (
        not stamp
        or len(stamp) > _MAX_STAMP_DIGITS
        or not stamp.isascii()
        or not stamp.isdigit()
    ):
        raise SignatureError("auth_timestamp is missing or not an integer (seconds).")
    if abs(now - int(stamp)) > max_skew:
        raise SignatureError(
            f"auth_timestamp is more than {int(max_skew)} s away from the server's clock."
        )
    if has_body and params.get("body_md5") is None:
        raise SignatureError("body_md5 is missing (the request has a body).")


def check_api_request(
    method: str,
    paths: Iterable[str],
    params: Mapping[str, str],
    body: bytes,
    key: str,
    secret: str | HmacSha256,
    now: float,
    max_skew: float = API_MAX_SKEW_S,
) -> None:
    """Check an auth_version 1.0 request signature; raise :class:`SignatureError` when wrong.

    ``params`` is the query with keys lower-cased and values percent-decoded;
    ``paths`` the forms of the path a client may have signed (raw, then decoded);
    ``secret`` may be a prepared :class:`HmacSha256`. ``auth_timestamp`` must be
    within ``max_skew`` seconds of ``now``, in the past or the future. ``body_md5``
    must be the MD5 of the body when there is one, and, if sent for an empty body,
    the MD5 of the empty string (the Python SDK sends it on a GET).
    """
    check_api_head(params, key, now, max_skew, bool(body))
    check_api_signature(method, paths, params, body, secret)


def check_api_signature(
    method: str, paths: Iterable[str], params: Mapping[str, str], body: bytes, secret: str | HmacSha256,
    query: str | None = None,
) -> None:
    """The part of :func:`check_api_request` that needs the body: ``body_md5`` and the signature.

    For a request whose head :func:`check_api_head` accepted (with ``has_body`` true when
    a body came); raises :class:`SignatureError`. ``query``: the signed query string
    when the caller has it (see :func:`soketi_impl.http.query.signed_query`); else it
    is built from ``params``.
    """
    md5 = params.get("body_md5")
    if body:
        if md5 is None:
            raise SignatureError("body_md5 is missing (the request has a body).")
        if not hmac.compare_digest(md5.encode("utf-8", "surrogatepass"), hashlib.md5(body).hexdigest().encode()):
            raise SignatureError("body_md5 does not match the MD5 of the body.")
    elif md5 is not None and md5 != _MD5_EMPTY:
        raise SignatureError("body_md5 does not match the MD5 of the (empty) body.")
    signature = params.get("auth_signature", "")
    try:
        given = bytes.fromhex(signature)
    except ValueError:
        raise SignatureError("auth_signature is not hex.") from None
    mac = secret if isinstance(secret, HmacSha256) else HmacSha256(_bytes(secret))
    if query is None:
        query = "&".join([f"{k}={params[k]}" for k in sorted(params) if k != "auth_signature"])
    for path in paths:
        expected = mac.digest(f"{method}\n{path}\n{query}".encode("utf-8", "surrogatepass"))
        if hmac.compare_digest(expected, given):
            return
    raise SignatureError("Invalid signature: auth_signature does not match the request.")
