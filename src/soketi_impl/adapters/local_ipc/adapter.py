"""``HubAdapter``: a worker's adapter, through the supervisor's hub (see :mod:`.hub`).

:class:`HubLink` is the worker's one connection to the hub: it says ``hello``
(and ``ready`` once the worker listens), writes frames in order, at most once per
event-loop iteration, and hands what comes back to a handler. What it has not
written is bounded (``max_queue`` bytes, its own list and the transport's buffer
together): beyond it a frame is dropped with a rate-limited warning, so a stalled
hub never makes a worker grow. When the connection is lost ``on_lost`` is called:
a worker then stops (the supervisor is gone, or broken). Whatever the adapter, the
link answers the hub's ``sq`` with ``stats_source()`` and gathers the other workers'
with :meth:`HubLink.gather_stats` (worker 0's ``/metrics`` covers every worker).

:class:`HubAdapter` implements :class:`~soketi_impl.adapters.base.Adapter` over a
link: the hub is the authority for presence and counts, and carries events and
queries between the workers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

from ...errors import SoketiError
from ..base import Adapter, PresenceJoin
from ..throttle import Throttle
from . import wire
from .hub import ASK_TIMEOUT

__all__ = ["MAX_QUEUE", "STATS_TIMEOUT", "HubAdapter", "HubLink", "HubUnavailable"]

log = logging.getLogger("soketi_impl.hub")

#: bytes a worker may hold unwritten to the hub
MAX_QUEUE = 64 * 1024 * 1024
#: seconds the other workers have to send their statistics (a ``/metrics`` scrape waits
#: no longer, plus the hub's answer; Prometheus' default scrape timeout is 10 s)
STATS_TIMEOUT = 2.0


class HubUnavailable(SoketiError):
    """The worker could not connect to the supervisor's hub."""


