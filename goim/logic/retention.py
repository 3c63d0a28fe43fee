"""Retention: delete stored copies and dedupe records older than configured bounds.

A periodic job (every ``interval`` seconds, first one ``interval`` after start) that
works in small transactions:

* with ``retention_days`` > 0, walks every user with messages and deletes their
  copies stored before now minus ``retention_days``, oldest first, at most
  ``batch`` per transaction, never past a younger copy (no holes in a history); the
  highest seq deleted is kept per user, so a sync that asks for older history is
  told it was trimmed and starts at the oldest copy kept;
* deletes send dedupe records (``sends``) older than ``dedupe_days`` (default 30:
  a client retries a send within seconds or, after a reconnect, minutes; no
  honest retry comes a month later), ``batch`` per transaction.

Every deletion is idempotent and the trim marks only grow, so every logic node of
a distributed deployment may run it at once: they only repeat each other's work.
"""

from prometheus_client import Counter, Gauge
from twisted.internet.defer import CancelledError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from goim.clock import Clock
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.storage.push import PushStore
from goim.util import run_in_background

log = Logger(observer=goim_observer)

DAY_MS = 86_400_000
DEFAULT_DEDUPE_DAYS = 30.0
DEFAULT_INTERVAL = 3600.0
DEFAULT_BATCH = 500
#: users read per page of the walk
USER_PAGE = 1000


class RetentionMetrics:
    """The retention families (``goim_retention_*``)."""

    def __init__(self, metrics: Metrics | None) -> None:
        registry = metrics.registry if metrics is not None else None
        self.deleted = Counter(
            "goim_retention_deleted_total", "Rows retention deleted (messages, sends)", ["table"], registry=registry
        )
        self.runs = Counter("goim_retention_runs_total", "Retention runs by result (ok, error)", ["result"], registry=registry)
        self.last_run = Gauge(
            "goim_retention_last_run_timestamp_seconds", "When the last retention run finished", registry=registry
        )


class Retention:
    """The periodic deletion job.

    Args:
        store: the deletions.
        clock: time.
        retention_days: age in days past which stored copies are deleted (0: kept forever).
        dedupe_days: age in days past which send dedupe records are deleted.
        interval: seconds between runs.
        batch: rows per transaction.
    """

    def __init__(
        self,
        store: PushStore,
        clock: Clock,
        *,
        retention_days: float = 0.0,
        dedupe_days: float = DEFAULT_DEDUPE_DAYS,
        interval: float = DEFAULT_INTERVAL,
        batch: int = DEFAULT_BATCH,
        metrics: Metrics | None = None,
    ) -> None:
        if retention_days < 0 or dedupe_days <= 0 or interval <= 0 or batch <= 0:
            raise ValueError("retention needs retention_days >= 0 and positive dedupe_days, interval and batch")
        self.store = store
        self._clock = clock
        self.retention_days = retention_days
        self.dedupe_days = dedupe_days
        self.interval = interval
        self.batch = batch
        self.metrics = RetentionMetrics(metrics)
        self._loop: LoopingCall | None = None
        self._running = False

    def start(self) -> None:
        """Run every ``interval`` seconds from now on."""
        self._loop = self._clock.looping_call(self._run_now, self.interval)

    def stop(self) -> None:
        """Stop scheduling runs (a run in progress ends at its next transaction)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _run_now(self) -> None:
        if not self._running:
            run_in_background(self.run(), "retention run")

    async def run(self) -> tuple[int, int]:
        """One pass: ``(copies deleted, dedupe records deleted)``."""
        self._running = True
        try:
            copies = await self._trim_messages() if self.retention_days > 0 else 0
            sends = await self._trim_sends()
        except CancelledError:
            raise
        except Exception:
            self.metrics.runs.labels("error").inc()
            log.failure("retention run failed (retried at the next run)")
            return 0, 0
        finally:
            self._running = False
        self.metrics.runs.labels("ok").inc()
        self.metrics.last_run.set(self._clock.seconds())
        if copies or sends:
            log.info("retention deleted {copies} stored copies and {sends} dedupe records", copies=copies, sends=sends)
        return copies, sends

    async def _trim_messages(self) -> int:
        before = self._clock.time_msec() - int(self.retention_days * DAY_MS)
        total = 0
        after = 0
        while True:
            users = await self.store.users_after(after, USER_PAGE)
            for user_id in users:
                while True:
                    deleted = await self.store.trim_user(user_id, before, self.batch)
                    total += deleted
                    self.metrics.deleted.labels("messages").inc(deleted)
                    if deleted < self.batch:
                        break
            if len(users) < USER_PAGE:
                break
            after = users[-1]
        return total

    async def _trim_sends(self) -> int:
        before = self._clock.time_msec() - int(self.dedupe_days * DAY_MS)
        total = 0
        while True:
            deleted = await self.store.delete_old_sends(before, self.batch)
            total += deleted
            self.metrics.deleted.labels("sends").inc(deleted)
            if deleted < self.batch:
                return total
