"""Read receipts, unread counts, recall and edit (issue 14).

Each change is written by :class:`goim.storage.receipts.ReceiptStore` as event rows
of the affected users' streams in one transaction, then handed to delivery like
stored messages: devices online get it live, the others by sync, in order after the
original. Only connections with ``Feature.EVENTS`` are sent event rows.
"""

from twisted.logger import Logger

from goim.logic.codes import ApiCode
from goim.logic.errors import GoimError, bad_request
from goim.logic.messages import DEFAULT_MAX_CONTENT
from goim.logic.social import Page
from goim.logs import goim_observer
from goim.ports import DeliveryPort
from goim.storage import receipts as rs
from goim.storage.receipts import Conversation, ReceiptStore
from goim.types import KIND_EDIT, KIND_RECALL, RECEIVER_GROUP, RECEIVER_USER, StoredMessage, copies_of
from goim.util import Clock, now_ms

log = Logger(observer=goim_observer)

#: default seconds after sending within which the sender may recall / edit
DEFAULT_RECALL_WINDOW = 120.0
DEFAULT_EDIT_WINDOW = 900.0
#: the largest page of ``GET /conversations``
CONVERSATION_PAGE = 100


class ReceiptService:
    """Read positions, the chat list, read counts, recall and edit.

    Args:
        store: the rows.
        delivery: where event rows go once committed.
        clock: time source (windows and event times).
        recall_window: seconds after sending a message may be recalled.
        edit_window: seconds after sending a message may be edited.
        max_content: the longest edited content in UTF-8 bytes (as for sends).
    """

    def __init__(
        self,
        store: ReceiptStore,
        delivery: DeliveryPort,
        clock: Clock,
        *,
        recall_window: float = DEFAULT_RECALL_WINDOW,
        edit_window: float = DEFAULT_EDIT_WINDOW,
        max_content: int = DEFAULT_MAX_CONTENT,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self._clock = clock
        self.recall_window = recall_window
        self.edit_window = edit_window
        self.max_content = max_content

    def _deliver(self, events: list[StoredMessage] | tuple[StoredMessage, ...]) -> None:
        if events:
            try:
                self.delivery.deliver(copies_of(events))
            except Exception:
                log.failure("delivery of {count} event rows failed", count=len(events))

    async def read(self, user_id: int, device_id: int, conv_type: int, conv_id: int, seq: int) -> int:
        """``user_id`` has read the conversation up to ``seq`` (of its own stream).

        Monotonic and idempotent: a report at or below the stored position changes
        nothing and is not an error.

        Returns:
            The read position now stored (0: none).
        """
        if conv_type not in (RECEIVER_USER, RECEIVER_GROUP):
            raise bad_request("conversation_type must be 1 (user) or 2 (group)")
        # (1, 0) is the conversation of business pushes to the user (sender_id 0)
        if conv_id < 0 or (conv_id == 0 and conv_type != RECEIVER_USER) or seq < 0:
            raise bad_request("conversation_id must be positive (0: business pushes, type 1) and seq not negative")
        events = await self.store.mark_read(user_id, device_id, conv_type, conv_id, seq, now_ms(self._clock))
        self._deliver(events)
        if events:
            return events[0].ref_seq
        return await self.store.read_position(user_id, conv_type, conv_id)

    async def conversations(self, user_id: int, *, before: int, limit: int) -> Page:
        """A page of the user's chat list, newest conversation first.

        ``before`` is the previous page's cursor (0: the first page).
        """
        items, next_cursor = await self.store.conversations(user_id, before, max(1, min(limit, CONVERSATION_PAGE)))
        return Page(list(items), next_cursor)

    async def read_count(self, user_id: int, message_id: int) -> int:
        """How many members other than the sender read a group message ``user_id`` holds."""
        count = await self.store.read_count(user_id, message_id)
        if count is None:
            raise GoimError(ApiCode.MESSAGE_NOT_FOUND, f"no group message {message_id}")
        return count

    async def recall(self, user_id: int, device_id: int, message_id: int) -> None:
        """Recall a message: every copy loses its content and becomes a tombstone."""
        await self._change(user_id, device_id, message_id, KIND_RECALL, "", self.recall_window)

    async def edit(self, user_id: int, device_id: int, message_id: int, content: str) -> None:
        """Replace a message's content in every copy."""
        if not content or len(content.encode("utf-8")) > self.max_content:
            raise bad_request(f"content must be 1 to {self.max_content} UTF-8 bytes")
        await self._change(user_id, device_id, message_id, KIND_EDIT, content, self.edit_window)

    async def _change(
        self, user_id: int, device_id: int, message_id: int, kind: int, content: str, window: float
    ) -> None:
        if message_id <= 0:
            raise bad_request("message_id must be positive")
        what = "recall" if kind == KIND_RECALL else "edit"
        outcome = await self.store.change(
            user_id, device_id, message_id, kind, content, now_ms(self._clock), int(window * 1000)
        )
        if outcome.status == rs.CHANGED:
            log.info(
                "user {user_id} did {what} of message {message_id}: {copies} copies",
                user_id=user_id, what=what, message_id=message_id, copies=len(outcome.events),
            )
            self._deliver(outcome.events)
            return
        if outcome.status == rs.UNCHANGED:
            return
        code, message = {
            rs.NOT_FOUND: (ApiCode.MESSAGE_NOT_FOUND, f"no message {message_id}"),
            rs.NOT_ALLOWED: (ApiCode.NOT_MESSAGE_SENDER, f"message {message_id} is not yours to {what}"),
            rs.TOO_LATE: (ApiCode.CHANGE_WINDOW_CLOSED, f"message {message_id} is too old to {what} ({window:g} s)"),
            rs.RECALLED: (ApiCode.MESSAGE_RECALLED, f"message {message_id} was recalled"),
        }[outcome.status]
        log.info("refused {what} of message {message_id} by user {user_id}: {reason}",
                 what=what, message_id=message_id, user_id=user_id, reason=message)
        raise GoimError(code, message)


__all__ = ["Conversation", "ReceiptService"]
