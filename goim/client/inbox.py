"""Putting received messages in order: duplicates out, gaps held back.

Messages arrive by sync, by live push (out of order, twice, or not at all) and as the
device's own copy named by a send's ACK. :class:`Inbox` turns all of that into one
stream in ``sync_sequence`` order without repeats, and says when a gap needs a sync.
It is pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Iterable

from goim.types import StoredMessage


class Inbox:
    """The seq up to which every message is held, and the messages above a gap.

    Args:
        held: the highest contiguous seq already handed out (0 for none).
    """

    def __init__(self, held: int = 0) -> None:
        self.held = held
        self._waiting: dict[int, StoredMessage] = {}
        self.duplicates = 0

    @property
    def has_gap(self) -> bool:
        """Whether messages wait behind a missing one (a sync should fill it)."""
        return bool(self._waiting)

    @property
    def waiting(self) -> list[int]:
        """The seqs of the messages waiting behind a gap, ascending."""
        return sorted(self._waiting)

    def knows(self, seq: int) -> bool:
        """Whether the message with this seq was handed out or is waiting."""
        return seq <= self.held or seq in self._waiting

    def add(self, messages: Iterable[StoredMessage]) -> list[StoredMessage]:
        """Take messages in any order.

        Returns:
            The messages that became contiguous, in seq order (each seq only ever
            once); ``held`` has advanced past them.
        """
        for m in messages:
            if self.knows(m.seq):
                self.duplicates += 1
                continue
            self._waiting[m.seq] = m
        ready: list[StoredMessage] = []
        while self.held + 1 in self._waiting:
            m = self._waiting.pop(self.held + 1)
            ready.append(m)
            self.held = m.seq
        return ready

    def skip_to(self, seq: int) -> None:
        """Treat everything up to ``seq`` as held: the server deleted it (a trimmed
        sync starts at ``seq + 1``), so it will never arrive."""
        if seq > self.held:
            for old in [s for s in self._waiting if s <= seq]:
                del self._waiting[old]
            self.held = seq
