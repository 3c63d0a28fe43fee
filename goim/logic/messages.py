"""The message pipeline: validate, dedupe, batch-store, ACK, hand to delivery.

One writer per process takes everything queued (up to ``max_batch`` sends) and
stores it in one transaction. While a batch is being written new sends queue up
for the next one, so under light load a send is written at once and under heavy
load batches grow by themselves.
"""

from dataclasses import dataclass, field

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from goim.logic.ids import SegmentAllocator
from goim.logs import debug_enabled, goim_observer
from goim.metrics import Metrics
from goim.ports import DeliveryPort
from goim.storage.accounts import AccountStore
from goim.storage.messages import BatchFacts, MessageStore, PendingSend, SendOutcome
from goim.types import (
    RECEIVER_GROUP,
    RECEIVER_USER,
    SEND_INTERNAL_ERROR,
    SEND_INVALID,
    SEND_NOT_FRIEND,
    SEND_NO_SUCH_USER,
    SEND_NOT_IN_GROUP,
    SEND_OK,
    SENDER_USER,
    SendRequest,
    SendResult,
    StoredMessage,
    SyncPage,
)
from goim.util import Clock, now_ms, run_in_background

log = Logger(observer=goim_observer)

#: Default content limit in UTF-8 bytes: any single message, with every field of
#: its MessageItem at its widest, still fits one 4,092-byte frame (DESIGN section 3).
DEFAULT_MAX_CONTENT = 3900
#: The most messages one sync page may hold.
MAX_SYNC_LIMIT = 1000


def decide(request: SendRequest, facts: BatchFacts) -> tuple[int, list[int]]:
    """The delivery rules of one send, judged on facts read in its transaction.

    Returns:
        ``(0, recipients)`` with the ascending user ids that get a copy (the sender
        included), or a non-zero MessageSendACK code and no recipients.
    """
    if request.receiver_type == RECEIVER_USER:
        if (request.user_id, request.receiver_id) not in facts.friendships:
            return SEND_NOT_FRIEND, []
        return SEND_OK, sorted({request.user_id, request.receiver_id})
    members = facts.members.get(request.receiver_id, [])
    if request.user_id not in members:
        return SEND_NOT_IN_GROUP, []
    return SEND_OK, members


@dataclass
class _Queued:
    request: SendRequest
    sender_type: int
    waiters: list["Deferred[SendResult]"] = field(default_factory=list)


