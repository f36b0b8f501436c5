"""The store: one JetStream KV bucket (presence and counts), a replica on every node.

Presence key ``p.{b64(app id)}.{b64(channel)}`` (URL-safe base64 without padding, so any
channel name is a valid key) holds ``{user id: {"i": user_info, "n": [node ids]}}``:
the channel's members, each with the nodes that have a connection of it. Every
change is a compare-and-set on the key's revision (:meth:`PresenceStore.mutate`),
so two nodes changing one channel at once never lose a change, and the one whose
write moved a user from absent to present (or back) is the only one that learns
it did: that node tells the observers (webhooks), exactly once.

Every node watches the whole bucket (an ordered consumer, via nats-py's
``watchall``) and keeps a replica: each update it applies is compared with the
key's previous value, and the difference goes to the core as
``remote_member_added`` / ``remote_member_removed``. The watch delivers updates in
revision order, so every node sees one channel's member events in the order they
were written, and a joining connection that is let in after the watcher applied its
own write sees exactly the member events that come after its member list.

Count keys (``c.{...}``) belong to :mod:`.counts`: the watch hands their changes there.

After a reconnection :meth:`PresenceStore.resync` replaces the watch by a fresh one
and compares its snapshot with the replica, so what was missed meanwhile (a NATS
server restarted with an empty memory bucket included) comes out as member events.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from nats.js import api
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from .adapter import NatsAdapter

__all__ = [
    "Contention", "PresenceStore", "Users", "channel_key", "count_key", "parse_count_key", "parse_key",
]

log = logging.getLogger("soketi_impl.nats")

T = TypeVar("T")
#: user id -> {"i": user_info, "n": [node ids]}
Users = dict[str, dict[str, Any]]

MAX_TRIES = 50  # compare-and-set attempts on one key before giving up
_WRONG_LAST = (10071, 10164)  # JetStream: "wrong last sequence"


class Contention(Exception):
    """A compare-and-set lost ``MAX_TRIES`` times in a row."""


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def channel_key(app_id: str, channel: str) -> str:
    """The KV key of a presence channel."""
    return f"p.{_b64(app_id)}.{_b64(channel)}"


def parse_key(key: str) -> tuple[str, str]:
    """(app id, channel) of a presence key."""
    _, app, channel = key.split(".")
    return _unb64(app), _unb64(channel)


def count_key(app_id: str, kind: str, name: str) -> str:
    """The KV key of a cluster count (``kind``: channel or user)."""
    return f"c.{_b64(app_id)}.{_b64(kind)}.{_b64(name)}"


def parse_count_key(key: str) -> tuple[str, str, str]:
    """(app id, kind, name) of a count key."""
    _, app, kind, name = key.split(".")
    return _unb64(app), _unb64(kind), _unb64(name)


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(value))
    return copied


def _ms(created: Any) -> int:
    """A KV entry's time (NATS's clock, shared by every node) in ms."""
    try:
        return int(created.timestamp() * 1000)
    except (AttributeError, TypeError, ValueError, OSError):
        return int(time.time() * 1000)


def _decode(value: bytes | None) -> Users:
    if not value:
        return {}
    users = orjson.loads(value)
    if not isinstance(users, dict):
        raise ValueError("a presence value must be an object")
    return users


async def _quietly_stop(watcher: Any) -> None:
    try:
        await watcher.stop()
    except Exception:  # the connection may be gone: the consumer is ephemeral anyway
        pass


class PresenceStore:
    """The KV bucket, this node's replica of it and the watch that keeps it (one per adapter)."""

    def __init__(self, adapter: NatsAdapter) -> None:
        self.adapter = adapter
        self.kv: KeyValue | None = None
        #: key -> (revision, users) of every channel with members
        self.replica: dict[str, tuple[int, Users]] = {}
        #: the highest revision the replica reflects
        self.applied = 0
        #: the watch is running and its snapshot is applied
        self.live = False
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None
        self._applied_event = asyncio.Event()
        self._created: Any = None
        #: malformed values skipped so far
        self.malformed = 0

    # ------------------------------------------------------------------ bucket and watch

    async def open(self) -> None:
        """Bind (or create) the bucket and watch it; raises what nats-py raises."""
        await self.resync()

    async def _bind(self) -> None:
        a = self.adapter
        assert a.js is not None
        # Every time: a restarted NATS server has lost the memory bucket.
        config = api.KeyValueConfig(bucket=a.bucket, history=1, storage=api.StorageType.MEMORY)
        try:
            self.kv = await a.js.create_key_value(config)
        except BadRequestError:  # exists with another configuration: use it as it is
            self.kv = await a.js.key_value(a.bucket)
        self._created = (await a.js.stream_info(f"KV_{a.bucket}")).created

    async def check(self) -> None:
        """Stop trusting the watch when the bucket is not the one it watches (deleted, or lost
        in a NATS restart): the next heartbeat binds it again."""
        a = self.adapter
        assert a.js is not None
        try:
            info = await a.js.stream_info(f"KV_{a.bucket}")
        except NotFoundError:
            info = None
        if info is None or info.created != self._created:
            log.warning("NATS: the bucket %s was lost (or made again): watching it afresh", a.bucket)
            self.live = False

    async def resync(self) -> None:
        """Watch the bucket afresh; the snapshot's differences with the replica become member events."""
        await self.stop()
        await self._bind()
        assert self.kv is not None
        watcher = await self.kv.watchall()
        snapshot: dict[str, tuple[int, Users]] = {}
        created: dict[str, int] = {}
        top = 0
        try:
            while True:
                entry = await watcher.updates(timeout=self.adapter.requests_timeout + 5)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                top = max(top, entry.revision)
                snapshot[entry.key] = (entry.revision, self._users(entry))
                created[entry.key] = _ms(entry.created)
        except BaseException:
            await _quietly_stop(watcher)
            raise
        for key in set(self.replica) | set(snapshot):
            rev, users = snapshot.get(key, (0, {}))
            self._set(key, rev, users, created.get(key, 0), resync=True)
        self.applied = top  # the stream may be new (and its revisions lower)
        self._watcher = watcher
        self.live = True
        self._wake()
        self._task = asyncio.get_running_loop().create_task(self._follow(watcher))

    async def stop(self) -> None:
        """Stop the watch (the replica stays)."""
        self.live = False
        task, watcher = self._task, self._watcher
        self._task = self._watcher = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if watcher is not None:
            await _quietly_stop(watcher)

    async def _follow(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            self._set(entry.key, entry.revision, self._users(entry), _ms(entry.created))
            self.applied = max(self.applied, entry.revision)
            self._wake()

    def _users(self, entry: Any) -> Users:
        if entry.operation in (KV_DEL, KV_PURGE):
            return {}
        try:
            return _decode(entry.value)
        except (ValueError, orjson.JSONDecodeError) as exc:
            self.malformed += 1
            log.warning("skipped a malformed presence value under %r: %s", entry.key, exc)
            return {}

    def _set(self, key: str, rev: int, users: Users, at_ms: int, resync: bool = False) -> None:
        """Apply one key's new value; the difference goes to the core as member events or counts."""
        _, old = self.replica.get(key, (0, {}))
        if key.startswith("c."):
            if users:
                self.replica[key] = (rev, users)
            else:
                self.replica.pop(key, None)
            self.adapter.counts.applied(key, rev, old, users, at_ms, resync)
            return
        if users:
            self.replica[key] = (rev, users)
        else:
            # Not kept (the replica stays as large as the live channels): the next
            # write of the key learns the delete marker's revision from NATS.
            self.replica.pop(key, None)
        if old == users:
            return
        try:
            app_id, channel = parse_key(key)
        except (ValueError, UnicodeDecodeError):
            return  # not a key of ours
        host = self.adapter.host
        for uid in old.keys() - users.keys():
            host.remote_member_removed(app_id, channel, uid)
        for uid in users.keys() - old.keys():
            host.remote_member_added(app_id, channel, uid, users[uid].get("i"))

    def _wake(self) -> None:
        self._applied_event.set()
        self._applied_event = asyncio.Event()

    async def wait_applied(self, revision: int, timeout: float) -> bool:
        """Wait until the replica reflects ``revision``; False after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.applied < revision:
            left = deadline - loop.time()
            if left <= 0 or not self.live:
                return False
            try:
                await asyncio.wait_for(self._applied_event.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    # ------------------------------------------------------------------ reading and writing

    def members(self, app_id: str, channel: str) -> dict[str, Any]:
        """user id -> user_info of a channel, as the replica has it."""
        _, users = self.replica.get(channel_key(app_id, channel), (0, {}))
        return {uid: e.get("i") for uid, e in users.items()}

    async def _fetch(self, key: str) -> tuple[int, Users]:
        assert self.kv is not None
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError as exc:  # never written, or deleted (its marker's revision)
            return (exc.entry.revision if exc.entry is not None else 0), {}
        return entry.revision or 0, _decode(entry.value)

    async def mutate(self, key: str, change: Callable[[dict[str, Any]], T]) -> tuple[T, int]:
        """Apply ``change`` to a key's users by compare-and-set; its result and the revision written.

        ``change`` edits the dict it gets (a copy) and returns what the caller wants to
        know (did a user appear or go); it may run several times, on fresher values,
        when another node wrote in between. Nothing is written when it changed nothing.
        """
        a = self.adapter
        if self.kv is None or a.js is None or not a.connected:
            raise ConnectionError("not connected to NATS")
        rev, users = self.replica.get(key, (0, {}))
        for _ in range(MAX_TRIES):
            new = _copy(users)
            result = change(new)
            if new == users:
                return result, rev
            try:
                if new:
                    written = await self.kv.update(key, orjson.dumps(new), last=rev)
                else:
                    ack = await a.js.publish(
                        f"$KV.{a.bucket}.{key}",
                        headers={KV_OP: KV_DEL, api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(rev)},
                    )
                    written = ack.seq
                return result, written
            except KeyWrongLastSequenceError:
                pass
            except APIError as exc:
                if exc.err_code not in _WRONG_LAST:
                    raise
            rev, users = await self._fetch(key)
        raise Contention(f"presence key {key!r} changed {MAX_TRIES} times while this node wrote it")
