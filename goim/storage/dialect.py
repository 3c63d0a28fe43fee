"""The one place that knows how MySQL/MariaDB and SQLite differ.

Stores write SQL with ``?`` placeholders and portable types; a dialect turns that
into what its driver wants and answers questions about driver errors.
"""

import contextlib
import re
from typing import Any, Iterator, Mapping, Sequence

from pymysql.constants import CLIENT
from pymysql.cursors import RE_INSERT_VALUES

# MySQL error numbers (https://mariadb.com/kb/en/mariadb-error-codes/)
_MYSQL_DEADLOCK = 1213
_MYSQL_LOCK_WAIT_TIMEOUT = 1205
_MYSQL_DUPLICATE_KEY = 1062
_MYSQL_CONNECTION_ERRORS = {2003, 2006, 2013, 2014, 2055, 1927, 4031}

_PLACEHOLDER = re.compile(r"\?")
#: rows per statement of MySQLDialect.raise_many (two parameters each)
RAISE_MANY_CHUNK = 1000


class Dialect:
    """SQL differences between the supported databases."""

    name = ""
    dbapi_name = ""
    #: appended to a SELECT that must lock the rows it reads
    for_update = ""
    #: what every connection of this dialect is opened with (besides the URL's parts)
    connect_kwargs: Mapping[str, Any] = {}
    #: whether statements are worth sending several to a round trip
    #: (``execute_script``): not for an in-process database
    scripts = False

    def sql(self, statement: str) -> str:
        """Return ``statement`` (written with ``?`` placeholders) for this driver."""
        return statement

    def ddl(self, statement: str) -> str:
        """Expand the portable type tokens of a migration statement."""
        raise NotImplementedError

    def executemany(self, cursor: Any, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        """Execute ``statement`` (``?`` placeholders) once per row; returns the rows touched."""
        cursor.executemany(self.sql(statement), [tuple(r) for r in rows])
        return int(cursor.rowcount)

    def literal_many(self, cursor: Any, statement: str, rows: Sequence[Sequence[Any]]) -> list[str]:
        """``statement`` for ``rows`` as literal SQL statements, to be sent with
        others in one round trip (``execute_script``; dialects with ``scripts``)."""
        raise NotImplementedError

    def literal(self, cursor: Any, statement: str, args: Sequence[Any]) -> str:
        """One statement with its arguments as literal SQL (dialects with ``scripts``)."""
        raise NotImplementedError

    def execute_script(self, cursor: Any, statements: Sequence[str], results: int = 0) -> list[list[tuple[Any, ...]]]:
        """Execute literal statements in order, in as few round trips as the driver
        allows (dialects with ``scripts``); the cursor holds the last one's result.

        Returns:
            The rows of each of the last ``results`` statements.
        """
        raise NotImplementedError

    def upsert(self, table: str, keys: Sequence[str], values: Sequence[str], updates: Sequence[str]) -> str:
        """An INSERT of ``keys + values`` that overwrites ``updates`` on a key clash.

        Args:
            table: table name.
            keys: the columns of the unique key.
            values: the other inserted columns.
            updates: the columns set from the inserted row when the key exists.

        Returns:
            A statement with one ``?`` per column, usable with ``executemany``
            (like every statement here, it goes through ``sql`` when executed).
        """
        raise NotImplementedError

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        """An INSERT that silently skips rows whose key already exists."""
        raise NotImplementedError

    def raise_many(self, txn: Any, table: str, key: str, column: str, values: Mapping[int, int]) -> None:
        """Raise ``column`` to ``values[k]`` in the row whose ``key`` is ``k``, never lowering it.

        One statement per row here (cheap in-process); a networked dialect folds them
        into as few statements as it can. Rows are visited in ascending key order, so
        two transactions raising overlapping rows lock them in the same order.

        Args:
            txn: the transaction (``goim.storage.database.Txn``).
            table: table name.
            key: an integer key column (the primary key).
            column: the integer column raised.
            values: the new value per key.
        """
        txn.executemany(
            f"UPDATE {_identifier(table)} SET {_identifier(column)} = ? WHERE {_identifier(key)} = ?"
            f" AND {_identifier(column)} < ?",
            [(v, k, v) for k, v in sorted(values.items())],
        )

    def int_rows(self, txn: Any, columns: Sequence[str], source: str, args: Sequence[Any]) -> list[tuple[int, ...]]:
        """The rows of ``SELECT columns source``, every column an integer, in ascending order.

        For a transaction's reads of many small rows (a group's members, sequence
        numbers). Rows come back sorted by ``columns``, first column first.

        Args:
            txn: the transaction (``goim.storage.database.Txn``).
            columns: integer column names.
            source: the rest of the statement: ``FROM ... WHERE ...`` (``?`` placeholders).
            args: the arguments of ``source``.
        """
        query = self.int_rows_query(columns, source, args)
        return self.read_int_rows(txn, txn.query(*query), columns, source, args)

    def int_rows_query(self, columns: Sequence[str], source: str, args: Sequence[Any]) -> tuple[str, Sequence[Any]]:
        """The query ``int_rows`` sends, to go with others in one round trip
        (``Txn.query_all``); ``read_int_rows`` turns its result into ``int_rows``'s."""
        order = _columns(columns)
        return f"SELECT {order} {source} ORDER BY {order}", args

    def read_int_rows(
        self, txn: Any, rows: list[tuple[Any, ...]], columns: Sequence[str], source: str, args: Sequence[Any]
    ) -> list[tuple[int, ...]]:
        """``int_rows``'s result from the rows of ``int_rows_query(columns, source, args)``
        (``txn`` reads again what that query could not return whole)."""
        # both drivers return integer columns as int
        return rows

    def add_many(self, txn: Any, table: str, key: str, column: str, increments: Mapping[int, int]) -> dict[int, int]:
        """Add ``increments[k]`` to ``column`` of the row whose ``key`` is ``k`` and return the new values.

        A missing row counts from 0 and is created. The rows stay locked until the
        transaction ends and are locked in ascending key order, so that two
        transactions adding to overlapping rows wait for each other instead of
        deadlocking. Here: the rows read ``FOR UPDATE``, then written back.

        Args:
            txn: the transaction (``goim.storage.database.Txn``).
            table: table name.
            key: an integer key column (the primary key).
            column: the integer column added to.
            increments: what to add, per key (at least one key).

        Returns:
            ``{k: new value}`` for every key of ``increments``.
        """
        keys = sorted(increments)
        values = dict.fromkeys(keys, 0)
        values.update(
            txn.query(
                f"SELECT {_identifier(key)}, {_identifier(column)} FROM {_identifier(table)}"
                f" WHERE {_identifier(key)} IN ({_marks(len(keys))}) ORDER BY {_identifier(key)}{self.for_update}",
                keys,
            )
        )
        rows = [(k, values[k] + increments[k]) for k in keys]
        txn.executemany(self.upsert(table, [key], [column], [column]), rows)
        return dict(rows)

    def add_many_later(
        self, txn: Any, table: str, key: str, column: str, increments: Mapping[int, int]
    ) -> tuple[str, Sequence[Any]]:
        """``add_many`` in two halves (dialects with ``scripts``): the add waits for the
        transaction's next round trip (``Txn.executemany_later``), and the query
        returned reads the new values back in that round trip, with other reads
        (``Txn.query_all``); ``read_added`` turns its rows into ``add_many``'s result."""
        raise NotImplementedError

    def read_added(
        self, txn: Any, rows: list[tuple[Any, ...]], table: str, key: str, column: str, keys: Sequence[int]
    ) -> dict[int, int]:
        """``add_many``'s result from the rows of the query of ``add_many_later``."""
        raise NotImplementedError

    def select_keys(
        self, table: str, columns: Sequence[str], key: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        """A SELECT of ``columns`` from the rows of ``table`` whose ``key`` columns hold one of ``keys``.

        For a batch's lookups by a composite key: ``keys`` holds one distinct
        tuple of values per row wanted, at least one. Here the keys are grouped by
        all but their last column, one ``(a = ? AND b IN (...))`` term per group,
        which MySQL 8 and MariaDB read as one index range per key.

        Returns:
            The statement (``?`` placeholders) and its arguments.
        """
        *prefix, last = [_identifier(column) for column in key]
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for k in keys:
            groups.setdefault(tuple(k[:-1]), []).append(k[-1])
        equal = "".join(f"{column} = ? AND " for column in prefix)
        terms = []
        args: list[Any] = []
        for values, lasts in groups.items():
            terms.append(f"({equal}{last} IN ({_marks(len(lasts))}))")
            args += [*values, *lasts]
        return f"SELECT {_columns(columns)} FROM {_identifier(table)} WHERE {' OR '.join(terms)}", args

    def is_retryable(self, error: BaseException) -> bool:
        """True for errors after which the whole transaction may be run again."""
        raise NotImplementedError

    #: whether DDL takes part in transactions (else each statement commits at once)
    transactional_ddl = False

    @contextlib.contextmanager
    def migration_lock(self, txn: Any) -> Iterator[None]:
        """Hold a lock so that two processes never migrate the same database at once."""
        yield

    def is_duplicate_key(self, error: BaseException) -> bool:
        """True for a unique-key violation."""
        raise NotImplementedError

    def index_exists(self, txn: Any, table: str, index: str) -> bool:
        """Whether ``table`` has an index named ``index`` (migrations are idempotent)."""
        raise NotImplementedError

    def column_exists(self, txn: Any, table: str, column: str) -> bool:
        """Whether ``table`` has a column named ``column`` (migrations are idempotent)."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    """sqlite3: one connection, writes serialised by SQLite itself."""

    name = "sqlite"
    dbapi_name = "sqlite3"
    transactional_ddl = True

    @contextlib.contextmanager
    def migration_lock(self, txn: Any) -> Iterator[None]:
        # the database's write lock, held until the migration's transaction ends
        # (another process waits for it through busy_timeout)
        txn.execute("BEGIN IMMEDIATE")
        yield

    def ddl(self, statement: str) -> str:
        return (
            statement.replace("{id}", "INTEGER PRIMARY KEY AUTOINCREMENT")
            .replace("{bigint}", "INTEGER")
            .replace("{text}", "TEXT")
            .replace("{blob}", "BLOB")
            .replace("{table_options}", "")
        )

    def upsert(self, table: str, keys: Sequence[str], values: Sequence[str], updates: Sequence[str]) -> str:
        columns = [*keys, *values]
        sets = ", ".join(f"{c} = excluded.{c}" for c in updates)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_marks(len(columns))})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
        )

    def select_keys(
        self, table: str, columns: Sequence[str], key: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        # The grouped OR took SQLite 4-6 ms for a batch's 500 send keys (and it
        # refuses more than 999 terms), a row-value IN list scans the table; this
        # join of a VALUES list probes the key once per row: 0.45 ms
        names = [f"_k{i}" for i in range(len(key))]
        on = " AND ".join(f"{_identifier(column)} = {name}" for column, name in zip(key, names))
        row = f"({_marks(len(key))})"
        return (
            f"WITH _keys ({', '.join(names)}) AS (VALUES {', '.join([row] * len(keys))})"
            f" SELECT {_columns(columns)} FROM _keys JOIN {_identifier(table)} ON {on}",
            [value for k in keys for value in k],
        )

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({_marks(len(columns))})"

    def is_retryable(self, error: BaseException) -> bool:
        import sqlite3

        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)

    def is_duplicate_key(self, error: BaseException) -> bool:
        import sqlite3

        return isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error)

    def index_exists(self, txn: Any, table: str, index: str) -> bool:
        return bool(txn.query("SELECT 1 FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?", (table, index)))

    def column_exists(self, txn: Any, table: str, column: str) -> bool:
        return any(row[1] == column for row in txn.query(f"PRAGMA table_info({_identifier(table)})"))


class MySQLDialect(Dialect):
    """PyMySQL against MySQL or MariaDB (InnoDB, utf8mb4)."""

    name = "mysql"
    dbapi_name = "pymysql"
    for_update = " FOR UPDATE"
    # several statements in one round trip (``execute_script``); every value in them
    # is escaped by the driver, as in single statements
    connect_kwargs = {"client_flag": CLIENT.MULTI_STATEMENTS}
    scripts = True

    def sql(self, statement: str) -> str:
        # PyMySQL uses the "format" paramstyle; no literal % appears in our SQL.
        return _PLACEHOLDER.sub("%s", statement)

    def ddl(self, statement: str) -> str:
        return (
            statement.replace("{id}", "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY")
            .replace("{bigint}", "BIGINT")
            .replace("{text}", "TEXT")
            .replace("{blob}", "VARBINARY(255)")
            .replace(
                "{table_options}",
                " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            )
        )

    def executemany(self, cursor: Any, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        statements = self._folded(cursor, statement, rows)
        if statements is None:
            cursor.executemany(self.sql(statement), [tuple(r) for r in rows])
            return int(cursor.rowcount)
        return sum(int(cursor.execute(s)) for s in statements)

    def literal_many(self, cursor: Any, statement: str, rows: Sequence[Sequence[Any]]) -> list[str]:
        folded = self._folded(cursor, statement, rows)
        return folded if folded is not None else [self.literal(cursor, statement, r) for r in rows]

    def literal(self, cursor: Any, statement: str, args: Sequence[Any]) -> str:
        return str(cursor.mogrify(self.sql(statement), tuple(args)))

    def execute_script(self, cursor: Any, statements: Sequence[str], results: int = 0) -> list[list[tuple[Any, ...]]]:
        # One round trip for as many statements as fit in max_stmt_length characters
        # (the connection sets CLIENT.MULTI_STATEMENTS); the server stops at the
        # first that fails, and reading its result raises that error.
        limit = cursor.max_stmt_length
        rows = []
        start = 0
        while start < len(statements):
            end, size = start + 1, len(statements[start])
            while end < len(statements) and size + len(statements[end]) + 1 <= limit:
                size += len(statements[end]) + 1
                end += 1
            cursor.execute(";".join(statements[start:end]))
            for i in range(start, end):
                if i > start and not cursor.nextset():
                    raise RuntimeError(f"a script of {end - start} statements returned fewer results")
                if i >= len(statements) - results:
                    rows.append([tuple(r) for r in cursor.fetchall()])
            start = end
        return rows

    def _folded(self, cursor: Any, statement: str, rows: Sequence[Sequence[Any]]) -> list[str] | None:
        """An INSERT's rows folded into as few literal statements as
        ``max_stmt_length`` allows; None for a statement that is no plain INSERT.

        PyMySQL folds an INSERT's rows into one statement too, but escapes every
        value through its encoder table: about 6 µs a message row, a fifth of a
        logic node's batch. An int (most of a row) is its own literal; every other
        value is escaped by the connection as PyMySQL would. A value that is the
        very object of the row before in the same place (a group message's 500
        copies share all but two) reuses that row's literal. Statements are cut at
        the cursor's max_stmt_length characters, as PyMySQL cuts them.
        """
        query = self.sql(statement)
        match = RE_INSERT_VALUES.match(query)
        if match is None or "%(" in match.group(2):
            return None
        prefix, template, suffix = match.group(1), match.group(2).strip(), match.group(3) or ""
        width = template.count("%s")
        escape = cursor.connection.escape
        limit = cursor.max_stmt_length - len(prefix) - len(suffix)
        statements: list[str] = []
        values: list[str] = []
        size = 0
        previous: Sequence[Any] = ()
        literals: list[str] = []
        for row in rows:
            if len(row) != width:
                raise ValueError(f"a row of {len(row)} values for {width} placeholders")
            if previous:
                literals = [
                    literal if v is before else str(v) if type(v) is int else escape(v)
                    for v, before, literal in zip(row, previous, literals)
                ]
            else:
                literals = [str(v) if type(v) is int else escape(v) for v in row]
            previous = row
            value = "(" + ",".join(literals) + ")"
            if values and size + len(value) + 1 > limit:
                statements.append(prefix + ",".join(values) + suffix)
                values, size = [], 0
            values.append(value)
            size += len(value) + 1
        statements.append(prefix + ",".join(values) + suffix)
        return statements

    def int_rows_query(self, columns: Sequence[str], source: str, args: Sequence[Any]) -> tuple[str, Sequence[Any]]:
        # PyMySQL parses every row of a result in Python: a group's 500 members
        # took 4.3-4.7 ms as rows, 0.9-1.5 ms as one row of comma-separated lists (one
        # GROUP_CONCAT per column), which split() and int() read at C speed. A list
        # cut at the session's group_concat_max_len is read again as rows.
        order = _columns(columns)
        lists = ", ".join(f"GROUP_CONCAT({_identifier(c)} ORDER BY {order})" for c in columns)
        return f"SELECT @@group_concat_max_len, COUNT(*), {lists} {source}", args

    def read_int_rows(
        self, txn: Any, rows: list[tuple[Any, ...]], columns: Sequence[str], source: str, args: Sequence[Any]
    ) -> list[tuple[int, ...]]:
        ((limit, count, *joined),) = rows
        if not count:
            return []
        texts = [v.decode() if isinstance(v, bytes) else v for v in joined]
        if any(text is None or len(text) >= int(limit) for text in texts):
            # cut short (or NULL: longer than the server's max_allowed_packet)
            return txn.query(*super().int_rows_query(columns, source, args))
        return list(zip(*([int(v) for v in text.split(",")] for text in texts)))

    def add_many(self, txn: Any, table: str, key: str, column: str, increments: Mapping[int, int]) -> dict[int, int]:
        # One INSERT ... ON DUPLICATE KEY UPDATE adds and locks (in key order), then
        # one read of the new values: 7.7-8.4 ms for 500 rows, against 12.6-15.0 ms
        # for the read FOR UPDATE and the upsert of the values computed here. Both
        # go in one round trip.
        query = self.add_many_later(txn, table, key, column, increments)
        return self.read_added(txn, txn.query(*query), table, key, column, sorted(increments))

    def add_many_later(
        self, txn: Any, table: str, key: str, column: str, increments: Mapping[int, int]
    ) -> tuple[str, Sequence[Any]]:
        keys = sorted(increments)
        t, k, c = _identifier(table), _identifier(key), _identifier(column)
        txn.executemany_later(
            f"INSERT INTO {t} ({k}, {c}) VALUES (?, ?) ON DUPLICATE KEY UPDATE {c} = {c} + VALUES({c})",
            [(key_value, increments[key_value]) for key_value in keys],
        )
        return self.int_rows_query(*self._added_read(table, key, column, keys))

    def read_added(
        self, txn: Any, rows: list[tuple[Any, ...]], table: str, key: str, column: str, keys: Sequence[int]
    ) -> dict[int, int]:
        values = {r[0]: r[1] for r in self.read_int_rows(txn, rows, *self._added_read(table, key, column, keys))}
        if len(values) != len(keys):
            raise RuntimeError(f"{table}: {len(keys) - len(values)} rows missing after they were written")
        return values

    @staticmethod
    def _added_read(table: str, key: str, column: str, keys: Sequence[int]) -> tuple[list[str], str, Sequence[int]]:
        """``int_rows``'s arguments for reading the ``column`` of the rows ``keys``."""
        return [key, column], f"FROM {_identifier(table)} WHERE {_identifier(key)} IN ({_marks(len(keys))})", keys

    def upsert(self, table: str, keys: Sequence[str], values: Sequence[str], updates: Sequence[str]) -> str:
        columns = [*keys, *values]
        sets = ", ".join(f"{c} = VALUES({c})" for c in updates)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_marks(len(columns))})"
            f" ON DUPLICATE KEY UPDATE {sets}"
        )

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        return f"INSERT IGNORE INTO {table} ({', '.join(columns)}) VALUES ({_marks(len(columns))})"

    def raise_many(self, txn: Any, table: str, key: str, column: str, values: Mapping[int, int]) -> None:
        # PyMySQL folds only INSERTs: executemany of an UPDATE is a round trip per row.
        # One UPDATE joined to a derived table of (key, value) rows is one per chunk.
        table, key, column = _identifier(table), _identifier(key), _identifier(column)
        pairs = sorted(values.items())
        for start in range(0, len(pairs), RAISE_MANY_CHUNK):
            chunk = pairs[start : start + RAISE_MANY_CHUNK]
            rows = " UNION ALL ".join(["SELECT ? AS k, ? AS v"] + ["SELECT ?, ?"] * (len(chunk) - 1))
            txn.execute_later(
                f"UPDATE {table} AS t JOIN ({rows}) AS n ON t.{key} = n.k"
                f" SET t.{column} = n.v WHERE t.{column} < n.v",
                [x for pair in chunk for x in pair],
            )

    @contextlib.contextmanager
    def migration_lock(self, txn: Any) -> Iterator[None]:
        txn.execute("SELECT GET_LOCK('goim_migrate', 60)")
        (got,) = txn.fetchone()
        if got != 1:
            raise RuntimeError("could not take the goim_migrate lock within 60 s")
        try:
            yield
        finally:
            txn.execute("SELECT RELEASE_LOCK('goim_migrate')")
            txn.fetchall()

    def is_retryable(self, error: BaseException) -> bool:
        from twisted.enterprise.adbapi import ConnectionLost

        if isinstance(error, ConnectionLost):
            return True
        code = _mysql_errno(error)
        return code in (_MYSQL_DEADLOCK, _MYSQL_LOCK_WAIT_TIMEOUT) or code in _MYSQL_CONNECTION_ERRORS

    def is_duplicate_key(self, error: BaseException) -> bool:
        return _mysql_errno(error) == _MYSQL_DUPLICATE_KEY

    def index_exists(self, txn: Any, table: str, index: str) -> bool:
        return bool(
            txn.query(
                "SELECT 1 FROM information_schema.statistics"
                " WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ? LIMIT 1",
                (table, index),
            )
        )

    def column_exists(self, txn: Any, table: str, column: str) -> bool:
        return bool(
            txn.query(
                "SELECT 1 FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?",
                (table, column),
            )
        )


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _columns(names: Sequence[str]) -> str:
    return ", ".join(_identifier(name) for name in names)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _mysql_errno(error: BaseException) -> int | None:
    import pymysql

    if isinstance(error, pymysql.err.MySQLError) and error.args:
        first: Any = error.args[0]
        if isinstance(first, int):
            return first
    return None