class HubLink(wire.FramedProtocol):
    """A worker's connection to the hub (``handler`` gets every whole frame it receives).

    Without a handler (a worker whose adapter is Redis or NATS) the link itself reads
    the control messages that concern it: the answers to its :meth:`request` and the
    hub's ``sq``; a handler passes those to :meth:`answered` and :meth:`answer_stats`.
    """

    log = log
    peer_name = "the hub"

    def __init__(
        self,
        path: str,
        index: int,
        handler: Callable[[bytes], None] | None = None,
        *,
        on_lost: Callable[[], None] | None = None,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.path = path
        self.index = index
        self.handler = handler
        self.on_lost = on_lost
        self.max_queue = max_queue
        self.transport: asyncio.Transport | None = None
        self.reader = wire.FrameReader()
        self._out: list[bytes] = []
        self._queued = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.lost = asyncio.Event()
        self.dropped = 0
        self._throttle = Throttle()
        self._ids = itertools.count(1)
        #: requests waiting for their answer, by id
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        #: this worker's statistics, JSON-able, for another worker's scrape (None: none)
        self.stats_source: Callable[[], Any] | None = None

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.lost.is_set()

    async def connect(self, timeout: float = 5.0) -> None:
        """Connect and say hello; :class:`HubUnavailable` when the hub cannot be reached."""
        if self.transport is not None:
            return
        self._loop = loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_unix_connection(lambda: self, self.path), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise HubUnavailable(f"cannot connect to the hub at {self.path}: {exc or type(exc).__name__}") from None
        self.send(wire.control({"t": "hello", "i": self.index, "pid": os.getpid()}))

    def send(self, data: bytes) -> bool:
        """Queue one frame (written at the end of this loop iteration); False if dropped."""
        transport = self.transport
        if transport is None or self.lost.is_set():
            return False
        if len(data) > wire.MAX_FRAME + 4:
            self._drop(f"a frame of {len(data)} bytes is over the limit of {wire.MAX_FRAME}")
            return False
        if self._queued + len(data) + transport.get_write_buffer_size() > self.max_queue:
            self._drop(f"over {self.max_queue} bytes wait to be written to the hub")
            return False
        if not self._out:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        self._out.append(data)
        self._queued += len(data)
        return True

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self._throttle.ready():
            log.warning("worker %d: a frame to the hub dropped (%s); %d dropped so far",
                        self.index, why, self.dropped)

    def _flush(self) -> None:
        out, self._out = self._out, []
        self._queued = 0
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(b"".join(out) if len(out) > 1 else out[0])

    async def close(self) -> None:
        """Write what is queued and close."""
        self._closing = True
        self._flush()
        if self.transport is not None and not self.lost.is_set():
            self.transport.close()
            try:
                await asyncio.wait_for(self.lost.wait(), 2.0)
            except asyncio.TimeoutError:
                self.transport.abort()

    # -- requests

    async def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send ``message`` with a new ``id``; the hub's answer (``answers`` or ``T``), or None
        when it could not be sent, did not come within ``timeout`` or the link was lost."""
        rid = next(self._ids)
        message["id"] = rid
        fut = self._waiting[rid] = asyncio.get_running_loop().create_future()
        try:
            if not self.send(wire.control(message)):
                return None
            answer: dict[str, Any] | None = await asyncio.wait_for(fut, timeout)
            return answer
        except asyncio.TimeoutError:
            log.info("worker %d: the hub did not answer a %s within %.1f s", self.index, message["t"], timeout)
            return None
        finally:
            del self._waiting[rid]

    def answered(self, msg: dict[str, Any]) -> None:
        """The hub's answer to a :meth:`request` (``answers`` or ``T``)."""
        fut = self._waiting.get(int(msg["id"]))
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def answer_stats(self, msg: dict[str, Any]) -> None:
        """The hub asks for this worker's statistics (``sq``): answer with ``stats_source()``."""
        data = self.stats_source() if self.stats_source is not None else None
        self.send(wire.control({"t": "a", "id": msg["id"], "data": data}))

    async def gather_stats(self, timeout: float = STATS_TIMEOUT) -> list[Any]:
        """The other workers' ``stats_source()``, those that answered within ``timeout``; the
        workers left out are named in a log line. Returns within ``timeout`` + 1 s."""
        reply = await self.request({"t": "stats", "to": timeout}, timeout + 1.0)
        if reply is None:
            log.warning("worker %d: the hub did not answer for the other workers' statistics "
                        "within %.1f s: this worker's alone", self.index, timeout + 1.0)
            return []
        missing = reply.get("missing")
        if missing:
            log.warning("worker %d: worker(s) %s did not send their statistics within %.1f s: left out",
                        self.index, ", ".join(str(i) for i in missing), timeout)
        data = reply.get("data")
        return [d for d in data if d is not None] if isinstance(data, list) else []

    # -- asyncio.Protocol

    def frame_received(self, frame: bytes) -> None:
        if self.handler is not None:
            self.handler(frame)
        elif wire.kind(frame) == wire.CONTROL:
            msg = wire.read_control(frame)
            t = msg["t"]
            if t in ("answers", "T"):
                self.answered(msg)
            elif t == "sq":
                self.answer_stats(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_result(None)
        if not self._closing and self.on_lost is not None:
            self.on_lost()


class HubAdapter(Adapter):
    """Worker ``index``'s adapter through the hub listening at ``path`` (see :mod:`.hub`).

    ``on_lost`` is called if the hub connection ends before :meth:`close` (the
    worker then stops); ``requests_timeout`` bounds :meth:`ask` and
    :meth:`count_totals` on this side (the hub gives up on missing answers sooner).
    """

    def __init__(
        self,
        path: str,
        index: int,
        *,
        on_lost: Callable[[], None] | None = None,
        requests_timeout: float = ASK_TIMEOUT + 1.0,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.link = HubLink(path, index, self._on_frame, on_lost=self._lost, max_queue=max_queue)
        self.on_lost = on_lost
        self.requests_timeout = requests_timeout
        self._ids = itertools.count(1)
        #: presence joins waiting for ``joined``, by token
        self._joins: dict[int, PresenceJoin] = {}
        self._bye: asyncio.Event | None = None

    @property
    def index(self) -> int:
        return self.link.index

    async def start(self) -> None:
        """Connect to the hub (:class:`HubUnavailable` if it cannot)."""
        await self.link.connect()

    async def close(self) -> None:
        """Withdraw this worker (its members and shares leave, the changes told here), then disconnect."""
        link = self.link
        if link.connected:
            self._bye = asyncio.Event()
            if link.send(wire.control({"t": "bye"})):
                try:
                    await asyncio.wait_for(self._bye.wait(), 2.0)
                except asyncio.TimeoutError:
                    log.warning("worker %d: the hub did not confirm the withdrawal within 2 s", self.index)
        await link.close()

    def _lost(self) -> None:
        # Nothing more will come: finish what waits, as a single node would.
        joins, self._joins = self._joins, {}
        for join in joins.values():
            self.host.presence_joined(join, None)
        if self.on_lost is not None:
            self.on_lost()
        else:
            log.error("worker %d: the connection to the hub was lost", self.index)

    # ------------------------------------------------------------------ the Adapter interface

    def publish(
        self, app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool
    ) -> None:
        """Send the frame to the hub, which forwards it to every other worker."""
        self.link.send(wire.event(app_id, channel, payload, except_socket_id, cache))

    async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        """The other workers' answers, gathered by the hub."""
        reply = await self.link.request({"t": "ask", "app": app_id, "op": op, "arg": arg}, self.requests_timeout)
        answers = reply.get("data") if reply is not None else None
        return list(answers) if isinstance(answers, list) else []

    def presence_join(self, join: PresenceJoin) -> None:
        """Register the member with the hub; the connection is let in when ``joined`` comes."""
        tok = next(self._ids)
        self._joins[tok] = join
        sent = self.link.send(wire.control({
            "t": "join", "tok": tok, "app": join.app_id, "c": join.channel, "u": join.user_id,
            "info": join.user_info, "first": join.first_here, "max": join.max_members,
        }))
        if not sent:
            del self._joins[tok]
            self.host.presence_joined(join, None)

    def presence_leave(self, app_id: str, channel: str, user_id: str) -> None:
        """Withdraw this worker's registration; the hub removes the member if it was the last."""
        self.link.send(wire.control({"t": "leave", "app": app_id, "c": channel, "u": user_id}))

    def count_changed(self, app_id: str, kind: str, name: str, local_count: int, every_node: bool = False) -> None:
        """Send this worker's share to the hub; the total's change comes back as ``N``."""
        message = {"t": "n", "app": app_id, "k": kind, "c": name, "v": max(0, local_count)}
        if every_node:
            message["e"] = 1
        self.link.send(wire.control(message))

    async def count_totals(self, app_id: str, kind: str, names: list[str]) -> list[int]:
        """The hub's totals (zeros when it does not answer in time)."""
        if not names:
            return []
        reply = await self.link.request({"t": "totals", "app": app_id, "k": kind, "names": names}, self.requests_timeout)
        values = reply.get("v") if reply is not None else None
        if not isinstance(values, list) or len(values) != len(names):
            return [0] * len(names)
        return [int(v) for v in values]

    # ------------------------------------------------------------------ from the hub

    def _on_frame(self, frame: bytes) -> None:
        host = self.host
        if wire.kind(frame) == wire.EVENT:
            app_id, channel, payload, except_socket_id, cache = wire.read_event(frame)
            host.deliver(app_id, channel, payload, except_socket_id, cache)
            return
        msg = wire.read_control(frame)
        t = msg["t"]
        if t == "N":
            host.count_total_changed(
                msg["app"], msg["k"], msg["c"], int(msg["t2"]), int(msg["p"]), bool(msg.get("o")), int(msg["a"])
            )
        elif t == "m+":
            host.remote_member_added(msg["app"], msg["c"], msg["u"], msg.get("info"))
            if msg.get("o"):
                host.notify_member_added(msg["app"], msg["c"], msg["u"], msg.get("info"))
        elif t == "m-":
            host.remote_member_removed(msg["app"], msg["c"], msg["u"])
            if msg.get("o"):
                host.notify_member_removed(msg["app"], msg["c"], msg["u"])
        elif t == "joined":
            join = self._joins.pop(int(msg["tok"]), None)
            if join is not None:
                if msg["s"] == -1:
                    host.presence_joined(join, None, full=True)
                else:
                    host.presence_joined(join, msg["m"])
        elif t == "q":
            arg = msg.get("arg")
            try:
                data = host.answer(str(msg["app"]), str(msg["op"]), arg if isinstance(arg, str) else None)
            except ValueError:
                data = None
            self.link.send(wire.control({"t": "a", "id": msg["id"], "data": data}))
        elif t in ("answers", "T"):
            self.link.answered(msg)
        elif t == "sq":
            self.link.answer_stats(msg)
        elif t == "bye":
            if self._bye is not None:
                self._bye.set()
        else:
            raise ValueError(f"unknown message {t!r}")
