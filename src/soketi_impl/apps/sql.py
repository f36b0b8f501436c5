"""The ``apps`` table in PostgreSQL (asyncpg) or MySQL / MariaDB (aiomysql).

soketi's lookups, one row by ``id`` or by ``key``, with its table and column names
(``SOKETI_APP_MANAGER_POSTGRES_TABLE`` / ``_MYSQL_TABLE``, default ``apps``); the
columns are turned into an app by :func:`~soketi_impl.config.app_from_row`. Both
drivers are asyncio-native, so a lookup never blocks the event loop, and optional:
``pip install 'soketi-impl[postgres]'`` or ``'soketi-impl[mysql]'``.

``SOKETI_DB_POOLING_ENABLED`` gives a pool of ``_MIN`` to ``_MAX`` connections;
without it one connection serves every lookup (opened again when it breaks).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from typing import Any

from ..config import Config
from ..errors import SoketiError
from .managed import LOOKUP_TIMEOUT

__all__ = ["MysqlSource", "PostgresSource", "pool_sizes"]

#: seconds closing waits for queries to finish before it cuts the connections
_CLOSE_TIMEOUT = 2.0


def pool_sizes(config: Config) -> tuple[int, int]:
    """(fewest, most) connections: ``SOKETI_DB_POOLING_MIN``/``_MAX`` when pooling, else (0, 1)."""
    if not config.db_pooling_enabled:
        return 0, 1
    most = max(1, config.db_pooling_max)
    return min(config.db_pooling_min, most), most


def _need(module: str, driver: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SoketiError(
            f"SOKETI_APP_MANAGER_DRIVER={driver} needs the {module} package: "
            f"pip install 'soketi-impl[{extra}]'"
        ) from None


class PostgresSource:
    """The apps table in PostgreSQL, through an asyncpg pool."""

    def __init__(self, config: Config, timeout: float = LOOKUP_TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout
        table = config.app_manager_postgres_table
        self.where = (
            f"PostgreSQL {config.postgres_host}:{config.postgres_port}, "
            f"database {config.postgres_database}, table {table}"
        )
        quoted = ".".join(f'"{part}"' for part in table.split("."))
        self._queries = {
            column: f'SELECT * FROM {quoted} WHERE "{column}" = $1 LIMIT 1' for column in ("id", "key")
        }
        self._pool: Any = None

    async def open(self) -> None:
        asyncpg = _need("asyncpg", "postgres", "postgres")
        cfg = self.config
        fewest, most = pool_sizes(cfg)
        self._pool = await asyncpg.create_pool(
            host=cfg.postgres_host,
            port=cfg.postgres_port,
            user=cfg.postgres_username,
            password=cfg.postgres_password,
            database=cfg.postgres_database,
            min_size=fewest,
            max_size=most,
            timeout=self.timeout,
            command_timeout=self.timeout,
        )
        # Both lookups once: a missing table or column, or an id column that is not
        # text, stops the start here rather than refusing every client later.
        for query in self._queries.values():
            await self._pool.fetchrow(query, "")

    async def fetch(self, column: str, value: str) -> Mapping[str, Any] | None:
        if self._pool is None:
            raise SoketiError("the PostgreSQL app manager is not started")
        record = await self._pool.fetchrow(self._queries[column], value)
        return None if record is None else dict(record.items())

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
        except Exception:
            pool.terminate()


class MysqlSource:
    """The apps table in MySQL or MariaDB, through an aiomysql pool.

    aiomysql (aio-libs, on PyMySQL) is pure Python: it installs where no compiler is,
    like the rest of soketi-impl's pure build, and a lookup per app (cached) needs no
    faster driver.
    """

    def __init__(self, config: Config, timeout: float = LOOKUP_TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout
        table = config.app_manager_mysql_table
        self.where = (
            f"MySQL {config.mysql_host}:{config.mysql_port}, "
            f"database {config.mysql_database}, table {table}"
        )
        quoted = ".".join(f"`{part}`" for part in table.split("."))
        self._queries = {
            column: f"SELECT * FROM {quoted} WHERE `{column}` = %s LIMIT 1" for column in ("id", "key")
        }
        self._pool: Any = None
        self._cursor: Any = None

    async def open(self) -> None:
        aiomysql = _need("aiomysql", "mysql", "mysql")
        cfg = self.config
        fewest, most = pool_sizes(cfg)
        self._cursor = aiomysql.DictCursor
        self._pool = await aiomysql.create_pool(
            host=cfg.mysql_host,
            port=cfg.mysql_port,
            user=cfg.mysql_username,
            password=cfg.mysql_password,
            db=cfg.mysql_database,
            minsize=fewest,
            maxsize=most,
            connect_timeout=self.timeout,
            # Each lookup must see rows inserted since the last one: no long-lived
            # REPEATABLE READ snapshot on a pooled connection.
            autocommit=True,
            pool_recycle=3600,
            charset="utf8mb4",
        )
        for column in self._queries:
            await self.fetch(column, "")

    async def fetch(self, column: str, value: str) -> Mapping[str, Any] | None:
        if self._pool is None:
            raise SoketiError("the MySQL app manager is not started")
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor(self._cursor) as cursor:
                    await cursor.execute(self._queries[column], (value,))
                    row: Mapping[str, Any] | None = await cursor.fetchone()
                    return row
            except BaseException:
                # A query cut short (a timeout, a dropped link) leaves the connection
                # mid-protocol: never hand it to the next lookup.
                conn.close()
                raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), _CLOSE_TIMEOUT)
        except Exception:
            pool.terminate()
