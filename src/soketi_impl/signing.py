"""Pusher signatures: ``hex(HMAC-SHA256(secret, string))``, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["channel_auth_string", "check_auth", "sign", "user_auth_string"]


def sign(secret: str, message: str) -> str:
    """The hex HMAC-SHA256 of ``message`` under ``secret``."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def check_auth(key: str, secret: str, message: str, auth: object) -> bool:
    """Whether ``auth`` is ``"{key}:{signature of message}"``; constant time in the signature."""
    if not isinstance(auth, str):
        return False
    expected = f"{key}:{sign(secret, message)}"
    return hmac.compare_digest(expected.encode(), auth.encode("utf-8", "surrogatepass"))


def channel_auth_string(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """What a private (``socket:channel``) or presence (``socket:channel:data``) auth signs."""
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_auth_string(socket_id: str, user_data: str) -> str:
    """What a ``pusher:signin`` auth signs."""
    return f"{socket_id}::user::{user_data}"
