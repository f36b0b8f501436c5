"""Apps in PostgreSQL and MariaDB (``SOKETI_APP_MANAGER_DRIVER=postgres|mysql``).

Against this machine's PostgreSQL (127.0.0.1:5432, user postgres, database test)
and MariaDB (127.0.0.1:3306, root without a password, database test). Each test
makes its own table (a unique name) with soketi's columns, so parallel workers never
meet. The servers are real subprocesses; the clients are ``websockets`` and the
official ``pusher`` SDK. A database that is cut while the server runs is a TCP proxy
in this process that the test closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import ServerProcess, base_env, free_port, run_server, wait_until

TIMEOUT = 5.0
PG = ("127.0.0.1", 5432)
MY = ("127.0.0.1", 3306)

def _readme_ddl() -> dict[str, str]:
    """The README's CREATE TABLE statements (the tests make their tables with them)."""
    blocks = re.findall(r"```sql\n(.*?)```", (Path(__file__).parent.parent / "README.md").read_text(), re.S)
    ddl = {"postgres" if '"id"' in b else "mysql": b.replace("CREATE TABLE apps (", "CREATE TABLE {table} (") for b in blocks}
    assert set(ddl) == {"postgres", "mysql"}, "the README's two CREATE TABLE blocks"
    return ddl


DDL = _readme_ddl()


def _absent(address: tuple[str, int]) -> str | None:
    try:
        with socket.create_connection(address, timeout=2):
            return None
    except OSError as exc:
        return str(exc)


_ABSENT = {"postgres": _absent(PG), "mysql": _absent(MY)}
_WHAT = {
    "postgres": "a PostgreSQL server at 127.0.0.1:5432 (user postgres, trust auth, database test)",
    "mysql": "a MariaDB or MySQL server at 127.0.0.1:3306 (root, empty password, database test)",
}


def _need(driver: str) -> None:
    if _ABSENT[driver] is not None:
        pytest.fail(f"these tests need {_WHAT[driver]} ({_ABSENT[driver]})", pytrace=False)


class Db:
    """One test's table in one database, driven with the server's own drivers."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.table = f"apps_{uuid.uuid4().hex[:12]}"

    async def _run(self, sql: str, *args: Any) -> None:
        if self.driver == "postgres":
            import asyncpg

            conn = await asyncpg.connect(host=PG[0], port=PG[1], user="postgres", database="test", timeout=TIMEOUT)
            try:
                await conn.execute(sql, *args)
            finally:
                await conn.close()
        else:
            import aiomysql

            my = await aiomysql.connect(
                host=MY[0], port=MY[1], user="root", password="", db="test", autocommit=True,
                connect_timeout=TIMEOUT,
            )
            try:
                async with my.cursor() as cursor:
                    await cursor.execute(sql, args or None)
            finally:
                my.close()

    def run(self, sql: str, *args: Any) -> None:
        asyncio.run(asyncio.wait_for(self._run(sql, *args), TIMEOUT))

    def create(self) -> None:
        self.run(DDL[self.driver].format(table=self.table).rstrip().rstrip(";"))

    def drop(self) -> None:
        self.run(f"DROP TABLE IF EXISTS {self.table}")

    def insert(self, **row: Any) -> None:
        names = list(row)
        if self.driver == "postgres":
            cols = ", ".join(f'"{n}"' for n in names)
            marks = ", ".join(f"${i + 1}" for i in range(len(names)))
        else:
            cols = ", ".join(f"`{n}`" for n in names)
            marks = ", ".join("%s" for _ in names)
        self.run(f"INSERT INTO {self.table} ({cols}) VALUES ({marks})", *row.values())

    def env(self, port: int | None = None, **extra: str) -> dict[str, str]:
        """The server's variables for this table (``port``: the database's, e.g. a proxy's)."""
        if self.driver == "postgres":
            env = {
                "SOKETI_APP_MANAGER_DRIVER": "postgres",
                "SOKETI_APP_MANAGER_POSTGRES_TABLE": self.table,
                "SOKETI_DB_POSTGRES_HOST": PG[0],
                "SOKETI_DB_POSTGRES_PORT": str(port or PG[1]),
                "SOKETI_DB_POSTGRES_USERNAME": "postgres",
                "SOKETI_DB_POSTGRES_DATABASE": "test",
            }
        else:
            env = {
                "SOKETI_APP_MANAGER_DRIVER": "mysql",
                "SOKETI_APP_MANAGER_MYSQL_TABLE": self.table,
                "SOKETI_DB_MYSQL_HOST": MY[0],
                "SOKETI_DB_MYSQL_PORT": str(port or MY[1]),
                "SOKETI_DB_MYSQL_USERNAME": "root",
                "SOKETI_DB_MYSQL_PASSWORD": '""',  # JSON: the empty password (empty would be unset)
                "SOKETI_DB_MYSQL_DATABASE": "test",
            }
        env.update(extra)
        return env


