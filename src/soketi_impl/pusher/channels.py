"""One policy object per channel kind: who may subscribe, and what the kind allows.

:func:`policy_for` maps a channel name to its policy (public, private,
private-encrypted, presence, ``#server-to-user-``, each with a cache variant where
Pusher has one). A policy authorizes a subscription (raising
:class:`SubscriptionRefused`, which the core turns into
``pusher:subscription_error``) and says whether client events are allowed, whether
the channel is a presence channel, a cache channel, and whether its subscriber
count is reported. A new channel kind is a new policy here.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ..config import AppConfig
from ..errors import SoketiError
from ..signing import channel_auth_string, check_auth
from ..twins._protocol import (
    ENCRYPTED,
    PRESENCE,
    PRIVATE,
    PUBLIC,
    SERVER_TO_USER,
    channel_kind,
    is_cache_channel,
)
from ..twins._protocol_py import SERVER_TO_USER_PREFIX

#: A presence member: (user id, user_info).
Member = tuple[str, Any]
#: The longest user id accepted (presence channel_data, sign-in).
MAX_USER_ID_LENGTH: Final = 128

__all__ = [
    "MAX_USER_ID_LENGTH",
    "SERVER_TO_USER_PREFIX",
    "Member",
    "ChannelPolicy",
    "EncryptedChannel",
    "PresenceChannel",
    "PrivateChannel",
    "PublicChannel",
    "ServerToUserChannel",
    "SubscriptionRefused",
    "policy_for",
]


class SubscriptionRefused(SoketiError):
    """A subscription is refused: sent as ``pusher:subscription_error`` (the connection stays)."""

    def __init__(self, kind: str, message: str, status: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class ChannelPolicy:
    """The rules of one channel kind (subclasses override what differs)."""

    #: the kind constant of :mod:`soketi_impl.twins._protocol`
    kind: int = PUBLIC
    #: clients may send ``client-*`` events on it
    client_events: bool = False
    #: a presence channel (members, member_added / member_removed)
    presence: bool = False
    #: needs a signature (counts as "authenticated" for the user-auth deadline)
    signed: bool = False
    #: subscriber counts are reported to observers (``subscription_count``)
    counted: bool = True
    #: the connection enters the channel's broadcast table on subscribe
    #: (``#server-to-user-`` sinks are there from sign-in)
    tabled: bool = True

    def __init__(self, cache: bool = False) -> None:
        #: a cache channel: the last event is kept for late subscribers
        self.cache = cache

    def authorize(
        self, app: AppConfig, socket_id: str, user_id: str | None, channel: str, data: dict[str, Any]
    ) -> Member | None:
        """Check a ``pusher:subscribe``; the presence member for presence channels, else None."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}{' cache' if self.cache else ''}>"


class PublicChannel(ChannelPolicy):
    """Anyone may subscribe; no client events."""


def _check_signature(app: AppConfig, socket_id: str, channel: str, data: dict[str, Any]) -> None:
    if not check_auth(app.key, app.secret, channel_auth_string(socket_id, channel), data.get("auth")):
        raise SubscriptionRefused("AuthError", "Invalid signature.", 401)


class PrivateChannel(ChannelPolicy):
    """Subscribing needs the app's signature of ``socket_id:channel``; client events allowed."""

    kind = PRIVATE
    client_events = True
    signed = True

    def authorize(
        self, app: AppConfig, socket_id: str, user_id: str | None, channel: str, data: dict[str, Any]
    ) -> Member | None:
        _check_signature(app, socket_id, channel, data)
        return None


class EncryptedChannel(PrivateChannel):
    """``private-encrypted-``: signed like private channels; no client events (the server cannot read them)."""

    kind = ENCRYPTED
    client_events = False


class PresenceChannel(ChannelPolicy):
    """Signed with the member's ``channel_data``; one member per user id; client events allowed."""

    kind = PRESENCE
    client_events = True
    presence = True
    signed = True

    def authorize(
        self, app: AppConfig, socket_id: str, user_id: str | None, channel: str, data: dict[str, Any]
    ) -> Member | None:
        channel_data = data.get("channel_data")
        if not isinstance(channel_data, str):
            raise SubscriptionRefused("AuthError", "Presence channels need channel_data.", 401)
        if not check_auth(
            app.key, app.secret, channel_auth_string(socket_id, channel, channel_data), data.get("auth")
        ):
            raise SubscriptionRefused("AuthError", "Invalid signature.", 401)
        try:
            parsed = orjson.loads(channel_data)
        except orjson.JSONDecodeError:
            parsed = None
        uid = parsed.get("user_id") if isinstance(parsed, dict) else None
        if isinstance(uid, bool) or not isinstance(uid, (str, int)) or uid == "":
            raise SubscriptionRefused("AuthError", "channel_data must be an object with a user_id.", 400)
        assert isinstance(parsed, dict)
        uid = str(uid)
        if len(uid) > MAX_USER_ID_LENGTH:
            raise SubscriptionRefused(
                "LimitReached", f"user_id longer than {MAX_USER_ID_LENGTH} characters.", 400
            )
        limit = app.max_presence_member_size_in_kb
        if len(channel_data.encode()) > limit * 1024:
            raise SubscriptionRefused("LimitReached", f"Presence member data over {limit} KB.", 400)
        return uid, parsed.get("user_info")


class ServerToUserChannel(ChannelPolicy):
    """``#server-to-user-{id}``: only the connection signed in as that user; never counted."""

    kind = SERVER_TO_USER
    counted = False
    tabled = False

    def authorize(
        self, app: AppConfig, socket_id: str, user_id: str | None, channel: str, data: dict[str, Any]
    ) -> Member | None:
        if user_id is None or channel != SERVER_TO_USER_PREFIX + user_id:
            raise SubscriptionRefused(
                "AuthError", "Only the signed-in user may subscribe to its own channel.", 403
            )
        return None


_POLICIES: Final[dict[tuple[int, bool], ChannelPolicy]] = {
    (PUBLIC, False): PublicChannel(),
    (PUBLIC, True): PublicChannel(cache=True),
    (PRIVATE, False): PrivateChannel(),
    (PRIVATE, True): PrivateChannel(cache=True),
    (ENCRYPTED, False): EncryptedChannel(),
    (ENCRYPTED, True): EncryptedChannel(cache=True),
    (PRESENCE, False): PresenceChannel(),
    (PRESENCE, True): PresenceChannel(cache=True),
    (SERVER_TO_USER, False): ServerToUserChannel(),
}


def policy_for(channel: str) -> ChannelPolicy:
    """The policy of a channel, from its name's prefix."""
    kind = channel_kind(channel)
    return _POLICIES[kind, kind != SERVER_TO_USER and bool(is_cache_channel(channel))]
