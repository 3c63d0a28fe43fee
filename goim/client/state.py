"""What a client keeps between runs, and where.

A device's state is small: its credentials, the user it is bound to, the last
``send_sequence`` it used, the highest contiguous ``sync_sequence`` it holds and the
sends the server has not acknowledged yet. :class:`JSONStateStore` keeps it in one
JSON file written atomically (temporary file, fsync, ``os.replace``, fsync of the
directory), so a client that crashes at any point restarts from either the old or the
new state, never from half of each.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from goim.client.errors import ProfileLocked, StateError

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A send as it goes on the wire; kept until the server acknowledges it.

    Attributes:
        send_sequence: the number that identifies the send for this device and epoch;
            it never changes across retries and reconnects.
        receiver_type: 1 user, 2 group.
        receiver_id: the user or group id.
        type: the message type (1 text; other values are the application's).
        content: the message text.
        send_time: when the message was first sent, in ms since the epoch.
    """

    send_sequence: int
    receiver_type: int
    receiver_id: int
    type: int
    content: str
    send_time: int

    def to_json(self) -> dict[str, Any]:
        """A JSON object of the fields."""
        return {
            "send_sequence": self.send_sequence,
            "receiver_type": self.receiver_type,
            "receiver_id": self.receiver_id,
            "type": self.type,
            "content": self.content,
            "send_time": self.send_time,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutgoingMessage:
        """Parse what :meth:`to_json` wrote.

        Raises:
            StateError: a field is missing or has the wrong type.
        """
        try:
            return cls(
                send_sequence=_int(data["send_sequence"]),
                receiver_type=_int(data["receiver_type"]),
                receiver_id=_int(data["receiver_id"]),
                type=_int(data["type"]),
                content=_str(data["content"]),
                send_time=_int(data["send_time"]),
            )
        except (KeyError, TypeError) as e:
            raise StateError(f"malformed pending message {data!r}: {e}") from None


@dataclass(slots=True)
class ClientState:
    """The state of one device.

    Attributes:
        device_id: the device id from ``POST /device`` (0: none yet).
        token: the device token (a secret: the state file is private to its owner).
        user_id: the user the device is bound to (0: none).
        send_sequence: the last ``send_sequence`` used in the current epoch.
        synced_seq: the highest ``sync_sequence`` up to which the device holds every
            message (and has handed every one to the application).
        pending: sends without a final answer from the server, in send order.
    """

    device_id: int = 0
    token: str = ""
    user_id: int = 0
    send_sequence: int = 0
    synced_seq: int = 0
    pending: list[OutgoingMessage] = field(default_factory=list)

    @property
    def has_device(self) -> bool:
        """Whether a device is registered."""
        return self.device_id > 0 and bool(self.token)

    @property
    def signed_in(self) -> bool:
        """Whether the device is bound to a user (it may open a TCP session)."""
        return self.has_device and self.user_id > 0

    def set_device(self, device_id: int, token: str) -> list[OutgoingMessage]:
        """Switch to a newly registered device: it is bound to no user yet.

        Returns:
            The pending sends of the old device, which are dropped: they were numbered
            for the old device, and resending them from another could store them twice.
        """
        dropped = self.pending
        self.device_id = device_id
        self.token = token
        self.user_id = 0
        self.send_sequence = 0
        self.synced_seq = 0
        self.pending = []
        return dropped

    def start_epoch(self, *, user_id: int, send_sequence: int, sync_sequence: int) -> list[OutgoingMessage]:
        """Apply an HTTP registration or sign-in: a new ``send_sequence`` epoch begins.

        For the same user the device keeps what it holds (its own ``synced_seq``) and its
        unsent messages, renumbered from ``send_sequence + 1`` in the new epoch (a send
        whose ACK was lost just before the sign-in may then be stored twice: an epoch
        change cannot be exactly-once). For another user it starts at the server's
        ``sync_sequence`` and drops the old user's unsent messages.

        Args:
            user_id: the user the device is now bound to.
            send_sequence: the send counter the server returned (0 for a new epoch).
            sync_sequence: the seq the server says the user's devices hold.

        Returns:
            The dropped pending sends (empty for the same user).
        """
        self.send_sequence = send_sequence
        if user_id == self.user_id:
            renumbered = []
            for message in self.pending:
                self.send_sequence += 1
                renumbered.append(replace(message, send_sequence=self.send_sequence))
            self.pending = renumbered
            return []
        dropped = self.pending
        self.pending = []
        self.user_id = user_id
        self.synced_seq = sync_sequence
        return dropped

    def to_json(self) -> dict[str, Any]:
        """A JSON object of the state."""
        return {
            "version": STATE_VERSION,
            "device_id": self.device_id,
            "token": self.token,
            "user_id": self.user_id,
            "send_sequence": self.send_sequence,
            "synced_seq": self.synced_seq,
            "pending": [m.to_json() for m in self.pending],
        }

    @classmethod
    def from_json(cls, data: Any) -> ClientState:
        """Parse what :meth:`to_json` wrote.

        Raises:
            StateError: not a state object, an unknown version or a malformed field.
        """
        if not isinstance(data, dict):
            raise StateError("the state file does not hold a JSON object")
        version = data.get("version")
        if version != STATE_VERSION:
            raise StateError(f"unknown state version {version!r}")
        try:
            pending = data.get("pending", [])
            if not isinstance(pending, list):
                raise TypeError("pending must be a list")
            return cls(
                device_id=_int(data.get("device_id", 0)),
                token=_str(data.get("token", "")),
                user_id=_int(data.get("user_id", 0)),
                send_sequence=_int(data.get("send_sequence", 0)),
                synced_seq=_int(data.get("synced_seq", 0)),
                pending=[OutgoingMessage.from_json(m) for m in pending],
            )
        except TypeError as e:
            raise StateError(f"malformed state: {e}") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, not {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {value!r}")
    return value


class StateStore(Protocol):
    """Where a :class:`ClientState` lives between runs."""

    def load(self) -> ClientState:
        """The stored state, or a fresh one when nothing is stored."""

    def save(self, state: ClientState) -> None:
        """Store ``state``, replacing what was stored, durably and atomically."""


class MemoryStateStore:
    """A :class:`StateStore` in memory (tests, throw-away clients).

    Attributes:
        saved: the last saved state as JSON (None before the first save).
        saves: how many times ``save`` was called.
    """

    def __init__(self, state: ClientState | None = None) -> None:
        self.saved: dict[str, Any] | None = state.to_json() if state is not None else None
        self.saves = 0

    def load(self) -> ClientState:
        """A copy of the last saved state, or a fresh one."""
        return ClientState.from_json(self.saved) if self.saved is not None else ClientState()

    def save(self, state: ClientState) -> None:
        """Keep a JSON copy of ``state``."""
        self.saved = state.to_json()
        self.saves += 1


class JSONStateStore:
    """A :class:`StateStore` in a JSON file, written atomically.

    The file and its directory are created private to the user (0600 and 0700): the
    state holds the device token.

    Args:
        path: the state file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> ClientState:
        """Read the file; a missing file gives a fresh state.

        Raises:
            StateError: the file is not a valid state.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ClientState()
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise StateError(f"{self.path} is not valid JSON: {e}") from None
        try:
            return ClientState.from_json(data)
        except StateError as e:
            raise StateError(f"{self.path}: {e}") from None

    def save(self, state: ClientState) -> None:
        """Write the state to a temporary file, fsync it, rename it over the file.

        Raises:
            OSError: the file cannot be written (the old file is left as it was).
        """
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps(state.to_json(), ensure_ascii=False, indent=1).encode("utf-8")
        temporary = directory / f".{self.path.name}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


class ProfileLock:
    """An exclusive lock on a profile directory, held by one process at a time.

    Two processes using the same device would sign in the same device twice and
    kick each other, and overwrite each other's state: the second one is refused.

    Args:
        path: the lock file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            ProfileLocked: another process holds it.
        """
        import fcntl

        if self._fd is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ProfileLocked(f"{self.path.parent} is in use by another process") from None
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
