"""Public hooks: your code hears what happens in the server, off the delivery path.

Register handlers with decorators on the :class:`~soketi_impl.Pusher` service (or on a
:class:`Hooks` of your own). A handler takes one :class:`HookEvent` and may be a plain
function or a coroutine function::

    pusher = Pusher()

    @pusher.on_subscribed
    async def joined(ev: HookEvent) -> None:
        print(ev.app_id, ev.socket_id, "joined", ev.channel)

    @pusher.on_client_event
    def said(ev: HookEvent) -> None:
        print(ev.channel, ev.event, ev.data)

How handlers run:

- The core tells :class:`Hooks` (an :class:`~soketi_impl.Observer`) synchronously;
  Hooks only appends a small event to a bounded queue (``maxsize``, default 10,000)
  and returns. One consumer task runs the handlers later, in the order the events
  happened, one at a time. A slow async handler therefore delays later hooks, never a
  message to a client. A *sync* handler runs on the event loop: keep it quick (hand
  blocking work to ``loop.run_in_executor``).
- A handler that raises is logged with its traceback (at most ``LOG_BURST`` tracebacks
  per ``LOG_WINDOW_S`` seconds, then one line saying how many were not logged) and
  counted in ``failed``; the next handler runs as usual.
- When the queue is full the NEWEST event is dropped (the event being told at that
  moment) and counted in ``dropped`` (with a warning at most once a minute): what is
  queued keeps its order, and the server never waits for hooks. An event holds a
  client event's data, so the queue's memory is at most ``maxsize`` times the largest
  client event the app allows (``max_event_payload_in_kb``).
- :meth:`Hooks.stop` (called by ``Pusher.stop``) lets the consumer drain what is queued
  for up to ``drain_timeout`` seconds; events still queued after that are counted in
  ``dropped``.

Counters for metrics: ``queued`` (events accepted into the queue, ever), ``dropped``,
``failed`` (handler calls that raised), ``handled`` (handler calls that returned) and
``pending`` (events in the queue now).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from .pusher.events import Observer

if TYPE_CHECKING:
    from .config import AppConfig

__all__ = ["HOOK_KINDS", "HookDecorators", "HookEvent", "HookHandler", "HookKind", "Hooks"]

log = logging.getLogger("soketi_impl.hooks")

#: What happened; also the name of the :class:`~soketi_impl.Observer` method that told it.
HookKind = Literal[
    "connection_opened", "connection_closed", "subscribed", "unsubscribed",
    "channel_occupied", "channel_vacated", "member_added", "member_removed",
    "client_event", "cache_miss", "signed_in",
]
HOOK_KINDS: tuple[str, ...] = get_args(HookKind)


@dataclass(frozen=True, slots=True)
class HookEvent:
    """One thing that happened, as a hook handler receives it.

    ``kind`` says what (see :data:`HookKind`); the other fields are set when they apply
    to that kind and are ``None`` otherwise:

    - ``socket_id``: connection opened / closed, subscribed / unsubscribed, client
      event, signed in;
    - ``channel``: every channel event (subscribed, occupied, member added, client
      event, cache miss ...);
    - ``user_id``: member added / removed, signed in, and a client event sent on a
      presence channel;
    - ``user_info``: member added (the ``user_info`` of the presence channel data);
    - ``event`` and ``data``: client event (its name and its data as the client sent it);
    - ``code`` and ``reason``: connection closed (the close code and text, if known).
    """

    kind: str
    app_id: str
    socket_id: str | None = None
    channel: str | None = None
    user_id: str | None = None
    event: str | None = None
    data: Any = None
    user_info: Any = None
    code: int | None = None
    reason: str | None = None


#: A hook handler: a function or coroutine function of one :class:`HookEvent`.
HookHandler = Callable[[HookEvent], "Awaitable[Any] | Any"]
H = TypeVar("H", bound=Callable[[HookEvent], Any])


class HookDecorators:
    """The ``on_*`` decorators, shared by :class:`Hooks` and :class:`~soketi_impl.Pusher`.

    Each registers its function for one kind of event and returns it unchanged, so a
    handler can be stacked under several decorators.
    """

    def on(self, kind: str, handler: HookHandler) -> None:
        """Register ``handler`` for events of ``kind`` (one of :data:`HOOK_KINDS`)."""
        raise NotImplementedError

    def _deco(self, kind: str, handler: H) -> H:
        self.on(kind, handler)
        return handler

    def on_connection_opened(self, handler: H) -> H:
        """A connection was admitted (``socket_id``)."""
        return self._deco("connection_opened", handler)

    def on_connection_closed(self, handler: H) -> H:
        """A connection is gone (``socket_id``, ``code``, ``reason``)."""
        return self._deco("connection_closed", handler)

    def on_subscribed(self, handler: H) -> H:
        """A connection joined a channel (``socket_id``, ``channel``)."""
        return self._deco("subscribed", handler)

    def on_unsubscribed(self, handler: H) -> H:
        """A connection left a channel (``socket_id``, ``channel``)."""
        return self._deco("unsubscribed", handler)

    def on_channel_occupied(self, handler: H) -> H:
        """A channel got its first subscriber (``channel``)."""
        return self._deco("channel_occupied", handler)

    def on_channel_vacated(self, handler: H) -> H:
        """A channel lost its last subscriber (``channel``)."""
        return self._deco("channel_vacated", handler)

    def on_member_added(self, handler: H) -> H:
        """A user's first connection joined a presence channel (``channel``, ``user_id``, ``user_info``)."""
        return self._deco("member_added", handler)

    def on_member_removed(self, handler: H) -> H:
        """A user's last connection left a presence channel (``channel``, ``user_id``)."""
        return self._deco("member_removed", handler)

    def on_client_event(self, handler: H) -> H:
        """A client event was forwarded (``channel``, ``event``, ``data``, ``socket_id``, ``user_id``)."""
        return self._deco("client_event", handler)

    def on_cache_miss(self, handler: H) -> H:
        """A connection subscribed to a cache channel with nothing cached (``channel``)."""
        return self._deco("cache_miss", handler)

    def on_signed_in(self, handler: H) -> H:
        """A connection signed in with ``pusher:signin`` (``socket_id``, ``user_id``)."""
        return self._deco("signed_in", handler)