@pytest.fixture(params=["postgres", "mysql"])
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    _need(request.param)
    table = Db(request.param)
    table.create()
    try:
        yield table
    finally:
        table.drop()


def app_row(n: int, **extra: Any) -> dict[str, Any]:
    """A row with soketi's columns: app ``7000n`` (numeric: the Python SDK wants one)."""
    row: dict[str, Any] = {
        "id": f"7000{n}", "key": f"key-{n}", "secret": f"secret-{n}", "max_connections": -1,
        "enable_client_messages": 1, "enabled": 1, "max_backend_events_per_sec": -1,
        "max_client_events_per_sec": -1, "max_read_req_per_sec": -1, "webhooks": "[]",
    }
    row.update(extra)
    return row


def sdk(server: ServerProcess, n: int) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=f"7000{n}", key=f"key-{n}", secret=f"secret-{n}", host=server.host, port=server.port,
        ssl=False, timeout=TIMEOUT,
    )


class Client:
    """A raw Pusher client (``websockets``, sync) for the app with key ``key``."""

    def __init__(self, server: ServerProcess, key: str) -> None:
        self.ws = connect(f"ws://{server.host}:{server.port}/app/{key}?protocol=7", open_timeout=TIMEOUT)
        self.first = self.recv()

    def recv(self) -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = json.loads(self.ws.recv(timeout=TIMEOUT))
            if msg["event"] != "pusher:ping":
                return msg

    def subscribe(self, channel: str) -> None:
        self.ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        assert self.recv()["event"] == "pusher_internal:subscription_succeeded"

    def closed_with(self) -> int:
        with pytest.raises(ConnectionClosed) as closed:
            self.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code

    def close(self) -> None:
        self.ws.close()


def established(server: ServerProcess, key: str) -> Client:
    c = Client(server, key)
    assert c.first["event"] == "pusher:connection_established", c.first
    return c


def refused(server: ServerProcess, key: str) -> int:
    """Connect with ``key``: the Pusher error code it is refused with (the close code too)."""
    c = Client(server, key)
    assert c.first["event"] == "pusher:error", c.first
    code = c.closed_with()
    assert c.first["data"]["code"] == code
    return code


def lookup_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log if "app lookups fail" in line]


# ---------------------------------------------------------------- the settings


