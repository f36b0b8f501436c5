"""Heartbeats and leases: which nodes are alive, and reaping the members of dead ones.

Every node publishes ``+{node id}`` on ``{base}nodes`` every ``heartbeat_interval``
(and ``-{node id}`` when it stops cleanly). A node hearing a node it did not know
answers with its own beat at once, so a new node learns the others within a round
trip. A node is alive while its last beat is younger than ``dead_after`` (the
lease); a node that registered presence members or count shares (the store's
replica lists it) and holds no lease is dead, and the next heartbeat of any live
node reaps it (:meth:`~.presence.DistributedPresence.reap`,
:meth:`~.counts.NatsCounts.reap`; the compare-and-set makes one reaper win each
change, so the observers hear of each member and each count change once). Time is each
node's own monotonic clock: no clock is compared across machines. A node that was
cut off from NATS counts leases only from its reconnection, so it never reaps the
nodes it could not hear.

Each heartbeat also reconciles this node's registrations when the replica and the
core's members or counts disagree (after an outage, or when this node was reaped
while alive), and deletes the keys of counts this node brought to 0 a while ago. The loop survives any exception: it logs (rate-limited) and goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError, NotFoundError

from ..throttle import Throttle
from .presence import FAILURES

if TYPE_CHECKING:

    from .adapter import NatsAdapter

__all__ = ["MAX_NODES", "Nodes"]

log = logging.getLogger("soketi_impl.nats")

MAX_NODES = 10_000  # nodes remembered at once; beats from more are ignored


class Nodes:
    """The node table and the heartbeat loop (one per adapter)."""

    def __init__(self, adapter: NatsAdapter) -> None:
        self.adapter = adapter
        #: node id -> monotonic time of its last beat
        self.seen: dict[str, float] = {}
        #: leases are counted from here (start, or the last reconnection)
        self.live_since = time.monotonic()
        self._errors = Throttle()

    def beat(self, alive: bool = True) -> None:
        """Publish this node's beat (or its goodbye)."""
        a = self.adapter
        a.outbox.put(a.nodes_subject, (b"+" if alive else b"-") + a.node_id.encode())

    def on_beat(self, data: bytes) -> None:
        """A beat or a goodbye from another node."""
        a = self.adapter
        node = data[1:].decode()
        if not node or node == a.node_id:
            return
        if data[:1] == b"-":
            self.seen.pop(node, None)
            return
        if data[:1] != b"+":
            raise ValueError("a beat starts with + or -")
        known = node in self.seen
        if not known and len(self.seen) >= MAX_NODES:
            return
        self.seen[node] = time.monotonic()
        if not known:
            self.beat()  # let it know us now, not at our next beat

    def alive(self) -> int:
        """How many other nodes hold a lease now."""
        now, lease = time.monotonic(), self.adapter.dead_after
        return sum(1 for t in self.seen.values() if now - t <= lease)

    def dead(self) -> list[str]:
        """Nodes with presence members and no lease."""
        a = self.adapter
        now, lease = time.monotonic(), a.dead_after
        if now - self.live_since <= lease:
            return []  # we may not have heard everyone yet
        return [
            n for n in a.presence.nodes_in_use() | a.counts.nodes_in_use()
            if n != a.node_id and now - max(self.seen.get(n, 0.0), self.live_since) > lease
        ]

    async def run(self) -> None:
        """Beat every ``heartbeat_interval`` until cancelled, whatever fails in between."""
        a = self.adapter
        while True:
            await asyncio.sleep(a.heartbeat_interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except FAILURES as exc:
                a.presence.dirty = True
                if isinstance(exc, (NoRespondersError, NoStreamResponseError, NotFoundError)):
                    # the bucket is gone (a NATS server restarted, or it was deleted):
                    # the next heartbeat binds it again and registers everything anew
                    a.store.live = False
                if self._errors.ready():
                    log.warning("NATS heartbeat could not finish (%s: %s); it goes on", type(exc).__name__, exc)
            except Exception as exc:  # a bug or a surprise from NATS: log, beat again later
                a.presence.dirty = True
                if self._errors.ready():
                    log.warning("NATS heartbeat failed (%s: %s); it goes on", type(exc).__name__, exc)

    async def tick(self) -> None:
        """One heartbeat: beat, forget old nodes, reap dead ones, reconcile if needed."""
        a = self.adapter
        self.beat()
        if not a.connected:
            return
        if a.store.live:
            await a.store.check()
        if not a.store.live:
            await a.resync()
            return
        now = time.monotonic()
        for node, t in list(self.seen.items()):
            if now - t > 4 * a.dead_after:
                del self.seen[node]
        for node in self.dead():
            removed = await a.presence.reap(node)
            shares = await a.counts.reap(node)
            log.info(
                "NATS: node %s missed its heartbeats: reaped (%d members left, %d counts changed)",
                node, removed, shares,
            )
        if a.presence.dirty or a.presence.differs():
            await a.presence.reconcile()
            fixed = await a.counts.reconcile()
            if fixed:
                log.info("cluster counts reconciled with NATS: %d shares fixed", fixed)
        elif a.counts.differences():
            await a.counts.reconcile()
        await a.counts.clean_zeros()


