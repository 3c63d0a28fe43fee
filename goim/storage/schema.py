"""Versioned schema migrations, one schema for MySQL/MariaDB and SQLite.

``{id}``, ``{bigint}``, ``{text}`` and ``{table_options}`` are expanded by the
dialect. A migration is applied once; its version is recorded in
``schema_version``. A database whose schema is newer than this code refuses to
open rather than risk writing rows an older layout does not describe.
"""

import re

from goim.storage.database import Txn

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE IF NOT EXISTS users (
                id {id},
                number VARCHAR(64) NOT NULL,
                nickname VARCHAR(64) NOT NULL,
                sex INTEGER NOT NULL DEFAULT 0,
                avatar VARCHAR(1024) NOT NULL DEFAULT '',
                password_hash VARCHAR(255) NOT NULL,
                created_at {bigint} NOT NULL,
                CONSTRAINT users_number UNIQUE (number)
            ){table_options}""",
            """CREATE TABLE IF NOT EXISTS devices (
                id {id},
                user_id {bigint} NOT NULL DEFAULT 0,
                type INTEGER NOT NULL,
                brand VARCHAR(64) NOT NULL,
                model VARCHAR(64) NOT NULL,
                system_version VARCHAR(64) NOT NULL,
                app_version VARCHAR(64) NOT NULL,
                token_hash VARCHAR(64) NOT NULL,
                send_epoch {bigint} NOT NULL DEFAULT 0,
                acked_seq {bigint} NOT NULL DEFAULT 0,
                created_at {bigint} NOT NULL
            ){table_options}""",
            "CREATE INDEX devices_user ON devices (user_id)",
            """CREATE TABLE IF NOT EXISTS user_seqs (
                user_id {bigint} NOT NULL PRIMARY KEY,
                seq {bigint} NOT NULL
            ){table_options}""",
            """CREATE TABLE IF NOT EXISTS friends (
                user_id {bigint} NOT NULL,
                friend_id {bigint} NOT NULL,
                label VARCHAR(64) NOT NULL DEFAULT '',
                created_at {bigint} NOT NULL,
                PRIMARY KEY (user_id, friend_id)
            ){table_options}""",
            """CREATE TABLE IF NOT EXISTS chat_groups (
                id {id},
                name VARCHAR(64) NOT NULL,
                owner_id {bigint} NOT NULL,
                created_at {bigint} NOT NULL
            ){table_options}""",
            """CREATE TABLE IF NOT EXISTS group_members (
                group_id {bigint} NOT NULL,
                user_id {bigint} NOT NULL,
                label VARCHAR(64) NOT NULL DEFAULT '',
                created_at {bigint} NOT NULL,
                PRIMARY KEY (group_id, user_id)
            ){table_options}""",
            "CREATE INDEX group_members_user ON group_members (user_id, group_id)",
            """CREATE TABLE IF NOT EXISTS messages (
                user_id {bigint} NOT NULL,
                seq {bigint} NOT NULL,
                message_id {bigint} NOT NULL,
                sender_type INTEGER NOT NULL,
                sender_id {bigint} NOT NULL,
                sender_device_id {bigint} NOT NULL,
                receiver_type INTEGER NOT NULL,
                receiver_id {bigint} NOT NULL,
                type INTEGER NOT NULL,
                content {text} NOT NULL,
                send_time {bigint} NOT NULL,
                created_at {bigint} NOT NULL,
                PRIMARY KEY (user_id, seq)
            ){table_options}""",
            """CREATE TABLE IF NOT EXISTS sends (
                device_id {bigint} NOT NULL,
                epoch {bigint} NOT NULL,
                send_sequence {bigint} NOT NULL,
                message_id {bigint} NOT NULL,
                sender_seq {bigint} NOT NULL,
                created_at {bigint} NOT NULL,
                PRIMARY KEY (device_id, epoch, send_sequence)
            ){table_options}""",
            """CREATE TABLE IF NOT EXISTS id_segments (
                name VARCHAR(32) NOT NULL PRIMARY KEY,
                max_id {bigint} NOT NULL
            ){table_options}""",
        ],
    ),
    (
        2,
        [
            # token lifetime (issue 11): 0 means the token never expires
            "ALTER TABLE devices ADD COLUMN token_expires_at {bigint} NOT NULL DEFAULT 0",
        ],
    ),
    (
        3,
        [
            # events in the stream (issue 14): read reports, recalls and edits are rows
            # of the holder's stream with their own seq; stored copies keep their state
            "ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE messages ADD COLUMN ref_seq {bigint} NOT NULL DEFAULT 0",
            "ALTER TABLE messages ADD COLUMN edited_at {bigint} NOT NULL DEFAULT 0",
            "ALTER TABLE messages ADD COLUMN recalled INTEGER NOT NULL DEFAULT 0",
            # every copy of a message (recall, edit, read counts)
            "CREATE INDEX messages_message ON messages (message_id)",
            # read position of one user in one conversation, in that user's seq space
            """CREATE TABLE IF NOT EXISTS read_positions (
                user_id {bigint} NOT NULL,
                conv_type INTEGER NOT NULL,
                conv_id {bigint} NOT NULL,
                read_seq {bigint} NOT NULL,
                updated_at {bigint} NOT NULL,
                PRIMARY KEY (user_id, conv_type, conv_id)
            ){table_options}""",
        ],
    ),
    (
        4,
        [
            # business push jobs (issue 14): one row per idempotency key, with the
            # cursor (last recipient user id done) that lets a restart resume
            """CREATE TABLE IF NOT EXISTS push_jobs (
                id {id},
                idempotency_key VARCHAR(128) NOT NULL,
                fingerprint VARCHAR(64) NOT NULL,
                target VARCHAR(8) NOT NULL,
                target_ids {text} NOT NULL,
                receiver_type INTEGER NOT NULL,
                receiver_id {bigint} NOT NULL,
                type INTEGER NOT NULL,
                content {text} NOT NULL,
                message_id {bigint} NOT NULL,
                state VARCHAR(16) NOT NULL,
                next_after {bigint} NOT NULL DEFAULT 0,
                chunks {bigint} NOT NULL DEFAULT 0,
                recipients {bigint} NOT NULL DEFAULT 0,
                owner VARCHAR(128) NOT NULL DEFAULT '',
                lease_until {bigint} NOT NULL DEFAULT 0,
                created_at {bigint} NOT NULL,
                updated_at {bigint} NOT NULL,
                CONSTRAINT push_jobs_key UNIQUE (idempotency_key)
            ){table_options}""",
            "CREATE INDEX push_jobs_state ON push_jobs (state, lease_until)",
            # retention (issue 14): the highest seq deleted per user, so a sync from
            # below it says that history was trimmed
            """CREATE TABLE IF NOT EXISTS retention_marks (
                user_id {bigint} NOT NULL PRIMARY KEY,
                trimmed_seq {bigint} NOT NULL
            ){table_options}""",
            "CREATE INDEX sends_created ON sends (created_at)",
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer goim than this one."""


