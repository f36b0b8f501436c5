"""An app's ``maxConnections`` across nodes, on every adapter (Redis, NATS, workers).

Each node counts its own connections of the app and learns the others' from the
cluster (soketi_impl/pusher/counts.py): real nodes in this process
(:func:`cluster_util.node`), real WebSocket clients. A node's count reaches the
others after its client got ``connection_established`` and no client message says
so, so the tests read what a node has heard (``AppState.elsewhere``) until it is there.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cluster_util import Client, node
from conftest import APP_ID, APP_KEY
from soketi_impl.server import Server

LIMIT = {"SOKETI_DEFAULT_APP_MAX_CONNS": "3"}
#: as in test_cluster_counts.py: a NATS write and its watch can take seconds on a loaded machine
TIMEOUT = 10.0

pytestmark = pytest.mark.timeout(60)



async def heard(server: Server, n: int) -> None:
    """Wait until ``server`` counts ``n`` connections of the app on the other nodes."""
    async def reached() -> None:
        while server.pusher.apps[APP_ID].elsewhere != n:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(reached(), TIMEOUT)


async def refused(port: int) -> tuple[int, int | None]:
    """Connect and be refused: (the pusher:error code, the close code)."""
    async with connect(f"ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7", open_timeout=TIMEOUT) as ws:
        msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert msg["event"] == "pusher:error", msg
        data = msg["data"] if isinstance(msg["data"], dict) else json.loads(msg["data"])
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    rcvd = closed.value.rcvd
    return int(data["code"]), rcvd.code if rcvd is not None else None


async def test_max_connections_spans_the_nodes(cluster: tuple[str, str]) -> None:
    driver, prefix = cluster
    async with node(driver, prefix, env=LIMIT) as a, node(driver, prefix, env=LIMIT) as b:
        a1, a2 = await Client.open(a.port), await Client.open(a.port)
        await heard(b, 2)
        b1 = await Client.open(b.port)
        await heard(a, 1)
        assert await refused(b.port) == (4004, 4004)
        assert await refused(a.port) == (4004, 4004)
        await a2.ws.close()  # room for one, on either node
        await heard(b, 1)
        b2 = await Client.open(b.port)
        await heard(a, 2)
        assert await refused(a.port) == (4004, 4004)
        # a node that starts now, while the others are idle, asks them for their counts
        async with node(driver, prefix, env=LIMIT) as c:
            await heard(c, 3)
            assert await refused(c.port) == (4004, 4004)
        for client in (a1, b1, b2):
            await client.ws.close()
