"""The offline push webhook: tell a deployment's push gateway about messages for
users with no online device.

``notify`` is called by the message writer with every batch's stored copies, after
they were handed to delivery; it only appends to a bounded queue (on overflow the
oldest events are dropped and counted), so the send path never waits for it. One
background loop takes up to ``max_batch`` copies at a time, asks presence which of
their users have an online device (standalone: the connection table; distributed:
Redis presence), and POSTs the others as one JSON body::

    {"events": [{"event_id": "MESSAGE_ID-USER_ID", "user_id": ..., "message_id": ...,
                 "seq": ..., "sender_type": ..., "sender_id": ..., "receiver_type": ...,
                 "receiver_id": ..., "type": ..., "content": ..., "send_time": ...}]}

signed with HMAC-SHA256 over the exact body bytes, hex, in the header
``Goim-Signature: sha256=HEX``. A non-2xx answer or a network error is retried with
exponential back-off (jittered) until the receiver accepts it: delivery is
at-least-once, and a receiver dedupes by ``event_id``. The sender's own copy of a
user's message is never an event (the user just sent it).
"""

import hashlib
import hmac
import json
from collections import deque
from typing import Any, Awaitable, Callable, Sequence, cast

from prometheus_client import Counter, Gauge
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from goim.clock import Clock
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.types import SENDER_USER, StoredMessage
from goim.util import run_in_background

log = Logger(observer=goim_observer)

#: the header carrying the body's signature
SIGNATURE_HEADER = "Goim-Signature"
DEFAULT_MAX_QUEUE = 10_000
DEFAULT_MAX_BATCH = 100
DEFAULT_TIMEOUT = 10.0
DEFAULT_BACKOFF = 1.0
DEFAULT_BACKOFF_MAX = 60.0

#: which of these users have an online device
OnlineCheck = Callable[[Sequence[int]], Awaitable[set[int]]]
#: ``treq.post``'s shape: ``post(url, data=..., headers=..., timeout=...)`` → a response
#: with ``code`` and ``content()``
Post = Callable[..., "Deferred[Any]"]


def sign(secret: bytes, body: bytes) -> str:
    """The ``Goim-Signature`` header value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` (for receivers; constant time)."""
    return hmac.compare_digest(sign(secret, body).encode(), header.encode())


def event(m: StoredMessage) -> dict[str, Any]:
    """The webhook event of one stored copy."""
    return {
        "event_id": f"{m.message_id}-{m.user_id}",
        "user_id": m.user_id,
        "message_id": m.message_id,
        "seq": m.seq,
        "sender_type": m.sender_type,
        "sender_id": m.sender_id,
        "receiver_type": m.receiver_type,
        "receiver_id": m.receiver_id,
        "type": m.type,
        "content": m.content,
        "send_time": m.send_time,
    }


class WebhookMetrics:
    """The webhook families (``goim_webhook_*``)."""

    def __init__(self, metrics: Metrics | None) -> None:
        registry = metrics.registry if metrics is not None else None
        self.queued = Gauge("goim_webhook_queue", "Stored copies waiting for the offline webhook", registry=registry)
        self.dropped = Counter(
            "goim_webhook_dropped_total", "Offline webhook events dropped because the queue was full", registry=registry
        )
        self.sent = Counter("goim_webhook_events_total", "Offline webhook events the receiver accepted", registry=registry)
        self.posts = Counter(
            "goim_webhook_posts_total", "Offline webhook POSTs by result (ok, error)", ["result"], registry=registry
        )