_CREATE_INDEX = re.compile(r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(\w+)\s+ON\s+(\w+)", re.IGNORECASE)
_ADD_COLUMN = re.compile(r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)", re.IGNORECASE)


def apply_ddl_txn(txn: Txn, statement: str) -> bool:
    """Run one migration statement unless what it creates exists already.

    MySQL commits DDL at once, so a migration interrupted half-way (a crash, a
    lost connection) leaves some of its steps applied and its version unwritten:
    the next run must be able to apply it again. ``CREATE TABLE IF NOT EXISTS`` is
    idempotent by itself; ``CREATE INDEX`` and ``ALTER TABLE ... ADD COLUMN`` are
    made so here. Any other statement must be idempotent as written.

    Returns:
        Whether the statement ran.
    """
    dialect = txn.dialect
    index = _CREATE_INDEX.match(statement)
    if index is not None and dialect.index_exists(txn, index.group(2), index.group(1)):
        return False
    column = _ADD_COLUMN.match(statement)
    if column is not None and dialect.column_exists(txn, column.group(1), column.group(2)):
        return False
    txn.execute(dialect.ddl(statement))
    return True


def migrate_txn(txn: Txn) -> tuple[int, int]:
    """Bring the schema up to ``LATEST_VERSION``.

    Any number of processes may run this at once against the same database: the
    dialect's migration lock serialises them (MySQL ``GET_LOCK``, SQLite ``BEGIN
    IMMEDIATE``), and each version's row is committed before the lock is released,
    so the next holder sees it and applies nothing twice. Every step is idempotent (``apply_ddl_txn``), so a migration cut off
    half-way is completed by the next start.

    Returns:
        ``(version found, version now)``.

    Raises:
        SchemaTooNewError: the database's schema is newer than this code knows.
    """
    dialect = txn.dialect
    txn.execute(
        dialect.ddl("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY){table_options}")
    )
    txn.commit()
    with dialect.migration_lock(txn):
        rows = txn.query("SELECT MAX(version) FROM schema_version")
        found = int(rows[0][0] or 0)
        if found > LATEST_VERSION:
            raise SchemaTooNewError(
                f"the database schema is version {found} but this goim knows only up to "
                f"{LATEST_VERSION}: upgrade goim (refusing to start)"
            )
        for version, statements in MIGRATIONS:
            if version <= found:
                continue
            for statement in statements:
                apply_ddl_txn(txn, statement)
            txn.execute(dialect.insert_ignore("schema_version", ["version"]), (version,))
            if not dialect.transactional_ddl:
                # MySQL: visible to the next lock holder before the lock is released
                # (SQLite keeps its lock, and every step, until the whole commits)
                txn.commit()
        return found, LATEST_VERSION