def test_soketi_names_for_the_app_managers() -> None:
    from soketi_impl.config import load_config
    from soketi_impl.errors import ConfigError

    cfg = load_config(environ={
        "SOKETI_APP_MANAGER_DRIVER": "mysql",
        "SOKETI_APP_MANAGER_CACHE_ENABLED": "true",
        "SOKETI_APP_MANAGER_CACHE_TTL": "60",
        "SOKETI_APP_MANAGER_MYSQL_TABLE": "soketi.apps",
        "SOKETI_APP_MANAGER_MYSQL_VERSION": "8.0",  # knex's: accepted, nothing to do
        "SOKETI_DB_MYSQL_HOST": "db.internal",
        "SOKETI_DB_MYSQL_PORT": "3307",
        "SOKETI_DB_MYSQL_PASSWORD": '""',
        "SOKETI_DB_POOLING_ENABLED": "true",
        "SOKETI_DB_POOLING_MAX": "3",
    })
    assert cfg.warnings == []
    assert (cfg.app_manager_driver, cfg.app_manager_cache_enabled, cfg.app_manager_cache_ttl) == ("mysql", True, 60)
    assert (cfg.app_manager_mysql_table, cfg.mysql_host, cfg.mysql_port) == ("soketi.apps", "db.internal", 3307)
    assert (cfg.mysql_password, cfg.mysql_username, cfg.mysql_database) == ("", "root", "main")
    assert (cfg.postgres_port, cfg.postgres_password, cfg.app_manager_postgres_table) == (5432, "password", "apps")
    from soketi_impl.apps.sql import pool_sizes

    assert pool_sizes(cfg) == (0, 3)
    for name, value in [("SOKETI_APP_MANAGER_DRIVER", "dynamodb"), ("SOKETI_APP_MANAGER_POSTGRES_TABLE", "apps; --")]:
        with pytest.raises(ConfigError, match=name):
            load_config(environ={name: value})


# ---------------------------------------------------------------- serving apps


@pytest.mark.parametrize("host", ["picows", "asgi", "aiohttp"])
def test_apps_from_the_table_connect_and_trigger(db: Db, host: str) -> None:
    if host != "picows" and db.driver == "mysql":
        pytest.skip("the hosts share the core: one driver on the framework hosts is enough")
    db.insert(**app_row(1))
    db.insert(**app_row(2, max_connections=1, enable_client_messages=0))
    db.insert(**app_row(3, enabled=0))
    db.insert(**app_row(4, max_event_name_length=20))
    env = db.env(SOKETI_APP_MANAGER_CACHE_ENABLED="true", SOKETI_APP_MANAGER_CACHE_TTL="60")
    with run_server(env=env, host=host) as server:
        if host == "picows":
            assert any("apps: from " in line and db.table in line for line in server.log), server.log
        # soketi's default app (app-key) is not served: the apps are the table's
        assert refused(server, "app-key") == 4001
        a = established(server, "key-1")
        a.subscribe("news")
        sdk(server, 1).trigger("news", "update", {"n": 1})
        got = a.recv()
        assert (got["event"], got["channel"], json.loads(got["data"])) == ("update", "news", {"n": 1})
        # the columns are the app's settings
        b = established(server, "key-2")
        assert refused(server, "key-2") == 4004  # max_connections = 1
        b.subscribe("room")
        b.ws.send(json.dumps({"event": "client-hi", "channel": "room", "data": {}}))
        assert b.recv()["data"]["code"] == 4301  # enable_client_messages = 0
        assert refused(server, "key-3") == 4003  # enabled = 0
        with pytest.raises(pusher.errors.PusherBadRequest):
            sdk(server, 4).trigger("news", "x" * 21, {})  # max_event_name_length = 20
        # an unknown app on the HTTP API: 404, never a 5xx
        stranger = pusher.Pusher(
            app_id="79999", key="nope", secret="nope", host=server.host, port=server.port,
            ssl=False, timeout=TIMEOUT,
        )
        with pytest.raises(pusher.errors.PusherBadStatus, match="^404"):
            stranger.trigger("news", "update", {})
        for c in (a, b):
            c.close()


