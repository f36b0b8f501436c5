"""Node-to-node queries: a query asked of every other node, and this node's answers to theirs.

The asking node publishes ``{"id", "node", "app", "op", "arg"}`` on ``{base}requests``
with its own ``{base}replies.{node id}`` as the reply subject; every other node
answers ``{"id", "data"}`` there with what the core's ``answer`` says. The asker
waits for as many answers as there are other nodes (``SOKETI_ADAPTER_NATS_NODES_NUMBER``
minus one when it is set, else the nodes holding a heartbeat lease, see
:mod:`.nodes`) or ``requests_timeout``, and returns what it has.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .adapter import NatsAdapter

__all__ = ["Requests"]

log = logging.getLogger("soketi_impl.nats")

MAX_PENDING = 10_000  # queries of this node waiting for answers at once


class _Pending:
    """The replies to one request."""

    __slots__ = ("done", "expected", "replies")

    def __init__(self, expected: int) -> None:
        self.replies: list[Any] = []
        self.expected = expected
        self.done = asyncio.Event()

    def check(self) -> None:
        if len(self.replies) >= self.expected:
            self.done.set()


class Requests:
    """Asking the other nodes and answering them (one per adapter)."""

    def __init__(self, adapter: NatsAdapter) -> None:
        self.adapter = adapter
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)

    def expected(self) -> int:
        """How many other nodes should answer."""
        a = self.adapter
        if a.nodes_number is not None:
            return max(0, a.nodes_number - 1)
        return a.nodes.alive()

    async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        """The other nodes' answers that came within ``requests_timeout``."""
        a = self.adapter
        expected = self.expected()
        if not a.connected or expected == 0 or len(self._pending) >= MAX_PENDING:
            return []
        rid = f"{a.node_id}:{next(self._ids)}"
        pending = self._pending[rid] = _Pending(expected)
        request = orjson.dumps({"id": rid, "node": a.node_id, "app": app_id, "op": op, "arg": arg})
        a.outbox.put(a.requests_subject, request, reply=a.replies_subject)
        try:
            await asyncio.wait_for(pending.done.wait(), a.requests_timeout)
        except asyncio.TimeoutError:
            log.info(
                "%s request: %d of %d nodes answered within %.1f s",
                op, len(pending.replies) + 1, expected + 1, a.requests_timeout,
            )
        finally:
            del self._pending[rid]
        return [r for r in pending.replies if r is not None]

    def on_reply(self, data: bytes) -> None:
        """Another node answered one of our requests."""
        reply = orjson.loads(data)
        pending = self._pending.get(reply["id"])
        if pending is not None:
            pending.replies.append(reply["data"])
            pending.check()

    def on_request(self, data: bytes, reply_to: str) -> None:
        """Another node asks: answer with the core's local part."""
        a = self.adapter
        request = orjson.loads(data)
        node, arg = request["node"], request["arg"]
        if node == a.node_id:
            return
        if not isinstance(node, str) or not (arg is None or isinstance(arg, str)) or not reply_to:
            raise ValueError("a request needs a node id, a string or null arg and a reply subject")
        answer = a.host.answer(str(request["app"]), str(request["op"]), arg)
        a.outbox.put(reply_to, orjson.dumps({"id": request["id"], "data": answer}))
