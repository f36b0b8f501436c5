"""The seed's pseudo-server made real on picows + uvloop: greets, then broadcasts every message."""

import itertools
import sys

import uvloop
from picows import WSListener, WSMsgType, ws_create_server

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


class Listener(WSListener):  # picows calls these; the router does the rest
    def on_ws_connected(self, transport):  # type: ignore[no-untyped-def]
        self.conn = Connection(next(ids), send=lambda m: transport.send(WSMsgType.TEXT, m),
                               close=lambda code=1000, reason="": transport.send_close(code, reason))
        router.feed("new", self.conn)

    def on_ws_frame(self, transport, frame):  # type: ignore[no-untyped-def]
        if frame.msg_type == WSMsgType.TEXT:
            router.feed("message", self.conn, frame.get_payload_as_utf8_text())
        elif frame.msg_type == WSMsgType.CLOSE:  # answer the close handshake
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport):  # type: ignore[no-untyped-def]
        router.feed("closed", self.conn, None, None)


async def main(port: int) -> None:
    server = await ws_create_server(lambda request: Listener(), "127.0.0.1", port, use_aiofastnet=False)
    print(f"listening on ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
