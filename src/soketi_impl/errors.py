"""Exceptions of soketi-impl. Each carries the Pusher error code it maps to.

Pusher codes (see docs/PROTOCOL notes): 4001 unknown app key, 4003 app disabled,
4004 over connection quota, 4009 unauthorized, 4100 over capacity, 4200 server
restarting, 4201 pong not received, 4301 client event rejected. ``None`` means
"send as a pusher:error without a code".
"""

from __future__ import annotations


class SoketiError(Exception):
    """Base of every error raised by soketi-impl.

    ``code`` is the Pusher error code, or ``None``; ``close`` tells whether the
    connection must be closed with that code after the ``pusher:error`` is sent.
    """

    code: int | None = None
    close: bool = False

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ProtocolError(SoketiError):
    """A client frame that could not be understood (bad JSON, wrong types, too big).

    Answered with a ``pusher:error`` (code 4000-range or none); the connection stays open
    unless ``close`` is set.
    """


class ClientEventError(SoketiError):
    """A client event was rejected (disabled, not subscribed, too big, rate limited): 4301."""

    code = 4301


class ConnectionRefused(SoketiError):
    """The connection is refused and closed with ``code`` (4001, 4003, 4004, 4009, 4100 ...)."""

    close = True


class AuthError(SoketiError):
    """A signature did not match (channel subscription or sign-in)."""

    code = 4009


class DuplicateConnection(SoketiError, KeyError):
    """A connection id that is already tracked was added again."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class UnknownProtocol(SoketiError, LookupError):
    """``Router.get_protocol(name)`` for a name that no handler was registered under."""

    def __str__(self) -> str:
        return self.message


class ConfigError(SoketiError, ValueError):
    """A configuration key is unknown or has a value of the wrong type; names the key."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        msg = f"config key {key!r}: expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        super().__init__(msg)
        self.key = key
        self.expected = expected
