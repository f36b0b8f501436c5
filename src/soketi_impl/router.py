"""``Router``: what happens on a new connection, a message, a close and an error.

Two styles work. The seed's static style, on a module-level default router::

    Router.on_new_connection(greet)
    await Router.handle_new_connection(conn)

and instances, so two servers in one process do not share handlers::

    router = Router()

    @router.on_message
    async def echo(conn, message):
        await conn.send(message)

Handlers may be plain functions or coroutine functions. A handler that raises is
routed to the error handlers (logged when there are none) and never propagates
into the transport that fed the router.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from .connection import Connection
from .errors import UnknownProtocol

__all__ = ["HandlerProtocol", "Router", "default_router"]

log = logging.getLogger("soketi_impl.router")

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)
R = TypeVar("R")


class _hybrid(Generic[R]):
    """A method that, called on the class, runs on the module-level default router."""

    def __init__(self, fn: Callable[..., R]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __get__(self, obj: Router | None, owner: type[Router]) -> Callable[..., R]:
        target = obj if obj is not None else owner.default()
        return self.fn.__get__(target, owner)  # type: ignore[no-any-return]


class HandlerProtocol:
    """A handler registered under a name; ``await proto.handle(*args)`` runs it."""

    __slots__ = ("name", "handler", "_router")

    def __init__(self, name: str, handler: Handler, router: Router) -> None:
        self.name = name
        self.handler = handler
        self._router = router

    async def handle(self, *args: Any, **kwargs: Any) -> Any:
        """Run the handler; an exception goes to the router's error handlers and ``None`` is returned."""
        try:
            result = self.handler(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            conn = args[0] if args and isinstance(args[0], Connection) else None
            await self._router.handle_error(conn, exc)
            return None

    def __repr__(self) -> str:
        return f"<HandlerProtocol {self.name!r}>"


class Router:
    """Routes connection events to handlers. See the module docstring."""

    _default: Router | None = None

    __slots__ = ("_new", "_closed", "_message", "_error", "_protocols", "_tasks")

    def __init__(self) -> None:
        self._new: list[Handler] = []
        self._closed: list[Handler] = []
        self._message: list[Handler] = []
        self._error: list[Handler] = []
        self._protocols: dict[str, HandlerProtocol] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    @classmethod
    def default(cls) -> Router:
        """The module-level router that the static style (``Router.on_message(...)``) uses."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    # -- registration (each works as a decorator and returns the handler) --

    @_hybrid
    def on_new_connection(self, handler: F) -> F:
        """Call ``handler(connection)`` for every new connection."""
        self._new.append(handler)
        return handler

    @_hybrid
    def on_connection_closed(self, handler: F) -> F:
        """Call ``handler(connection, code, message)`` when a connection closes."""
        self._closed.append(handler)
        return handler

    @_hybrid
    def on_message(self, handler: F) -> F:
        """Call ``handler(connection, message)`` for every message."""
        self._message.append(handler)
        return handler

    @_hybrid
    def on_error(self, handler: F) -> F:
        """Call ``handler(connection, error)`` when a handler raised (``connection`` may be None)."""
        self._error.append(handler)
        return handler

    @overload
    def _register(self, name: str, handler: None = None) -> Callable[[F], F]: ...

    @overload
    def _register(self, name: str, handler: F) -> F: ...

    def _register(self, name: str, handler: Handler | None = None) -> Any:
        if handler is None:

            def deco(fn: F) -> F:
                self._protocols[name] = HandlerProtocol(name, fn, self)
                return fn

            return deco
        self._protocols[name] = HandlerProtocol(name, handler, self)
        return handler

    register_handler = _hybrid(_register)
    register_handler.__doc__ = """Register a custom handler under ``name`` (replacing an earlier one).

    ``router.register_handler("onPing", fn)`` or ``@router.register_handler("onPing")``.
    """

    def _get_protocol(self, name: str) -> HandlerProtocol:
        try:
            return self._protocols[name]
        except KeyError:
            known = ", ".join(sorted(self._protocols)) or "none"
            raise UnknownProtocol(f"no handler registered as {name!r} (registered: {known})") from None

    get_protocol = _hybrid(_get_protocol)
    get_protocol.__doc__ = "The :class:`HandlerProtocol` registered as ``name``; raises UnknownProtocol."

    # -- dispatch --

    async def _run(self, handlers: list[Handler], conn: Connection | None, *args: Any) -> None:
        for handler in handlers:
            try:
                result = handler(conn, *args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                await self.handle_error(conn, exc)

    @_hybrid
    async def handle_new_connection(self, connection: Connection) -> None:
        """Run the new-connection handlers."""
        await self._run(self._new, connection)

    @_hybrid
    async def handle_connection_closed(
        self, connection: Connection, code: int | None = None, message: str | None = None
    ) -> None:
        """Run the connection-closed handlers."""
        await self._run(self._closed, connection, code, message)

    @_hybrid
    async def handle_message(self, connection: Connection, message: Any) -> None:
        """Run the message handlers."""
        await self._run(self._message, connection, message)

    @_hybrid
    async def handle_error(self, connection: Connection | None, error: BaseException) -> None:
        """Run the error handlers; with none, or when one raises, the error is logged."""
        if not self._error:
            log.error("unhandled error on %r: %r", connection, error, exc_info=error)
            return
        for handler in self._error:
            try:
                result = handler(connection, error)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.exception("error handler failed on %r while handling %r: %r", connection, error, exc)

    # -- synchronous feeding, for transports on the hot path --

    def feed(self, event: str, connection: Connection, *args: Any) -> None:
        """Dispatch without awaiting: ``event`` is ``new``, ``message``, ``closed``.

        Synchronous handlers run now; a coroutine a handler returns becomes a task
        whose exception is routed to the error handlers. A transport calls this from
        its data callback so a message costs no coroutine when the handler is sync.
        """
        handlers = self._message if event == "message" else self._new if event == "new" else self._closed
        for handler in handlers:
            try:
                result = handler(connection, *args)
            except Exception as exc:
                self._spawn(self.handle_error(connection, exc))
                continue
            if result is not None and inspect.isawaitable(result):
                self._spawn(self._guard(connection, result))

    async def _guard(self, connection: Connection, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception as exc:
            await self.handle_error(connection, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def default_router() -> Router:
    """The module-level default router (the seed's static ``WsRouter``)."""
    return Router.default()
