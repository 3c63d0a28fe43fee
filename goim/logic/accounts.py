"""Devices and users: registration, authentication, sign-in, profiles."""

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, NoReturn, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from goim.logic.errors import (
    DEVICE_NOT_BOUND,
    DEVICE_NOT_FOUND,
    NUMBER_TAKEN,
    REGISTRATION_THROTTLED,
    SIGN_IN_THROTTLED,
    TOKEN_EXPIRED,
    TOO_MANY_DEVICES,
    USER_NOT_FOUND,
    WRONG_DEVICE_OR_TOKEN,
    WRONG_NUMBER_OR_PASSWORD,
    GoimError,
    bad_request,
)
from goim.logic.passwords import ScryptCost, check_password, hash_password, hash_token, new_token
from goim.logic.throttle import Backoff, TokenBucket, address_key
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.ports import SessionPort
from goim.storage.accounts import AccountStore, DeviceRow, NumberTakenError, TooManyDevicesError
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


@dataclass(frozen=True)
class AccountLimits:
    """Device and credential limits (``--max-devices-per-user`` and friends)."""

    #: devices bound to one user at a time
    devices_per_user: int = 10
    #: failed sign-ins per account before back-off starts (not for the account's own devices)
    sign_in_free_failures: int = 5
    #: failed sign-ins per client address before back-off starts (any accounts)
    sign_in_free_failures_per_address: int = 20
    #: first back-off, doubled per further failure, and its cap (seconds)
    sign_in_backoff: float = 1.0
    sign_in_backoff_max: float = 300.0
    #: device registrations per client address: sustained rate per minute and burst
    registrations_per_minute: float = 10.0
    registration_burst: int = 20
    #: token lifetime in seconds; 0 for tokens that never expire
    token_lifetime: float = 0.0


@dataclass(frozen=True, slots=True)
class Device:
    """An authenticated device, as the service hands it to routes and ports."""

    id: int
    #: its user, 0 while it is bound to none
    user_id: int
    #: the current epoch of its send_sequence numbers
    send_epoch: int
    #: the hash of the token it authenticated with: a refresh replaces that one only
    token_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class UserProfile:
    """A user's public profile (``GET /user/info``)."""

    id: int
    number: str
    nickname: str
    sex: int
    avatar: str


@dataclass(frozen=True, slots=True)
class DeviceListing:
    """A device as its user sees it in the device list."""

    id: int
    type: int
    brand: str
    model: str
    system_version: str
    app_version: str
    created_at: int


@dataclass(frozen=True, slots=True)
class NewToken:
    """A refreshed token and when it expires (ms since the epoch, 0 for never)."""

    token: str
    expires_at: int = 0


