"""``NatsAdapter``: the parts of the NATS adapter put together, and its life cycle.

:meth:`NatsAdapter.start` connects (or raises :class:`NatsUnavailable`), binds the
bucket and watches it (:mod:`.store`), subscribes, and starts the
outbox writer (:mod:`.outbox`) and the heartbeat (:mod:`.nodes`).
:meth:`NatsAdapter.close` withdraws this node (its members leave, its count shares
go) and disconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import re
import time
import uuid
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from ...config import Config
from ...errors import ConfigError, SoketiError
from ..base import Adapter, PresenceJoin
from ..throttle import Throttle
from .counts import NatsCounts
from .nodes import Nodes
from .outbox import Outbox
from .presence import DistributedPresence
from .requests import Requests
from .store import PresenceStore

__all__ = ["NatsAdapter", "NatsUnavailable"]

log = logging.getLogger("soketi_impl.nats")

#: what a subject prefix may hold: no spaces, no wildcards, no empty token
_SUBJECT_PREFIX = re.compile(r"^(?:[^\s.*>]+\.?)*$")
#: messages (and bytes) a subscription may hold before NATS calls this node a slow consumer
PENDING_MSGS, PENDING_BYTES = 65_536, 64 * 1024 * 1024
#: bytes nats-py keeps for NATS while reconnecting; beyond, publishes are dropped
RECONNECT_BUFFER = 8 * 1024 * 1024


class NatsUnavailable(SoketiError):
    """NATS could not be reached (or has no JetStream) when the adapter started (exit 1)."""


def _server_url(server: str) -> str:
    return server if "://" in server else "nats://" + server


def bucket_name(prefix: str) -> str:
    """The bucket of a prefix: presence and counts (bucket names allow ``[A-Za-z0-9_-]`` only)."""
    if not prefix:
        return "soketi-cluster"
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", prefix)
    if clean != prefix:
        clean += "-" + hashlib.sha256(prefix.encode()).hexdigest()[:8]
    return "soketi-cluster-" + clean


class NatsAdapter(Adapter):
    """The NATS adapter (see :mod:`soketi_impl.adapters.nats` for the design).

    ``NatsAdapter(config)`` reads the ``adapter_nats_*`` fields; every subject starts
    with ``{adapter_nats_prefix}soketi.`` and the bucket (presence, counts) is named after the
    prefix (:func:`bucket_name`). The heartbeat knobs are constructor arguments, in
    seconds.
    """

    def __init__(
        self,
        config: Config,
        *,
        requests_timeout: float | None = None,
        heartbeat_interval: float = 5.0,
        dead_after: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        prefix = config.adapter_nats_prefix
        if not _SUBJECT_PREFIX.match(prefix) or prefix.startswith("."):
            raise ConfigError(
                "SOKETI_ADAPTER_NATS_PREFIX", "a NATS subject prefix (no spaces, '*', '>' or '..')", prefix
            )
        self.config = config
        self.node_id = uuid.uuid4().hex[:16]
        self.requests_timeout = (
            requests_timeout if requests_timeout is not None else config.adapter_nats_requests_timeout_ms / 1000
        )
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after if dead_after is not None else 3 * heartbeat_interval
        self.connect_timeout = (
            connect_timeout if connect_timeout is not None else config.adapter_nats_timeout_ms / 1000
        )
        self.nodes_number = config.adapter_nats_nodes_number
        self.servers = [_server_url(s) for s in config.adapter_nats_servers]
        self.base = prefix + "soketi."
        self.events_subject = self.base + "events"
        self.requests_subject = self.base + "requests"
        self.replies_subject = self.base + "replies." + self.node_id
        self.nodes_subject = self.base + "nodes"
        self.bucket = bucket_name(prefix)
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.outbox = Outbox(self)
        self.store = PresenceStore(self)
        self.presence = DistributedPresence(self)
        self.counts = NatsCounts(self)
        self.requests = Requests(self)
        self.nodes = Nodes(self)
        self._tasks: list[asyncio.Task[Any]] = []
        self._resyncing: asyncio.Task[None] | None = None
        self._resync_lock = asyncio.Lock()
        self._closed = False
        self._last_error: BaseException | None = None
        self._warn = Throttle()
        self._bad = Throttle()
        #: malformed messages skipped so far
        self.malformed = 0

    @property
    def connected(self) -> bool:
        """True while the connection to NATS is up."""
        return self.nc is not None and self.nc.is_connected

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Connect, bind the bucket, subscribe; :class:`NatsUnavailable` if NATS is unreachable."""
        where = ", ".join(self.servers)
        cfg = self.config
        self._check_credentials()
        try:
            self.nc = await asyncio.wait_for(nats.connect(
                self.servers, name=f"soketi-impl-{self.node_id}", no_echo=True,
                user=cfg.adapter_nats_user, password=cfg.adapter_nats_password,
                token=cfg.adapter_nats_token, user_credentials=cfg.adapter_nats_credentials,
                connect_timeout=self.connect_timeout, reconnect_time_wait=1,
                # every server once, twice: then a clear error; later, reconnect for ever
                max_reconnect_attempts=1, allow_reconnect=True,
                ping_interval=max(1, round(self.heartbeat_interval)), max_outstanding_pings=3,
                pending_size=RECONNECT_BUFFER,
                error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            ), 2 * len(self.servers) * (self.connect_timeout + 1) + 1)
        except (NatsError, OSError, asyncio.TimeoutError, ImportError) as exc:
            cause = self._last_error if isinstance(exc, nats.errors.NoServersError) and self._last_error else exc
            reason = str(cause) or type(cause).__name__
            raise NatsUnavailable(f"cannot connect to NATS at {where}: {reason}") from None
        nc = self.nc
        nc.options["max_reconnect_attempts"] = -1
        self.js = nc.jetstream(timeout=min(self.connect_timeout, self.requests_timeout, 5.0))
        try:
            await self.store.open()
            await self._subscribe()
            await nc.flush(timeout=max(1, round(self.connect_timeout)))
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            await self._close_connection()
            reason = str(exc) or type(exc).__name__
            raise NatsUnavailable(
                f"NATS at {where} refused the bucket {self.bucket!r} (JetStream must be "
                f"enabled): {reason}"
            ) from None
        loop = asyncio.get_running_loop()
        self.nodes.live_since = time.monotonic()
        self._tasks = [loop.create_task(self.outbox.run()), loop.create_task(self.nodes.run())]
        self.nodes.beat()

    def _check_credentials(self) -> None:
        """A credentials file that cannot be used stops the start (nats-py would ignore it
        until a server asks for it)."""
        path = self.config.adapter_nats_credentials
        if path is None:
            return
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise NatsUnavailable(f"SOKETI_ADAPTER_NATS_CREDENTIALS: cannot read {path}: {exc.strerror}") from None
        if importlib.util.find_spec("nkeys") is None:  # nats-py signs with it
            raise NatsUnavailable(
                "SOKETI_ADAPTER_NATS_CREDENTIALS needs the nkeys package: pip install 'soketi-impl[nats]'"
            )

    async def _subscribe(self) -> None:
        nc = self.nc
        assert nc is not None
        for subject, cb in (
            (self.events_subject, self._on_event), (self.requests_subject, self._on_request),
            (self.replies_subject, self._on_reply), (self.nodes_subject, self._on_beat),
        ):
            await nc.subscribe(subject, cb=cb, pending_msgs_limit=PENDING_MSGS, pending_bytes_limit=PENDING_BYTES)

    async def close(self) -> None:
        """Withdraw this node (its members leave, with member_removed), then disconnect."""
        if self._closed or self.nc is None:
            return
        self._closed = True
        writer = self._tasks[0] if self._tasks else None
        others = self._tasks[1:]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        # NATS away: what is in flight would only wait for its timeout
        settle = self.requests_timeout if self.connected else 0.0
        await self.presence.settle(settle)
        await self.counts.settle(settle)
        if self._resyncing is not None:
            self._resyncing.cancel()
        if self.connected:
            try:
                await asyncio.wait_for(self.presence.withdraw(), 2 * self.requests_timeout)
                await asyncio.wait_for(self.counts.reap(self.node_id), 2 * self.requests_timeout)
                # this node is the origin of those changes: its core hears them from the watch
                await self.store.wait_applied(self.counts.last_written, self.requests_timeout)
                self.nodes.beat(alive=False)
                await self.outbox.flush(2.0)
            except (NatsError, OSError, asyncio.TimeoutError) as exc:
                log.warning("could not withdraw this node from NATS at %s: %s", ", ".join(self.servers), exc)
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        await self.store.stop()
        await self._close_connection()

    async def _close_connection(self) -> None:
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception as exc:  # closing a broken connection: nothing more to do
                log.debug("closing the NATS connection: %s", exc)

    async def resync(self) -> None:
        """Watch the bucket afresh (after a reconnection), then reconcile this node's members."""
        if self._resync_lock.locked():
            return  # one is under way
        async with self._resync_lock:
            try:
                await self.store.resync()
                self.presence.dirty = True
            except (NatsError, OSError, asyncio.TimeoutError) as exc:
                self._warn_failing(exc)

    # ------------------------------------------------------------------ nats-py callbacks

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if not self._closed:
            self._warn_failing(exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            self.store.live = False
            self._warn_failing(ConnectionError("disconnected"))

    async def _on_reconnected(self) -> None:
        log.info("NATS connection back (%s): re-registering this node's presence", self.nc and self.nc.connected_url)
        self._warn.reset()
        self.nodes.live_since = time.monotonic()
        self.nodes.beat()
        if self._resyncing is None or self._resyncing.done():
            self._resyncing = asyncio.get_running_loop().create_task(self.resync())

    def _warn_failing(self, exc: BaseException) -> None:
        if self._warn.ready():
            log.warning(
                "NATS at %s: %s: %s; events are delivered on this node only until it is back "
                "(logged at most every %.0f s)",
                ", ".join(self.servers), type(exc).__name__, exc, self._warn.every,
            )

    def _malformed(self, subject: str, exc: Exception) -> None:
        self.malformed += 1
        if self._bad.ready():
            log.warning(
                "skipped a malformed message on NATS subject %s (%s: %s; %d so far; "
                "logged at most every %.0f s)",
                subject[:200], type(exc).__name__, str(exc)[:200], self.malformed, self._bad.every,
            )

    async def _on_event(self, msg: Msg) -> None:
        try:
            header, sep, payload = msg.data.partition(b"\n")
            node, app_id, channel, except_socket_id, cache = orjson.loads(header)
            if not sep or not isinstance(app_id, str) or not isinstance(channel, str):
                raise ValueError("an event needs a header line, an app id and a channel")
            if node != self.node_id:
                self.host.deliver(
                    app_id, channel, payload,
                    except_socket_id if isinstance(except_socket_id, str) else None, bool(cache),
                )
        except Exception as exc:  # a malformed message must not stop the subscription
            self._malformed(msg.subject, exc)

    async def _on_request(self, msg: Msg) -> None:
        try:
            self.requests.on_request(msg.data, msg.reply)
        except Exception as exc:
            self._malformed(msg.subject, exc)

    async def _on_reply(self, msg: Msg) -> None:
        try:
            self.requests.on_reply(msg.data)
        except Exception as exc:
            self._malformed(msg.subject, exc)

    async def _on_beat(self, msg: Msg) -> None:
        try:
            self.nodes.on_beat(msg.data)
        except Exception as exc:
            self._malformed(msg.subject, exc)

    # ------------------------------------------------------------------ the Adapter interface

    def publish(
        self, app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool
    ) -> None:
        """Publish the frame, with its app, channel, excluded socket and cache flag, to every other node."""
        header = orjson.dumps([self.node_id, app_id, channel, except_socket_id, 1 if cache else 0])
        self.outbox.put(self.events_subject, header + b"\n" + payload)

    async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        """Ask every other node; their answers that came within ``requests_timeout``."""
        return await self.requests.ask(app_id, op, arg)

    def presence_join(self, join: PresenceJoin) -> None:
        """Register the member in the bucket (see :mod:`.presence`)."""
        self.presence.join(join)

    def presence_leave(self, app_id: str, channel: str, user_id: str) -> None:
        """Withdraw the member from the bucket (see :mod:`.presence`)."""
        self.presence.leave(app_id, channel, user_id)

    def count_changed(self, app_id: str, kind: str, name: str, local_count: int, every_node: bool = False) -> None:
        """Write this node's share of a cluster count (see :mod:`.counts`)."""
        self.counts.change(app_id, kind, name, local_count, every_node)

    async def count_totals(self, app_id: str, kind: str, names: list[str]) -> list[int]:
        """The cluster totals of ``names``, from this node's replica of the bucket."""
        return await self.counts.totals(app_id, kind, names)
