"""The same broadcast server on the `websockets` library: only the transport glue differs."""

import asyncio
import itertools
import sys

from websockets.asyncio.server import ServerConnection, serve

from soketi_impl import Connection, Connections, Router

conns, router, ids = Connections(), Router(), itertools.count(1)  # numeric ids, as the seed


@router.on_new_connection
async def greet(conn: Connection) -> None:
    await conns.new_connection(conn)
    await conn.send("Hello!")


@router.on_message
async def broadcast(conn: Connection, message: str) -> None:
    for other in conns:
        await other.send(message)


router.on_connection_closed(lambda conn, code, msg: conns.remove_connection(conn))


async def handler(ws: ServerConnection) -> None:
    conn = Connection(next(ids), ws)  # a websockets connection has send() and close()
    await router.handle_new_connection(conn)
    try:
        async for message in ws:
            await router.handle_message(conn, message)
    finally:
        await router.handle_connection_closed(conn, ws.close_code, ws.close_reason)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port) as server:
        print(f"listening on ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
