"""The hub: one process's state machine that makes N worker processes one server.

The supervisor (:mod:`soketi_impl.workers`) runs a :class:`Hub` on a unix socket
in its own event loop; each worker connects once (:class:`~.adapter.HubLink`) and
says ``hello`` with its index. Every frame of one worker is handled in the order
it was sent, and every frame to one worker is written in the order it was made,
so one worker's facts reach each other worker in order. The hub is the authority
for what crosses workers:

Events (``E`` frames, :mod:`.wire`)
    forwarded as they are to every other worker, which delivers them.

Queries: ``ask {id, app, op, arg}``
    sent to every other worker as ``q {id, app, op, arg}``; their ``a {id, data}``
    are gathered and returned as ``answers {id, data}`` once all answered, a worker
    left, or ``ask_timeout`` passed (the missing answers are skipped; ``missing``
    lists the workers that did not answer in time, when there are any).

Statistics: ``stats {id, to}``
    the same, with ``sq {id}`` to the other workers (each answers its counters for
    worker 0's ``/metrics``) and a timeout of ``to`` seconds (at most ``ask_timeout``).

Presence: ``join {tok, app, c, u, info, first, max}``, ``leave {app, c, u}``
    the hub keeps, per (app, channel, user), the set of workers with a connection
    of that user. A first join anywhere sends ``m+ {app, c, u, info}`` to every
    worker (``o: 1`` on the joiner's copy: it tells its observers, once), then
    ``joined {tok, s, m}`` to the joiner with the member list (``s``: 1 new, 0
    already a member, -1 refused: the channel has ``max`` members). The last
    leave sends ``m- {app, c, u}`` to every worker (``o: 1`` on the leaver's).

Counts: ``n {app, k, c, v, e}``, ``totals {id, app, k, names}``
    the hub keeps each worker's share of each count; a change of the total is
    ``N {app, k, c, t2, p, a}`` (``t2``: the total, ``p``: the one before, ``a``:
    the hub's clock in ms) to the worker that made it (``o: 1``) and, when it
    crosses zero or ``e`` asks for every worker, to the others. ``totals`` is answered with ``T {id, v}``.

Leaving: ``bye``, or a lost connection
    the worker's members and shares are withdrawn and the changes reported as
    usual, with ``o: 1`` on the leaving worker after a ``bye`` (it is still there:
    its webhooks are told before it stops) and on the live worker of the lowest
    index after a crash. ``bye`` is answered with ``bye`` once that is done.

Bounds: a frame is at most :data:`~.wire.MAX_FRAME`; what the hub has not yet
written to one worker is at most ``max_buffer`` bytes (beyond it frames to that
worker are dropped, with a rate-limited warning).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..base import crosses_zero
from ..throttle import Throttle
from . import wire

__all__ = ["ASK_TIMEOUT", "MAX_BUFFER", "Hub"]

log = logging.getLogger("soketi_impl.hub")

#: seconds the hub waits for the other workers' answers to a query
ASK_TIMEOUT = 5.0
#: bytes the hub may hold unwritten for one worker
MAX_BUFFER = 64 * 1024 * 1024


class _Member:
    __slots__ = ("info", "workers")

    def __init__(self, info: Any) -> None:
        self.info = info
        self.workers: set[int] = set()


class _Ask:
    __slots__ = ("answers", "asker", "expected", "id", "timer")

    def __init__(self, asker: _Peer, rid: Any, expected: set[int]) -> None:
        self.asker = asker
        self.id = rid
        self.expected = expected
        self.answers: list[Any] = []
        self.timer: asyncio.TimerHandle | None = None


class _Peer(wire.FramedProtocol):
    """One worker's connection."""

    log = log
    peer_name = "the worker"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.reader = wire.FrameReader()
        self.index = -1  # set by hello
        self.pid = 0
        self.out: list[bytes] = []
        self.gone = False
        #: (app, channel, user) this worker has registered
        self.members: set[tuple[str, str, str]] = set()
        #: (app, kind, name) of this worker's non-zero shares
        self.shares: set[tuple[str, str, str]] = set()
        self.throttle = Throttle()
        self.dropped = 0

    def frame_received(self, frame: bytes) -> None:
        self.hub.on_frame(self, frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.drop(self)


class Hub:
    """The hub's state and its unix socket server (see the module's documentation).

    ``Hub(path)``; ``await hub.start()`` listens; ``await hub.close()`` stops.
    ``on_hello(index, pid)`` and ``on_ready(index)`` tell the supervisor about workers.
    """

    def __init__(
        self,
        path: str,
        *,
        ask_timeout: float = ASK_TIMEOUT,
        max_buffer: int = MAX_BUFFER,
        on_ready: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.ask_timeout = ask_timeout
        self.max_buffer = max_buffer
        self.on_ready = on_ready
        #: worker index -> its connection, for the workers that said hello
        self.peers: dict[int, _Peer] = {}
        #: (app, channel) -> user id -> member
        self.members: dict[tuple[str, str], dict[str, _Member]] = {}
        #: (app, kind, name) -> worker index -> share (> 0)
        self.shares: dict[tuple[str, str, str], dict[int, int]] = {}
        self._asks: dict[int, _Ask] = {}
        self._ask_ids = 0
        self._dirty: list[_Peer] = []
        self._flush_scheduled = False
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Listen on the unix socket ``path``."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_unix_server(lambda: _Peer(self), self.path)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for peer in list(self.peers.values()):
            if peer.transport is not None:
                peer.transport.abort()

    # ------------------------------------------------------------------ output

    def _send(self, peer: _Peer, data: bytes) -> None:
        if peer.gone:
            return
        if not peer.out:
            self._dirty.append(peer)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                assert self._loop is not None
                self._loop.call_soon(self._flush)
        peer.out.append(data)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for peer in dirty:
            out, peer.out = peer.out, []
            transport = peer.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > self.max_buffer:
                peer.dropped += len(out)
                if peer.throttle.ready():
                    log.warning(
                        "worker %d does not read what the hub sends (over %d bytes waiting): "
                        "%d frames to it dropped so far", peer.index, self.max_buffer, peer.dropped,
                    )
                continue
            transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _others(self, peer: _Peer) -> list[_Peer]:
        return [p for p in self.peers.values() if p is not peer]

    # ------------------------------------------------------------------ input

    def on_frame(self, peer: _Peer, frame: bytes) -> None:
        """One frame from ``peer``."""
        if wire.kind(frame) == wire.EVENT:
            if peer.index >= 0:
                for other in self._others(peer):
                    self._send(other, frame)
            return
        msg = wire.read_control(frame)
        t = msg["t"]
        if t == "n":
            self._count(peer, msg["app"], msg["k"], msg["c"], int(msg["v"]), bool(msg.get("e")))
        elif t == "join":
            self._join(peer, msg)
        elif t == "leave":
            self._leave(peer, msg["app"], msg["c"], msg["u"], origin=peer)
        elif t == "a":
            self._answered(peer, msg)
        elif t == "ask":
            query = {"t": "q", "app": msg["app"], "op": msg["op"], "arg": msg.get("arg")}
            self._ask(peer, msg["id"], query, self.ask_timeout)
        elif t == "stats":
            timeout = min(self.ask_timeout, max(0.0, float(msg.get("to", self.ask_timeout))))
            self._ask(peer, msg["id"], {"t": "sq"}, timeout)
        elif t == "totals":
            self._totals(peer, msg)
        elif t == "hello":
            self._hello(peer, int(msg["i"]), int(msg.get("pid", 0)))
        elif t == "ready":
            if self.on_ready is not None:
                self.on_ready(peer.index)
        elif t == "bye":
            self._withdraw(peer, origin=peer)
            self._send(peer, wire.control({"t": "bye"}))
            self._forget(peer)
        else:
            raise ValueError(f"unknown message {t!r}")

    def _hello(self, peer: _Peer, index: int, pid: int) -> None:
        old = self.peers.get(index)
        if old is not None and old is not peer:
            # the worker's previous life: its connection has not been seen closing yet
            self.drop(old)
            if old.transport is not None:
                old.transport.abort()
        peer.index, peer.pid = index, pid
        self.peers[index] = peer
        log.debug("worker %d (pid %d) connected to the hub", index, pid)

    def drop(self, peer: _Peer) -> None:
        """``peer`` is gone (its connection closed): withdraw what it had."""
        if peer.gone:
            return
        if peer.index >= 0 and self.peers.get(peer.index) is peer:
            live = sorted(i for i in self.peers if i != peer.index)
            origin = self.peers[live[0]] if live else None
            self._forget(peer)
            self._withdraw(peer, origin=origin)
        else:
            self._forget(peer)

    def _forget(self, peer: _Peer) -> None:
        peer.gone = True
        if self.peers.get(peer.index) is peer:
            del self.peers[peer.index]
        for rid, ask in list(self._asks.items()):
            if ask.asker is peer:
                if ask.timer is not None:
                    ask.timer.cancel()
                del self._asks[rid]
            elif peer.index in ask.expected:
                ask.expected.discard(peer.index)
                if not ask.expected:
                    self._answer(rid)

    def _withdraw(self, peer: _Peer, origin: _Peer | None) -> None:
        """Remove ``peer``'s members and shares, reporting the changes with ``origin``."""
        members, peer.members = peer.members, set()
        for app_id, channel, user_id in members:
            self._unregister(peer.index, app_id, channel, user_id, origin)
        shares, peer.shares = peer.shares, set()
        for key in shares:
            self._set_share(peer.index, key, 0, True, origin)

    # ------------------------------------------------------------------ queries

    def _ask(self, peer: _Peer, asker_id: Any, query: dict[str, Any], timeout: float) -> None:
        """Send ``query`` to every other worker; their answers go back to ``peer`` as one."""
        others = self._others(peer)
        if not others:
            self._send(peer, wire.control({"t": "answers", "id": asker_id, "data": []}))
            return
        self._ask_ids += 1
        rid = self._ask_ids
        ask = self._asks[rid] = _Ask(peer, asker_id, {p.index for p in others})
        query["id"] = rid
        frame = wire.control(query)
        for other in others:
            self._send(other, frame)
        assert self._loop is not None
        ask.timer = self._loop.call_later(timeout, self._timed_out, rid, timeout)

    def _answered(self, peer: _Peer, msg: dict[str, Any]) -> None:
        rid = msg["id"]
        ask = self._asks.get(rid)
        if ask is None or peer.index not in ask.expected:
            return  # late: the asker has its answers already
        ask.expected.discard(peer.index)
        if msg.get("data") is not None:
            ask.answers.append(msg["data"])
        if not ask.expected:
            self._answer(rid)

    def _timed_out(self, rid: int, timeout: float) -> None:
        ask = self._asks.get(rid)
        if ask is not None:
            log.info("a query: %d workers did not answer within %.1f s", len(ask.expected), timeout)
            ask.timer = None
            self._answer(rid)

    def _answer(self, rid: int) -> None:
        ask = self._asks.pop(rid)
        if ask.timer is not None:
            ask.timer.cancel()
        answers: dict[str, Any] = {"t": "answers", "id": ask.id, "data": ask.answers}
        if ask.expected:
            answers["missing"] = sorted(ask.expected)
        self._send(ask.asker, wire.control(answers))

    # ------------------------------------------------------------------ presence

    def _join(self, peer: _Peer, msg: dict[str, Any]) -> None:
        app_id, channel, user_id = msg["app"], msg["c"], msg["u"]
        members = self.members.setdefault((app_id, channel), {})
        status = 0
        if msg.get("first"):
            member = members.get(user_id)
            if member is None:
                limit = int(msg.get("max", -1))
                if 0 <= limit <= len(members):
                    status = -1
                else:
                    member = members[user_id] = _Member(msg.get("info"))
                    status = 1
            if member is not None:
                member.workers.add(peer.index)
                peer.members.add((app_id, channel, user_id))
            if status == 1:
                fact = {"t": "m+", "app": app_id, "c": channel, "u": user_id, "info": member.info if member else None}
                self._everyone(fact, peer)
        listed = {uid: m.info for uid, m in members.items()} if status != -1 else {}
        if not members:
            del self.members[(app_id, channel)]
        self._send(peer, wire.control({"t": "joined", "tok": msg["tok"], "s": status, "m": listed}))

    def _leave(self, peer: _Peer, app_id: str, channel: str, user_id: str, origin: _Peer) -> None:
        key = (app_id, channel, user_id)
        if key in peer.members:
            peer.members.discard(key)
            self._unregister(peer.index, app_id, channel, user_id, origin)

    def _unregister(self, index: int, app_id: str, channel: str, user_id: str, origin: _Peer | None) -> None:
        members = self.members.get((app_id, channel))
        member = members.get(user_id) if members else None
        if members is None or member is None:
            return
        member.workers.discard(index)
        if member.workers:
            return
        del members[user_id]
        if not members:
            del self.members[(app_id, channel)]
        self._everyone({"t": "m-", "app": app_id, "c": channel, "u": user_id}, origin)

    def _everyone(self, fact: dict[str, Any], origin: _Peer | None) -> None:
        """A fact to every worker, ``o: 1`` on ``origin``'s copy."""
        plain = wire.control(fact)
        for p in self.peers.values():
            if p is not origin:
                self._send(p, plain)
        if origin is not None:
            fact["o"] = 1
            self._send(origin, wire.control(fact))

    # ------------------------------------------------------------------ counts

    def _count(self, peer: _Peer, app_id: str, kind: str, name: str, value: int, every: bool) -> None:
        key = (app_id, kind, name)
        if value > 0:
            peer.shares.add(key)
        else:
            peer.shares.discard(key)
        self._set_share(peer.index, key, value, every, peer)

    def _set_share(
        self, index: int, key: tuple[str, str, str], value: int, every: bool, origin: _Peer | None
    ) -> None:
        shares = self.shares.get(key)
        previous = sum(shares.values()) if shares else 0
        if value > 0:
            if shares is None:
                shares = self.shares[key] = {}
            shares[index] = value
        elif shares is not None:
            shares.pop(index, None)
            if not shares:
                del self.shares[key]
                shares = None
        total = sum(shares.values()) if shares else 0
        if total == previous:
            return
        app_id, kind, name = key
        fact: dict[str, Any] = {
            "t": "N", "app": app_id, "k": kind, "c": name, "t2": total, "p": previous,
            "a": int(time.time() * 1000),
        }
        if every or crosses_zero(total, previous):
            self._everyone(fact, origin)
        elif origin is not None:
            fact["o"] = 1
            self._send(origin, wire.control(fact))

    def _totals(self, peer: _Peer, msg: dict[str, Any]) -> None:
        app_id, kind = msg["app"], msg["k"]
        shares = self.shares
        values = [sum(shares.get((app_id, kind, n), {}).values()) for n in msg["names"]]
        self._send(peer, wire.control({"t": "T", "id": msg["id"], "v": values}))
