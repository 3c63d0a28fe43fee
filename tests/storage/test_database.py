"""The database layer: URL parsing, dialects, migrations and retried transactions.

The URL tests and the dialects' error classification need no database; what the
dialects' statements do (types, placeholders, upsert, insert-ignore, transactions)
is tested by executing them, with the rest, on SQLite and on MariaDB/MySQL through
the same code.
"""

import sqlite3
from typing import TYPE_CHECKING, Any, Awaitable, TypeVar

import pymysql
from pymysql.constants import CLIENT
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from goim.storage.database import (
    MYSQL_GROUP_CONCAT_MAX_LEN,
    SQLITE_AUTOCHECKPOINT_PAGES,
    SQLITE_CACHE_KIB,
    Database,
    DatabaseURL,
    DatabaseURLError,
    Txn,
    checkpoint_wal,
    in_clause,
    mysql_durability_warnings,
)
from goim.storage.dialect import RAISE_MANY_CHUNK, Dialect, MySQLDialect, SQLiteDialect
from goim.storage.schema import LATEST_VERSION, MIGRATIONS, SchemaTooNewError, migrate_txn
from tests.support.db import BackendMixin, MySQLBackend, SQLiteBackend, SynchronousPool

if TYPE_CHECKING:

    class _Base(BackendMixin, TestCase):
        pass

else:
    _Base = object

E = TypeVar("E", bound=BaseException)

#: every table migration 1 creates, plus the version table
TABLES = [
    "schema_version",
    "users",
    "devices",
    "user_seqs",
    "friends",
    "chat_groups",
    "group_members",
    "messages",
    "sends",
    "id_segments",
    "push_jobs",
    "retention_marks",
]


def sqlite_unique_violation() -> sqlite3.IntegrityError:
    """The IntegrityError sqlite3 raises for a duplicate primary key."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        connection.execute("INSERT INTO t VALUES (1)")
        try:
            connection.execute("INSERT INTO t VALUES (1)")
        except sqlite3.IntegrityError as e:
            return e
        raise AssertionError("sqlite3 accepted a duplicate key")
    finally:
        connection.close()


def sqlite_not_null_violation() -> sqlite3.IntegrityError:
    """The IntegrityError sqlite3 raises for a NULL in a NOT NULL column."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE TABLE t (k INTEGER NOT NULL)")
        try:
            connection.execute("INSERT INTO t VALUES (NULL)")
        except sqlite3.IntegrityError as e:
            return e
        raise AssertionError("sqlite3 accepted a NULL")
    finally:
        connection.close()


def retryable_error(dialect: Dialect) -> Exception:
    """An error the dialect treats as transient (the transaction may run again)."""
    if isinstance(dialect, MySQLDialect):
        return adbapi.ConnectionLost()
    return sqlite3.OperationalError("database is locked")


def deadlock_error(dialect: Dialect) -> Exception:
    """A deadlock/busy error as the dialect's driver raises it."""
    if isinstance(dialect, MySQLDialect):
        return pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
    return sqlite3.OperationalError("database table is locked")


class DatabaseURLTests(SynchronousTestCase):
    """DatabaseURL.parse, without a database."""

    def test_sqlite_relative_path(self) -> None:
        """sqlite:PATH gives the SQLite dialect and PATH as the database file."""
        url = DatabaseURL.parse("sqlite:goim.db")
        self.assertIsInstance(url.dialect, SQLiteDialect)
        self.assertTrue(url.is_sqlite)
        self.assertEqual(url.connect_kwargs["database"], "goim.db")
        self.assertIs(url.connect_kwargs["check_same_thread"], False)
        self.assertEqual(DatabaseURL.parse("sqlite:data/goim.db").connect_kwargs["database"], "data/goim.db")

    def test_sqlite_absolute_path(self) -> None:
        """sqlite:///abs and sqlite:/abs both name the absolute path /abs."""
        self.assertEqual(DatabaseURL.parse("sqlite:///var/lib/goim.db").connect_kwargs["database"], "/var/lib/goim.db")
        self.assertEqual(DatabaseURL.parse("sqlite:/var/lib/goim.db").connect_kwargs["database"], "/var/lib/goim.db")

    def test_sqlite_needs_a_path(self) -> None:
        """sqlite: and sqlite:// without a path are refused."""
        for bad in ("sqlite:", "sqlite://"):
            e = self.assertRaises(DatabaseURLError, DatabaseURL.parse, bad)
            self.assertIn("path", str(e))

    def test_mysql_full(self) -> None:
        """Every part of a mysql:// URL is used, the password and user url-decoded."""
        url = DatabaseURL.parse("mysql://go%40im:p%40ss%3Aw%2Frd%25@db.example.com:3307/goim_prod")
        self.assertIsInstance(url.dialect, MySQLDialect)
        self.assertFalse(url.is_sqlite)
        self.assertEqual(
            url.connect_kwargs,
            {
                "host": "db.example.com",
                "port": 3307,
                "user": "go@im",
                "password": "p@ss:w/rd%",
                "database": "goim_prod",
                "client_flag": CLIENT.MULTI_STATEMENTS,
            },
        )

    def test_mysql_defaults(self) -> None:
        """A mysql:// URL without user, password or port gets root, an empty password and 3306."""
        url = DatabaseURL.parse("mysql://127.0.0.1/goim")
        self.assertEqual(
            url.connect_kwargs,
            {
                "host": "127.0.0.1",
                "port": 3306,
                "user": "root",
                "password": "",
                "database": "goim",
                # execute_script: several statements in one round trip
                "client_flag": CLIENT.MULTI_STATEMENTS,
            },
        )
        self.assertEqual(DatabaseURL.parse("mysql://bob@h/db").connect_kwargs["password"], "")
        self.assertEqual(DatabaseURL.parse("mysql://bob@h/db").connect_kwargs["user"], "bob")

    def test_mysql_missing_host_or_database(self) -> None:
        """A mysql:// URL without a host or a database name is refused."""
        for bad in (
            "mysql://",
            "mysql:///goim",
            "mysql://user:pw@/goim",
            "mysql://host",
            "mysql://host/",
            "mysql://host:3306",
        ):
            self.assertRaises(DatabaseURLError, DatabaseURL.parse, bad)

    def test_mysql_bad_port(self) -> None:
        """A port that is not a number in range is refused with DatabaseURLError."""
        for bad in ("mysql://host:port/db", "mysql://host:99999/db", "mysql://host:-1/db"):
            e = self.assertRaises(DatabaseURLError, DatabaseURL.parse, bad)
            self.assertIn("port", str(e))

    def test_unknown_scheme(self) -> None:
        """Schemes other than sqlite: and mysql:// are refused, and the error is a ValueError."""
        for bad in ("postgres://u@h/db", "mariadb://u@h/db", "MYSQL://h/db", "goim.db", ""):
            e = self.assertRaises(DatabaseURLError, DatabaseURL.parse, bad)
            self.assertIsInstance(e, ValueError)
            self.assertIn("sqlite:", str(e))


