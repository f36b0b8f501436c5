"""Cluster-wide counts over the store: per-node shares under one KV key per counted name.

Key ``c.{b64 app}.{b64 kind}.{b64 name}`` holds ``{"s": {node id: share}, "t":
total, "p": previous total, "o": origin node, "e": every node}``: the shares of a
channel's subscriptions (or a user's signed-in connections) and the last change
of their sum. :meth:`NatsCounts.change` sets this node's share by compare-and-set
(:meth:`~.store.PresenceStore.mutate`), so the total and the previous total of each
change are exact whatever other nodes do at the same time; the node that wrote a
change is its origin.

Every node learns the changes from its watch of the bucket, in the order they were
written, and reports them to its core (:meth:`AdapterHost.count_total_changed`):
the origin always (``origin=True``), the others when the total crosses zero or the
change asked for every node. ``at_ms`` is the time NATS stored the change (one
clock for every node). The bucket keeps one revision per key, so a slow watch may
skip a revision: the origin then reports its own skipped change from what its write
returned, before the next one.

A node's shares follow its lease, as its presence members do: the reaper
(:mod:`.nodes`) removes a dead node's shares as the origin of those changes, and a
clean stop withdraws this node's shares the same way. A name whose total is 0 keeps
its key (a watch that lags must still see the change to 0) until its origin deletes
it, ``ZERO_TTL`` later. When NATS is away, changes are not written; the heartbeat
then re-registers :meth:`AdapterHost.local_counts`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from nats.js import api
from nats.js.errors import APIError
from nats.js.kv import KV_DEL, KV_OP

from ..base import crosses_zero
from ..throttle import Throttle
from .store import count_key, parse_count_key

if TYPE_CHECKING:
    from .adapter import NatsAdapter

__all__ = ["NatsCounts"]

log = logging.getLogger("soketi_impl.nats")

ZERO_TTL = 30.0  # seconds a name with a total of 0 keeps its key
MAX_OWN = 1024  # this node's changes of one name waiting for the watch


def _total(value: dict[str, Any]) -> int:
    shares = value.get("s") or {}
    return sum(int(n) for n in shares.values())


def set_share(value: dict[str, Any], node: str, share: int, origin: str, every: bool) -> tuple[int, int]:
    """Set ``node``'s share (0 removes it); (total, previous) of the change (equal: none)."""
    shares = value.setdefault("s", {})
    if shares.get(node, 0) == share:
        return _total(value), _total(value)
    previous = _total(value)
    if share > 0:
        shares[node] = share
    else:
        shares.pop(node, None)
    total = _total(value)
    value.update(t=total, p=previous, o=origin, e=every)
    return total, previous