class Hooks(HookDecorators, Observer):
    """Runs your handlers for core events from a bounded queue (see the module docstring).

    ``maxsize`` bounds the queue (the newest event is dropped when it is full);
    ``drain_timeout`` bounds how long :meth:`stop` waits for queued events.
    """

    #: At most this many handler tracebacks are logged per window ...
    LOG_BURST = 10
    #: ... of this many seconds; the rest are counted and summed up in one line.
    LOG_WINDOW_S = 60.0

    def __init__(self, maxsize: int = 10_000, *, drain_timeout: float = 5.0) -> None:
        if maxsize < 1:
            raise ValueError("Hooks maxsize must be at least 1")
        self.maxsize = maxsize
        self.drain_timeout = drain_timeout
        self.queued = 0
        self.dropped = 0
        self.failed = 0
        self.handled = 0
        self._handlers: dict[str, list[HookHandler]] = {}
        self._queue: deque[HookEvent] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # the consumer is inside a handler
        self._idle: asyncio.Future[None] | None = None  # set by the consumer when drained
        self._log_window = 0.0
        self._log_count = 0
        self._log_suppressed = 0
        self._drop_logged = -self.LOG_WINDOW_S

    # ------------------------------------------------------------------ registration

    def on(self, kind: str, handler: HookHandler) -> None:
        """Register ``handler`` for events of ``kind`` (one of :data:`HOOK_KINDS`)."""
        if kind not in HOOK_KINDS:
            raise ValueError(f"unknown hook kind {kind!r} (one of: {', '.join(HOOK_KINDS)})")
        if not callable(handler):
            raise TypeError(f"a hook handler must be callable, got {handler!r}")
        self._handlers.setdefault(kind, []).append(handler)

    def wants(self, kind: str) -> bool:
        """Whether any handler listens to ``kind``."""
        return kind in self._handlers

    @property
    def pending(self) -> int:
        """Events waiting in the queue now."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """Whether the consumer task is running."""
        return self._task is not None and not self._task.done()

    def stats(self) -> dict[str, int]:
        """The counters, for metrics: queued, dropped, failed, handled, pending."""
        return {
            "queued": self.queued, "dropped": self.dropped, "failed": self.failed,
            "handled": self.handled, "pending": len(self._queue),
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the consumer task on the running loop (idempotent)."""
        if self.running:
            return
        self._wake = asyncio.Event()
        self._busy = False
        if self._queue:
            self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="soketi-impl hooks")

    async def stop(self, timeout: float | None = None) -> None:
        """Run what is queued for up to ``timeout`` seconds (default ``drain_timeout``), then stop.

        Events still queued at the deadline are dropped and counted in ``dropped``.
        """
        task, self._task = self._task, None
        if task is None:
            return
        bound = self.drain_timeout if timeout is None else timeout
        if (self._queue or self._busy) and not task.done():
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._idle), max(0.0, bound))
            except asyncio.TimeoutError:
                pass
            self._idle = None
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        if self._queue:
            log.warning("hooks stopped with %d events not run (dropped)", len(self._queue))
            self.dropped += len(self._queue)
            self._queue.clear()

    # ------------------------------------------------------------------ the queue

    def _put(self, ev: HookEvent) -> None:
        if len(self._queue) >= self.maxsize:
            self.dropped += 1
            now = monotonic()
            if now - self._drop_logged >= self.LOG_WINDOW_S:
                self._drop_logged = now
                log.warning(
                    "hooks queue full (%d events): dropping the newest (%d dropped so far)",
                    self.maxsize, self.dropped,
                )
            return
        self._queue.append(ev)
        self.queued += 1
        wake = self._wake
        if wake is not None and not wake.is_set():
            wake.set()

    async def _consume(self) -> None:
        queue = self._queue
        assert self._wake is not None
        wake = self._wake
        while True:
            if not queue:
                idle = self._idle
                if idle is not None and not idle.done():
                    idle.set_result(None)
                wake.clear()
                await wake.wait()
                continue
            ev = queue.popleft()
            self._busy = True
            for handler in tuple(self._handlers.get(ev.kind, ())):
                try:
                    result = handler(ev)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a user's handler: log it, go on with the next one
                    self.failed += 1
                    self._log_failure(handler, ev, exc)
                else:
                    self.handled += 1
            self._busy = False

    def _log_failure(self, handler: HookHandler, ev: HookEvent, exc: Exception) -> None:
        now = monotonic()
        if now - self._log_window >= self.LOG_WINDOW_S:
            if self._log_suppressed:
                log.error("%d more hook handler failures were not logged", self._log_suppressed)
            self._log_window, self._log_count, self._log_suppressed = now, 0, 0
        if self._log_count >= self.LOG_BURST:
            self._log_suppressed += 1
            return
        self._log_count += 1
        name = getattr(handler, "__qualname__", repr(handler))
        log.error("hook %s failed on %s event", name, ev.kind, exc_info=exc)

    # ------------------------------------------------------------------ Observer

    def connection_opened(self, app: AppConfig, socket_id: str) -> None:
        """Queue a ``connection_opened`` event (when a handler listens)."""
        if "connection_opened" in self._handlers:
            self._put(HookEvent("connection_opened", app.id, socket_id=socket_id))

    def connection_closed(self, app: AppConfig, socket_id: str, code: int | None, reason: str | None) -> None:
        """Queue a ``connection_closed`` event (when a handler listens)."""
        if "connection_closed" in self._handlers:
            self._put(HookEvent("connection_closed", app.id, socket_id=socket_id, code=code, reason=reason))

    def subscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        """Queue a ``subscribed`` event (when a handler listens)."""
        if "subscribed" in self._handlers:
            self._put(HookEvent("subscribed", app.id, socket_id=socket_id, channel=channel))

    def unsubscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        """Queue an ``unsubscribed`` event (when a handler listens)."""
        if "unsubscribed" in self._handlers:
            self._put(HookEvent("unsubscribed", app.id, socket_id=socket_id, channel=channel))

    def channel_occupied(self, app: AppConfig, channel: str) -> None:
        """Queue a ``channel_occupied`` event (when a handler listens)."""
        if "channel_occupied" in self._handlers:
            self._put(HookEvent("channel_occupied", app.id, channel=channel))

    def channel_vacated(self, app: AppConfig, channel: str) -> None:
        """Queue a ``channel_vacated`` event (when a handler listens)."""
        if "channel_vacated" in self._handlers:
            self._put(HookEvent("channel_vacated", app.id, channel=channel))

    def member_added(self, app: AppConfig, channel: str, user_id: str, user_info: Any) -> None:
        """Queue a ``member_added`` event (when a handler listens)."""
        if "member_added" in self._handlers:
            self._put(HookEvent("member_added", app.id, channel=channel, user_id=user_id, user_info=user_info))

    def member_removed(self, app: AppConfig, channel: str, user_id: str) -> None:
        """Queue a ``member_removed`` event (when a handler listens)."""
        if "member_removed" in self._handlers:
            self._put(HookEvent("member_removed", app.id, channel=channel, user_id=user_id))

    def client_event(
        self, app: AppConfig, channel: str, event: str, data: Any, socket_id: str, user_id: str | None
    ) -> None:
        """Queue a ``client_event`` event (when a handler listens)."""
        if "client_event" in self._handlers:
            self._put(HookEvent(
                "client_event", app.id, socket_id=socket_id, channel=channel, user_id=user_id,
                event=event, data=data,
            ))

    def cache_miss(self, app: AppConfig, channel: str) -> None:
        """Queue a ``cache_miss`` event (when a handler listens)."""
        if "cache_miss" in self._handlers:
            self._put(HookEvent("cache_miss", app.id, channel=channel))

    def signed_in(self, app: AppConfig, socket_id: str, user_id: str) -> None:
        """Queue a ``signed_in`` event (when a handler listens)."""
        if "signed_in" in self._handlers:
            self._put(HookEvent("signed_in", app.id, socket_id=socket_id, user_id=user_id))
