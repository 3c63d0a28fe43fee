"""Devices and users: registration, authentication, sign-in, profiles."""

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from goim.logic.errors import (
    DEVICE_NOT_BOUND,
    NUMBER_TAKEN,
    USER_NOT_FOUND,
    WRONG_DEVICE_OR_TOKEN,
    WRONG_NUMBER_OR_PASSWORD,
    GoimError,
    bad_request,
)
from goim.logic.passwords import ScryptCost, check_password, hash_password, hash_token, new_token
from goim.logs import goim_observer
from goim.ports import SessionPort
from goim.storage.accounts import AccountStore, DeviceRow, NumberTakenError, UserRow
from goim.util import now_ms

T = TypeVar("T")

log = Logger(observer=goim_observer)

DEVICE_TYPES = {1: "Android", 2: "iOS", 3: "Windows", 4: "macOS", 5: "Web"}
MAX_NAME = 64
MAX_AVATAR = 1024
MAX_PASSWORD = 128
MIN_PASSWORD = 6


@dataclass(frozen=True, slots=True)
class UserSession:
    """What registration and sign-in return (DESIGN section 4)."""

    user_id: int
    send_sequence: int
    sync_sequence: int


MAX_ID = 2**63 - 1


def is_id(value: int) -> bool:
    """True for a value that can be a row id (a positive signed 64-bit integer)."""
    return 0 < value <= MAX_ID


def check_text(name: str, value: str, *, max_length: int, allow_empty: bool = False) -> str:
    """Validate a text field's presence and length.

    Raises:
        GoimError: code 2 naming the field.
    """
    if not allow_empty and not value.strip():
        raise bad_request(f"{name} must not be empty")
    if len(value) > max_length:
        raise bad_request(f"{name} is longer than {max_length} characters")
    return value


