"""Devices and users."""

from dataclasses import dataclass
from typing import Sequence

from goim.storage.database import Database, Txn, in_clause


class NumberTakenError(Exception):
    """A user with that number exists already."""


class TooManyDevicesError(Exception):
    """Binding the device would give the user more devices than allowed."""

    def __init__(self, user_id: int, limit: int) -> None:
        super().__init__(f"user {user_id} has {limit} devices already")
        self.user_id = user_id
        self.limit = limit


#: what ``token_hash`` holds for a signed-out or deleted device: no token hashes to it
REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: int
    user_id: int
    token_hash: str
    send_epoch: int
    acked_seq: int
    #: when the token stops working (ms since the epoch), 0 for never
    token_expires_at: int = 0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device as its user sees it in the device list."""

    id: int
    type: int
    brand: str
    model: str
    system_version: str
    app_version: str
    created_at: int


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
        token_expires_at: int = 0,
    ) -> int:
        """Insert a device not bound to any user; returns its id."""

        def create_device_txn(txn: Txn) -> int:
            txn.execute(
                "INSERT INTO devices (type, brand, model, system_version, app_version,"
                " token_hash, created_at, token_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device_type, brand, model, system_version, app_version, token_hash, now_ms, token_expires_at),
            )
            return txn.lastrowid

        return await self.db.run("create_device", create_device_txn)

    async def get_device(self, device_id: int) -> DeviceRow | None:
        """The device, or None when there is none with that id."""

        def get_device_txn(txn: Txn) -> DeviceRow | None:
            rows = txn.query(
                "SELECT id, user_id, token_hash, send_epoch, acked_seq, token_expires_at FROM devices WHERE id = ?",
                (device_id,),
            )
            return DeviceRow(*rows[0]) if rows else None

        return await self.db.run("get_device", get_device_txn)

    async def bind_device(self, device_id: int, user_id: int, *, max_devices: int | None = None) -> int:
        """Bind a device to a user and start a new send_sequence epoch for it.

        A device that changes hands also forgets what its previous user acked.

        Returns:
            The user the device was bound to before (0 for none).

        Raises:
            TooManyDevicesError: the user has ``max_devices`` other devices bound.
        """

        def bind_device_txn(txn: Txn) -> int:
            if max_devices is not None:
                # the user's row serialises concurrent bindings to one user
                txn.query(f"SELECT id FROM users WHERE id = ?{txn.dialect.for_update}", (user_id,))
                others = txn.query(
                    "SELECT COUNT(*) FROM devices WHERE user_id = ? AND id <> ?", (user_id, device_id)
                )
                if int(others[0][0]) >= max_devices:
                    raise TooManyDevicesError(user_id, max_devices)
            rows = txn.query(f"SELECT user_id FROM devices WHERE id = ?{txn.dialect.for_update}", (device_id,))
            txn.execute(
                "UPDATE devices SET acked_seq = CASE WHEN user_id = ? THEN acked_seq ELSE 0 END,"
                " user_id = ?, send_epoch = send_epoch + 1 WHERE id = ?",
                (user_id, user_id, device_id),
            )
            return int(rows[0][0]) if rows else 0

        return await self.db.run("bind_device", bind_device_txn)

    async def list_devices(self, user_id: int) -> list[DeviceInfo]:
        """The devices bound to the user, by id."""

        def list_devices_txn(txn: Txn) -> list[DeviceInfo]:
            rows = txn.query(
                "SELECT id, type, brand, model, system_version, app_version, created_at FROM devices"
                " WHERE user_id = ? ORDER BY id",
                (user_id,),
            )
            return [DeviceInfo(int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), int(r[6])) for r in rows]

        return await self.db.run("list_devices", list_devices_txn)

    async def revoke_device(self, device_id: int, user_id: int) -> bool:
        """Unbind the user's device and revoke its token (sign-out, device deletion).

        Returns:
            False when the device is not bound to ``user_id`` (nothing changed).
        """

        def revoke_device_txn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE devices SET user_id = 0, token_hash = ?, token_expires_at = 0 WHERE id = ? AND user_id = ?",
                (REVOKED, device_id, user_id),
            )
            return txn.rowcount > 0

        return await self.db.run("revoke_device", revoke_device_txn)

    async def replace_token(self, device_id: int, old_hash: str, new_hash: str, expires_at: int) -> bool:
        """Swap the device's token for a new one if ``old_hash`` is still its token.

        Returns:
            False when the token changed meanwhile (refreshed or revoked by another request).
        """

        def replace_token_txn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE devices SET token_hash = ?, token_expires_at = ? WHERE id = ? AND token_hash = ?",
                (new_hash, expires_at, device_id, old_hash),
            )
            return txn.rowcount > 0

        return await self.db.run("replace_token", replace_token_txn)

    async def ack(self, device_id: int, seq: int) -> None:
        """Raise the device's acknowledged seq to ``seq``; a lower value changes nothing."""
        await self.ack_many([(device_id, seq)])

    async def ack_many(self, acks: Sequence[tuple[int, int]]) -> None:
        """``ack`` for several ``(device_id, seq)`` pairs in one transaction."""
        highest: dict[int, int] = {}
        for device_id, seq in acks:
            highest[device_id] = max(seq, highest.get(device_id, seq))

        def ack_many_txn(txn: Txn) -> None:
            txn.dialect.raise_many(txn, "devices", "id", "acked_seq", highest)

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
