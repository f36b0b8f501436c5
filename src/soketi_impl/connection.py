"""``Connection``: one client connection, wrapping any native socket's send and close.

The native object can come from any WebSocket framework. What it offers is found
once, at construction, and str goes out as a text frame, bytes as a binary frame:

- aiohttp's ``WebSocketResponse``: ``send_str`` / ``send_bytes``, ``close(code=, message=)``;
- Starlette's (and FastAPI's) ``WebSocket``: ``send_text`` / ``send_bytes``, ``close(code, reason)``;
- the ``websockets`` library, picows listeners and anything else with ``send(message)``
  and ``close(code, reason)``.

Each method may be a plain function or a coroutine function. Or pass the two
callables directly::

    conn = Connection(42, native_ws)
    conn = Connection("1.2", send=ws.send, close=ws.close)
    await conn.send("Hello!")
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Protocol

import orjson

__all__ = ["MAX_PENDING_BYTES", "OVER_CAPACITY", "Connection", "NativeSocket"]

log = logging.getLogger("soketi_impl.connection")

SendFn = Callable[[Any], Any]
CloseFn = Callable[..., Any]

#: Default bound on the bytes of messages waiting behind an async native send.
MAX_PENDING_BYTES = 4 * 1024 * 1024
#: The Pusher close code for a client that does not keep up ("Over capacity").
OVER_CAPACITY = 4100


class NativeSocket(Protocol):
    """The generic shape :class:`Connection` accepts; see the module docstring for the others."""

    def send(self, message: Any) -> Any: ...

    def close(self, code: int | None = None, reason: str | None = None) -> Any: ...


class _Pending(deque[Any]):
    """Messages waiting behind an in-flight async native send, their size and bound,
    the task sending them (``None`` when no send is in flight) and, until that task
    starts, the native send it will await."""

    __slots__ = ("nbytes", "limit", "task", "first")

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.nbytes = 0
        self.limit = limit
        self.task: asyncio.Future[None] | None = None
        self.first: Awaitable[Any] | None = None


class Connection:
    """A connection with an ``id`` (any hashable: ``42``, ``"1.2"``, a tuple), wrapping a native socket.

    ``send`` and ``close`` never raise into the caller: a send on a closed connection,
    or one that the native socket fails, returns ``False``. A failure of the native
    send or close is logged at WARNING (once per connection) and marks it closed.

    Sends that wait behind an async native send are queued in call order, up to
    ``max_pending_bytes`` (``len()`` of each message); past that the queue is dropped
    and the connection closed with 4100 ("Over capacity").

    ``state`` is free for the protocol that drives the connection (the Pusher server
    keeps its per-connection data there).
    """

    # Memory: with a native whose methods are defined on its class (every framework
    # above, and the native host's WSConn) the slots hold functions shared by all
    # connections of that class, so a connection owns no per-connection objects.
    # A bound other than the default lives in ``_queue`` (an idle _Pending): no slot.
    __slots__ = (
        "id", "_native", "_send", "_close", "closed", "state", "_queue", "path", "raw_write",
        "write_buffer_size", "__weakref__",
    )

    def __init__(
        self,
        id: Hashable,
        native: object | None = None,
        *,
        send: SendFn | None = None,
        close: CloseFn | None = None,
        path: str | None = None,
        raw_write: Callable[[bytes], Any] | None = None,
        write_buffer_size: Callable[[], int] | None = None,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        if native is None and (send is None or close is None):
            raise TypeError("Connection needs a native socket or both send= and close=")
        #: The id: any hashable value, compared with dict semantics in :class:`Connections`.
        self.id: Any = id
        # Two conventions, fixed here: with ``_native`` set, ``_send`` and ``_close`` are
        # functions shared by every connection of the native's class, called with the
        # native first; with ``_native`` None they are this connection's own callables.
        self._native: object | None = None
        self._send: Callable[..., Any]
        self._close: Callable[..., Any]
        if native is not None and send is None and close is None:
            self._native, self._send, self._close = _drive(native)
        elif native is not None:  # one of the native's methods overridden
            self._send = send if send is not None else _bound_send(native)
            self._close = close if close is not None else functools.partial(_close_style(native), native)
        else:
            assert send is not None and close is not None  # checked above
            self._send, self._close = send, close
        #: The request path and query the client connected with (``/app/KEY?protocol=7``):
        #: the Pusher handlers read the app key from it.
        self.path = path
        #: Optional fast path for transports that can take pre-framed WebSocket bytes
        #: (the native host's WSConn): the fan-out writes coalesced frames through it in one call.
        self.raw_write = raw_write
        #: Optional: the transport's write buffer size, for backpressure.
        self.write_buffer_size = write_buffer_size
        #: True once closed, or once the native socket failed a send or close.
        self.closed = False
        self.state: Any = None
        self._queue: _Pending | None = None
        if max_pending_bytes != MAX_PENDING_BYTES:
            self._queue = _Pending(max_pending_bytes)

    def __repr__(self) -> str:
        return f"<Connection {self.id!r}{' closed' if self.closed else ''}>"

    def _call(self, message: Any) -> Any:
        native = self._native
        return self._send(message) if native is None else self._send(native, message)

    async def send(self, message: str | bytes) -> bool:
        """Send one message (str as a text frame, bytes as binary); ``True`` when the native socket took it."""
        if self.closed:
            return False
        q = self._queue
        if q is not None and q.task is not None:
            # Earlier fire-and-forget sends are still in flight: keep the order.
            return self._enqueue(q, message)
        try:
            result = self._call(message)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception as exc:  # the socket went away under us
            self._fail("send", exc)
            return False
        return True

    async def send_json(self, obj: Any) -> bool:
        """Send ``obj`` encoded as JSON text (orjson)."""
        return await self.send(orjson.dumps(obj).decode())

    def send_nowait(self, message: str | bytes) -> bool:
        """Send without awaiting: for synchronous callers such as the fan-out flush.

        An async native send is scheduled; further messages queue behind it, so the
        order of messages is the order of calls. ``False`` when the connection is
        closed, the native send failed, or the queue went over ``max_pending_bytes``.
        """
        if self.closed:
            return False
        q = self._queue
        if q is not None and q.task is not None:
            return self._enqueue(q, message)
        # _call inlined: this is the fan-out's per-recipient path for non-picows hosts.
        native = self._native
        try:
            result = self._send(message) if native is None else self._send(native, message)
        except Exception as exc:
            self._fail("send", exc)
            return False
        if result is not None and inspect.isawaitable(result):
            if q is None:
                q = self._queue = _Pending(MAX_PENDING_BYTES)
            q.first = result
            q.task = asyncio.ensure_future(self._drain(q, result))
        return True

    def send_text_nowait(self, payload: bytes | str) -> bool:
        """:meth:`send_nowait` as a text frame: UTF-8 ``bytes`` are decoded to ``str`` first.

        The Pusher fan-out hands bytes; this makes every framework send them as TEXT
        frames (the ``websockets`` library sends bytes as binary). Invalid UTF-8
        raises ``UnicodeDecodeError``: the caller built the payload.
        """
        if not isinstance(payload, str):
            payload = str(payload, "utf-8")
        return self.send_nowait(payload)

    def _enqueue(self, q: _Pending, message: Any) -> bool:
        q.append(message)
        q.nbytes += len(message)
        if q.nbytes > q.limit:
            self._over_capacity(q)
            return False
        return True

    def _over_capacity(self, q: _Pending) -> None:
        log.info("connection %r: over %d bytes wait behind a slow send: closing with %d",
                 self.id, q.limit, OVER_CAPACITY)
        self.closed = True
        q.clear()
        q.nbytes = 0
        if q.task is not None:
            q.task.cancel()  # the stuck send: it may never finish on its own
            first, q.first = q.first, None
            if first is not None and inspect.iscoroutine(first):
                # Its task never ran (all in one loop iteration): a cancelled task
                # would drop the native's coroutine un-awaited, with a RuntimeWarning.
                first.close()
        _spawn(self.close(OVER_CAPACITY, "Over capacity"))

    async def _drain(self, q: _Pending, first: Awaitable[Any]) -> None:
        q.first = None
        try:
            await first
            while q and not self.closed:
                message = q.popleft()
                q.nbytes -= len(message)
                result = self._call(message)
                if result is not None and inspect.isawaitable(result):
                    await result
        except Exception as exc:
            q.clear()
            q.nbytes = 0
            self._fail("send", exc)
        finally:
            q.task = None
            if not q and self._queue is q and q.limit == MAX_PENDING_BYTES:
                self._queue = None  # an idle connection keeps no deque (but a custom bound)

    def _fail(self, what: str, exc: BaseException) -> None:
        # The first failure is a WARNING; later ones on a connection already closed
        # or failed are the same story, told at debug.
        level = logging.DEBUG if self.closed else logging.WARNING
        self.closed = True
        log.log(level, "%s on connection %r failed, marking it closed: %r", what, self.id, exc)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the native socket (once); errors from it are logged, not raised.

        Messages still waiting behind an async send are dropped.
        """
        close = self._close
        if close is _noop:
            return
        self._close = _noop
        already = self.closed
        self.closed = True
        q = self._queue
        if q is not None:
            q.clear()
            q.nbytes = 0
        try:
            native = self._native
            if native is not None:
                result = close(native, code, reason)
            elif code is None and reason is None:
                result = close()
            else:
                result = close(code, reason)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.closed = already  # so _fail tells it at the right level
            self._fail("close", exc)


