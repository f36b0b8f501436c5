"""``POST /apps/{id}/users/{user_id}/terminate_connections``: close a user's connections (4009)."""

from __future__ import annotations

from typing import Any

from .errors import ApiError
from .routes import Call

__all__ = ["MAX_USER_ID", "terminate"]

#: The longest user id (Pusher's limit; sign-in enforces the same).
MAX_USER_ID = 128


async def terminate(call: Call) -> Any:
    """Close every connection signed in as ``user_id``, on every node; answers ``{}``."""
    user_id = call.args["user_id"]
    if len(user_id) > MAX_USER_ID:
        raise ApiError(400, f"user_id longer than {MAX_USER_ID} characters.")
    await call.api.pusher.terminate_user_connections(call.app.config.id, user_id)
    return {}