class AccountService:
    """Devices, users and the binding of one to the other."""

    def __init__(
        self,
        store: AccountStore,
        reactor: Any,
        *,
        password_cost: ScryptCost = ScryptCost(),
        run_in_thread: Callable[..., "Deferred[Any]"] | None = None,
        sessions: SessionPort | None = None,
    ) -> None:
        """
        Args:
            store: the account rows.
            reactor: clock and thread pool (password hashing runs off the reactor thread).
            password_cost: scrypt parameters for new password hashes.
            run_in_thread: ``f(func, *args) -> Deferred`` running blocking work
                off the reactor thread; the reactor's thread pool by default.
            sessions: where the open connection of a device that signs in again
                over HTTP is ended (it belongs to the previous epoch).
        """
        self.store = store
        self._reactor = reactor
        self._cost = password_cost
        self._run_in_thread = run_in_thread or partial(deferToThreadPool, reactor, reactor.getThreadPool())
        self._dummy_hash: str | None = None
        self._sessions = sessions

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        result: T = await self._run_in_thread(func, *args)
        return result

    async def register_device(
        self, *, device_type: int, brand: str, model: str, system_version: str, app_version: str
    ) -> tuple[int, str]:
        """Register a device; returns ``(device_id, token)``. The token is shown only once."""
        if device_type not in DEVICE_TYPES:
            raise bad_request("type must be 1..5 (Android, iOS, Windows, macOS, Web)")
        for name, value in (
            ("brand", brand),
            ("model", model),
            ("system_version", system_version),
            ("app_version", app_version),
        ):
            check_text(name, value, max_length=MAX_NAME)
        token = new_token()
        device_id = await self.store.create_device(
            device_type=device_type,
            brand=brand,
            model=model,
            system_version=system_version,
            app_version=app_version,
            token_hash=hash_token(token),
            now_ms=now_ms(self._reactor),
        )
        log.info("registered device {device_id}", device_id=device_id)
        return device_id, token

    async def authenticate(self, device_id: int, token: str) -> DeviceRow:
        """The device whose token this is.

        Raises:
            GoimError: 1001 for an unknown device or a wrong token.
        """
        device = await self.store.get_device(device_id) if is_id(device_id) else None
        if device is None or not _same(hash_token(token), device.token_hash):
            raise GoimError(WRONG_DEVICE_OR_TOKEN, "wrong device id or token")
        return device

    async def authenticate_user(self, device_id: int, token: str) -> DeviceRow:
        """Like ``authenticate``, and the device must be bound to a user.

        Raises:
            GoimError: 1001, or 4 when the device is not bound to a user.
        """
        device = await self.authenticate(device_id, token)
        if not device.user_id:
            raise GoimError(DEVICE_NOT_BOUND, "device is not bound to a user: register or sign in first")
        return device

    async def register_user(
        self, device_id: int, *, number: str, nickname: str, sex: int, avatar: str, password: str
    ) -> UserSession:
        """Create a user and bind the device to it; starts a new send_sequence epoch."""
        _check_number(number)
        check_text("nickname", nickname, max_length=MAX_NAME)
        check_text("avatar", avatar, max_length=MAX_AVATAR, allow_empty=True)
        _check_password(password)
        if sex not in (0, 1, 2):
            raise bad_request("sex must be 0 (unknown), 1 (male) or 2 (female)")
        password_hash = await self._in_thread(hash_password, password, self._cost)
        try:
            user_id = await self.store.create_user(
                number=number,
                nickname=nickname,
                sex=sex,
                avatar=avatar,
                password_hash=password_hash,
                now_ms=now_ms(self._reactor),
            )
        except NumberTakenError:
            raise GoimError(NUMBER_TAKEN, "number already used") from None
        await self._bind(device_id, user_id)
        log.info("registered user {user_id} on device {device_id}", user_id=user_id, device_id=device_id)
        return UserSession(user_id, 0, 0)

    async def sign_in_user(self, device_id: int, *, number: str, password: str) -> UserSession:
        """Check a user's password and bind the device to it; starts a new epoch.

        Raises:
            GoimError: 1003 for an unknown number or a wrong password (the same
                answer, and about the same time, for both).
        """
        check_text("number", number, max_length=MAX_NAME)
        check_text("password", password, max_length=MAX_PASSWORD)
        credentials = await self.store.get_credentials(number)
        if credentials is None:
            # Hash anyway, so that an unknown number takes as long as a wrong password.
            if self._dummy_hash is None:
                self._dummy_hash = await self._in_thread(hash_password, "not a password", self._cost)
            await self._in_thread(check_password, password, self._dummy_hash)
            raise GoimError(WRONG_NUMBER_OR_PASSWORD, "wrong number or password")
        user_id, password_hash = credentials
        if not await self._in_thread(check_password, password, password_hash):
            raise GoimError(WRONG_NUMBER_OR_PASSWORD, "wrong number or password")
        await self._bind(device_id, user_id)
        sync_sequence = await self.store.max_acked_seq(user_id)
        log.info("user {user_id} signed in on device {device_id}", user_id=user_id, device_id=device_id)
        return UserSession(user_id, 0, sync_sequence)

    async def _bind(self, device_id: int, user_id: int) -> None:
        """Bind the device, starting a new send_sequence epoch; a connection the
        device still has open belongs to the old epoch (or user) and is ended."""
        previous = await self.store.bind_device(device_id, user_id)
        if previous and self._sessions is not None:
            self._sessions.end_session(device_id=device_id, user_id=previous, reason="signed in again")

    async def device(self, device_id: int) -> DeviceRow | None:
        """The device's row (its user and current send_sequence epoch), or None."""
        return await self.store.get_device(device_id) if is_id(device_id) else None

    async def get_user(self, user_id: int) -> UserRow:
        """The user's profile.

        Raises:
            GoimError: 1004 when there is no such user.
        """
        users = await self.store.get_users([user_id]) if is_id(user_id) else {}
        if user_id not in users:
            raise GoimError(USER_NOT_FOUND, f"user {user_id} not found")
        return users[user_id]


def _check_number(number: str) -> None:
    check_text("number", number, max_length=MAX_NAME)
    # MySQL compares strings ignoring trailing spaces while SQLite does not:
    # refusing surrounding white space keeps "alice" and "alice " apart everywhere.
    if number != number.strip():
        raise bad_request("number must not start or end with white space")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise bad_request(f"password must have at least {MIN_PASSWORD} characters")
    check_text("password", password, max_length=MAX_PASSWORD)


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())
