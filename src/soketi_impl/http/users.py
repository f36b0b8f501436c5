"""``POST /apps/{id}/users/{user_id}/terminate_connections``: close a user's connections (4009)."""

from __future__ import annotations

from typing import Any

from ..pusher.channels import MAX_USER_ID_LENGTH
from .errors import ApiError
from .routes import Call

__all__ = ["terminate"]


async def terminate(call: Call) -> Any:
    """Close every connection signed in as ``user_id``, on every node; answers ``{}``.

    A user id longer than the core accepts at sign-in (128) cannot be signed in: 400.
    """
    user_id = call.args["user_id"]
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise ApiError(400, f"user_id longer than {MAX_USER_ID_LENGTH} characters.")
    await call.api.pusher.terminate_user_connections(call.app.config.id, user_id)
    return {}
