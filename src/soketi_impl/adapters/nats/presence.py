"""Distributed presence over the store: joins, leaves, reaping dead nodes, reconciliation.

Every change is a compare-and-set of one channel's key (:mod:`.store`), so under
any concurrency one write, and only one, moves a user from absent to present or
back; the node that made it tells the observers (``notify_member_*``, webhooks
included), once. Member events to subscribers come from every node's watch of the
bucket, never from the writer. This node's joins and leaves of one channel run one
after the other (a lock per key), so a user's second connection here never
overtakes its first.

A join is let in (``presence_joined``) once the watch applied the join's own
write, with the member list of the replica at that moment: the joining connection
sees exactly the member events that come after its list. The member limit is
checked in the compare-and-set, across nodes.

When NATS is away, a join or leave is answered from this node's members (the
member event goes to this node's subscribers only), and :meth:`reconcile` makes
the bucket match this node's members when NATS is back; observers then hear of the
members that changed, once. The heartbeat runs :meth:`reconcile` whenever the
replica and the core's members disagree (a node reaped while alive comes back this
way), and :meth:`reap` removes a dead node from every channel it was in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from nats.errors import Error as NatsError

from ..base import PresenceJoin
from ..throttle import Throttle
from .store import Contention, Users, channel_key, parse_key

if TYPE_CHECKING:
    from .adapter import NatsAdapter

__all__ = ["DistributedPresence"]

log = logging.getLogger("soketi_impl.nats")

#: what a failed presence write raises (NATS away, a timeout, a lost race)
FAILURES = (NatsError, OSError, asyncio.TimeoutError, Contention)


def add_member(users: Users, node: str, user_id: str, user_info: Any, limit: int) -> int:
    """Put ``node`` under ``user_id``: 1 the user is new, 0 it was there, -1 the channel is full."""
    entry = users.get(user_id)
    if entry is None:
        if 0 <= limit <= len(users):
            return -1
        users[user_id] = {"i": user_info, "n": [node]}
        return 1
    if node not in entry["n"]:
        entry["n"].append(node)
    return 0


def remove_member(users: Users, node: str, user_id: str) -> int:
    """Take ``node`` from under ``user_id``: 1 when the user is gone from the channel."""
    entry = users.get(user_id)
    if entry is None or node not in entry["n"]:
        return 0
    entry["n"].remove(node)
    if entry["n"]:
        return 0
    del users[user_id]
    return 1


class _KeyLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def busy(self, key: str) -> bool:
        return key in self._locks

    async def __call__(self, key: str) -> asyncio.Lock:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: not a user any more
            self._forget(key)
            raise
        return lock

    def _forget(self, key: str) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def release(self, key: str) -> None:
        self._locks[key][0].release()
        self._forget(key)


class DistributedPresence:
    """Presence joins and leaves through the store (one per adapter)."""

    def __init__(self, adapter: NatsAdapter) -> None:
        self.adapter = adapter
        self.locks = _KeyLocks()
        #: the bucket may differ from this node's members: reconcile at the next heartbeat
        self.dirty = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors = Throttle()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout: float) -> None:
        """Let the joins and leaves in flight finish (closing), then cancel what is left."""
        if self._tasks and timeout > 0:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _failing(self, what: str, exc: BaseException) -> None:
        self.dirty = True
        if self._errors.ready():
            log.warning(
                "presence %s through NATS failed (%s: %s); answered from this node's members, "
                "reconciled when NATS answers again (logged at most every %.0f s)",
                what, type(exc).__name__, exc, self._errors.every,
            )

    # ------------------------------------------------------------------ join and leave

    def join(self, join: PresenceJoin) -> None:
        """Register the member (a user's first connection here) and let the connection in."""
        self._spawn(self._join(join))

    async def _join(self, join: PresenceJoin) -> None:
        a, host = self.adapter, self.adapter.host
        key = channel_key(join.app_id, join.channel)
        await self.locks(key)
        try:
            if not join.first_here:  # the user is registered from this node already
                self._let_in(join)
                return
            try:
                status, rev = await a.store.mutate(
                    key, lambda u: add_member(u, a.node_id, join.user_id, join.user_info, join.max_members)
                )
            except Exception as exc:  # NATS away, a timeout, a lost race, a bad value: answer locally
                self._failing("join", exc)
                host.remote_member_added(join.app_id, join.channel, join.user_id, join.user_info)
                host.presence_joined(join, None)
                return
            if status == -1:
                self.dirty = True  # another connection of the user here may have counted on it
                host.presence_joined(join, None, full=True)
                return
            if status == 1:
                host.notify_member_added(join.app_id, join.channel, join.user_id, join.user_info)
            await a.store.wait_applied(rev, a.requests_timeout)
            self._let_in(join)
        finally:
            self.locks.release(key)

    def _let_in(self, join: PresenceJoin) -> None:
        members = self.adapter.store.members(join.app_id, join.channel)
        members.setdefault(join.user_id, join.user_info)  # the watch may lag (NATS away)
        self.adapter.host.presence_joined(join, members)

    def leave(self, app_id: str, channel: str, user_id: str) -> None:
        """The user's last connection here left: withdraw this node from under it."""
        self._spawn(self._leave(app_id, channel, user_id))

    async def _leave(self, app_id: str, channel: str, user_id: str) -> None:
        a = self.adapter
        key = channel_key(app_id, channel)
        await self.locks(key)
        try:
            status, _ = await a.store.mutate(key, lambda u: remove_member(u, a.node_id, user_id))
        except Exception as exc:  # as for a join
            self._failing("leave", exc)
            a.host.remote_member_removed(app_id, channel, user_id)
            return
        finally:
            self.locks.release(key)
        if status == 1:
            a.host.notify_member_removed(app_id, channel, user_id)

    # ------------------------------------------------------------------ dead nodes, reconciliation

    def nodes_in_use(self) -> set[str]:
        """Every node the replica lists under some member."""
        return {
            n for k, (_, users) in self.adapter.store.replica.items() if k.startswith("p.")
            for e in users.values() for n in e["n"]
        }

    async def reap(self, node: str) -> int:
        """Remove a dead node from every channel; observers hear of the members who left."""
        a = self.adapter
        removed = 0
        keys = [
            k for k, (_, users) in a.store.replica.items()
            if k.startswith("p.") and any(node in e["n"] for e in users.values())
        ]
        for key in keys:
            app_id, channel = parse_key(key)
            await self.locks(key)
            try:
                gone, _ = await a.store.mutate(key, lambda u: [uid for uid in list(u) if remove_member(u, node, uid)])
            finally:
                self.locks.release(key)
            for uid in gone:
                a.host.notify_member_removed(app_id, channel, uid)
            removed += len(gone)
        return removed

    def differs(self) -> bool:
        """Whether the replica and this node's members disagree (cheap: no I/O)."""
        return bool(self._differences())

    def _differences(self) -> dict[str, tuple[dict[str, Any], set[str]]]:
        """key -> (members to register: user id -> info, user ids to withdraw), for this node."""
        a = self.adapter
        me = a.node_id
        wanted: dict[str, dict[str, Any]] = {}
        for app_id, channel, uid, info in a.host.local_members():
            wanted.setdefault(channel_key(app_id, channel), {})[uid] = info
        out: dict[str, tuple[dict[str, Any], set[str]]] = {}
        for key in wanted.keys() | {k for k in a.store.replica if k.startswith("p.")}:
            if self.locks.busy(key):
                continue  # a join or leave is in flight: next time
            _, users = a.store.replica.get(key, (0, {}))
            mine = {uid for uid, e in users.items() if me in e["n"]}
            want = wanted.get(key, {})
            add = {uid: info for uid, info in want.items() if uid not in mine}
            drop = mine - want.keys()
            if add or drop:
                out[key] = (add, drop)
        return out

    async def reconcile(self) -> None:
        """Make the bucket hold exactly this node's members (after an outage, or being reaped)."""
        a = self.adapter
        self.dirty = False
        fixed = 0
        for key, (add, drop) in self._differences().items():
            app_id, channel = parse_key(key)

            def change(users: Users, add: dict[str, Any] = add, drop: set[str] = drop) -> tuple[list[str], list[str]]:
                added = [uid for uid, info in add.items() if add_member(users, a.node_id, uid, info, -1) == 1]
                gone = [uid for uid in drop if remove_member(users, a.node_id, uid)]
                return added, gone

            await self.locks(key)
            try:
                (added, gone), _ = await a.store.mutate(key, change)
            finally:
                self.locks.release(key)
            for uid in added:
                a.host.notify_member_added(app_id, channel, uid, add[uid])
            for uid in gone:
                a.host.notify_member_removed(app_id, channel, uid)
            fixed += len(add) + len(drop)
        if fixed:
            log.info("presence reconciled with NATS: %d registrations fixed", fixed)

    async def withdraw(self) -> None:
        """A clean stop: this node leaves every channel (its members leave, with member_removed)."""
        await self.reap(self.adapter.node_id)

