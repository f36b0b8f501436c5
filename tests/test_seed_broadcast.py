"""The seed's example as it is written: numeric connection ids, on both twins.

The seed makes ids with ``Math.random() * 1e5``: a float, or an int once floored.
A broadcast server over real sockets (the `websockets` library, its socket passed
as ``native``) tracks them in :class:`Connections`, backed by each twin in turn.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Hashable
from types import ModuleType
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from soketi_impl import Connection, Connections, DuplicateConnection, Router
from soketi_impl import connections as connections_module

WAIT = 10


def seed_id(kind: str, rng: random.Random) -> Hashable:
    value = rng.random() * 1e5
    return value if kind == "float" else int(value)


@pytest.mark.parametrize("kind", ["int", "float"])
async def test_seed_broadcast_with_numeric_ids(
    kind: str, twin: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections_module, "ConnectionTable", twin("conntable").ConnectionTable)
    conns, router, rng = Connections(), Router(), random.Random(1234)
    left: asyncio.Queue[Any] = asyncio.Queue()

    @router.on_new_connection
    async def greet(conn: Connection) -> None:
        await conns.new_connection(conn)
        await conn.send("Hello!")
        await conn.send(repr(conn.id))  # so each client knows its id

    @router.on_message
    async def broadcast(conn: Connection, message: str) -> None:
        for other in conns:
            await other.send(f"{conn.id!r}: {message}")

    @router.on_connection_closed
    async def bye(conn: Connection, code: int | None, reason: str | None) -> None:
        assert await conns.remove_connection(conn.id)  # by the numeric id itself
        await left.put(conn.id)

    async def handler(ws: ServerConnection) -> None:
        conn = Connection(seed_id(kind, rng), ws)
        await router.handle_new_connection(conn)
        try:
            async for message in ws:
                await router.handle_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            await router.handle_connection_closed(conn, ws.close_code, ws.close_reason)

    async with serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with connect(url) as a, connect(url) as b, connect(url) as c:
            clients = [a, b, c]
            told: list[str] = []
            for ws in clients:
                assert await asyncio.wait_for(ws.recv(), WAIT) == "Hello!"
                told.append(str(await asyncio.wait_for(ws.recv(), WAIT)))
            ids = [conn.id for conn in conns]
            assert sorted(map(repr, ids)) == sorted(told)
            assert len(ids) == 3 and all(type(i) is (int if kind == "int" else float) for i in ids)
            assert all(conns.get(i) is not None and i in conns for i in ids)
            await b.send("hi all")
            for ws in clients:
                assert await asyncio.wait_for(ws.recv(), WAIT) == f"{told[1]}: hi all"
        gone = {await asyncio.wait_for(left.get(), WAIT) for _ in range(3)}
        assert gone == set(ids) and len(conns) == 0


async def test_numeric_ids_collide_as_dict_keys(twin: Callable[[str], ModuleType],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """1, 1.0 and True are one id, as in a dict; "1" is another."""
    monkeypatch.setattr(connections_module, "ConnectionTable", twin("conntable").ConnectionTable)
    conns = Connections()
    one = Connection(1, send=print, close=print)
    conns.add(one)
    conns.add(Connection("1", send=print, close=print))
    for same in (1.0, True):
        with pytest.raises(DuplicateConnection):
            conns.add(Connection(same, send=print, close=print))
        assert conns.get(same) is one and same in conns
    assert conns.discard(Connection(1.0, send=print, close=print)) is False  # not that object
    assert conns.discard(1.0) is True and conns.discard(1) is False
    assert [c.id for c in conns] == ["1"] and dict(conns.connections) == {"1": conns.get("1")}
