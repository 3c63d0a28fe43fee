"""Business push (sender_type 2): a trusted backend's message to users, a group or everyone.

A push is a job (``goim.storage.push``): created once per idempotency key, then run
chunk by chunk: each chunk of up to ``chunk_size`` recipients is one send through
the message writer (``MessageService.send`` with ``SendRequest.recipients``), so
pushes share the writer's bounded batches and fairness with user sends, and get
stored, synced, delivered and ACKed like any other message. Every chunk carries
the dedupe key ``(-job id, 0, chunk number)``: a job resumed after a crash stores no
chunk twice. A job is run by the node holding its lease; a node that dies leaves
its lease to run out, and another node (or the same one after a restart) picks
the job up at its next scan.
"""

import hashlib
import json
from typing import Any, Sequence

from prometheus_client import Counter, Gauge
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from goim.clock import Clock
from goim.logic.errors import (
    GROUP_NOT_FOUND,
    IDEMPOTENCY_KEY_REUSED,
    PUSH_JOB_NOT_FOUND,
    USER_NOT_FOUND,
    GoimError,
    bad_request,
)
from goim.logic.ids import SegmentAllocator
from goim.logic.messages import MessageService
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.storage.push import (
    TARGET_GROUP,
    TARGET_USER,
    TARGET_USERS,
    TARGETS,
    NewPushJob,
    PushJob,
    PushStore,
)
from goim.types import RECEIVER_GROUP, RECEIVER_USER, SEND_OK, SENDER_SYSTEM, SendRequest
from goim.util import run_in_background

log = Logger(observer=goim_observer)

#: recipients per chunk (one send, one write transaction's share)
DEFAULT_CHUNK = 500
#: the most user ids one ``users`` push may name
MAX_TARGET_USERS = 10_000
#: the largest message type (MessageItem.type is an int32)
MAX_TYPE = 2**31 - 1
#: the longest idempotency key
MAX_KEY = 128
#: seconds a node holds a job between two chunks before others may take it over
LEASE_SECONDS = 60.0
#: seconds between two scans for jobs whose node stopped
SCAN_SECONDS = 30.0
#: seconds to wait before retrying a chunk that failed
RETRY_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


class PushMetrics:
    """The business push families (``goim_push_*``)."""

    def __init__(self, metrics: Metrics | None) -> None:
        registry = metrics.registry if metrics is not None else None
        self.jobs = Counter(
            "goim_push_jobs_total", "Business push requests by outcome (created, deduped)", ["outcome"], registry=registry
        )
        self.recipients = Counter(
            "goim_push_recipients_total", "Recipients a business push stored a copy for", registry=registry
        )
        self.chunks = Counter("goim_push_chunks_total", "Business push chunks written", registry=registry)
        self.failures = Counter("goim_push_chunk_failures_total", "Business push chunks that failed and are retried", registry=registry)
        self.running = Gauge("goim_push_jobs_running", "Business push jobs this node is running", registry=registry)