class InClauseTests(SynchronousTestCase):
    """in_clause."""

    def test_placeholders(self) -> None:
        """One ``?`` per value, in parentheses; an empty list is an error."""
        self.assertEqual(in_clause([7]), "(?)")
        self.assertEqual(in_clause([1, 2, 3]), "(?, ?, ?)")
        self.assertRaises(ValueError, in_clause, [])


class SQLiteDialectTests(SynchronousTestCase):
    """SQLiteDialect, without a database."""

    dialect = SQLiteDialect()

    def test_ddl_leaves_no_token_in_any_migration(self) -> None:
        """No portable type token is left in any migration (what they become is tested by executing them)."""
        for _, statements in MIGRATIONS:
            for statement in statements:
                self.assertNotIn("{", self.dialect.ddl(statement))

    def test_is_duplicate_key(self) -> None:
        """Only sqlite3's UNIQUE/primary-key IntegrityError is a duplicate key."""
        self.assertTrue(self.dialect.is_duplicate_key(sqlite_unique_violation()))
        self.assertFalse(self.dialect.is_duplicate_key(sqlite_not_null_violation()))
        self.assertFalse(self.dialect.is_duplicate_key(sqlite3.OperationalError("database is locked")))
        self.assertFalse(self.dialect.is_duplicate_key(pymysql.err.IntegrityError(1062, "Duplicate entry")))
        self.assertFalse(self.dialect.is_duplicate_key(ValueError("UNIQUE")))

    def test_is_retryable(self) -> None:
        """Busy/locked OperationalErrors are retryable; constraint, syntax and foreign errors are not."""
        self.assertTrue(self.dialect.is_retryable(sqlite3.OperationalError("database is locked")))
        self.assertTrue(self.dialect.is_retryable(sqlite3.OperationalError("database table is locked")))
        self.assertFalse(self.dialect.is_retryable(sqlite3.OperationalError("no such table: users")))
        self.assertFalse(self.dialect.is_retryable(sqlite_unique_violation()))
        self.assertFalse(self.dialect.is_retryable(pymysql.err.OperationalError(1213, "Deadlock found")))
        self.assertFalse(self.dialect.is_retryable(ValueError("locked")))


class MySQLDialectTests(SynchronousTestCase):
    """MySQLDialect, without a database."""

    dialect = MySQLDialect()

    def test_ddl_leaves_no_token_in_any_migration(self) -> None:
        """No portable type token is left in any migration (what they become is tested by executing them)."""
        for _, statements in MIGRATIONS:
            for statement in statements:
                self.assertNotIn("{", self.dialect.ddl(statement))

    def test_is_duplicate_key(self) -> None:
        """Only MySQL error 1062 is a duplicate key."""
        duplicate = pymysql.err.IntegrityError(1062, "Duplicate entry 'a' for key 'x'")
        self.assertTrue(self.dialect.is_duplicate_key(duplicate))
        self.assertFalse(self.dialect.is_duplicate_key(pymysql.err.IntegrityError(1048, "Column 'x' cannot be null")))
        self.assertFalse(self.dialect.is_duplicate_key(pymysql.err.OperationalError(1213, "Deadlock found")))
        self.assertFalse(self.dialect.is_duplicate_key(pymysql.err.IntegrityError("no errno")))
        self.assertFalse(self.dialect.is_duplicate_key(sqlite_unique_violation()))
        self.assertFalse(self.dialect.is_duplicate_key(adbapi.ConnectionLost()))

    def test_is_retryable(self) -> None:
        """Deadlocks, lock wait timeouts and lost connections are retryable; other errors are not."""
        retryable = [
            pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction"),
            pymysql.err.OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction"),
            pymysql.err.OperationalError(2006, "MySQL server has gone away"),
            pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
            pymysql.err.OperationalError(2003, "Can't connect to MySQL server"),
            pymysql.err.InterfaceError(2014, "Command Out of Sync"),
            adbapi.ConnectionLost(),
        ]
        for error in retryable:
            self.assertTrue(self.dialect.is_retryable(error), repr(error))
        not_retryable = [
            pymysql.err.IntegrityError(1062, "Duplicate entry 'a' for key 'x'"),
            pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"),
            pymysql.err.OperationalError(1045, "Access denied for user"),
            pymysql.err.OperationalError("no errno"),
            sqlite3.OperationalError("database is locked"),
            ValueError(1213),
        ]
        for error in not_retryable:
            self.assertFalse(self.dialect.is_retryable(error), repr(error))


