"""Test databases on both backends.

Every storage and logic test runs twice, through the same code: once on a fresh
SQLite file and once on a fresh MariaDB/MySQL database. The MySQL run needs
``GOIM_TEST_MYSQL`` to hold a server URL such as ``mysql://root@127.0.0.1:3306``;
each test creates a uniquely named database there and drops it afterwards.
"""

import os
import secrets
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from goim.storage.database import ConnectionPool, Database, DatabaseURL
from goim.storage.schema import migrate_txn

MYSQL_ENV = "GOIM_TEST_MYSQL"


def mysql_server_url() -> str | None:
    """The MySQL server URL for tests (no database part), or None when unset."""
    url = os.environ.get(MYSQL_ENV, "").strip()
    return url.rstrip("/") or None


def _mysql_admin(server_url: str, statement: str) -> None:
    import pymysql

    parts = urlsplit(server_url)
    connection = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        autocommit=True,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


class SynchronousPool(ConnectionPool):
    """goim's adbapi pool, running each transaction at once on the calling thread.

    The Deferreds it returns have fired already, so a coroutine awaiting them runs
    to completion synchronously: hypothesis state machines drive services this way.
    """

    def __init__(self, url: DatabaseURL) -> None:
        kwargs = dict(url.connect_kwargs)
        if not url.is_sqlite:
            kwargs.update(charset="utf8mb4", autocommit=False)
        super().__init__(url.dialect.dbapi_name, cp_min=1, cp_max=1, **kwargs)

    def runInteraction(self, interaction: Any, *args: Any, **kw: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self._runInteraction, interaction, *args, **kw)


class BackendMixin:
    """Makes databases for a test; subclasses choose the backend."""

    backend = ""

    def database_url(self: Any) -> str:
        raise NotImplementedError

    def _drop(self: Any, url: str) -> None:
        """Remove what ``database_url`` created."""

    def open_database(self: Any, *, synchronous: bool = False) -> Database:
        """A fresh, migrated database, closed and removed when the test ends."""
        from twisted.internet import reactor

        url = self.database_url()
        parsed = DatabaseURL.parse(url)
        pool = SynchronousPool(parsed) if synchronous else None
        db = Database(url, reactor, pool=pool)
        self.addCleanup(self._drop, url)
        self.addCleanup(db.close)
        return db

    async def make_database(self: Any) -> Database:
        """A fresh database with the current schema (transactions in pool threads)."""
        db = self.open_database()
        await db.run("migrate", migrate_txn)
        return db

    def make_sync_database(self: Any) -> Database:
        """A fresh database with the current schema whose transactions run synchronously."""
        db = self.open_database(synchronous=True)
        self.successResultOf(defer.Deferred.fromCoroutine(db.run("migrate", migrate_txn)))
        return db


class SQLiteBackend(BackendMixin):
    """Databases in SQLite files under the test's temporary directory."""

    backend = "sqlite"

    def database_url(self: Any) -> str:
        assert isinstance(self, SynchronousTestCase)
        return f"sqlite:{self.mktemp()}.db"


class MySQLBackend(BackendMixin):
    """Databases on the server named by ``GOIM_TEST_MYSQL``, one per test."""

    backend = "mysql"
    if mysql_server_url() is None:
        skip = f"set {MYSQL_ENV}=mysql://user:password@host:port to run the MySQL/MariaDB tests"

    def database_url(self: Any) -> str:
        server = mysql_server_url()
        assert server is not None
        name = f"goim_test_{os.getpid()}_{secrets.token_hex(4)}"
        _mysql_admin(server, f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return f"{server}/{name}"

    def _drop(self: Any, url: str) -> None:
        server = mysql_server_url()
        assert server is not None
        name = urlsplit(url).path.lstrip("/")
        _mysql_admin(server, f"DROP DATABASE IF EXISTS {name}")