def test_the_webhooks_column_is_the_apps_webhooks(db: Db) -> None:
    """A row's ``webhooks`` JSON is served: signed with the row's secret."""
    import hashlib
    import hmac
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[tuple[str, bytes]] = []
    arrived = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got.append((self.headers.get("x-pusher-signature", ""), body))
            arrived.set()
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        db.insert(**app_row(1, webhooks=json.dumps([{"url": url, "event_types": ["channel_occupied"]}])))
        with run_server(env=db.env()) as server:
            c = established(server, "key-1")
            c.subscribe("hooked")
            assert arrived.wait(10), "no channel_occupied webhook"
            signature, body = got[0]
            assert json.loads(body)["events"] == [{"name": "channel_occupied", "channel": "hooked"}]
            assert signature == hmac.new(b"secret-1", body, hashlib.sha256).hexdigest()
            c.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_app_inserted_while_running_is_found(db: Db) -> None:
    db.insert(**app_row(1))
    env = db.env(SOKETI_APP_MANAGER_CACHE_ENABLED="true", SOKETI_APP_MANAGER_CACHE_TTL="3600")
    with run_server(env=env) as server:
        assert refused(server, "key-5") == 4001  # not there yet: remembered as a miss ...
        db.insert(**app_row(5))
        # ... for a second at most, however long the cache keeps found apps

        c = wait_until(lambda: _established_or_none(server, "key-5"), 5, "the inserted app to be found", interval=0.2)
        c.subscribe("news")
        sdk(server, 5).trigger("news", "update", {"found": True})
        assert json.loads(c.recv()["data"]) == {"found": True}
        c.close()


def test_an_app_found_later_crosses_nodes_over_redis(db: Db) -> None:
    """Two nodes on Redis: an app neither knew at start still carries events between them."""
    import uuid

    db.insert(**app_row(1))
    prefix = f"sqlx-{uuid.uuid4().hex[:8]}"
    env = db.env(SOKETI_ADAPTER_DRIVER="redis", SOKETI_DB_REDIS_KEY_PREFIX=prefix)
    with run_server(env=env) as a, run_server(env=env) as b:
        db.insert(**app_row(7))
        c = wait_until(lambda: _established_or_none(a, "key-7"), 5, "app 7 on node a", interval=0.2)
        c.subscribe("news")
        sdk(b, 7).trigger("news", "update", {"from": "b"})
        assert json.loads(c.recv()["data"]) == {"from": "b"}
        c.close()


def _established_or_none(server: ServerProcess, key: str) -> Client | None:
    c = Client(server, key)
    if c.first["event"] == "pusher:connection_established":
        return c
    c.close()
    return None