class NatsCounts:
    """This node's shares, the reports of the watch, and the reads of totals (one per adapter)."""

    def __init__(self, adapter: NatsAdapter) -> None:
        self.adapter = adapter
        #: key -> (share, every node) waiting to be written (the latest only: writes coalesce)
        self._wanted: dict[str, tuple[int, bool]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        #: key -> [(revision, total, previous)] this node wrote and its watch has not shown yet
        self._own: dict[str, list[tuple[int, int, int]]] = {}
        #: key -> monotonic time its total was seen at 0 (this node the origin)
        self._zero: dict[str, float] = {}
        #: the last revision this node wrote
        self.last_written = 0
        self._errors = Throttle()

    # ------------------------------------------------------------------ this node's changes

    def change(self, app_id: str, kind: str, name: str, local_count: int, every_node: bool) -> None:
        """This node's count of a name is now ``local_count``: write it (coalesced, in order)."""
        key = count_key(app_id, kind, name)
        _, every = self._wanted.get(key, (0, False))
        self._wanted[key] = (local_count, every or every_node)
        if key not in self._writers:
            task = asyncio.get_running_loop().create_task(self._write(key))
            self._writers[key] = task
            task.add_done_callback(lambda t: self._writers.pop(key) if self._writers.get(key) is t else None)

    def busy(self, key: str) -> bool:
        """Whether a change of this key is waiting or being written."""
        return key in self._wanted or key in self._writers

    async def _write(self, key: str) -> None:
        a = self.adapter
        while key in self._wanted:
            share, every = self._wanted.pop(key)
            try:
                await self.write(key, a.node_id, share, every)
            except Exception as exc:  # NATS away, a timeout, a lost race: re-registered later
                a.presence.dirty = True
                if self._errors.ready():
                    log.warning(
                        "cluster count through NATS failed (%s: %s); re-registered when NATS answers "
                        "again (logged at most every %.0f s)", type(exc).__name__, exc, self._errors.every,
                    )

    async def write(self, key: str, node: str, share: int, every: bool) -> None:
        """Set ``node``'s share of ``key`` (this node the origin of the change)."""
        a = self.adapter
        me = a.node_id
        await a.presence.locks(key)
        try:
            (total, previous), rev = await a.store.mutate(key, lambda v: set_share(v, node, share, me, every))
        finally:
            a.presence.locks.release(key)
        if total != previous:
            self.last_written = max(self.last_written, rev)
            if a.store.applied < rev:
                own = self._own.setdefault(key, [])
                if len(own) >= MAX_OWN:  # the watch is stalled: resync reports what it missed
                    del own[0]
                own.append((rev, total, previous))

    # ------------------------------------------------------------------ what the watch applies

    def applied(
        self, key: str, rev: int, old: dict[str, Any], value: dict[str, Any], at_ms: int, resync: bool
    ) -> None:
        """A count key changed (the watch, in revision order): report the change to the core."""
        try:
            app_id, kind, name = parse_count_key(key)
        except (ValueError, UnicodeDecodeError):
            return  # not a key of ours
        a = self.adapter
        host, me = a.host, a.node_id
        own = self._own.get(key)
        while own and own[0][0] < rev:  # our writes the watch skipped: ours to report
            _, t, p = own.pop(0)
            host.count_total_changed(app_id, kind, name, t, p, True, int(time.time() * 1000))
        if own and own[0][0] == rev:
            own.pop(0)
        if not own:
            self._own.pop(key, None)
        if not value:  # deleted (a total of 0 cleaned up, or by hand)
            total, previous, origin, every = 0, _total(old), "", False
        elif resync:  # what was missed: the difference with what we knew
            total, previous, origin, every = _total(value), _total(old), "", False
        else:
            total, previous = int(value.get("t", _total(value))), int(value.get("p", _total(old)))
            origin, every = str(value.get("o", "")), bool(value.get("e"))
        if total == 0 and value and origin == me:
            self._zero[key] = time.monotonic()
        else:
            self._zero.pop(key, None)
        if total == previous:
            return
        if origin == me:
            host.count_total_changed(app_id, kind, name, total, previous, True, at_ms)
        elif every or crosses_zero(total, previous):
            host.count_total_changed(app_id, kind, name, total, previous, False, at_ms)

    # ------------------------------------------------------------------ reads, reaping, reconciliation

    async def totals(self, app_id: str, kind: str, names: list[str]) -> list[int]:
        """The cluster totals of ``names`` from the replica (live nodes' shares only)."""
        a = self.adapter
        dead = set(a.nodes.dead())
        out = []
        for name in names:
            key = count_key(app_id, kind, name)
            _, value = a.store.replica.get(key, (0, {}))
            shares = dict(value.get("s") or {})
            if key in self._wanted:
                shares[a.node_id] = self._wanted[key][0]
            out.append(sum(int(n) for node, n in shares.items() if node not in dead))
        return out

    def keys_of(self, node: str) -> list[str]:
        """The count keys where ``node`` has a share."""
        return [k for k, (_, v) in self.adapter.store.replica.items() if k.startswith("c.") and node in (v.get("s") or {})]

    def nodes_in_use(self) -> set[str]:
        """Every node with a share somewhere."""
        return {n for k, (_, v) in self.adapter.store.replica.items() if k.startswith("c.") for n in (v.get("s") or {})}

    async def reap(self, node: str) -> int:
        """Remove ``node``'s shares (a dead node, or this one stopping); this node is the origin."""
        keys = self.keys_of(node)
        for key in keys:
            await self.write(key, node, 0, False)
        return len(keys)

    def differences(self) -> dict[str, int]:
        """key -> this node's share, where the replica differs from the core's counts."""
        a = self.adapter
        me = a.node_id
        wanted = {count_key(app, kind, name): n for app, kind, name, n in a.host.local_counts()}
        out: dict[str, int] = {}
        for key in wanted.keys() | set(self.keys_of(me)):
            if self.busy(key) or a.presence.locks.busy(key):
                continue
            _, value = a.store.replica.get(key, (0, {}))
            if int((value.get("s") or {}).get(me, 0)) != wanted.get(key, 0):
                out[key] = wanted.get(key, 0)
        return out

    async def reconcile(self) -> int:
        """Write this node's shares where the bucket differs from the core's counts."""
        fixed = self.differences()
        for key, share in fixed.items():
            await self.write(key, self.adapter.node_id, share, False)
        return len(fixed)

    async def clean_zeros(self) -> None:
        """Delete the keys of names whose total this node made 0, ``ZERO_TTL`` ago and since."""
        a = self.adapter
        now = time.monotonic()
        for key, since in list(self._zero.items()):
            if now - since < ZERO_TTL:
                continue
            self._zero.pop(key, None)
            rev, value = a.store.replica.get(key, (0, {}))
            if not rev or _total(value) != 0 or a.js is None:
                continue
            try:
                await a.js.publish(
                    f"$KV.{a.bucket}.{key}",
                    headers={KV_OP: KV_DEL, api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(rev)},
                )
            except APIError:
                pass  # changed meanwhile: it is in use again

    async def settle(self, timeout: float) -> None:
        """Let the writes in flight finish (closing), then cancel what is left."""
        writers = list(self._writers.values())
        if writers and timeout > 0:
            await asyncio.wait(writers, timeout=timeout)
        for task in writers:
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