def fingerprint(target: str, target_ids: Sequence[int], group_id: int, message_type: int, content: str) -> str:
    """A digest of what a push asks for: a retry must ask for the same."""
    body = json.dumps([target, sorted(set(target_ids)), group_id, message_type, content], ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class PushService:
    """Creates push jobs and runs them.

    Args:
        store: the job rows.
        messages: the writer every chunk goes through.
        ids: the message id allocator (one id per job, shared by all its copies).
        clock: time.
        node_id: this node's name, the lease owner: stable across restarts (a
            restarted node resumes its jobs at once) and unique among logic nodes.
        chunk_size: recipients per chunk.
    """

    def __init__(
        self,
        store: PushStore,
        messages: MessageService,
        ids: SegmentAllocator,
        clock: Clock,
        *,
        node_id: str,
        chunk_size: int = DEFAULT_CHUNK,
        lease_seconds: float = LEASE_SECONDS,
        scan_seconds: float = SCAN_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.store = store
        self.messages = messages
        self.ids = ids
        self._clock = clock
        self.owner = node_id
        self.chunk_size = chunk_size
        self.lease_ms = int(lease_seconds * 1000)
        self.scan_seconds = scan_seconds
        self.metrics = PushMetrics(metrics)
        self._running: dict[int, Any] = {}
        self._waiters: dict[int, list[Deferred[None]]] = {}
        self._loop: LoopingCall | None = None
        self._stopping = False

    # --- requests -----------------------------------------------------------------------

    async def create(
        self,
        *,
        idempotency_key: str,
        target: str,
        user_ids: Sequence[int] = (),
        group_id: int = 0,
        message_type: int = 0,
        content: str,
    ) -> tuple[PushJob, bool]:
        """Create a push job and start it, or return the job of an earlier request.

        Returns:
            ``(job, created)``.

        Raises:
            GoimError: bad input (2), unknown user (1004) or group (1005), or the key
                was used before for a different push (1104).
        """
        if not idempotency_key or len(idempotency_key) > MAX_KEY:
            raise bad_request(f"idempotency_key must have 1 to {MAX_KEY} characters")
        if target not in TARGETS:
            raise bad_request(f"target must be one of {', '.join(TARGETS)}")
        if not 0 <= message_type <= MAX_TYPE:
            raise bad_request(f"type must be 0 to {MAX_TYPE}")
        if not content or len(content.encode("utf-8")) > self.messages.max_content:
            raise bad_request(f"content must have 1 to {self.messages.max_content} UTF-8 bytes")
        ids: tuple[int, ...] = ()
        receiver_type, receiver_id = RECEIVER_USER, 0
        if target == TARGET_USER:
            if len(user_ids) != 1:
                raise bad_request("target user needs exactly one id in user_ids")
        if target in (TARGET_USER, TARGET_USERS):
            if not user_ids or len(user_ids) > MAX_TARGET_USERS or any(u <= 0 for u in user_ids):
                raise bad_request(f"user_ids must hold 1 to {MAX_TARGET_USERS} positive user ids")
            ids = tuple(sorted(set(user_ids)))
            if target == TARGET_USER:
                receiver_id = ids[0]
        elif user_ids:
            raise bad_request(f"target {target} takes no user_ids")
        if target == TARGET_GROUP:
            if group_id <= 0:
                raise bad_request("target group needs a positive group_id")
            receiver_type, receiver_id = RECEIVER_GROUP, group_id
        elif group_id:
            raise bad_request(f"target {target} takes no group_id")

        print_ = fingerprint(target, ids, group_id, message_type, content)
        existing = await self._existing(idempotency_key, print_)
        if existing is not None:
            return existing, False
        if target == TARGET_USER and not await self.store.users_exist(ids):
            raise GoimError(USER_NOT_FOUND, f"user {ids[0]} not found")
        if target == TARGET_GROUP and not await self.store.group_exists(group_id):
            raise GoimError(GROUP_NOT_FOUND, f"group {group_id} not found")
        (message_id,) = await self.ids.take(1)
        job, created = await self.store.create_job(
            NewPushJob(idempotency_key, print_, target, ids, receiver_type, receiver_id, message_type, content),
            message_id,
            self._clock.time_msec(),
        )
        if not created:
            self._check(job, print_)
            self.metrics.jobs.labels("deduped").inc()
            return job, False
        self.metrics.jobs.labels("created").inc()
        log.info(
            "push job {job_id} ({key}) created: target {target}, message {message_id}",
            job_id=job.id,
            key=idempotency_key,
            target=target,
            message_id=message_id,
        )
        self._start(job.id)
        return job, True

    async def _existing(self, key: str, print_: str) -> PushJob | None:
        # create_job finds it too; asked first so that a retry costs no message id
        job = await self.store.find_job(key)
        if job is None:
            return None
        self._check(job, print_)
        self.metrics.jobs.labels("deduped").inc()
        return job

    def _check(self, job: PushJob, print_: str) -> None:
        if job.fingerprint != print_:
            raise GoimError(
                IDEMPOTENCY_KEY_REUSED,
                f"idempotency_key {job.idempotency_key!r} was used for a different push (job {job.id})",
            )

    async def get(self, job_id: int) -> PushJob:
        """The job with this id.

        Raises:
            GoimError: no such job (1103).
        """
        job = await self.store.get_job(job_id)
        if job is None:
            raise GoimError(PUSH_JOB_NOT_FOUND, f"push job {job_id} not found")
        return job

    # --- running jobs -------------------------------------------------------------------

    def start(self) -> None:
        """Resume unfinished jobs now and scan for orphaned ones every ``scan_seconds``."""
        self._stopping = False
        self._loop = self._clock.looping_call(self._scan_now, self.scan_seconds, now=True)

    def stop(self) -> None:
        """Stop scanning and starting chunks (a chunk being written finishes)."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _scan_now(self) -> None:
        run_in_background(self.scan(), "push job scan")

    async def scan(self) -> None:
        """Start every running job that is this node's or whose lease ran out."""
        try:
            ids = await self.store.claimable(self._clock.time_msec(), self.owner)
        except CancelledError:
            raise
        except Exception:
            log.failure("scanning for push jobs to resume failed (retried at the next scan)")
            return
        for job_id in ids:
            self._start(job_id)

    @property
    def running(self) -> int:
        """Jobs this node is running."""
        return len(self._running)

    def _start(self, job_id: int) -> None:
        if job_id in self._running or self._stopping:
            return
        self._running[job_id] = run_in_background(self._run(job_id), f"push job {job_id}")
        self.metrics.running.set(len(self._running))

    async def wait(self, job_id: int) -> None:
        """Wait until this node stops running the job (done, lost, or never started)."""
        if job_id in self._running:
            waiter: Deferred[None] = Deferred()
            self._waiters.setdefault(job_id, []).append(waiter)
            await waiter

    async def _run(self, job_id: int) -> None:
        try:
            await self._run_job(job_id)
        finally:
            del self._running[job_id]
            self.metrics.running.set(len(self._running))
            for waiter in self._waiters.pop(job_id, []):
                waiter.callback(None)

    async def _run_job(self, job_id: int) -> None:
        job = await self.store.claim(job_id, self.owner, self._clock.time_msec(), self.lease_ms)
        if job is None:
            return  # done, or another node holds it
        if job.next_after or job.chunks:
            log.info("push job {job_id} resumes after user {after} (chunk {chunk})", job_id=job_id, after=job.next_after, chunk=job.chunks)
        delay = RETRY_SECONDS
        while not self._stopping:
            try:
                job, more = await self._chunk(job)
            except CancelledError:
                raise
            except _LeaseLost:
                log.info("push job {job_id}: another node took it over", job_id=job_id)
                return
            except Exception:
                self.metrics.failures.inc()
                log.failure("push job {job_id}: chunk {chunk} failed; retrying in {delay} s", job_id=job_id, chunk=job.chunks + 1, delay=delay)
                await self._clock.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            delay = RETRY_SECONDS
            if not more:
                log.info("push job {job_id} done: {recipients} recipients in {chunks} chunks", job_id=job_id, recipients=job.recipients, chunks=job.chunks)
                return

    async def _chunk(self, job: PushJob) -> tuple[PushJob, bool]:
        """Store the job's next chunk and move its cursor; ``(job after, more to do)``."""
        users, last, done = await self.store.recipients(job, self.chunk_size)
        chunk = job.chunks + 1
        now = self._clock.time_msec()
        if users:
            request = SendRequest(
                device_id=-job.id,
                user_id=0,
                receiver_type=job.receiver_type,
                receiver_id=job.receiver_id or users[0],
                type=job.type,
                content=job.content,
                send_sequence=chunk,
                send_time=job.created_at,
                recipients=tuple(users),
                message_id=job.message_id,
            )
            result = await self.messages.send(request, sender_type=SENDER_SYSTEM)
            if result.code != SEND_OK:
                raise RuntimeError(f"the writer answered code {result.code}")
            self.metrics.chunks.inc()
            self.metrics.recipients.inc(len(users))
        if not await self.store.advance(
            job.id, self.owner, chunk=chunk, last_user=last, recipients=len(users), done=done, now_ms=now, lease_ms=self.lease_ms
        ):
            raise _LeaseLost()
        updated = await self.store.get_job(job.id)
        assert updated is not None
        return updated, not done


class _LeaseLost(Exception):
    """Another node holds the job now."""