def test_the_dashboard_sends_a_test_event_to_an_app_nothing_used_yet(db: Db) -> None:
    import urllib.request

    db.insert(**app_row(1))
    db.insert(**app_row(3))
    metrics_port = free_port()
    env = db.env(
        SOKETI_DASHBOARD_ENABLED="true", SOKETI_DASHBOARD_TOKEN="a-token-for-this-test",
        SOKETI_METRICS_HOST="127.0.0.1", SOKETI_METRICS_SERVER_PORT=str(metrics_port),
    )
    with run_server(env=env):
        def trigger(app: str) -> tuple[int, Any]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{metrics_port}/dashboard/api/trigger", method="POST",
                data=json.dumps({"app": app, "channel": "news", "event": "hi", "data": "x"}).encode(),
                headers={"Authorization": "Bearer a-token-for-this-test", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        # app 70003 is in the table, and no client or request has asked for it yet
        assert trigger("70003") == (200, {"ok": True, "delivered": 0})
        status, body = trigger("70009")  # not in the table
        assert status == 404 and "No such app" in body["error"]


def test_many_clients_at_once_for_an_unlooked_up_app(db: Db) -> None:
    """Concurrent handshakes for one key wait on one lookup, then all are greeted."""
    db.insert(**app_row(1))
    with run_server(env=db.env()) as server:
        results: list[str] = []

        def one() -> None:
            c = Client(server, "key-1")
            results.append(c.first["event"])
            c.close()

        threads = [threading.Thread(target=one) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 2)
        assert results == ["pusher:connection_established"] * 20


# ---------------------------------------------------------------- the database down


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    port = free_port()
    return subprocess.run(
        [sys.executable, "-m", "soketi_impl", "start"], env={**base_env(port), **env},
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("driver", ["postgres", "mysql"])
def test_database_down_at_start_exits_1(driver: str) -> None:
    dead = free_port()  # nothing listens there
    done = _start(Db(driver).env(port=dead))
    assert done.returncode == 1, done.stderr
    name = "PostgreSQL" if driver == "postgres" else "MySQL"
    lines = [line for line in done.stderr.splitlines() if "cannot read apps from" in line]
    assert len(lines) == 1 and f"{name} 127.0.0.1:{dead}" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_missing_table_at_start_exits_1(db: Db) -> None:
    done = _start(db.env(**{f"SOKETI_APP_MANAGER_{db.driver.upper()}_TABLE": db.table + "_none"}))
    assert done.returncode == 1, done.stderr
    assert "cannot read apps from" in done.stderr and db.table + "_none" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


class Proxy:
    """A TCP proxy to a database, in a thread of its own, that a test can cut and restore."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        #: True: connections stay up (and new ones are accepted) but nothing is passed on
        self.holding = False

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def start(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

        self._call(listen())

    def cut(self) -> None:
        async def cut() -> None:
            if self._server is not None:
                self._server.close()
                for w in list(self._writers):
                    w.transport.abort()
                await self._server.wait_closed()
                self._server = None

        self._call(cut())

    def stop(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.holding:
            self._writers.add(writer)
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
            self._writers.discard(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not self.holding:
                        dst.write(data)
                        await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@contextlib.contextmanager
def proxy_to(driver: str) -> Iterator[Proxy]:
    proxy = Proxy(PG if driver == "postgres" else MY)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_database_down_later_known_apps_work_unknown_refused(db: Db) -> None:
    db.insert(**app_row(1))
    db.insert(**app_row(2))
    # No cache: every lookup asks the database, so each one below meets the outage.
    with proxy_to(db.driver) as proxy, run_server(env=db.env(port=proxy.port)) as server:
        established(server, "key-1").close()
        sdk(server, 1).trigger("news", "update", {})
        proxy.cut()
        # known: served as last read, on the WebSocket and on the HTTP API
        a = established(server, "key-1")
        a.subscribe("news")
        sdk(server, 1).trigger("news", "update", {"during": "outage"})
        assert json.loads(a.recv()["data"]) == {"during": "outage"}
        # never read before the outage: refused as an unknown app (4001, HTTP 404)
        assert refused(server, "key-2") == 4001
        with pytest.raises(pusher.errors.PusherBadStatus, match="^404"):
            sdk(server, 2).trigger("news", "update", {})
        # the log says why, once (rate-limited), and nothing crashed
        lines = wait_until(lambda: lookup_lines(server), TIMEOUT, "the outage log line")
        assert "unreachable" in lines[0] and "unknown keys and ids are refused" in lines[0]
        established(server, "key-1").close()
        assert len(lookup_lines(server)) == 1
        assert not any(
            "Traceback" in line or "never awaited" in line for line in server.log
        ), "\n".join(server.log)
        # the database back: the app refused during the outage is found (after the miss TTL)
        proxy.start()

        def connects() -> bool:
            c = Client(server, "key-2")
            c.close()
            return bool(c.first["event"] == "pusher:connection_established")

        wait_until(connects, 5, "key-2 found once the database is back", interval=0.2)
        # (the line reaches server.log through the process's stdout pipe: it may come
        # a moment after the connection it was written for)
        wait_until(lambda: any("app lookups work again" in line for line in server.log), TIMEOUT,
                   "the log line that says lookups work again")
        a.close()


# ---------------------------------------------------------------- the manager in process


class Counting:
    """The real source for ``db``, counting the queries it runs."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.where = source.where
        self.queries = 0

    async def open(self) -> None:
        await self.source.open()

    async def fetch(self, column: str, value: str) -> Any:
        self.queries += 1
        return await self.source.fetch(column, value)

    async def close(self) -> None:
        await self.source.close()


def _manager(db: Db, port: int | None = None, **options: Any) -> tuple[Any, Counting]:
    from soketi_impl.apps import ManagedAppManager
    from soketi_impl.apps.sql import MysqlSource, PostgresSource
    from soketi_impl.config import load_config

    env = {k: v for k, v in db.env(port).items() if not k.startswith("SOKETI_APP_MANAGER_CACHE")}
    env.update(options.pop("env", {}))
    config = load_config(environ=env)
    kind = PostgresSource if db.driver == "postgres" else MysqlSource
    source = Counting(kind(config, timeout=options.get("timeout", TIMEOUT)))
    return ManagedAppManager(config, source, **options), source


async def test_lookups_share_one_query_and_the_cache_answers_at_once(db: Db) -> None:
    await db._run(
        f"INSERT INTO {db.table} (id, secret, max_connections, webhooks, "
        + ('"key"' if db.driver == "postgres" else "`key`")
        + (") VALUES ($1, $2, $3, $4, $5)" if db.driver == "postgres" else ") VALUES (%s, %s, %s, %s, %s)"),
        "70001", "s", 7, json.dumps([{"url": "http://127.0.0.1:1/h", "event_types": ["channel_occupied"]}]), "k1",
    )
    manager, source = _manager(db, env={"SOKETI_APP_MANAGER_CACHE_ENABLED": "true"})
    await manager.start()
    try:
        waits = [manager.by_key("k1") for _ in range(20)]
        assert all(asyncio.iscoroutine(w) or asyncio.isfuture(w) for w in waits)
        found = await asyncio.wait_for(asyncio.gather(*waits), TIMEOUT)
        assert source.queries == 1 and {a.id for a in found} == {"70001"}
        app = found[0]
        assert (app.key, app.secret, app.max_connections) == ("k1", "s", 7)
        assert app.webhooks[0].url == "http://127.0.0.1:1/h"
        assert app.max_event_name_length == 200  # NULL: the server's default
        # cached (no TTL: until restart): answered without an await, by key and by id
        assert manager.by_key("k1") is app and manager.by_id("70001") is app
        # a miss is remembered briefly, and answered at once meanwhile
        assert await asyncio.wait_for(manager.by_key("K1"), TIMEOUT) is None  # keys are case-sensitive
        assert manager.by_key("K1") is None and source.queries == 2
        assert manager.by_key("x" * 300) is None and source.queries == 2  # longer than the column
    finally:
        await manager.close()


async def test_the_caches_and_pending_lookups_are_bounded(db: Db) -> None:
    manager, source = _manager(db, max_entries=3, max_pending=2)
    await manager.start()
    try:
        waits = [manager.by_key(f"nope-{i}") for i in range(5)]
        # two queries at once; the others are refused at once rather than queued
        assert [w is None for w in waits] == [False, False, True, True, True]
        assert await asyncio.wait_for(asyncio.gather(*waits[:2]), TIMEOUT) == [None, None]
        for i in range(5, 10):
            assert await asyncio.wait_for(manager.by_key(f"nope-{i}"), TIMEOUT) is None
        assert len(manager._missing) == 3 and len(manager._pending) == 0
    finally:
        await manager.close()


async def test_a_database_that_says_nothing_at_start_stops_it(db: Db) -> None:
    from soketi_impl.errors import SoketiError

    silent = socket.socket()  # accepts connections (the backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        manager, _ = _manager(db, port=silent.getsockname()[1], timeout=0.5)
        with pytest.raises(SoketiError, match="cannot read apps from"):
            await asyncio.wait_for(manager.start(), TIMEOUT)
    finally:
        silent.close()


async def test_a_lookup_that_gets_no_answer_times_out(db: Db) -> None:
    """The database stops answering (the link stays up): unknown apps are refused and
    known ones served as last read, each within the lookup timeout."""
    await asyncio.to_thread(db.insert, **app_row(1))
    with proxy_to(db.driver) as proxy:
        manager, _ = _manager(db, port=proxy.port, timeout=0.5)
        await manager.start()
        try:
            app = await asyncio.wait_for(manager.by_key("key-1"), TIMEOUT)
            assert app is not None
            proxy.holding = True
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await asyncio.wait_for(manager.by_key("key-2"), TIMEOUT) is None
            assert await asyncio.wait_for(manager.by_key("key-1"), TIMEOUT) is app
            assert loop.time() - began < 3
        finally:
            await manager.close()


def test_what_a_client_sends_during_the_lookup_is_answered_after(db: Db) -> None:
    """pysher pings before ``connection_established``: the ping waits for the app."""
    db.insert(**app_row(1))
    with run_server(env=db.env()) as server:
        ws = connect(f"ws://{server.host}:{server.port}/app/key-1?protocol=7", open_timeout=TIMEOUT)
        ws.send(json.dumps({"event": "pusher:ping", "data": ""}))
        events = [json.loads(ws.recv(timeout=TIMEOUT))["event"] for _ in range(2)]
        assert events == ["pusher:connection_established", "pusher:pong"]
        ws.close()


async def test_the_in_process_api_finds_apps_of_the_table(db: Db) -> None:
    from soketi_impl import Pusher
    from soketi_impl.config import load_config

    await asyncio.to_thread(db.insert, **app_row(1))
    service = Pusher(load_config(environ=db.env(SOKETI_PORT="0")))
    await service.start()
    try:
        assert await service.trigger("70001", "news", "update", {}) == 0
        assert await service.channels("70001") == {}
        with pytest.raises(KeyError):
            await service.trigger("79999", "news", "update", {})
    finally:
        await service.stop(0)


async def test_a_row_that_is_not_an_app_is_refused_with_a_log_line(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    await asyncio.to_thread(db.insert, **app_row(1, webhooks='{"url": "not a list"}'))
    manager, _ = _manager(db)
    await manager.start()
    try:
        with caplog.at_level("WARNING", logger="soketi_impl.apps"):
            assert await asyncio.wait_for(manager.by_key("key-1"), TIMEOUT) is None
        assert "apps row key=key-1.webhooks" in caplog.text and db.table in caplog.text
    finally:
        await manager.close()


async def test_the_ttl_decides_when_the_database_is_asked_again(db: Db) -> None:
    await asyncio.to_thread(db.insert, **app_row(1))
    now = [0.0]
    manager, source = _manager(
        db, env={"SOKETI_APP_MANAGER_CACHE_ENABLED": "true", "SOKETI_APP_MANAGER_CACHE_TTL": "30"},
        clock=lambda: now[0],
    )
    await manager.start()
    try:
        app = await asyncio.wait_for(manager.by_key("key-1"), TIMEOUT)
        assert app is not None and app.enabled
        await asyncio.to_thread(db.run, f"UPDATE {db.table} SET enabled = 0")
        now[0] = 29.9
        assert manager.by_key("key-1") is app  # within the TTL: as read
        now[0] = 30.1
        changed = await asyncio.wait_for(manager.by_key("key-1"), TIMEOUT)
        assert changed is not None and not changed.enabled
        await asyncio.to_thread(db.run, f"DELETE FROM {db.table}")
        now[0] = 60.2
        assert await asyncio.wait_for(manager.by_key("key-1"), TIMEOUT) is None
        # a miss is remembered for a second, not for the TTL
        assert manager.by_key("key-9") is not None  # (an awaitable: it asks)
        await asyncio.wait_for(manager.by_key("key-9"), TIMEOUT)
        await asyncio.to_thread(db.insert, **app_row(9))
        assert manager.by_key("key-9") is None
        now[0] = 61.3
        found = await asyncio.wait_for(manager.by_key("key-9"), TIMEOUT)
        assert found is not None and found.id == "70009"
        assert source.queries == 5
    finally:
        await manager.close()


async def test_without_the_cache_every_lookup_asks(db: Db) -> None:
    await asyncio.to_thread(db.insert, **app_row(1))
    manager, source = _manager(db)
    await manager.start()
    try:
        for _ in range(3):
            found = manager.by_key("key-1")
            assert inspect.isawaitable(found)  # never answered from memory
            app = await asyncio.wait_for(found, TIMEOUT)
            assert app is not None and app.id == "70001"
        assert source.queries == 3
    finally:
        await manager.close()
