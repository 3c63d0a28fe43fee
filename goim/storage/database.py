"""The database handle: URL parsing, the adbapi pool, transactions with retries."""

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.storage.dialect import Dialect, MySQLDialect, SQLiteDialect
from goim.urls import DatabaseURLError, parse_database_url

T = TypeVar("T")

log = Logger(observer=goim_observer)


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``sqlite:PATH`` or ``mysql://user:password@host:port/dbname`` URL."""

    dialect: Dialect
    connect_kwargs: dict[str, Any]

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return isinstance(self.dialect, SQLiteDialect)

    @classmethod
    def parse(cls, url: str) -> "DatabaseURL":
        """Parse a database URL.

        Raises:
            DatabaseURLError: the URL has an unknown scheme or misses a part.
        """
        address = parse_database_url(url)
        dialect = SQLiteDialect() if address.is_sqlite else MySQLDialect()
        return cls(dialect, {**address.connect_kwargs, **dialect.connect_kwargs})


class Txn:
    """A cursor that takes ``?`` placeholders whatever the driver.

    Stores receive one of these in their ``*_txn`` functions, which run in a pool
    thread inside one transaction.
    """

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect
        self._many_rowcount: int | None = None  # rows touched by the last executemany
        # writes waiting for the next round trip (``executemany_later``), as the
        # literal statements the dialect rendered
        self._later: list[str] = []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Execute one statement (after the writes waiting for it, in the same round trip)."""
        self._many_rowcount = None
        if self._later:
            self._run_later(self.dialect.literal(self._cursor, sql, args))
        else:
            self._cursor.execute(self.dialect.sql(sql), tuple(args))

    def query_all(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """Execute several queries, in order, and return the rows of each: on a
        networked database in one round trip (with the writes waiting for it)."""
        if not queries:
            return []
        self._many_rowcount = None
        if not self.dialect.scripts:
            return [self.query(sql, args) for sql, args in queries]
        literals = [self.dialect.literal(self._cursor, sql, args) for sql, args in queries]
        return self._run_later(*literals, results=len(queries))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Execute one statement for many rows (an INSERT's rows go in as few
        statements as the driver allows, see ``Dialect.executemany``)."""
        if rows:
            self.flush()
            self._many_rowcount = self.dialect.executemany(self._cursor, sql, rows)

    def execute_later(self, sql: str, args: Sequence[Any] = ()) -> None:
        """``execute`` for a write whose outcome nothing reads (see ``executemany_later``)."""
        self.executemany_later(sql, [args])

    def executemany_later(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Like ``executemany``, for a write whose outcome nothing reads.

        On a networked database the write goes with the next statement of the
        transaction, or with its commit, in the same round trip; its errors are
        raised there (the transaction fails as a whole either way). In-process
        (SQLite) it runs at once. ``rowcount`` does not count it.
        """
        if not rows:
            return
        if self.dialect.scripts:
            self._later.extend(self.dialect.literal_many(self._cursor, sql, rows))
        else:
            self.executemany(sql, rows)

    def flush(self) -> None:
        """Run the writes still waiting (``executemany_later``) now."""
        if self._later:
            self._run_later()

    def finish(self) -> None:
        """End the transaction function: the writes still waiting go with the
        ``COMMIT``, in one round trip, and the pool's own commit after it is skipped."""
        if self._later:
            self._run_later("COMMIT")
            self._connection().committed = True

    def _run_later(self, *last: str, results: int = 0) -> list[list[tuple[Any, ...]]]:
        """The writes waiting and then ``last`` in one script; the rows of its last ``results``."""
        statements, self._later = self._later, []
        return self.dialect.execute_script(self._cursor, [*statements, *last], results=results)

    def _connection(self) -> Any:
        # adbapi hands interactions a Transaction whose connection wrapper commits
        return getattr(self._cursor, "_connection", None) or self._cursor.connection

    def fetchall(self) -> list[tuple[Any, ...]]:
        """All rows of the last query."""
        return [tuple(r) for r in self._cursor.fetchall()]

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row of the last query, or None."""
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Execute a query and return all its rows."""
        self.execute(sql, args)
        return self.fetchall()

    @property
    def rowcount(self) -> int:
        """Rows touched by the last statement (by every row of an ``executemany``)."""
        return self._many_rowcount if self._many_rowcount is not None else int(self._cursor.rowcount)

    @property
    def lastrowid(self) -> int:
        """The id generated by the last INSERT."""
        return int(self._cursor.lastrowid)

    def commit(self) -> None:
        """Commit what this transaction wrote so far; later statements start a new one.

        Only for migrations, whose version row must be visible to other processes
        before the migration lock is released.
        """
        self.flush()
        self._connection().commit()


def in_clause(values: Sequence[Any]) -> str:
    """``(?, ?, ...)`` for an ``IN`` list of ``len(values)`` parameters."""
    if not values:
        raise ValueError("an IN list needs at least one value")
    return "(" + ", ".join("?" * len(values)) + ")"


#: ``PRAGMA synchronous`` values offered for SQLite. ``full`` (the default) syncs the
#: WAL at every commit, so a commit (and the ACK that follows it) survives power
#: loss; ``normal`` syncs only at checkpoints: faster, but a power cut or OS crash
#: can lose the last commits (a crash of goim alone loses nothing either way).
SQLITE_SYNCHRONOUS = ("full", "normal")
SQLITE_SYNCHRONOUS_PRAGMA = {"full": "FULL", "normal": "NORMAL"}
#: the SQLite connection's page cache, in KiB (SQLite's default is 2 MiB): the
#: primary-key and message-id indexes of ``messages`` take random inserts, and a
#: cache that holds their inner pages keeps a commit from reading them back
SQLITE_CACHE_KIB = 64 * 1024
#: WAL pages after which a commit checkpoints by itself (SQLite's default is 1,000).
#: The checkpointer below copies the WAL back every ``SQLITE_CHECKPOINT_INTERVAL``
#: seconds from its own connection, but under steady writes its ``PASSIVE``
#: checkpoint is rarely complete (a commit lands while it copies), and only a
#: complete one syncs the database file and lets the WAL start over. So the WAL
#: grows until this many pages, and then the commit that reaches it checkpoints
#: the rest and syncs the database file, a few milliseconds the ACKs behind it
#: wait for: the higher this is, the rarer that commit (50,000 pages of 4 KiB: a
#: WAL of up to about 200 MB under load; docs/storage.md).
SQLITE_AUTOCHECKPOINT_PAGES = 50_000
SQLITE_CHECKPOINT_INTERVAL = 1.0
#: the longest GROUP_CONCAT list a MySQL connection returns (the server's default is
#: 1 MiB on MariaDB, 1 KiB on MySQL): ``Dialect.int_rows`` reads a batch's rows as
#: one row of lists, and reads them again as rows when a list was cut at this length
MYSQL_GROUP_CONCAT_MAX_LEN = 8 * 1024 * 1024


class _Connection(adbapi.Connection):
    """adbapi's connection wrapper (one per transaction), whose commit is skipped
    when the transaction's last round trip committed already (``Txn.finish``; any
    other wrapper just commits again, which changes nothing)."""

    committed = False

    def commit(self) -> None:
        if not self.committed:
            connection: Any = self._connection
            connection.commit()


class ConnectionPool(adbapi.ConnectionPool):
    """adbapi's pool for a database whose transactions may commit by themselves."""

    connectionFactory = _Connection


class Database:
    """An adbapi pool for one database URL, with retried transactions.

    SQLite gets a single connection in WAL mode (SQLite serialises writers anyway)
    with ``synchronous=FULL`` unless told otherwise, and a second one, in a thread
    of its own, that checkpoints the WAL in the background (a ``PASSIVE``
    checkpoint: it never waits for the writer nor makes it wait). MySQL gets up to
    ``max_connections`` with ``cp_reconnect`` so a lost server connection is
    replaced on the next transaction.
    """

    #: how often a transaction that failed with a retryable error is run again
    MAX_ATTEMPTS = 5

    def __init__(
        self,
        url: str,
        reactor: Any,
        *,
        max_connections: int = 10,
        pool: Any = None,
        metrics: Metrics | None = None,
        sqlite_synchronous: str = "full",
    ) -> None:
        """
        Args:
            url: ``sqlite:PATH`` or ``mysql://user:password@host:port/dbname``.
            reactor: provides IReactorTime and IReactorThreads (the pool's threads).
            max_connections: MySQL pool size.
            pool: an adbapi ``ConnectionPool`` to use instead of building one
                from the URL (tests run transactions synchronously this way).
            metrics: where transaction times are recorded.
            sqlite_synchronous: ``full`` or ``normal`` (see ``SQLITE_SYNCHRONOUS``).
        """
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}, not {sqlite_synchronous!r}")
        self.sqlite_synchronous = sqlite_synchronous
        self.url = DatabaseURL.parse(url)
        self.dialect = self.url.dialect
        self._reactor = reactor
        self._metrics = metrics
        self._pool = pool if pool is not None else self._make_pool(reactor, max_connections)
        self._checkpoints: adbapi.ConnectionPool | None = None
        self._checkpoint_loop: LoopingCall | None = None
        self._checkpoint_error = ""
        self._closed = False
        if pool is None and self.url.is_sqlite:
            self._checkpoints = self._make_sqlite_pool(reactor)
            self._checkpoint_loop = LoopingCall(self._checkpoint)
            self._checkpoint_loop.clock = reactor
            reactor.callWhenRunning(self._start_checkpoints)

    def _make_sqlite_pool(self, reactor: Any) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool(
            "sqlite3",
            cp_min=1,
            cp_max=1,
            cp_openfun=functools.partial(_open_sqlite, synchronous=self.sqlite_synchronous),
            cp_reactor=reactor,
            **self.url.connect_kwargs,
        )

    def _make_pool(self, reactor: Any, max_connections: int) -> adbapi.ConnectionPool:
        # The pool starts its threads when the reactor runs (at once if it does).
        kwargs = dict(self.url.connect_kwargs)
        if self.url.is_sqlite:
            return self._make_sqlite_pool(reactor)
        return ConnectionPool(
            "pymysql",
            cp_min=1,
            cp_max=max_connections,
            cp_reconnect=True,
            cp_noisy=False,
            cp_reactor=reactor,
            charset="utf8mb4",
            autocommit=False,
            connect_timeout=5,
            read_timeout=60,
            write_timeout=60,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            cp_openfun=_open_mysql,
            **kwargs,
        )

    async def run(self, desc: str, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(txn, *args)`` in a pool thread inside one transaction.

        The transaction commits when ``func`` returns and rolls back when it raises.
        Deadlocks, lock wait timeouts and lost connections roll back and run the
        whole function again (a few times, with a short backoff), so ``func`` must
        not have effects outside the transaction.

        Args:
            desc: a name for logs.
            func: called as ``func(txn, *args)`` in a pool thread.

        Raises:
            Whatever ``func`` or the driver raised on the last attempt.
        """
        attempt = 0
        started = self._reactor.seconds()
        while True:
            attempt += 1
            try:
                result: T = await self._pool.runInteraction(self._interaction, func, *args)
                if self._metrics is not None:
                    self._metrics.db_seconds.labels(desc).observe(self._reactor.seconds() - started)
                return result
            except Exception as e:
                if attempt >= self.MAX_ATTEMPTS or not self.dialect.is_retryable(e):
                    raise
                delay = min(0.05 * 2 ** (attempt - 1), 1.0)
                log.warn(
                    "{desc}: retrying after {error!r} (attempt {attempt})",
                    desc=desc,
                    error=e,
                    attempt=attempt,
                )
                await deferLater(self._reactor, delay, lambda: None)

    async def durability_warnings(self) -> list[str]:
        """What makes a commit (and so an ACK) less durable than a power cut requires.

        SQLite: the ``normal`` mode. MySQL/MariaDB: ``innodb_flush_log_at_trx_commit``
        other than 1, or binary logging with ``sync_binlog`` other than 1.
        """
        if self.url.is_sqlite:
            if self.sqlite_synchronous == "normal":
                return ["SQLite runs synchronous=NORMAL (--sqlite-synchronous normal): "
                        "a power cut or OS crash can lose the last ACKed messages"]  # fmt: skip
            return []

        def read(txn: Txn) -> tuple[Any, ...]:
            rows = txn.query("SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin")
            return rows[0]

        flush, sync_binlog, log_bin = await self.run("durability settings", read)
        return mysql_durability_warnings(int(flush), int(sync_binlog), bool(int(log_bin)))

    def _interaction(self, cursor: Any, func: Callable[..., T], *args: Any) -> T:
        txn = Txn(cursor, self.dialect)
        result = func(txn, *args)
        txn.finish()
        return result

    def _start_checkpoints(self) -> None:
        if self._checkpoint_loop is not None and not self._checkpoint_loop.running:  # not closed yet
            self._checkpoint_loop.start(SQLITE_CHECKPOINT_INTERVAL, now=False)

    def _checkpoint(self) -> "Deferred[None]":
        """One background WAL checkpoint (SQLite); a failure is logged, not raised,
        so the loop goes on (the writer's own checkpoints are the backstop)."""
        assert self._checkpoints is not None
        started = self._reactor.seconds()

        def done(_: tuple[int, int]) -> None:
            self._checkpoint_error = ""
            if self._metrics is not None:
                self._metrics.db_seconds.labels("wal_checkpoint").observe(self._reactor.seconds() - started)

        def failed(failure: Any) -> None:
            error = repr(failure.value)
            if error != self._checkpoint_error:  # once per distinct error, not every second
                self._checkpoint_error = error
                log.warn("background WAL checkpoint failed: {error}", error=error)

        d: Deferred[tuple[int, int]] = self._checkpoints.runWithConnection(checkpoint_wal)
        return d.addCallbacks(done, failed)

    def close(self) -> None:
        """Close the pool's connections and stop its threads (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._checkpoint_loop is not None and self._checkpoint_loop.running:
            self._checkpoint_loop.stop()
        self._checkpoint_loop = None
        if self._checkpoints is not None:
            self._checkpoints.close()
        self._pool.close()


def mysql_durability_warnings(flush_log_at_trx_commit: int, sync_binlog: int, log_bin: bool) -> list[str]:
    """Warnings for InnoDB settings under which a committed (ACKed) batch can be lost."""
    warnings = []
    if flush_log_at_trx_commit != 1:
        warnings.append(f"innodb_flush_log_at_trx_commit={flush_log_at_trx_commit}: a crash or power cut can "
                        "lose about a second of ACKed messages (set it to 1)")  # fmt: skip
    if log_bin and sync_binlog != 1:
        warnings.append(f"binary logging is on with sync_binlog={sync_binlog}: a power cut can lose "
                        "committed transactions from the binary log (set it to 1)")  # fmt: skip
    return warnings


def _open_mysql(connection: Any) -> None:
    cursor = connection.cursor()
    cursor.execute(f"SET SESSION group_concat_max_len = {MYSQL_GROUP_CONCAT_MAX_LEN}")
    cursor.close()


def _open_sqlite(connection: Any, synchronous: str = "full") -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS_PRAGMA[synchronous]}")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def checkpoint_wal(connection: Any) -> tuple[int, int]:
    """Copy what the WAL holds back into the database file, without waiting for
    (or blocking) the writer; the next write transaction then restarts the WAL
    from its beginning.

    Returns:
        The WAL's frames and how many of them are now in the database file.
    """
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        _busy, frames, copied = cursor.fetchone()
        return int(frames), int(copied)
    finally:
        cursor.close()
