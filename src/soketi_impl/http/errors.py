"""How the HTTP API refuses a request: :class:`ApiError` and its JSON answer.

Every refusal carries Pusher's status code and a body ``{"error": "..."}`` that says
what was wrong, echoing at most a short piece of the client's input.
"""

from __future__ import annotations

import orjson

from ..errors import SoketiError
from .types import HttpResponse

__all__ = ["ApiError", "echo", "error_response"]

#: The largest piece of client input echoed back in an error message.
_ECHO = 64


class ApiError(SoketiError):
    """A request the API refuses: ``status`` is the HTTP status, ``message`` goes in the body."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def echo(value: str) -> str:
    """``value`` cut to a length fit for an error message."""
    return value if len(value) <= _ECHO else value[:_ECHO] + "..."


def error_response(exc: ApiError) -> HttpResponse:
    """The JSON answer of a refusal."""
    return HttpResponse(exc.status, orjson.dumps({"error": exc.message}), headers=list(exc.headers))