def _noop(*args: Any) -> None:
    return None


def _fit(reason: str | None) -> str:
    """A close reason that fits a close frame (123 bytes of UTF-8; some libraries raise past it)."""
    data = (reason or "").encode()
    return data[:123].decode("utf-8", "ignore") if len(data) > 123 else (reason or "")


def _close_positional(native: Any, code: int | None = None, reason: str | None = None) -> Any:
    """``close(code, reason)``: the websockets library, Starlette, picows listeners, most others."""
    if code is None and reason is None:
        return native.close()
    return native.close(1000 if code is None else code, _fit(reason))


def _close_keyword(native: Any, code: int | None = None, reason: str | None = None) -> Any:
    """aiohttp's ``close(*, code=, message=bytes)``."""
    if code is None and reason is None:
        return native.close()
    return native.close(code=1000 if code is None else code, message=_fit(reason).encode())


def _send_names(native: object) -> tuple[str, str | None]:
    """The names of the text and binary send methods of ``native`` (binary None: one send for both)."""
    if hasattr(native, "send_bytes"):
        if hasattr(native, "send_str"):  # aiohttp (server and client sockets)
            return "send_str", "send_bytes"
        if hasattr(native, "send_text"):  # Starlette, FastAPI, Litestar: send() takes ASGI dicts
            return "send_text", "send_bytes"
    if hasattr(native, "send"):
        return "send", None
    raise TypeError(
        f"{type(native).__name__} has no send(), send_str()/send_bytes() or send_text()/send_bytes():"
        " pass send= and close= to Connection"
    )