class OfflineWebhook:
    """The queue and the poster of offline push events.

    Args:
        url: where events are POSTed.
        secret: the HMAC key.
        clock: time (back-off).
        online: which users have an online device.
        post: how to POST (default: ``treq.post`` over ``reactor``).
        reactor: for the default ``post``.
    """

    def __init__(
        self,
        url: str,
        secret: bytes,
        clock: Clock,
        online: OnlineCheck,
        *,
        post: Post | None = None,
        reactor: Any = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_batch: int = DEFAULT_MAX_BATCH,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: float = DEFAULT_BACKOFF,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        metrics: Metrics | None = None,
    ) -> None:
        if max_queue <= 0 or max_batch <= 0:
            raise ValueError("max_queue and max_batch must be positive")
        self.url = url
        self._secret = secret
        self._clock = clock
        self._online = online
        self._post = post if post is not None else _treq_post(reactor)
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.timeout = timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.metrics = WebhookMetrics(metrics)
        self._queue: deque[StoredMessage] = deque()
        self._running: Deferred[None] | None = None
        self._stopping = False
        self._sleep: Deferred[None] | None = None
        self._idle: list[Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._queue)

    def notify(self, stored: Sequence[StoredMessage]) -> None:
        """Queue the copies of a written batch (returns at once)."""
        if self._stopping:
            return
        for m in stored:
            if m.sender_type == SENDER_USER and m.user_id == m.sender_id:
                continue
            self._queue.append(m)
        over = len(self._queue) - self.max_queue
        if over > 0:
            for _ in range(over):
                self._queue.popleft()
            self.metrics.dropped.inc(over)
            log.warn("offline webhook queue full: dropped the {count} oldest events", count=over)
        self.metrics.queued.set(len(self._queue))
        if self._queue and self._running is None:
            self._running = run_in_background(self._loop(), "offline webhook")

    async def _loop(self) -> None:
        try:
            while self._queue and not self._stopping:
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                self.metrics.queued.set(len(self._queue))
                users = sorted({m.user_id for m in batch})
                try:
                    online = await self._online(users)
                except CancelledError:
                    raise
                except Exception:
                    # at-least-once: when in doubt, tell the gateway
                    log.failure("offline webhook: the presence lookup failed; treating {count} users as offline", count=len(users))
                    online = set()
                events = [event(m) for m in batch if m.user_id not in online]
                if events:
                    await self._send(events)
        finally:
            self._running = None
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _send(self, events: list[dict[str, Any]]) -> None:
        body = json.dumps({"events": events}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": ["application/json"],
            SIGNATURE_HEADER: [sign(self._secret, body)],
        }
        delay = self.backoff
        while True:
            try:
                response = await self._post(self.url, data=body, headers=headers, timeout=self.timeout)
                await response.content()
                if 200 <= response.code < 300:
                    self.metrics.posts.labels("ok").inc()
                    self.metrics.sent.inc(len(events))
                    return
                problem = f"HTTP {response.code}"
            except CancelledError:
                raise
            except Exception as e:
                problem = repr(e)
            self.metrics.posts.labels("error").inc()
            if self._stopping:
                log.warn("offline webhook: stopping with {count} events not accepted ({problem})", count=len(events), problem=problem)
                return
            log.warn(
                "offline webhook: POST of {count} events to {url} failed ({problem}); retrying in {delay:.1f} s",
                count=len(events),
                url=self.url,
                problem=problem,
                delay=delay,
            )
            self._sleep = self._clock.sleep(self._clock.jitter(delay))
            try:
                await self._sleep
            except CancelledError:
                return
            finally:
                self._sleep = None
            delay = min(delay * 2, self.backoff_max)

    async def idle(self) -> None:
        """Wait until the queue is empty and nothing is being posted."""
        if self._running is not None:
            d: Deferred[None] = Deferred()
            self._idle.append(d)
            await d

    async def stop(self) -> None:
        """Stop retrying and posting (queued events are lost; the log says how many)."""
        self._stopping = True
        if self._queue:
            log.warn("offline webhook: stopping with {count} events queued", count=len(self._queue))
        if self._sleep is not None:
            self._sleep.cancel()
        await self.idle()


def _treq_post(reactor: Any) -> Post:
    """``post`` over a treq client of ``reactor`` (default: the global reactor)."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent
    from twisted.web.iweb import IAgent

    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    client = HTTPClient(cast(IAgent, Agent(reactor)))
    return cast(Post, client.post)