@dataclass
class _Counters:
    throttled: Any = field(default=None)
    failures: Any = field(default=None)


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
        limits: AccountLimits = AccountLimits(),
        metrics: Metrics | None = None,
    ) -> None:
        """
        Args:
            store: the account rows.
            reactor: clock and thread pool (password hashing runs off the reactor thread).
            password_cost: scrypt parameters for new password hashes.
            run_in_thread: ``f(func, *args) -> Deferred`` running blocking work
                off the reactor thread; the reactor's thread pool by default.
            sessions: where the open connection of a device that signs in again
                over HTTP, signs out or is deleted is ended.
            limits: devices per user, sign-in back-off, registration rate, token lifetime.
            metrics: where refused sign-ins and registrations are counted.
        """
        self.store = store
        self._reactor = reactor
        self._cost = password_cost
        self._run_in_thread = run_in_thread or partial(deferToThreadPool, reactor, reactor.getThreadPool())
        self._dummy_hash: str | None = None
        self._sessions = sessions
        self.limits = limits
        self._account_backoff = Backoff(
            reactor, free=limits.sign_in_free_failures, base=limits.sign_in_backoff, cap=limits.sign_in_backoff_max
        )
        self._address_backoff = Backoff(
            reactor,
            free=limits.sign_in_free_failures_per_address,
            base=limits.sign_in_backoff,
            cap=limits.sign_in_backoff_max,
        )
        self._registrations = TokenBucket(
            reactor, rate=limits.registrations_per_minute / 60.0, burst=limits.registration_burst
        )
        self._counters = _Counters()
        self._throttle_log: dict[str, tuple[float, int]] = {}
        if metrics is not None:
            from prometheus_client import Counter

            self._counters.throttled = Counter(
                "goim_throttled_requests_total",
                "HTTP requests refused by a throttle (429), by throttle",
                ["throttle"],
                registry=metrics.registry,
            )
            self._counters.failures = Counter(
                "goim_sign_in_failures_total", "Failed password sign-ins over HTTP", registry=metrics.registry
            )

    def _throttled(self, code: int, throttle: str, wait: float, message: str, **fields: Any) -> GoimError:
        """Log and count a refused request; the 429 error to raise.

        At most one log line per throttle and second (with the number of refusals
        not logged since), so that a flood of refused requests cannot flood the log.
        """
        now = self._reactor.seconds()
        last, suppressed = self._throttle_log.get(throttle, (float("-inf"), 0))
        if now - last >= 1.0:
            log.info(
                "throttled ({throttle}) for {wait:.1f} s: " + message + " ({suppressed} more refused since the last line)",
                throttle=throttle,
                wait=wait,
                suppressed=suppressed,
                **fields,
            )
            self._throttle_log[throttle] = (now, 0)
        else:
            self._throttle_log[throttle] = (last, suppressed + 1)
        if self._counters.throttled is not None:
            self._counters.throttled.labels(throttle).inc()
        return GoimError(code, f"too many attempts: retry in {wait:.0f} s", retry_after=wait)

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        result: T = await self._run_in_thread(func, *args)
        return result

    async def register_device(
        self,
        *,
        device_type: int,
        brand: str,
        model: str,
        system_version: str,
        app_version: str,
        client: str = "",
    ) -> tuple[int, str]:
        """Register a device; returns ``(device_id, token)``. The token is shown only once.

        Args:
            client: the client's address; registrations are rate-limited per address.

        Raises:
            GoimError: 1013 (with ``retry_after``) when the address registered
                too many devices lately.
        """
        if client:
            wait = self._registrations.take(address_key(client))
            if wait > 0:
                raise self._throttled(
                    REGISTRATION_THROTTLED, "device registration", wait, "device registration from {client}", client=client
                )
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
            token_expires_at=self._expiry(),
        )
        log.info("registered device {device_id} from {client}", device_id=device_id, client=client or "?")
        return device_id, token

    def _expiry(self) -> int:
        """When a token issued now expires (ms), 0 for never."""
        lifetime = self.limits.token_lifetime
        return now_ms(self._reactor) + int(lifetime * 1000) if lifetime > 0 else 0

    async def authenticate(self, device_id: int, token: str) -> Device:
        """The device whose token this is.

        Raises:
            GoimError: 1001 for an unknown device, a wrong or revoked token;
                1014 for an expired token.
        """
        device = await self.store.get_device(device_id) if is_id(device_id) else None
        if device is None or not _same(hash_token(token), device.token_hash):
            raise GoimError(WRONG_DEVICE_OR_TOKEN, "wrong device id or token")
        if device.token_expires_at and now_ms(self._reactor) >= device.token_expires_at:
            raise GoimError(TOKEN_EXPIRED, "token expired: register the device again")
        return _device(device)

    async def refresh_token(self, device: Device) -> NewToken:
        """Give an authenticated device a new token (the old one stops working).

        With a token lifetime set, the new token lives that long from now.

        Raises:
            GoimError: 1001 when the token changed meanwhile (another refresh or a sign-out).
        """
        token = new_token()
        expires_at = self._expiry()
        if not await self.store.replace_token(device.id, device.token_hash, hash_token(token), expires_at):
            raise GoimError(WRONG_DEVICE_OR_TOKEN, "wrong device id or token")
        log.info("device {device_id} refreshed its token", device_id=device.id)
        return NewToken(token, expires_at)

    async def sign_out(self, device: Device) -> None:
        """Revoke the device's token and unbind it; its open connection is ended."""
        await self.store.revoke_device(device.id, device.user_id)
        self._end(device.id, device.user_id, "signed out")
        log.info("device {device_id} of user {user_id} signed out", device_id=device.id, user_id=device.user_id)

    async def list_devices(self, user_id: int) -> list[DeviceListing]:
        """The devices bound to the user (at most ``devices_per_user``)."""
        return [
            DeviceListing(d.id, d.type, d.brand, d.model, d.system_version, d.app_version, d.created_at)
            for d in await self.store.list_devices(user_id)
        ]

    async def delete_device(self, user_id: int, device_id: int) -> None:
        """Sign one of the user's devices out (revoke its token, unbind it, end its connection).

        Raises:
            GoimError: 1015 when the user has no such device.
        """
        if not is_id(device_id) or not await self.store.revoke_device(device_id, user_id):
            raise GoimError(DEVICE_NOT_FOUND, f"you have no device {device_id}")
        self._end(device_id, user_id, "device deleted")
        log.info("user {user_id} deleted device {device_id}", user_id=user_id, device_id=device_id)

    def _end(self, device_id: int, user_id: int, reason: str) -> None:
        if user_id and self._sessions is not None:
            self._sessions.end_session(device_id=device_id, user_id=user_id, reason=reason)

    async def authenticate_user(self, device_id: int, token: str) -> Device:
        """Like ``authenticate``, and the device must be bound to a user.

        Raises:
            GoimError: 1001, or 4 when the device is not bound to a user.
        """
        device = await self.authenticate(device_id, token)
        if not device.user_id:
            raise GoimError(DEVICE_NOT_BOUND, "device is not bound to a user: register or sign in first")
        return device

    async def register_user(
        self,
        device_id: int,
        *,
        number: str,
        nickname: str,
        sex: int,
        avatar: str,
        password: str,
        client: str = "",
    ) -> UserSession:
        """Create a user and bind the device to it; starts a new send_sequence epoch.

        Args:
            client: the client's address; user registrations (each costs a
                password hash) are rate-limited per address like device registrations.

        Raises:
            GoimError: 1002 number taken, 1013 (with ``retry_after``) too many
                registrations from the address.
        """
        if client:
            wait = self._registrations.take("user " + address_key(client))
            if wait > 0:
                raise self._throttled(
                    REGISTRATION_THROTTLED, "user registration", wait, "user registration from {client}", client=client
                )
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

    async def sign_in_user(self, device_id: int, *, number: str, password: str, client: str = "") -> UserSession:
        """Check a user's password and bind the device to it; starts a new epoch.

        Failed attempts back off exponentially per client address and per
        account (capped at ``sign_in_backoff_max``); a device already bound to
        the account is exempt from the account's back-off, so that an attacker
        cannot lock the account's own devices out. A throttled attempt costs no
        password hash.

        Args:
            client: the client's address.

        Raises:
            GoimError: 1003 for an unknown number or a wrong password (the same
                answer, and about the same time, for both); 1012 (with
                ``retry_after``) while throttled; 1011 when the user has the most
                devices allowed.
        """
        check_text("number", number, max_length=MAX_NAME)
        check_text("password", password, max_length=MAX_PASSWORD)
        address = address_key(client) if client else ""
        if address:
            wait = self._address_backoff.retry_after(address)
            if wait > 0:
                raise self._throttled(SIGN_IN_THROTTLED, "sign-in address", wait, "sign-ins from {client}", client=client)
        credentials = await self.store.get_credentials(number)
        device = await self.store.get_device(device_id) if is_id(device_id) else None
        own_device = credentials is not None and device is not None and device.user_id == credentials[0]
        if not own_device:
            wait = self._account_backoff.retry_after(number)
            if wait > 0:
                raise self._throttled(
                    SIGN_IN_THROTTLED, "sign-in account", wait, "sign-ins to {number} from {client}", number=number, client=client
                )
        if credentials is None:
            # Hash anyway, so that an unknown number takes as long as a wrong password.
            if self._dummy_hash is None:
                self._dummy_hash = await self._in_thread(hash_password, "not a password", self._cost)
            await self._in_thread(check_password, password, self._dummy_hash)
            self._failed_sign_in(number, address, client, own_device)
        else:
            user_id, password_hash = credentials
            if not await self._in_thread(check_password, password, password_hash):
                self._failed_sign_in(number, address, client, own_device)
            self._account_backoff.succeeded(number)
        await self._bind(device_id, user_id)
        sync_sequence = await self.store.max_acked_seq(user_id)
        log.info("user {user_id} signed in on device {device_id}", user_id=user_id, device_id=device_id)
        return UserSession(user_id, 0, sync_sequence)

    def _failed_sign_in(self, number: str, address: str, client: str, own_device: bool) -> NoReturn:
        """Count a failed sign-in against the address and the account; raise 1003."""
        address_wait = self._address_backoff.failed(address) if address else 0.0
        account_wait = 0.0 if own_device else self._account_backoff.failed(number)
        log.info(
            "failed sign-in to {number} from {client}; back-off {account_wait:.0f} s (account), {address_wait:.0f} s (address)",
            number=number,
            client=client or "?",
            account_wait=account_wait,
            address_wait=address_wait,
        )
        if self._counters.failures is not None:
            self._counters.failures.inc()
        raise GoimError(WRONG_NUMBER_OR_PASSWORD, "wrong number or password")

    async def _bind(self, device_id: int, user_id: int) -> None:
        """Bind the device, starting a new send_sequence epoch; a connection the
        device still has open belongs to the old epoch (or user) and is ended.

        Raises:
            GoimError: 1011 when the user has the most devices allowed.
        """
        try:
            previous = await self.store.bind_device(device_id, user_id, max_devices=self.limits.devices_per_user)
        except TooManyDevicesError as e:
            log.info("refused: user {user_id} has {limit} devices", user_id=user_id, limit=e.limit)
            raise GoimError(
                TOO_MANY_DEVICES,
                f"this user has {e.limit} devices, the most allowed: delete one (DELETE /device/{{id}}) first",
            ) from None
        if previous and self._sessions is not None:
            self._sessions.end_session(device_id=device_id, user_id=previous, reason="signed in again")

    async def device(self, device_id: int) -> Device | None:
        """The device (its user and current send_sequence epoch), or None."""
        row = await self.store.get_device(device_id) if is_id(device_id) else None
        return _device(row) if row is not None else None

    async def get_user(self, user_id: int) -> UserProfile:
        """The user's profile.

        Raises:
            GoimError: 1004 when there is no such user.
        """
        users = await self.store.get_users([user_id]) if is_id(user_id) else {}
        if user_id not in users:
            raise GoimError(USER_NOT_FOUND, f"user {user_id} not found")
        u = users[user_id]
        return UserProfile(u.id, u.number, u.nickname, u.sex, u.avatar)


def _device(row: DeviceRow) -> Device:
    return Device(row.id, row.user_id, row.send_epoch, row.token_hash)


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
