"""A local message log: what a device received, one JSON object per line.

The session hands each message to the application exactly once, but a process can
die between writing a message here and saving the session state, and then receive
the message again after its restart. The log therefore keys messages by
``(user_id, seq)`` and ignores one it already holds, so what it returns is exactly
once in any case.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from twisted.logger import Logger

from goim.client.session import SessionObserver
from goim.types import StoredMessage

log = Logger()

_FIELDS = (
    "user_id",
    "seq",
    "message_id",
    "sender_type",
    "sender_id",
    "sender_device_id",
    "receiver_type",
    "receiver_id",
    "type",
    "content",
    "send_time",
)
#: fields added for events (issue 14): written always, optional when read (older logs)
_EVENT_FIELDS = {"kind": 0, "ref_seq": 0, "edited_at": 0, "recalled": False}


def message_to_json(message: StoredMessage) -> dict[str, Any]:
    """A JSON object of a message's fields."""
    data = {name: getattr(message, name) for name in _FIELDS}
    data.update((name, getattr(message, name)) for name in _EVENT_FIELDS)
    return data


def message_from_json(data: Any) -> StoredMessage:
    """Parse what :func:`message_to_json` wrote.

    Raises:
        ValueError: not a message object.
    """
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        values = {name: data[name] for name in _FIELDS}
    except KeyError as e:
        raise ValueError(f"missing field {e}") from None
    for name, value in values.items():
        expected = str if name == "content" else int
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValueError(f"field {name} has the wrong type")
    extra = {name: data.get(name, default) for name, default in _EVENT_FIELDS.items()}
    for name, value in extra.items():
        if type(value) is not type(_EVENT_FIELDS[name]):
            raise ValueError(f"field {name} has the wrong type")
    return StoredMessage(**values, **extra)


class MessageLog(SessionObserver):
    """Received messages in a JSON-lines file; also a session observer that appends.

    Args:
        path: the log file (created on the first append).
        durable: fsync each batch before returning (before the session saves its
            state and acknowledges the batch to the server).
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self._seen: set[tuple[int, int]] | None = None

    def _load_seen(self) -> set[tuple[int, int]]:
        if self._seen is None:
            self._seen = {(m.user_id, m.seq) for m in self._read_all()}
        return self._seen

    def _read_all(self) -> list[StoredMessage]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        messages = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                messages.append(message_from_json(json.loads(line)))
            except ValueError as e:
                # a line cut short by a crash: skip it (its message is received again)
                log.warn("skipping line {number} of {path}: {error}", number=number, path=str(self.path), error=str(e))
        return messages

    def append(self, messages: Iterable[StoredMessage]) -> list[StoredMessage]:
        """Add the messages not held yet.

        Returns:
            The messages that were new.
        """
        seen = self._load_seen()
        new = []
        for m in messages:
            key = (m.user_id, m.seq)
            if key not in seen:
                seen.add(key)
                new.append(m)
        if not new:
            return []
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = "".join(json.dumps(message_to_json(m), ensure_ascii=False) + "\n" for m in new)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # A line left unterminated by a crash would swallow the next one: start fresh.
            if os.fstat(fd).st_size and not self._ends_with_newline():
                data = "\n" + data
            view = memoryview(data.encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return new

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def messages(self, *, user_id: int, since: int = 0) -> list[StoredMessage]:
        """The user's messages with seq above ``since``, in seq order, each once."""
        by_seq: dict[int, StoredMessage] = {}
        for m in self._read_all():
            if m.user_id == user_id and m.seq > since:
                by_seq.setdefault(m.seq, m)
        return [by_seq[seq] for seq in sorted(by_seq)]

    # --- SessionObserver

    def messages_received(self, messages: Sequence[StoredMessage]) -> None:
        """Append a received batch."""
        self.append(messages)
