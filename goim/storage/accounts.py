"""Devices and users."""

from dataclasses import dataclass
from typing import Sequence

from goim.storage.database import Database, Txn, in_clause


class NumberTakenError(Exception):
    """A user with that number exists already."""


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: int
    user_id: int
    token_hash: str
    send_epoch: int
    acked_seq: int


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    number: str
    nickname: str
    sex: int
    avatar: str


class AccountStore:
    """Rows of ``devices``, ``users`` and ``user_seqs``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_device(
        self,
        *,
        device_type: int,
        brand: str,
        model: str,
        system_version: str,
        app_version: str,
        token_hash: str,
        now_ms: int,
    ) -> int:
        """Insert a device not bound to any user; returns its id."""

        def create_device_txn(txn: Txn) -> int:
            txn.execute(
                "INSERT INTO devices (type, brand, model, system_version, app_version,"
                " token_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device_type, brand, model, system_version, app_version, token_hash, now_ms),
            )
            return txn.lastrowid

        return await self.db.run("create_device", create_device_txn)

    async def get_device(self, device_id: int) -> DeviceRow | None:
        """The device, or None when there is none with that id."""

        def get_device_txn(txn: Txn) -> DeviceRow | None:
            rows = txn.query(
                "SELECT id, user_id, token_hash, send_epoch, acked_seq FROM devices WHERE id = ?",
                (device_id,),
            )
            return DeviceRow(*rows[0]) if rows else None

        return await self.db.run("get_device", get_device_txn)

    async def bind_device(self, device_id: int, user_id: int) -> int:
        """Bind a device to a user and start a new send_sequence epoch for it.

        A device that changes hands also forgets what its previous user acked.

        Returns:
            The user the device was bound to before (0 for none).
        """

        def bind_device_txn(txn: Txn) -> int:
            rows = txn.query(f"SELECT user_id FROM devices WHERE id = ?{txn.dialect.for_update}", (device_id,))
            txn.execute(
                "UPDATE devices SET acked_seq = CASE WHEN user_id = ? THEN acked_seq ELSE 0 END,"
                " user_id = ?, send_epoch = send_epoch + 1 WHERE id = ?",
                (user_id, user_id, device_id),
            )
            return int(rows[0][0]) if rows else 0

        return await self.db.run("bind_device", bind_device_txn)

    async def ack(self, device_id: int, seq: int) -> None:
        """Raise the device's acknowledged seq to ``seq``; a lower value changes nothing."""
        await self.ack_many([(device_id, seq)])

    async def ack_many(self, acks: Sequence[tuple[int, int]]) -> None:
        """``ack`` for several ``(device_id, seq)`` pairs in one transaction."""

        def ack_many_txn(txn: Txn) -> None:
            txn.executemany(
                "UPDATE devices SET acked_seq = ? WHERE id = ? AND acked_seq < ?",
                [(seq, device_id, seq) for device_id, seq in sorted(acks)],
            )

        await self.db.run("ack", ack_many_txn)

    async def max_acked_seq(self, user_id: int) -> int:
        """The highest seq any device of the user acknowledged."""

        def max_acked_seq_txn(txn: Txn) -> int:
            rows = txn.query("SELECT MAX(acked_seq) FROM devices WHERE user_id = ?", (user_id,))
            return int(rows[0][0] or 0)

        return await self.db.run("max_acked_seq", max_acked_seq_txn)

    async def create_user(
        self, *, number: str, nickname: str, sex: int, avatar: str, password_hash: str, now_ms: int
    ) -> int:
        """Insert a user and its sequence row; returns the user id.

        Raises:
            NumberTakenError: the number is in use.
        """

        def create_user_txn(txn: Txn) -> int:
            if txn.query("SELECT id FROM users WHERE number = ?", (number,)):
                raise NumberTakenError(number)
            try:
                txn.execute(
                    "INSERT INTO users (number, nickname, sex, avatar, password_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (number, nickname, sex, avatar, password_hash, now_ms),
                )
            except Exception as e:
                if txn.dialect.is_duplicate_key(e):
                    raise NumberTakenError(number) from e
                raise
            user_id = txn.lastrowid
            txn.execute("INSERT INTO user_seqs (user_id, seq) VALUES (?, 0)", (user_id,))
            return user_id

        return await self.db.run("create_user", create_user_txn)

    async def get_credentials(self, number: str) -> tuple[int, str] | None:
        """``(user_id, password_hash)`` of the user with that number, or None."""

        def get_credentials_txn(txn: Txn) -> tuple[int, str] | None:
            rows = txn.query("SELECT id, password_hash FROM users WHERE number = ?", (number,))
            return (int(rows[0][0]), str(rows[0][1])) if rows else None

        return await self.db.run("get_credentials", get_credentials_txn)

    async def get_users(self, user_ids: Sequence[int]) -> dict[int, UserRow]:
        """Profiles of the users that exist among ``user_ids``."""
        ids = sorted(set(user_ids))
        if not ids:
            return {}

        def get_users_txn(txn: Txn) -> dict[int, UserRow]:
            rows = txn.query(
                f"SELECT id, number, nickname, sex, avatar FROM users WHERE id IN {in_clause(ids)}",
                ids,
            )
            return {int(r[0]): UserRow(*r) for r in rows}

        return await self.db.run("get_users", get_users_txn)
