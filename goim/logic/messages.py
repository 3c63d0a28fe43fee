"""The message pipeline: validate, dedupe, budget, batch-store, ACK, hand to delivery.

Admission: every user send is charged against its sender's budget of stored
copies (a token bucket: a 1:1 send costs 2 copies, a group send one per member).
A send over budget is answered at once with code 5 and a retry hint and is never
queued, so a pipelined flood is refused at the door.

Writing: one writer per process stores a batch per transaction. Admitted sends
wait in one FIFO queue per sender; each batch takes one send per sender in turn
(senders that were idle first, then round-robin over the busy ones) until it
holds ``max_batch`` sends or ``max_batch_copies`` stored copies. So a sender's
backlog never delays another sender's send by more than one bounded batch, and
under light load a send is written at once while under heavy load batches grow
by themselves.
"""

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger

from goim.batching import Batcher, FairQueue, FifoQueue, shared
from goim.clock import Clock as ReactorClock
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
    SEND_RATE_LIMITED,
    SENDER_USER,
    SendRequest,
    SendResult,
    StoredCopies,
    StoredMessage,
    SyncPage,
    flatten,
)
from goim.util import Clock, now_ms, run_in_background

log = Logger(observer=goim_observer)

#: Default content limit in UTF-8 bytes: any single message, with every field of
#: its MessageItem at its widest, still fits one 4,092-byte frame (DESIGN section 3).
DEFAULT_MAX_CONTENT = 3900
#: The most messages one sync page may hold.
MAX_SYNC_LIMIT = 1000
#: Default bound of one write batch, in sends and in stored copies.
DEFAULT_MAX_BATCH = 500
DEFAULT_MAX_BATCH_COPIES = 8000
#: Default per-user send budget: copies per second on average, and at once.
#: Real chat sends a few messages a minute; this allows 500 one-to-one messages a
#: second, or two sends a second to a 500-member group, with a burst of ten such
#: group sends, while one user alone can write at most 1,000 rows a second.
DEFAULT_SEND_RATE = 1000.0
DEFAULT_SEND_BURST = 5000.0
#: How long a group's member count is trusted for budgeting, and how many are kept.
GROUP_SIZE_TTL = 60.0
GROUP_SIZE_CACHE = 10_000
#: the most acks one write transaction takes (before coalescing per device)
MAX_ACK_BATCH = 10_000
#: seconds between two log lines about the same user's refused sends
LIMITED_LOG_EVERY = 10.0