class DatabaseTests(_Base):
    """Migrations and transactions; runs on each backend through the subclasses below."""

    def clocked_database(self) -> tuple[Database, Clock]:
        """A fresh, migrated database whose transactions run synchronously and whose retries wait on a Clock."""
        url = self.database_url()
        self.addCleanup(self._drop, url)
        clock = Clock()
        db = Database(url, clock, pool=SynchronousPool(DatabaseURL.parse(url)))
        self.addCleanup(db.close)
        self.successResultOf(Deferred.fromCoroutine(db.run("migrate", migrate_txn)))
        return db, clock

    async def raised(self, awaitable: Awaitable[Any], kind: type[E]) -> E:
        """Await ``awaitable`` and return the ``kind`` exception it raises."""
        try:
            await awaitable
        except kind as e:
            return e
        self.fail(f"expected {kind.__name__}")

    async def segments(self, db: Database) -> list[tuple[str, int]]:
        """Every ``(name, max_id)`` row of ``id_segments``."""

        def txn(t: Txn) -> list[tuple[str, int]]:
            return [(str(r[0]), int(r[1])) for r in t.query("SELECT name, max_id FROM id_segments ORDER BY name")]

        return await db.run("test_segments", txn)

    # --- the dialect, executed -----------------------------------------------------------

    def dialect_table(self) -> tuple[Database, Dialect]:
        """A migrated database with a table ``t`` made of every portable type token."""
        db, _ = self.clocked_database()
        dialect = db.dialect

        def create(t: Txn) -> None:
            t.execute(
                dialect.ddl(
                    "CREATE TABLE t (id {id}, k {bigint} NOT NULL, name {text} NOT NULL, raw {blob},"
                    " n {bigint} NOT NULL DEFAULT 0, UNIQUE (k)){table_options}"
                )
            )

        self.successResultOf(Deferred.fromCoroutine(db.run("create_t", create)))
        return db, dialect

    def rows(self, db: Database) -> list[tuple[Any, ...]]:
        """``(id, k, name, raw, n)`` of every row of ``t``, by ``k``."""

        def txn(t: Txn) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in t.query("SELECT id, k, name, raw, n FROM t ORDER BY k")]

        return self.successResultOf(Deferred.fromCoroutine(db.run("rows", txn)))

    def run_txn(self, db: Database, txn: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(db.run("test", txn)))

    def test_ddl_types_hold_their_values(self) -> None:
        """{id} numbers rows by itself, {bigint} holds 2**62, {text} holds any Unicode (also outside the BMP), {blob} bytes."""
        db, _ = self.dialect_table()
        name = "李雷 😀 " + "x" * 300

        def insert(t: Txn) -> list[int]:
            ids = []
            for k in (2**62, -5):
                t.execute("INSERT INTO t (k, name, raw) VALUES (?, ?, ?)", (k, name, b"\x00\xffab"))
                ids.append(t.lastrowid)
            return ids

        first, second = self.run_txn(db, insert)
        self.assertGreater(first, 0)
        self.assertGreater(second, first)
        self.assertEqual(
            [(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in self.rows(db)],
            [(second, -5, name, b"\x00\xffab", 0), (first, 2**62, name, b"\x00\xffab", 0)],
        )

    def test_placeholders_bind_values(self) -> None:
        """Statements written with ``?`` run on the driver with their values bound, IN lists included."""
        db, _ = self.dialect_table()
        self.run_txn(
            db, lambda t: t.executemany("INSERT INTO t (k, name) VALUES (?, ?)", [(k, f"n{k}") for k in range(1, 6)])
        )

        def select(t: Txn) -> list[tuple[Any, ...]]:
            keys = [2, 4, 5]
            return t.query(f"SELECT k, name FROM t WHERE k IN {in_clause(keys)} AND name <> ? ORDER BY k", (*keys, "n5"))

        self.assertEqual([tuple(r) for r in self.run_txn(db, select)], [(2, "n2"), (4, "n4")])

    def test_upsert_inserts_then_updates_only_the_update_columns(self) -> None:
        """upsert inserts a new key, and on a clash sets only ``updates`` from the new row (executemany too)."""
        db, dialect = self.dialect_table()
        statement = dialect.upsert("t", ["k"], ["name", "n"], ["name"])
        self.run_txn(db, lambda t: t.execute(statement, (1, "first", 10)))
        self.run_txn(db, lambda t: t.executemany(statement, [(1, "second", 20), (2, "other", 30)]))
        self.assertEqual([(r[1], r[2], r[4]) for r in self.rows(db)], [(1, "second", 10), (2, "other", 30)])

    def test_upsert_of_several_update_columns(self) -> None:
        """Every update column takes the new row's value; the row's id stays."""
        db, dialect = self.dialect_table()
        statement = dialect.upsert("t", ["k"], ["name", "n"], ["name", "n"])
        self.run_txn(db, lambda t: t.execute(statement, (7, "a", 1)))
        [(row_id, *_)] = self.rows(db)
        self.run_txn(db, lambda t: t.execute(statement, (7, "b", 2)))
        self.assertEqual([(r[0], r[1], r[2], r[4]) for r in self.rows(db)], [(row_id, 7, "b", 2)])

    def test_insert_ignore_keeps_the_first_row(self) -> None:
        """insert_ignore skips rows whose key exists (the first stays), inserts the others, raises nothing."""
        db, dialect = self.dialect_table()
        statement = dialect.insert_ignore("t", ["k", "name"])
        self.run_txn(db, lambda t: t.execute(statement, (1, "first")))
        self.run_txn(db, lambda t: t.executemany(statement, [(1, "again"), (2, "new")]))
        self.assertEqual([(r[1], r[2]) for r in self.rows(db)], [(1, "first"), (2, "new")])

    def test_executemany_of_an_insert_keeps_every_value(self) -> None:
        """An INSERT's rows, folded into as many statements as the length limit needs, keep every value
        as given (large and negative ints, quotes, backslashes, Unicode, NUL bytes, NULL); rowcount counts them all."""
        db, _ = self.dialect_table()
        names = ["plain", "it's", 'a "quote"', "back\\slash", "李雷 😀", "%s %(x)s ?", "\x00nul", "x" * 300]
        rows = [(k * (2**40) * (-1) ** k, names[k % len(names)], b"\x00\xff'" if k % 2 else None) for k in range(1, 60)]

        def insert(t: Txn) -> int:
            t._cursor.max_stmt_length = 400  # several statements on MariaDB (SQLite has no limit to cut at)
            t.executemany("INSERT INTO t (k, name, raw) VALUES (?, ?, ?)", rows)
            return t.rowcount

        self.assertEqual(self.run_txn(db, insert), len(rows))
        self.assertEqual(
            [(r[1], r[2], None if r[3] is None else bytes(r[3])) for r in self.rows(db)], sorted(rows)
        )

    def test_executemany_of_rows_sharing_values_keeps_every_value(self) -> None:
        """Rows that share value objects with the row before (a message's copies) keep every value, also where the
        shared run changes and across statements."""
        db, _ = self.dialect_table()
        names = ["it's 李雷", "back\\slash", "x" * 300]
        raws = [b"\x00'", None, b"z"]
        rows = [(k, names[k // 7 % 3], raws[k // 5 % 3]) for k in range(1, 80)]

        def insert(t: Txn) -> int:
            t._cursor.max_stmt_length = 500
            t.executemany("INSERT INTO t (k, name, raw) VALUES (?, ?, ?)", rows)
            return t.rowcount

        self.assertEqual(self.run_txn(db, insert), len(rows))
        self.assertEqual([(r[1], r[2], None if r[3] is None else bytes(r[3])) for r in self.rows(db)], rows)

    def test_writes_later_are_seen_by_the_next_statement_and_committed(self) -> None:
        """Writes left for later (every kind of value, folded INSERTs over several statements, an UPDATE) are
        visible to the transaction's next statement and committed with it, in order."""
        db, _ = self.dialect_table()
        names = ["it's", "back\\slash", "%s %(x)s ?", "李雷 😀", "\x00nul"]
        rows = [(k, names[k % len(names)], b"\x00'" if k % 2 else None) for k in range(1, 40)]

        def txn(t: Txn) -> tuple[list[tuple[Any, ...]], int]:
            t._cursor.max_stmt_length = 300  # several statements and scripts on MariaDB
            t.executemany_later("INSERT INTO t (k, name, raw) VALUES (?, ?, ?)", rows[:30])
            t.execute_later("UPDATE t SET n = n + ? WHERE k <= ?", (5, 3))
            seen = t.query("SELECT COUNT(*), SUM(n) FROM t")
            t.executemany_later("INSERT INTO t (k, name, raw) VALUES (?, ?, ?)", rows[30:])
            t.execute_later("UPDATE t SET n = n * ? WHERE k <= ?", (2, 1))
            t.execute("UPDATE t SET name = ? WHERE k = ?", ("last", 39))
            return seen, t.rowcount

        seen, updated = self.run_txn(db, txn)
        self.assertEqual([tuple(int(v) for v in r) for r in seen], [(30, 15)])
        self.assertEqual(updated, 1, "rowcount is the last statement's, not the writes' before it")
        got = [(r[1], r[2], None if r[3] is None else bytes(r[3]), r[4]) for r in self.rows(db)]
        wanted = [(k, "last" if k == 39 else name, raw, 10 if k == 1 else 5 if k <= 3 else 0) for k, name, raw in rows]
        self.assertEqual(got, wanted)

    def test_a_failing_write_later_fails_the_whole_transaction(self) -> None:
        """A write left for later that fails (a duplicate key) raises when it runs, at the end of the
        transaction at the latest, and nothing of the transaction stays."""
        db, dialect = self.dialect_table()

        def txn(t: Txn) -> None:
            t.execute("INSERT INTO t (k, name) VALUES (?, ?)", (1, "now"))
            t.executemany_later("INSERT INTO t (k, name) VALUES (?, ?)", [(2, "later"), (1, "clash")])

        failure = self.failureResultOf(Deferred.fromCoroutine(db.run("clash", txn)))
        self.assertTrue(dialect.is_duplicate_key(failure.value))
        self.assertEqual(self.rows(db), [])

    def test_query_all_returns_each_querys_rows_after_the_writes_waiting(self) -> None:
        """query_all answers its queries in order, empty results included, after the writes left for later."""
        db, _ = self.dialect_table()

        def txn(t: Txn) -> list[list[tuple[Any, ...]]]:
            t.executemany_later("INSERT INTO t (k, name) VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
            return t.query_all(
                [
                    ("SELECT k, name FROM t WHERE k >= ? ORDER BY k", (2,)),
                    ("SELECT k FROM t WHERE k > ?", (10,)),
                    ("SELECT COUNT(*) FROM t", ()),
                ]
            )

        first, empty, count = self.run_txn(db, txn)
        self.assertEqual([(int(r[0]), r[1]) for r in first], [(2, "b"), (3, "c")])
        self.assertEqual(empty, [])
        self.assertEqual([int(r[0]) for r in count], [3])

    def test_raise_many_raises_and_never_lowers(self) -> None:
        """raise_many sets the column where the new value is higher and leaves lower or equal ones, over several chunks."""
        db, dialect = self.dialect_table()
        keys = range(1, 2 * RAISE_MANY_CHUNK + 3)
        self.run_txn(db, lambda t: t.executemany("INSERT INTO t (k, name, n) VALUES (?, ?, ?)", [(k, "x", 10) for k in keys]))
        ids = {r[1]: r[0] for r in self.rows(db)}
        wanted = {ids[k]: (5 if k % 3 == 0 else 10 if k % 3 == 1 else 10 + k) for k in keys}
        wanted[10**9] = 7  # no such row: nothing happens
        self.run_txn(db, lambda t: dialect.raise_many(t, "t", "id", "n", wanted))
        self.assertEqual({r[1]: r[4] for r in self.rows(db)}, {k: 10 if k % 3 != 2 else 10 + k for k in keys})
        self.assertEqual(len(self.rows(db)), len(keys))

    def test_select_keys_finds_exactly_the_rows_of_the_keys(self) -> None:
        """select_keys returns each row whose composite key is listed, once, and no other; for one key and for 1,700."""
        db, dialect = self.dialect_table()
        rows = [(k, f"r{k}", k % 7) for k in range(1, 801)]
        self.run_txn(db, lambda t: t.executemany("INSERT INTO t (k, name, n) VALUES (?, ?, ?)", rows))
        # keys that match, keys whose second column differs, keys of no row at all
        many = [(k, k % 7) for k in range(1, 801, 2)]
        many += [(k, k % 7 + 1) for k in range(2, 400, 2)] + [(k, 0) for k in range(900, 2000)]
        for keys in [[(5, 5)], [(5, 4)], many]:
            sql, args = dialect.select_keys("t", ["k", "name"], ["k", "n"], keys)
            found = self.run_txn(db, lambda t: t.query(sql, args))
            expected = sorted((k, f"r{k}") for k, n in keys if 1 <= k <= 800 and n == k % 7)
            self.assertEqual(sorted((int(k), name) for k, name in found), expected)

    def counters(self, db: Database, rows: dict[int, int]) -> None:
        """Create table ``c`` (``id`` primary key, counter ``n``) holding ``rows``."""

        def create(t: Txn) -> None:
            t.execute(db.dialect.ddl("CREATE TABLE c (id {bigint} NOT NULL PRIMARY KEY, n {bigint} NOT NULL){table_options}"))
            t.executemany("INSERT INTO c (id, n) VALUES (?, ?)", sorted(rows.items()))

        self.run_txn(db, create)

    def test_int_rows_reads_every_row_in_ascending_order(self) -> None:
        """int_rows returns the selected rows as ints, sorted by its columns: none, one, and 3,000 inserted out of order."""
        db, dialect = self.dialect_table()
        self.counters(db, {k: (k * 7919) % 1000 for k in range(3000, 0, -1)})
        for low, high in [(5000, 6000), (42, 42), (1, 3000)]:
            rows = self.run_txn(db, lambda t: dialect.int_rows(t, ["n", "id"], "FROM c WHERE id BETWEEN ? AND ?", (low, high)))
            self.assertEqual(rows, sorted(((k * 7919) % 1000, k) for k in range(low, min(high, 3000) + 1)))
            self.assertTrue(all(type(v) is int for r in rows for v in r))

    def test_add_many_adds_creates_and_returns_the_new_values(self) -> None:
        """add_many adds to existing counters, starts missing ones from 0, leaves others alone and returns what it wrote."""
        db, dialect = self.dialect_table()
        self.counters(db, {k: 10 * k for k in range(1, 1001)})
        increments = {k: k % 3 + 1 for k in range(500, 1501, 2)}
        added = self.run_txn(db, lambda t: dialect.add_many(t, "c", "id", "n", increments))
        expected = {k: 10 * k * (k <= 1000) + increments.get(k, 0) for k in range(1, 1501) if k <= 1000 or k in increments}
        self.assertEqual(added, {k: expected[k] for k in increments})
        self.assertEqual(dict(self.run_txn(db, lambda t: dialect.int_rows(t, ["id", "n"], "FROM c", ()))), expected)

    def test_table_options_make_tables_transactional(self) -> None:
        """A table made with {table_options} takes part in transactions: a failed one leaves no row (InnoDB, not MyISAM)."""
        db, _ = self.dialect_table()

        def txn(t: Txn) -> None:
            t.execute("INSERT INTO t (k, name) VALUES (?, ?)", (1, "a"))
            raise ValueError("roll back")

        self.failureResultOf(Deferred.fromCoroutine(db.run("rolled_back", txn)), ValueError)
        self.assertEqual(self.rows(db), [])

    async def test_migrations_apply_once(self) -> None:
        """Migrating a fresh database reports (0, LATEST), again reports (LATEST, LATEST), and the tables exist."""
        db = self.open_database()
        self.assertEqual(await db.run("migrate", migrate_txn), (0, LATEST_VERSION))
        self.assertEqual(await db.run("migrate", migrate_txn), (LATEST_VERSION, LATEST_VERSION))

        def counts_txn(t: Txn) -> dict[str, int]:
            return {table: int(t.query(f"SELECT COUNT(*) FROM {table}")[0][0]) for table in TABLES}

        counts = await db.run("counts", counts_txn)
        self.assertEqual(counts, {table: (len(MIGRATIONS) if table == "schema_version" else 0) for table in TABLES})

        def versions_txn(t: Txn) -> list[int]:
            return [int(r[0]) for r in t.query("SELECT version FROM schema_version ORDER BY version")]

        self.assertEqual(await db.run("versions", versions_txn), [v for v, _ in MIGRATIONS])

    async def test_concurrent_migrations_all_succeed(self) -> None:
        """Four processes' pools migrating one empty database at once all succeed; exactly one applies the schema."""
        from twisted.internet import reactor
        from twisted.internet.defer import gatherResults

        url = self.database_url()
        self.addCleanup(self._drop, url)
        for attempt in range(3):
            if attempt:
                # start over from an empty database each round
                self._drop(url)
                url = self.database_url()
                self.addCleanup(self._drop, url)
            databases = [Database(url, reactor, max_connections=2) for _ in range(4)]
            for db in databases:
                self.addCleanup(db.close)
            results = await gatherResults(
                [Deferred.fromCoroutine(db.run("migrate", migrate_txn)) for db in databases]
            )
            self.assertEqual({now for _, now in results}, {LATEST_VERSION})
            self.assertEqual(sorted(found for found, _ in results), [0] + [LATEST_VERSION] * 3)

    async def test_half_applied_migration_completes(self) -> None:
        """A migration cut off after some of its DDL (no version row yet) is completed by the next run."""
        from goim.storage.schema import apply_ddl_txn

        db = self.open_database()

        def half_txn(t: Txn) -> None:
            for statement in MIGRATIONS[0][1][:4]:  # tables and the devices index
                t.execute(t.dialect.ddl(statement))

        await db.run("half", half_txn)
        self.assertEqual(await db.run("migrate", migrate_txn), (0, LATEST_VERSION))

        def again_txn(t: Txn) -> list[bool]:
            return [apply_ddl_txn(t, statement) for _, statements in MIGRATIONS for statement in statements]

        ran = await db.run("again", again_txn)
        statements = [statement for _, statements in MIGRATIONS for statement in statements]
        # only CREATE TABLE IF NOT EXISTS statements run again (a no-op); indexes and columns are skipped
        for statement, did_run in zip(statements, ran):
            self.assertEqual(did_run, "CREATE TABLE IF NOT EXISTS" in statement, statement)

    async def test_token_expiry_migration_keeps_existing_devices(self) -> None:
        """A version-1 database migrates to the token_expires_at column; existing devices get 0 (never expire)."""
        db = self.open_database()

        def version_one_txn(t: Txn) -> None:
            t.execute(t.dialect.ddl("CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY){table_options}"))
            for statement in MIGRATIONS[0][1]:
                t.execute(t.dialect.ddl(statement))
            t.execute("INSERT INTO schema_version (version) VALUES (1)")
            t.execute(
                "INSERT INTO devices (type, brand, model, system_version, app_version, token_hash, created_at)"
                " VALUES (1, 'b', 'm', 's', 'a', 'h', 5)"
            )

        await db.run("version_one", version_one_txn)
        self.assertEqual(await db.run("migrate", migrate_txn), (1, LATEST_VERSION))

        def expiry_txn(t: Txn) -> list[tuple[Any, ...]]:
            return t.query("SELECT token_hash, token_expires_at FROM devices")

        self.assertEqual(await db.run("expiry", expiry_txn), [("h", 0)])

    async def test_schema_newer_than_code_refuses(self) -> None:
        """A schema_version above LATEST_VERSION makes migration fail with SchemaTooNewError asking for an upgrade."""
        db = await self.make_database()

        def newer_txn(t: Txn) -> None:
            t.execute("INSERT INTO schema_version (version) VALUES (?)", (LATEST_VERSION + 1,))

        await db.run("newer", newer_txn)
        error = await self.raised(db.run("migrate", migrate_txn), SchemaTooNewError)
        message = str(error)
        self.assertIn("upgrade", message)
        self.assertIn(str(LATEST_VERSION + 1), message)
        self.assertIn(str(LATEST_VERSION), message)

    async def test_run_commits_on_return(self) -> None:
        """What the function wrote is committed and its return value handed back."""
        db = await self.make_database()

        def insert_txn(t: Txn, name: str, max_id: int) -> str:
            t.execute("INSERT INTO id_segments (name, max_id) VALUES (?, ?)", (name, max_id))
            return name.upper()

        self.assertEqual(await db.run("insert", insert_txn, "msg", 100), "MSG")
        self.assertEqual(await self.segments(db), [("msg", 100)])

    async def test_run_rolls_back_on_error(self) -> None:
        """When the function raises, everything it wrote is rolled back and the error is not retried."""
        db = await self.make_database()
        calls: list[int] = []

        def failing_txn(t: Txn) -> None:
            calls.append(1)
            t.execute("INSERT INTO id_segments (name, max_id) VALUES (?, ?)", ("a", 1))
            t.execute("UPDATE id_segments SET max_id = ? WHERE name = ?", (2, "a"))
            raise ValueError("boom")

        error = await self.raised(db.run("fail", failing_txn), ValueError)
        self.assertEqual(str(error), "boom")
        self.assertEqual(len(calls), 1)
        self.assertEqual(await self.segments(db), [])

    async def test_run_retries_a_retryable_error(self) -> None:
        """A transient error on the first attempt rolls back and the whole function runs again."""
        db = await self.make_database()
        error = retryable_error(db.dialect)
        self.assertTrue(db.dialect.is_retryable(error))
        calls: list[int] = []

        def flaky_txn(t: Txn) -> str:
            calls.append(1)
            # The same key both times: a first attempt that was not rolled back
            # would make the second fail with a duplicate key.
            t.execute("INSERT INTO id_segments (name, max_id) VALUES (?, ?)", ("seg", len(calls)))
            if len(calls) == 1:
                raise error
            return "done"

        self.assertEqual(await db.run("flaky", flaky_txn), "done")
        self.assertEqual(len(calls), 2)
        self.assertEqual(await self.segments(db), [("seg", 2)])

    def test_run_gives_up_after_max_attempts(self) -> None:
        """A retryable error on every attempt is raised after MAX_ATTEMPTS runs, each after a short growing delay."""
        db, clock = self.clocked_database()
        error = deadlock_error(db.dialect)
        self.assertTrue(db.dialect.is_retryable(error))
        attempts: list[float] = []

        def always_failing_txn(t: Txn) -> None:
            attempts.append(clock.seconds())
            t.execute("INSERT INTO id_segments (name, max_id) VALUES (?, ?)", ("seg", len(attempts)))
            raise error

        d = Deferred.fromCoroutine(db.run("doomed", always_failing_txn))
        self.assertEqual(len(attempts), 1)
        self.assertNoResult(d)
        for _ in range(1000):
            if d.called:
                break
            clock.advance(0.01)
        failure = self.failureResultOf(d, type(error))
        self.assertIs(failure.value, error)
        self.assertEqual(len(attempts), Database.MAX_ATTEMPTS)
        gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
        for gap in gaps:
            self.assertGreater(gap, 0)
            self.assertLessEqual(gap, 1.0 + 0.02)
        for earlier, later in zip(gaps, gaps[1:]):
            self.assertGreaterEqual(later, earlier - 0.02)
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(self.segments(db))), [])
        # Nothing is left scheduled once it has given up.
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_run_waits_before_retrying(self) -> None:
        """A retry happens only after time passes, and then succeeds."""
        db, clock = self.clocked_database()
        error = retryable_error(db.dialect)
        calls: list[int] = []

        def flaky_txn(t: Txn) -> int:
            calls.append(1)
            if len(calls) == 1:
                raise error
            return 42

        d = Deferred.fromCoroutine(db.run("flaky", flaky_txn))
        self.assertNoResult(d)
        self.assertEqual(len(calls), 1)
        clock.advance(1.0)
        self.assertEqual(self.successResultOf(d), 42)
        self.assertEqual(len(calls), 2)

    async def test_driver_errors_are_classified(self) -> None:
        """The backend's real duplicate-key error counts as duplicate and not retryable; a NOT NULL error as neither."""
        db = await self.make_database()

        def insert_txn(t: Txn, max_id: Any) -> None:
            t.execute("INSERT INTO id_segments (name, max_id) VALUES (?, ?)", ("seg", max_id))

        await db.run("insert", insert_txn, 1)
        duplicate = await self.raised(db.run("dup", insert_txn, 2), Exception)
        self.assertTrue(db.dialect.is_duplicate_key(duplicate), repr(duplicate))
        self.assertFalse(db.dialect.is_retryable(duplicate), repr(duplicate))

        def null_txn(t: Txn) -> None:
            t.execute("INSERT INTO id_segments (name, max_id) VALUES (?, ?)", ("other", None))

        not_null = await self.raised(db.run("null", null_txn), Exception)
        self.assertFalse(db.dialect.is_duplicate_key(not_null), repr(not_null))
        self.assertFalse(db.dialect.is_retryable(not_null), repr(not_null))
        self.assertEqual(await self.segments(db), [("seg", 1)])

    async def test_upsert_and_insert_ignore_behave_alike(self) -> None:
        """upsert overwrites only the update columns on a key clash; insert_ignore keeps the existing row."""
        db = await self.make_database()
        d = db.dialect
        upsert = d.upsert("friends", ["user_id", "friend_id"], ["label", "created_at"], ["label"])
        ignore = d.insert_ignore("friends", ["user_id", "friend_id", "label", "created_at"])

        def write_txn(t: Txn) -> None:
            t.execute(upsert, (1, 2, "first", 100))
            t.execute(upsert, (1, 2, "second", 200))
            t.executemany(upsert, [(1, 2, "third", 300), (1, 3, "new", 300)])
            t.execute(ignore, (2, 1, "kept", 400))
            t.execute(ignore, (2, 1, "ignored", 500))
            t.executemany(ignore, [(2, 1, "ignored too", 600), (3, 1, "added", 600)])

        await db.run("write", write_txn)

        def read_txn(t: Txn) -> list[tuple[int, int, str, int]]:
            rows = t.query("SELECT user_id, friend_id, label, created_at FROM friends ORDER BY user_id, friend_id")
            return [(int(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]

        self.assertEqual(
            await db.run("read", read_txn),
            [(1, 2, "third", 100), (1, 3, "new", 300), (2, 1, "kept", 400), (3, 1, "added", 600)],
        )

    async def test_txn_helpers(self) -> None:
        """Txn takes ``?`` placeholders on every backend: in_clause lists, fetchone, rowcount and lastrowid work."""
        db = await self.make_database()

        def txn(t: Txn) -> tuple[int, int, list[tuple[Any, ...]], tuple[Any, ...] | None, tuple[Any, ...] | None, int]:
            t.execute(
                "INSERT INTO chat_groups (name, owner_id, created_at) VALUES (?, ?, ?)", ("g1", 1, 0)
            )
            first = t.lastrowid
            t.execute(
                "INSERT INTO chat_groups (name, owner_id, created_at) VALUES (?, ?, ?)", ("g2", 1, 0)
            )
            second = t.lastrowid
            ids = [first, second, second + 100]
            rows = t.query(f"SELECT id, name FROM chat_groups WHERE id IN {in_clause(ids)} ORDER BY id", ids)
            t.execute("SELECT name FROM chat_groups WHERE id = ?", (first,))
            one = t.fetchone()
            t.execute("SELECT name FROM chat_groups WHERE id = ?", (second + 100,))
            none = t.fetchone()
            t.execute("UPDATE chat_groups SET owner_id = ? WHERE owner_id = ?", (2, 1))
            return first, second, rows, one, none, t.rowcount

        first, second, rows, one, none, updated = await db.run("helpers", txn)
        self.assertGreater(second, first)
        self.assertEqual([(int(r[0]), str(r[1])) for r in rows], [(first, "g1"), (second, "g2")])
        self.assertEqual(one, ("g1",))
        self.assertIsNone(none)
        self.assertEqual(updated, 2)


class DurabilityWarningTests:
    """The startup check of the settings an ACK's durability depends on."""

    async def test_warnings_follow_the_server_settings(self: Any) -> None:
        """SQLite FULL: nothing; MySQL: exactly what its live settings call for."""
        db = await self.make_database()
        expected: list[str] = []
        if not db.url.is_sqlite:

            def read(txn: Txn) -> tuple[Any, ...]:
                return txn.query("SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin")[0]

            flush, sync_binlog, log_bin = await db.run("read", read)
            expected = mysql_durability_warnings(int(flush), int(sync_binlog), bool(int(log_bin)))
        self.assertEqual(await db.durability_warnings(), expected)

    def test_mysql_settings(self: Any) -> None:
        self.assertEqual(mysql_durability_warnings(1, 0, False), [])
        self.assertEqual(mysql_durability_warnings(1, 1, True), [])
        [flush] = mysql_durability_warnings(2, 1, True)
        self.assertIn("innodb_flush_log_at_trx_commit=2", flush)
        [binlog] = mysql_durability_warnings(1, 0, True)
        self.assertIn("sync_binlog=0", binlog)


class DatabaseSQLiteTests(DatabaseTests, DurabilityWarningTests, SQLiteBackend, TestCase):
    pass


class DatabaseMySQLTests(DatabaseTests, DurabilityWarningTests, MySQLBackend, TestCase):
    def test_int_rows_longer_than_group_concat_max_len_are_read_as_rows(self) -> None:
        """When the session cuts GROUP_CONCAT's lists short, int_rows still returns every row, whole."""
        db, dialect = self.dialect_table()
        self.counters(db, {k: 123456789 + k for k in range(1, 301)})

        def read(t: Txn) -> list[tuple[int, ...]]:
            t.execute("SET SESSION group_concat_max_len = 64")
            try:
                return dialect.int_rows(t, ["id", "n"], "FROM c WHERE id > ?", (0,))
            finally:
                t.execute("SET SESSION group_concat_max_len = DEFAULT")

        self.assertEqual(self.run_txn(db, read), [(k, 123456789 + k) for k in range(1, 301)])

    def test_writes_left_for_the_end_go_with_the_commit(self) -> None:
        """A transaction that ends with writes waiting commits in the same round trip as them: the pool's
        own commit after it is skipped (one COMMIT statement on the connection, not two)."""
        db, _ = self.dialect_table()

        def commits(t: Txn) -> int:
            return int(t.query("SHOW SESSION STATUS LIKE 'Com_commit'")[0][1])

        before = self.run_txn(db, commits)  # this transaction's own commit counts too
        self.run_txn(db, lambda t: t.executemany_later("INSERT INTO t (k, name) VALUES (?, ?)", [(1, "x")]))
        self.assertEqual(self.run_txn(db, commits) - before, 2)
        self.assertEqual([r[1] for r in self.rows(db)], [1])

    def test_a_script_is_cut_at_the_statement_length_limit(self) -> None:
        """execute_script sends as many statements per round trip as max_stmt_length allows, reads every
        result in order and returns the rows of the last ones asked for."""
        db, dialect = self.dialect_table()

        def txn(t: Txn) -> list[list[tuple[Any, ...]]]:
            t._cursor.max_stmt_length = 60
            statements = [f"INSERT INTO t (k, name) VALUES ({k}, 'n{k}')" for k in range(1, 6)]
            statements += ["SELECT COUNT(*) FROM t", "SELECT MAX(k) FROM t"]
            return dialect.execute_script(t._cursor, statements, results=2)

        self.assertEqual([[tuple(int(v) for v in r) for r in rows] for rows in self.run_txn(db, txn)], [[(5,)], [(5,)]])
        self.assertEqual([r[1] for r in self.rows(db)], [1, 2, 3, 4, 5])

    async def test_pool_connections_allow_long_group_concat_lists(self) -> None:
        """The server pool's connections raise group_concat_max_len, so that a batch's reads fit in one row."""
        db = self.open_database()
        (limit,) = await db.run("limit", lambda t: t.query("SELECT @@group_concat_max_len")[0])
        self.assertEqual(int(limit), MYSQL_GROUP_CONCAT_MAX_LEN)



class SQLiteDurabilityTests(TestCase):
    """The pragmas of the SQLite connection: every commit (so every ACK) survives power loss by default."""

    async def pragmas(self, **options: Any) -> tuple[int, str]:
        from twisted.internet import reactor

        db = Database(f"sqlite:{self.mktemp()}.db", reactor, **options)
        self.addCleanup(db.close)

        def read(txn: Txn) -> tuple[int, str]:
            (synchronous,) = txn.query("PRAGMA synchronous")[0]
            (journal_mode,) = txn.query("PRAGMA journal_mode")[0]
            return int(synchronous), str(journal_mode)

        return await db.run("pragmas", read)

    async def test_default_is_wal_with_synchronous_full(self) -> None:
        """By default the WAL is synced at every commit (synchronous=FULL is 2)."""
        self.assertEqual(await self.pragmas(), (2, "wal"))

    async def test_normal_is_an_explicit_option(self) -> None:
        """sqlite_synchronous='normal' gives synchronous=NORMAL (1): syncs at checkpoints only."""
        self.assertEqual(await self.pragmas(sqlite_synchronous="normal"), (1, "wal"))

    async def test_normal_is_warned_about(self) -> None:
        from twisted.internet import reactor

        db = Database(f"sqlite:{self.mktemp()}.db", reactor, sqlite_synchronous="normal")
        self.addCleanup(db.close)
        [warning] = await db.durability_warnings()
        self.assertIn("power cut", warning)

    def test_other_values_are_refused(self) -> None:
        from twisted.internet import reactor

        with self.assertRaises(ValueError):
            Database("sqlite:x.db", reactor, sqlite_synchronous="off")


class SQLiteCheckpointTests(SQLiteBackend, TestCase):
    """SQLite's writer leaves WAL checkpoints to a second connection of its own."""

    async def test_writer_settings(self) -> None:
        db = await self.make_database()

        def settings(txn: Txn) -> tuple[int, int]:
            return txn.query("PRAGMA wal_autocheckpoint")[0][0], txn.query("PRAGMA cache_size")[0][0]

        self.assertEqual(await db.run("settings", settings), (SQLITE_AUTOCHECKPOINT_PAGES, -SQLITE_CACHE_KIB))

    async def test_background_checkpoint_copies_the_wal(self) -> None:
        db = await self.make_database()
        loop = db._checkpoint_loop
        assert loop is not None and db._checkpoints is not None
        self.assertTrue(loop.running)

        def fill(txn: Txn) -> None:
            txn.executemany(
                "INSERT INTO id_segments (name, max_id) VALUES (?, ?)", [(f"space-{i}", i) for i in range(3000)]
            )

        await db.run("fill", fill)
        # the writer did not checkpoint (its backstop is far away): the WAL holds it
        frames, copied = await db._checkpoints.runWithConnection(checkpoint_wal)
        self.assertGreater(frames, 0)
        self.assertEqual(copied, frames)
        # the loop's own round succeeds too, and the data is all there
        await db._checkpoint()
        rows = await db.run("count", lambda txn: txn.query("SELECT COUNT(*) FROM id_segments"))
        self.assertEqual(rows[0][0], 3000)
        db.close()
        self.assertFalse(loop.running)

    def test_synchronous_pool_has_no_checkpointer(self) -> None:
        db = self.make_sync_database()
        self.assertIsNone(db._checkpoint_loop)
        self.assertIsNone(db._checkpoints)
