"""Node-to-node requests: a query asked of every other node, and this node's answers to theirs.

The asking node PUBLISHes ``{"id", "node", "app", "op", "arg"}`` on
``{prefix}requests``; every other node answers ``{"id", "data"}`` on
``{prefix}replies#{asking node}`` with what the core's ``answer`` says. PUBLISH
returns how many subscribers received the request, which is the number of nodes
(the asker included) at that instant, without the race of a separate
``PUBSUB NUMSUB``; the asker waits for that many replies or ``requests_timeout``,
and returns what it has.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from .adapter import RedisAdapter

__all__ = ["Requests"]

log = logging.getLogger("soketi_impl.redis")


class _Pending:
    """The replies to one request."""

    __slots__ = ("done", "expected", "replies")

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.expected: int | None = None
        self.done = asyncio.Event()

    def check(self) -> None:
        if self.expected is not None and len(self.replies) >= self.expected:
            self.done.set()


class Requests:
    """Asking the other nodes and answering them (one per adapter)."""

    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)

    async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        """The other nodes' answers that came within ``requests_timeout``."""
        a = self.adapter
        if a.pipeline.client is None:
            return []
        rid = f"{a.node_id}:{next(self._ids)}"
        pending = self._pending[rid] = _Pending()
        request = orjson.dumps({"id": rid, "node": a.node_id, "app": app_id, "op": op, "arg": arg})
        try:
            receivers = int(await a.pipeline.command("PUBLISH", a.requests_channel, request))
            pending.expected = receivers - (1 if a._subscribed else 0)
            pending.check()
            if not pending.done.is_set():
                await asyncio.wait_for(pending.done.wait(), a.requests_timeout)
        except asyncio.TimeoutError:
            log.info(
                "%s request: %d of %s nodes answered within %.1f s",
                op, len(pending.replies) + 1, (pending.expected or 0) + 1, a.requests_timeout,
            )
        except (RedisError, OSError) as exc:
            a.pipeline.failing(exc)
        finally:
            del self._pending[rid]
        return [r for r in pending.replies if r is not None]

    def on_reply(self, reply: dict[str, Any]) -> None:
        """Another node answered one of our requests."""
        pending = self._pending.get(reply["id"])
        if pending is not None:
            pending.replies.append(reply["data"])
            pending.check()

    def on_request(self, request: dict[str, Any]) -> None:
        """Another node asks: answer with the core's local part."""
        a = self.adapter
        node = request["node"]
        if node == a.node_id:
            return
        arg = request["arg"]
        if not isinstance(node, str) or not (arg is None or isinstance(arg, str)):
            raise ValueError("a request needs a node id and a string or null arg")
        data = a.host.answer(str(request["app"]), str(request["op"]), arg)
        reply = orjson.dumps({"id": request["id"], "data": data})
        a.pipeline.enqueue(("PUBLISH", a.base + "replies#" + node, reply), None)