class SendBudget:
    """Per-user token buckets counted in stored copies.

    A send is admitted when the user's bucket holds its cost (or, for a send that
    costs more than the whole bucket, when the bucket is full); the bucket may go
    negative after such a send or after a correction, and refills at ``rate``.
    Buckets that are full again are forgotten, so memory follows active senders.

    Args:
        rate: copies per second refilled.
        burst: the bucket size in copies.
        clock: time source.
    """

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"the send budget needs a positive rate and burst, not {rate} and {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        # user_id -> [tokens, at]
        self._buckets: dict[int, list[float]] = {}
        self._prune_at = 1024

    def _level(self, user_id: int, now: float) -> list[float]:
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._prune(now)
            bucket = self._buckets[user_id] = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        return bucket

    def take(self, user_id: int, cost: int) -> float:
        """Charge ``cost`` copies to ``user_id`` if the budget allows.

        Returns:
            0.0 when admitted (and charged); otherwise the seconds until it would
            be admitted (nothing charged).
        """
        now = self._clock.seconds()
        bucket = self._level(user_id, now)
        need = min(float(cost), self.burst)
        if bucket[0] >= need:
            bucket[0] -= cost
            return 0.0
        return (need - bucket[0]) / self.rate

    def adjust(self, user_id: int, copies: int) -> None:
        """Give back ``copies`` (negative: charge more) once the real cost is known."""
        if copies:
            bucket = self._level(user_id, self._clock.seconds())
            bucket[0] = min(self.burst, bucket[0] + copies)

    def tokens(self, user_id: int) -> float:
        """The copies ``user_id`` may store now."""
        bucket = self._buckets.get(user_id)
        if bucket is None:
            return self.burst
        return min(self.burst, bucket[0] + (self._clock.seconds() - bucket[1]) * self.rate)

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        full = [u for u, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for user_id in full:
            del self._buckets[user_id]
        self._prune_at = max(1024, 2 * len(self._buckets))


def decide(request: SendRequest, facts: BatchFacts) -> tuple[int, list[int]]:
    """The delivery rules of one send, judged on facts read in its transaction.

    Returns:
        ``(0, recipients)`` with the ascending user ids that get a copy (the sender
        included), or a non-zero MessageSendACK code and no recipients.
    """
    if request.recipients:
        # a business push (goim.logic.push): its recipients were chosen by the job
        return SEND_OK, sorted(request.recipients)
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
    #: the copies charged at admission (corrected once the batch stored it)
    cost: int = 1
    charged: bool = False


@dataclass(frozen=True, slots=True)
class _Written:
    """One send of a written batch: its ACK and the copies it stored."""

    result: SendResult
    stored: StoredCopies | None = None


class MessageService:
    """Sends, syncs and acks of stored messages.

    Args:
        max_batch: the most sends one write transaction stores.
        max_batch_copies: the most stored copies one write transaction holds (a
            single send larger than that is written alone).
        send_rate: copies per second a user may store on average (their send budget).
        send_burst: copies a user may store at once (the budget's bucket size).
    """

    def __init__(
        self,
        store: MessageStore,
        accounts: AccountStore,
        ids: SegmentAllocator,
        delivery: DeliveryPort,
        clock: Clock,
        *,
        max_content: int = DEFAULT_MAX_CONTENT,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_copies: int = DEFAULT_MAX_BATCH_COPIES,
        send_rate: float = DEFAULT_SEND_RATE,
        send_burst: float = DEFAULT_SEND_BURST,
        metrics: Metrics | None = None,
    ) -> None:
        if max_batch <= 0 or max_batch_copies <= 0:
            raise ValueError("max_batch and max_batch_copies must be positive")
        self.store = store
        self.accounts = accounts
        self.ids = ids
        self.delivery = delivery
        self._clock = clock
        self.max_content = max_content
        self.max_batch = max_batch
        self.max_batch_copies = max_batch_copies
        self.budget = SendBudget(send_rate, send_burst, clock)
        self.metrics = metrics
        # (device_id, epoch, send_sequence) -> the queued or in-flight send: a retry
        # that arrives before the first attempt finished waits for its result.
        self._pending: dict[tuple[int, int, int], _Queued] = {}
        # user -> sends waiting, in order, behind one whose group size is being read
        self._admitting: dict[int, deque[_Queued]] = {}
        # group_id -> (member count, when read), least recently used first
        self._group_sizes: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._size_reads: dict[int, list[Deferred[int]]] = {}
        batch_clock = clock if isinstance(clock, ReactorClock) else ReactorClock(clock)
        # the writer: one FIFO per sender; senders that were idle are served first
        # (in arrival order), busy ones round-robin; ACKs before delivery. An idle
        # writer starts at the end of the reactor turn (delay 0), so that the sends
        # read in one turn (a poll's worth of frames, a connect node's batch) share
        # a transaction instead of the first going alone: a transaction's fixed cost
        # (its commit above all) is most of the work at moderate load
        self._writer: Batcher[None, _Queued, _Written] = Batcher(
            "message writer",
            batch_clock,
            self._write_batch,
            queue=lambda: FairQueue(
                lane=lambda q: q.request.user_id,
                cost=lambda q: q.cost,
                max_batch=self.max_batch,
                max_cost=self.max_batch_copies,
            ),
            delay=0,
            after=self._deliver,
        )
        self._idle: list[Deferred[None]] = []
        #: told of every batch's stored copies after delivery (the offline push
        #: webhook, goim.logic.webhook); must return at once
        self.offline_hook: Callable[[Sequence[StoredMessage]], None] | None = None
        # user -> (when their refusals were last logged, refusals since): a flood
        # logs a line per user every LIMITED_LOG_EVERY seconds, not one per send
        self._limited: dict[int, list[float]] = {}
        # lists of (device, seq) acks, one per caller; each batch writes the highest
        # seq per device of at most MAX_ACK_BATCH acks (a longer list goes alone).
        # Like the message writer, an idle ack writer starts at the end of the turn,
        # so that the acks of the connections read in one poll share a transaction
        self._acks: Batcher[None, Sequence[tuple[int, int]], None] = Batcher(
            "ack writer",
            batch_clock,
            self._write_acks,
            queue=lambda: FifoQueue(cost=len, max_cost=MAX_ACK_BATCH),
            delay=0,
        )

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
        still queued or being written. A user send over its sender's budget is
        answered with code 5 and ``retry_after_ms`` and stores nothing. The sends
        of one sender are stored in the order this method is called.
        """
        return await self.submit(request, sender_type=sender_type)

    def submit(self, request: SendRequest, *, sender_type: int = SENDER_USER) -> "Deferred[SendResult]":
        """:meth:`send` without a coroutine: the send is queued when this returns,
        and the Deferred fires with its ACK (for callers that queue many sends at
        once, such as a logic node taking a connect node's batch)."""
        code = self.validate(request)
        if code != SEND_OK:
            if self.metrics is not None:
                self.metrics.sends.labels(str(code)).inc()
            return succeed(SendResult(code))
        waiter: Deferred[SendResult] = Deferred()
        key = (request.device_id, request.epoch, request.send_sequence)
        queued = self._pending.get(key)
        if queued is not None:
            queued.waiters.append(waiter)
        else:
            queued = _Queued(request, sender_type, [waiter])
            self._pending[key] = queued
            self._admit(queued)
        return waiter

    # --- admission --------------------------------------------------------------------

    def _known_cost(self, request: SendRequest) -> int | None:
        """The copies a send will store, if known without reading the database."""
        if request.recipients:
            return len(request.recipients)
        if request.receiver_type == RECEIVER_USER:
            return 1 if request.receiver_id == request.user_id else 2
        cached = self._group_sizes.get(request.receiver_id)
        if cached is None or self._clock.seconds() - cached[1] > GROUP_SIZE_TTL:
            return None
        self._group_sizes.move_to_end(request.receiver_id)
        return max(1, cached[0])

    def _admit(self, queued: _Queued) -> None:
        user_id = queued.request.user_id
        line = self._admitting.get(user_id)
        if line is not None:
            line.append(queued)  # behind the user's earlier sends: order holds
            return
        cost = self._known_cost(queued.request)
        if cost is not None:
            self._judge(queued, cost)
            return
        self._admitting[user_id] = deque([queued])
        run_in_background(self._admit_line(user_id), "send admission")

    async def _admit_line(self, user_id: int) -> None:
        line = self._admitting[user_id]
        try:
            while line:
                queued = line[0]
                cost = self._known_cost(queued.request)
                if cost is None:
                    try:
                        cost = max(1, await self._group_size(queued.request.receiver_id))
                    except Exception:
                        log.failure("reading the size of group {group_id} failed; answering code 1",
                                    group_id=queued.request.receiver_id)
                        line.popleft()
                        self._finish(queued, SendResult(SEND_INTERNAL_ERROR))
                        continue
                line.popleft()
                self._judge(queued, cost)
        finally:
            del self._admitting[user_id]
            self._notify_idle()

    async def _group_size(self, group_id: int) -> int:
        """The group's member count, one database read however many sends ask at once."""
        waiter: Deferred[int] = Deferred()
        readers = self._size_reads.get(group_id)
        if readers is not None:
            readers.append(waiter)
            return await waiter
        self._size_reads[group_id] = [waiter]
        try:
            sizes = await self.store.group_sizes([group_id])
        except Exception as e:
            for d in self._size_reads.pop(group_id):
                d.errback(e)
        else:
            size = sizes.get(group_id, 0)
            self._remember_group_size(group_id, size)
            for d in self._size_reads.pop(group_id):
                d.callback(size)
        return await waiter

    def _remember_group_size(self, group_id: int, size: int) -> None:
        self._group_sizes[group_id] = (size, self._clock.seconds())
        self._group_sizes.move_to_end(group_id)
        while len(self._group_sizes) > GROUP_SIZE_CACHE:
            self._group_sizes.popitem(last=False)

    def _judge(self, queued: _Queued, cost: int) -> None:
        """Charge the sender's budget and queue the send, or answer code 5."""
        request = queued.request
        queued.cost = cost
        if queued.sender_type == SENDER_USER:
            wait = self.budget.take(request.user_id, cost)
            if wait > 0:
                retry_after_ms = max(1, math.ceil(wait * 1000))
                self._log_refusal(request.user_id, cost, retry_after_ms)
                self._finish(queued, SendResult(SEND_RATE_LIMITED, retry_after_ms=retry_after_ms))
                return
            queued.charged = True
        self._enqueue(queued)

    def _log_refusal(self, user_id: int, cost: int, retry_after_ms: int) -> None:
        now = self._clock.seconds()
        entry = self._limited.get(user_id)
        if entry is not None and now - entry[0] < LIMITED_LOG_EVERY:
            entry[1] += 1
            return
        if len(self._limited) >= 10_000:
            self._limited.clear()
        log.warn(
            "user {user_id} is over the send budget ({cost} copies asked, {tokens:.0f} left): "
            "answering code 5, retry after {retry_after_ms} ms ({earlier} more refused since the last line)",
            user_id=user_id,
            cost=cost,
            tokens=self.budget.tokens(user_id),
            retry_after_ms=retry_after_ms,
            earlier=int(entry[1]) if entry is not None else 0,
        )
        self._limited[user_id] = [now, 0]

    # --- the writer -------------------------------------------------------------------

    def _enqueue(self, queued: _Queued) -> None:
        self._writer.add(queued, key=None).addCallbacks(
            lambda written: self._finish(queued, written.result),
            lambda failure: self._failed(queued, failure),
        )

    def _failed(self, queued: _Queued, failure: Any) -> None:
        # _write_batch answers its own errors: this is a bug, not a database fault
        log.failure(
            "writing send {send_sequence} of device {device_id} failed; answering code 1",
            failure,
            send_sequence=queued.request.send_sequence,
            device_id=queued.request.device_id,
        )
        self._settle(queued, 0, floor=0)
        self._finish(queued, SendResult(SEND_INTERNAL_ERROR))

    @property
    def queued(self) -> int:
        """Sends admitted and waiting for a batch."""
        return self._writer.queued()

    async def _write_batch(self, _: None, batch: list[_Queued]) -> list["_Written"]:
        """Store one batch: each send's ACK and stored copies, in order (the Batcher
        answers the sends, then ``_deliver`` hands the copies to delivery)."""
        if self.metrics is not None:
            self.metrics.send_batch.observe(len(batch))
        try:
            ids = await self.ids.take(len(batch))
            sends = [
                PendingSend(q.request, q.request.message_id or message_id, q.sender_type)
                for q, message_id in zip(batch, ids)
            ]
            outcomes = await self.store.store_sends(sends, decide, now_ms(self._clock))
        except Exception:
            log.failure("storing a batch of {count} sends failed; answering code 1", count=len(batch))
            for q in batch:
                self._settle(q, 0, floor=0)
            return [_Written(SendResult(SEND_INTERNAL_ERROR))] * len(batch)
        missing = await self._unknown_receivers(batch, [o.code for o in outcomes])
        written: list[_Written] = []
        for q, send, outcome in zip(batch, sends, outcomes):
            if outcome.code == SEND_NOT_FRIEND and q.request.receiver_id in missing:
                outcome = SendOutcome(SEND_NO_SUCH_USER)
            copies = len(outcome.stored) if outcome.stored is not None else 0
            if copies:
                if q.request.receiver_type == RECEIVER_GROUP and not q.request.recipients:
                    self._remember_group_size(q.request.receiver_id, copies)
                if debug_enabled():
                    log.debug(
                        "stored message {message_id} from device {device_id} as {copies} copies",
                        message_id=send.message_id,
                        device_id=q.request.device_id,
                        copies=copies,
                    )
            self._settle(q, copies)
            written.append(_Written(SendResult(outcome.code, outcome.message_id, outcome.seq), outcome.stored))
        return written

    def _deliver(self, _: None, batch: list[_Queued], written: Sequence["_Written"]) -> None:
        """Hand the batch's stored copies to delivery, once its ACKs are out."""
        stored = [w.stored for w in written if w.stored is not None]
        if stored:
            count = sum(len(copies) for copies in stored)
            if self.metrics is not None:
                self.metrics.deliveries.inc(count)
            if debug_enabled():
                for copies in stored:
                    # a logic node publishes to the connect nodes' Redis channels here
                    log.debug(
                        "delivering message {message_id}: {copies} copies",
                        message_id=copies.message.message_id,
                        copies=len(copies),
                    )
            try:
                self.delivery.deliver(stored)
            except Exception:
                log.failure("delivery of {count} stored copies failed", count=count)
            if self.offline_hook is not None:
                try:
                    self.offline_hook(flatten(stored))
                except Exception:
                    log.failure("the offline hook failed for {count} stored copies", count=count)

    def _settle(self, queued: _Queued, copies: int, *, floor: int = 1) -> None:
        """Correct the sender's budget from the copies charged to the copies stored.

        Every send costs at least ``floor`` copies (one), so that refused sends (not a
        friend, not in the group, duplicates), which take their share of a batch too,
        are not free; a batch that failed (the server's fault) is refunded in full.
        """
        if queued.charged:
            queued.charged = False
            self.budget.adjust(queued.request.user_id, queued.cost - max(floor, copies))

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

    def _notify_idle(self) -> None:
        if self._admitting:
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    async def drain(self) -> None:
        """Wait until every send accepted so far is written (for shutdown)."""
        while self._admitting or not self._writer.idle:
            if self._admitting:
                d: Deferred[None] = Deferred()
                self._idle.append(d)
                await d
            await self._writer.drain()

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
        await self.ack_many(((device_id, seq),))

    def ack_many(self, acks: Sequence[tuple[int, int]]) -> "Deferred[None]":
        """:meth:`ack` for several ``(device_id, seq)`` at once, without a coroutine:
        queued when this returns, one Deferred for all of them (a logic node takes a
        connect node's acks this way: a group member acks every push)."""
        return self._acks.add(acks, key=None)

    async def _write_acks(self, _: None, batch: list[Sequence[tuple[int, int]]]) -> list[None]:
        await self.accounts.ack_many([ack for acks in batch for ack in acks])
        return shared(None, batch)
