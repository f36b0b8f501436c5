"""A raw picows broadcast server: the ceiling for a Python Pusher server.

It speaks just enough of the Pusher protocol for the end-to-end scenarios in
``bench/run.py``: ``pusher:connection_established``, ``pusher:subscribe`` ->
``pusher_internal:subscription_succeeded`` (public, private and presence
channels, with presence member lists and ``member_added``/``member_removed``),
``pusher:ping`` -> ``pusher:pong``, client events forwarded to the other
members, and ``POST /apps/{id}/events`` on the same port.

What it leaves out on purpose, so that it stays a ceiling: no signature checks
(HTTP API and channel auth), no validation, no limits, no metrics.  It frames a
broadcast once and coalesces every message queued for a connection during one
loop iteration into a single ``write`` (flushed with ``call_soon``), which is the
one optimisation that matters on loopback (see bench/README.md).

One port, two protocols: a plain asyncio protocol reads the request head; an
upgrade is handed to picows (``transport.set_protocol``), other requests are
answered here with keep-alive.

Run: ``python bench/servers/raw_picows.py`` (reads ``SOKETI_PORT``,
``SOKETI_DEFAULT_APP_KEY``; ``--port`` overrides).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
from typing import Any

import orjson
import uvloop
from picows import WSAutoPingStrategy, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest
from picows.picows import WSProtocol  # type: ignore[attr-defined]

_MAX_HEAD = 64 * 1024


def frame_text(payload: bytes) -> bytes:
    """One unmasked FIN text frame (server to client frames are never masked)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Hub:
    """Channels, presence members and the once-per-iteration write coalescer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: str) -> None:
        self.loop = loop
        self.key = key
        self.channels: dict[str, dict[Conn, None]] = {}
        # channel -> user_id -> (user_info, number of connections)
        self.presence: dict[str, dict[str, list[Any]]] = {}
        self.dirty: list[Conn] = []
        self.flush_scheduled = False

    def queue(self, conn: Conn, frame: bytes) -> None:
        """Queue a pre-framed message; flushed once at the end of this iteration."""
        if conn.closed:
            return
        if not conn.pending:
            self.dirty.append(conn)
        conn.pending.append(frame)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            pending = conn.pending
            if conn.closed or conn.raw is None:
                pending.clear()
                continue
            if len(pending) == 1:
                conn.raw.write(pending[0])
            else:
                conn.raw.write(b"".join(pending))
            pending.clear()

    def send_event(self, conn: Conn, event: dict[str, Any]) -> None:
        self.queue(conn, frame_text(orjson.dumps(event)))

    def broadcast(self, channel: str, payload: bytes, exclude: Conn | None = None) -> int:
        members = self.channels.get(channel)
        if not members:
            return 0
        frame = frame_text(payload)
        n = 0
        for conn in members:
            if conn is not exclude:
                self.queue(conn, frame)
                n += 1
        return n

    def subscribe(self, conn: Conn, channel: str, data: dict[str, Any]) -> None:
        members = self.channels.setdefault(channel, {})
        if conn in members:
            return
        if channel.startswith("presence-"):
            info = orjson.loads(data.get("channel_data") or "{}")
            uid = str(info.get("user_id"))
            users = self.presence.setdefault(channel, {})
            entry = users.get(uid)
            first = entry is None
            if entry is None:
                users[uid] = [info.get("user_info"), 1]
            else:
                entry[1] += 1
            members[conn] = None
            conn.presence[channel] = uid
            ids = list(users)
            payload = {
                "presence": {
                    "ids": ids,
                    "hash": {u: v[0] for u, v in users.items()},
                    "count": len(ids),
                }
            }
            self.send_event(
                conn,
                {
                    "event": "pusher_internal:subscription_succeeded",
                    "channel": channel,
                    "data": orjson.dumps(payload).decode(),
                },
            )
            if first:
                added = orjson.dumps({"user_id": uid, "user_info": info.get("user_info")})
                self.broadcast(
                    channel,
                    orjson.dumps(
                        {
                            "event": "pusher_internal:member_added",
                            "channel": channel,
                            "data": added.decode(),
                        }
                    ),
                    exclude=conn,
                )
            return
        members[conn] = None
        self.send_event(
            conn,
            {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"},
        )

    def unsubscribe(self, conn: Conn, channel: str) -> None:
        members = self.channels.get(channel)
        if not members or conn not in members:
            return
        del members[conn]
        if not members:
            del self.channels[channel]
        uid = conn.presence.pop(channel, None)
        if uid is not None:
            users = self.presence[channel]
            users[uid][1] -= 1
            if users[uid][1] == 0:
                del users[uid]
                self.broadcast(
                    channel,
                    orjson.dumps(
                        {
                            "event": "pusher_internal:member_removed",
                            "channel": channel,
                            "data": orjson.dumps({"user_id": uid}).decode(),
                        }
                    ),
                )


class Conn(WSListener):
    """One WebSocket connection."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.raw: asyncio.Transport | None = None
        self.transport: WSTransport | None = None
        self.pending: list[bytes] = []
        self.closed = False
        self.channels: list[str] = []
        self.presence: dict[str, str] = {}
        self.socket_id = f"{random.randrange(10**9)}.{random.randrange(10**9)}"

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.raw = transport.underlying_transport
        self.hub.send_event(
            self,
            {
                "event": "pusher:connection_established",
                "data": orjson.dumps(
                    {"socket_id": self.socket_id, "activity_timeout": 120}
                ).decode(),
            },
        )

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type is not WSMsgType.TEXT:
            return
        msg = orjson.loads(frame.get_payload_as_memoryview())
        event = msg.get("event")
        hub = self.hub
        if event == "pusher:ping":
            hub.queue(self, _PONG)
        elif event == "pusher:subscribe":
            data = msg.get("data") or {}
            channel = str(data.get("channel"))
            hub.subscribe(self, channel, data)
            self.channels.append(channel)
        elif event == "pusher:unsubscribe":
            channel = str((msg.get("data") or {}).get("channel"))
            hub.unsubscribe(self, channel)
            if channel in self.channels:
                self.channels.remove(channel)
        elif isinstance(event, str) and event.startswith("client-"):
            channel = msg.get("channel")
            data = msg.get("data")
            out: dict[str, Any] = {
                "event": event,
                "channel": channel,
                "data": data if isinstance(data, str) else orjson.dumps(data).decode(),
            }
            uid = self.presence.get(channel)
            if uid is not None:
                out["user_id"] = uid
            hub.broadcast(channel, orjson.dumps(out), exclude=self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        for channel in self.channels:
            self.hub.unsubscribe(self, channel)
        self.channels.clear()
        self.raw = None


_PONG = frame_text(b'{"event":"pusher:pong","data":"{}"}')


class FrontDoor(asyncio.Protocol):
    """Reads the request head: upgrades go to picows, the rest is answered here."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    assert self.transport is not None
                    self.transport.close()
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            if headers.get("upgrade", "").lower() == "websocket":
                self._upgrade(bytes(self.buf))
                return
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            self._request(lines[0], body)

    def _request(self, request_line: str, body: bytes) -> None:
        assert self.transport is not None
        method, _, rest = request_line.partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        status, answer = "200 OK", b"{}"
        if method == "POST" and path.endswith("/events"):
            msg = orjson.loads(body)
            channels = msg.get("channels") or [msg.get("channel")]
            payload_base = {"event": msg["name"], "data": msg["data"]}
            for channel in channels:
                payload_base["channel"] = channel
                self.hub.broadcast(channel, orjson.dumps(payload_base))
        elif method == "GET" and path in ("/", "/ready", "/accept-traffic"):
            answer = b"OK"
        else:
            status, answer = "404 Not Found", b'{"error":"not found"}'
        self.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(answer)}\r\n\r\n".encode()
            + answer
        )

    def _upgrade(self, data: bytes) -> None:
        assert self.transport is not None
        hub = self.hub

        def listener_factory(request: WSUpgradeRequest) -> Conn:
            return Conn(hub)

        ws = WSProtocol(
            None,
            None,
            False,
            listener_factory,
            _LOGGER,
            True,
            5.0,
            False,
            20.0,
            20.0,
            _PING_WHEN_IDLE,
            True,
            10 * 1024 * 1024,
            None,
            1024,
        )
        self.transport.set_protocol(ws)
        ws.connection_made(self.transport)
        buf = ws.get_buffer(len(data))
        buf[: len(data)] = data
        ws.buffer_updated(len(data))


_LOGGER = logging.getLogger("raw_picows")
_PING_WHEN_IDLE = WSAutoPingStrategy.PING_WHEN_IDLE


async def serve(host: str, port: int, key: str) -> None:
    loop = asyncio.get_running_loop()
    hub = Hub(loop, key)
    server = await loop.create_server(lambda: FrontDoor(hub), host, port, backlog=4096)
    stop = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    print(f"raw_picows listening on {host}:{port}", flush=True)
    async with server:
        await stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("SOKETI_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SOKETI_PORT", "6001")))
    args = parser.parse_args()
    key = os.environ.get("SOKETI_DEFAULT_APP_KEY", "app-key")
    uvloop.run(serve(args.host, args.port, key))


if __name__ == "__main__":
    main()