def _close_style(native: object) -> Callable[..., Any]:
    if not callable(getattr(native, "close", None)):
        raise TypeError(f"{type(native).__name__} has no close(): pass close= to Connection")
    return _close_keyword if hasattr(native, "send_str") else _close_positional


def _own(native: object, name: str) -> Any:
    """``type(native).<name>`` when ``native.<name>`` is exactly that function bound to
    ``native``, so every connection of that class can share it; else ``None``."""
    func = getattr(type(native), name, None)
    if func is None:
        return None
    bound = getattr(native, name, None)
    if getattr(bound, "__func__", None) is func and getattr(bound, "__self__", None) is native:
        return func
    return None


#: native class -> its shared send and close, and the names and class functions they
#: call (to check an instance does not shadow them). Classes are the keys: bounded.
_DRIVES: dict[type, tuple[Any, Any, str, Any, str | None, Any]] = {}


def _drive(native: object) -> tuple[object | None, Any, Any]:
    """``(_native, _send, _close)`` for a native socket (see Connection.__init__)."""
    cls = type(native)
    hit = _DRIVES.get(cls)
    # (Reading the instance's __dict__ instead would make CPython build one: memory.)
    if hit is not None:
        send, close, name, func, name2, func2 = hit
        if getattr(getattr(native, name), "__func__", None) is func and (
            name2 is None or getattr(getattr(native, name2), "__func__", None) is func2
        ):
            return native, send, close
    text_name, binary_name = _send_names(native)
    close_style = _close_style(native)
    text = _own(native, text_name)
    binary = _own(native, binary_name) if binary_name else None
    if text is None or (binary_name is not None and binary is None):
        # Methods that live on the instance (or come from __getattr__): this
        # connection's own bound callables, the rare and slower path.
        return None, _bound_send(native), functools.partial(close_style, native)
    shared = text if binary is None else _splitter(text, binary)
    # A class that intercepts every attribute lookup may answer differently per
    # instance: only plain classes are remembered.
    if cls.__getattribute__ is object.__getattribute__ and len(_DRIVES) < 256:
        _DRIVES[cls] = (shared, close_style, text_name, text, binary_name, binary)
    return native, shared, close_style


def _bound_send(native: object) -> Callable[[Any], Any]:
    """A one-argument send for ``native``, str as text and bytes as binary."""
    text_name, binary_name = _send_names(native)
    text = getattr(native, text_name)
    if binary_name is None:
        return text  # type: ignore[no-any-return]
    binary = getattr(native, binary_name)
    return lambda message: text(message) if isinstance(message, str) else binary(message)


_SPLITTERS: dict[tuple[Any, Any], Callable[[Any, Any], Any]] = {}


def _splitter(text: Any, binary: Any) -> Callable[[Any, Any], Any]:
    """``send(native, message)`` for a class with separate text and binary sends,
    made once per class (a bounded cache: classes, not connections, are its keys)."""
    split = _SPLITTERS.get((text, binary))
    if split is None:

        def split(native: Any, message: Any) -> Any:
            return text(native, message) if isinstance(message, str) else binary(native, message)

        if len(_SPLITTERS) < 256:
            _SPLITTERS[(text, binary)] = split
    return split


_TASKS: set[asyncio.Future[Any]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    # The loop keeps only weak references to tasks: hold each until it is done.
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