class MessageService:
    """Sends, syncs and acks of stored messages."""

    def __init__(
        self,
        store: MessageStore,
        accounts: AccountStore,
        ids: SegmentAllocator,
        delivery: DeliveryPort,
        clock: Clock,
        *,
        max_content: int = DEFAULT_MAX_CONTENT,
        max_batch: int = 200,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.ids = ids
        self.delivery = delivery
        self._clock = clock
        self.max_content = max_content
        self.max_batch = max_batch
        self.metrics = metrics
        self._queue: list[_Queued] = []
        # (device_id, epoch, send_sequence) -> the queued or in-flight send: a retry
        # that arrives before the first attempt finished waits for its result.
        self._pending: dict[tuple[int, int, int], _Queued] = {}
        self._writing = False
        self._idle: list[Deferred[None]] = []
        # device -> highest seq acked and not yet written, and who waits for it
        self._acks: dict[int, int] = {}
        self._ack_waiters: list[Deferred[None]] = []
        self._acking = False

    def validate(self, request: SendRequest) -> int:
        """The ACK code for a malformed send (receiver type, receiver id, content), or 0."""
        if request.receiver_type not in (RECEIVER_USER, RECEIVER_GROUP) or request.receiver_id <= 0:
            return SEND_INVALID
        if not request.content or len(request.content.encode("utf-8")) > self.max_content:
            return SEND_INVALID
        return SEND_OK

    async def send(self, request: SendRequest, *, sender_type: int = SENDER_USER) -> SendResult:
        """Store a message for every party and return its ACK.

        A send with the same ``(device_id, epoch, send_sequence)`` as an earlier one
        stores nothing and gets the first one's ACK, also while the first one is
        still queued or being written. Sends are stored in
        the order this method is called.
        """
        code = self.validate(request)
        if code != SEND_OK:
            if self.metrics is not None:
                self.metrics.sends.labels(str(code)).inc()
            return SendResult(code)
        waiter: Deferred[SendResult] = Deferred()
        key = (request.device_id, request.epoch, request.send_sequence)
        queued = self._pending.get(key)
        if queued is not None:
            queued.waiters.append(waiter)
        else:
            queued = _Queued(request, sender_type, [waiter])
            self._pending[key] = queued
            self._queue.append(queued)
            self._start_writer()
        return await waiter

    def _start_writer(self) -> None:
        if not self._writing:
            self._writing = True
            run_in_background(self._write_queue(), "message writer")

    async def _write_queue(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._write_batch(batch)
        finally:
            self._writing = False
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _write_batch(self, batch: list[_Queued]) -> None:
        if self.metrics is not None:
            self.metrics.send_batch.observe(len(batch))
        try:
            ids = await self.ids.take(len(batch))
            sends = [PendingSend(q.request, message_id, q.sender_type) for q, message_id in zip(batch, ids)]
            outcomes = await self.store.store_sends(sends, decide, now_ms(self._clock))
        except Exception:
            log.failure("storing a batch of {count} sends failed; answering code 1", count=len(batch))
            for q in batch:
                self._finish(q, SendResult(SEND_INTERNAL_ERROR))
            return
        missing = await self._unknown_receivers(batch, [o.code for o in outcomes])
        stored: list[StoredMessage] = []
        for q, send, outcome in zip(batch, sends, outcomes):
            if outcome.code == SEND_NOT_FRIEND and q.request.receiver_id in missing:
                outcome = SendOutcome(SEND_NO_SUCH_USER)
            if outcome.stored and debug_enabled():
                log.debug(
                    "stored message {message_id} from device {device_id} as {copies} copies",
                    message_id=send.message_id,
                    device_id=q.request.device_id,
                    copies=len(outcome.stored),
                )
            stored.extend(outcome.stored)
            self._finish(q, SendResult(outcome.code, outcome.message_id, outcome.seq))
        if stored:
            if self.metrics is not None:
                self.metrics.deliveries.inc(len(stored))
            if debug_enabled():
                copies: dict[int, int] = {}
                for m in stored:
                    copies[m.message_id] = copies.get(m.message_id, 0) + 1
                for message_id, count in copies.items():
                    # a logic node publishes to the connect nodes' Redis channels here
                    log.debug("delivering message {message_id}: {copies} copies", message_id=message_id, copies=count)
            try:
                self.delivery.deliver(stored)
            except Exception:
                log.failure("delivery of {count} stored copies failed", count=len(stored))

    async def _unknown_receivers(self, batch: list[_Queued], codes: list[int]) -> set[int]:
        """The receivers of the batch's "not a friend" sends that are no user at all
        (their ACK says so: code 6); one query, only when there are such sends."""
        ids = {q.request.receiver_id for q, code in zip(batch, codes) if code == SEND_NOT_FRIEND}
        if not ids:
            return set()
        try:
            users = await self.accounts.get_users(sorted(ids))
        except CancelledError:
            raise
        except Exception:
            log.failure("looking up the receivers of refused sends failed; answering code 2")
            return set()
        return ids - users.keys()

    def _finish(self, queued: _Queued, result: SendResult) -> None:
        if self.metrics is not None:
            self.metrics.sends.labels(str(result.code)).inc(len(queued.waiters))
        r = queued.request
        del self._pending[(r.device_id, r.epoch, r.send_sequence)]
        for waiter in queued.waiters:
            waiter.callback(result)

    async def drain(self) -> None:
        """Wait until every send accepted so far is written (for shutdown)."""
        if self._writing:
            d: Deferred[None] = Deferred()
            self._idle.append(d)
            await d

    async def sync_page(self, user_id: int, after_seq: int, limit: int) -> SyncPage:
        """Up to ``limit`` (at most 1,000) messages of the user with seq > ``after_seq``."""
        page = await self.store.sync_page(user_id, max(0, after_seq), max(1, min(limit, MAX_SYNC_LIMIT)))
        if self.metrics is not None:
            self.metrics.sync_messages.inc(len(page.messages))
        return page

    async def ack(self, device_id: int, seq: int) -> None:
        """The device holds everything up to ``seq`` (monotonic: lower acks change nothing).

        Acks that arrive while earlier ones are being written are written together
        in the next transaction (the highest seq per device), so a client acking
        every push does not cost a commit each.
        """
        waiter: Deferred[None] = Deferred()
        self._acks[device_id] = max(seq, self._acks.get(device_id, seq))
        self._ack_waiters.append(waiter)
        if not self._acking:
            self._acking = True
            run_in_background(self._write_acks(), "ack writer")
        await waiter

    async def _write_acks(self) -> None:
        try:
            while self._acks:
                acks, self._acks = self._acks, {}
                waiters, self._ack_waiters = self._ack_waiters, []
                try:
                    await self.accounts.ack_many(list(acks.items()))
                except Exception as e:
                    for waiter in waiters:
                        waiter.errback(e)
                else:
                    for waiter in waiters:
                        waiter.callback(None)
        finally:
            self._acking = False
