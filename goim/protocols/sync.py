"""The sync stream of one client connection and its flow-control producer.

A sync writes a user's stored messages after a seq as pages of Message frames;
:class:`SyncProducer` is registered on the transport so that a client that reads
slowly makes the stream wait before fetching its next page instead of making the
server buffer a whole history. :class:`SyncStream` runs one sync at a time per
connection and coalesces requests that arrive while one runs.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Protocol

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer  # type: ignore[import-untyped]

from goim.features import Feature, wants
from goim.ports import LogicPort
from goim.protocols.changes import for_connection
from goim.protocols.codec import pack_sync


#: ``Message.trimmed = true`` (field 4, varint): appended to a frame value, where
#: protobuf takes fields in any order
TRIMMED_FIELD = b"\x20\x01"


@implementer(IPushProducer)
class SyncProducer:
    """The push producer a connection registers on its transport for sync streaming.

    The transport pauses it when its write buffer fills; a running sync fetches no
    further page until the transport resumes it, so a slow client never makes the
    server buffer a whole history.
    """

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self._waiters: list[Deferred[None]] = []
        #: called when the transport resumes the producer
        self.on_resume: Callable[[], None] | None = None
        #: called when the transport pauses the producer
        self.on_pause: Callable[[], None] | None = None

    def pauseProducing(self) -> None:
        """The transport's buffer is full: hold further sync pages."""
        was_paused, self.paused = self.paused, True
        if not was_paused and self.on_pause is not None:
            self.on_pause()

    def resumeProducing(self) -> None:
        """The transport drained: let a waiting sync fetch its next page."""
        self.paused = False
        self._wake()
        if self.on_resume is not None:
            self.on_resume()

    def stopProducing(self) -> None:
        """The connection is going away: wake any waiting sync so it can stop."""
        self.stopped = True
        self.paused = False
        self._wake()

    def wait_for_resume(self) -> Deferred[None]:
        """A Deferred that fires once the producer is not paused (now, if it is not)."""
        if not self.paused:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


class SyncSink(Protocol):
    """The connection a sync stream writes to."""

    device_id: int
    user_id: int
    conn_id: str
    #: the largest frame value the client accepts
    cap: int
    #: the connection's ``SignIn.features``
    features: Feature

    @property
    def peer(self) -> str:
        """The client's address, for log lines."""

    def writable(self) -> bool:
        """Whether the connection is neither closing nor lost."""

    def write_messages(self, values: list[bytes]) -> None:
        """Write Message frame values."""

    def flush(self) -> None:
        """Hand output queued for the end of the reactor turn to the transport now."""

    def closeConnection(self) -> None:
        """Close the connection."""


class SyncStream:
    """At most one running sync per connection; requests meanwhile are coalesced.

    Args:
        sink: the connection.
        logic: where pages come from.
        producer: the connection's producer; each page waits until it is not paused.
        page_size: messages fetched per ``sync_page`` call.
        run: starts a coroutine in the background, logging its failure.
        log: the connection's logger (its events keep the connection's namespace).
    """

    def __init__(
        self,
        sink: SyncSink,
        *,
        logic: LogicPort,
        producer: SyncProducer,
        page_size: int,
        run: Callable[[Coroutine[Any, Any, None], str], None],
        log: Logger,
    ) -> None:
        self._sink = sink
        self._logic = logic
        self._producer = producer
        self._page_size = page_size
        self._run = run
        self._log = log
        self._running = False
        self._pending: int | None = None

    @property
    def running(self) -> bool:
        """Whether a sync is streaming."""
        return self._running

    def request(self, after: int, *, from_client: bool) -> None:
        """Sync everything after seq ``after`` (now, or once the running sync ends).

        A client's trigger replaces a queued one; a catch-up (``from_client`` False)
        keeps the lower of the two so nothing is skipped.
        """
        if self._running:
            if from_client or self._pending is None:
                self._pending = after
            else:
                self._pending = min(self._pending, after)
            return
        self._running = True
        self._run(self._loop(after), "sync")

    async def _loop(self, after: int) -> None:
        try:
            next_after: int | None = after
            while next_after is not None and self._sink.writable():
                await self._sync(next_after)
                next_after, self._pending = self._pending, None
        finally:
            self._running = False
            self._pending = None

    async def _sync(self, after: int) -> None:
        sink = self._sink
        cursor = after
        pages = 0
        trimmed_due = False
        count = 0
        while True:
            await self._producer.wait_for_resume()
            if not sink.writable():
                return
            try:
                page = await self._logic.sync_page(
                    device_id=sink.device_id,
                    user_id=sink.user_id,
                    after_seq=cursor,
                    limit=self._page_size,
                    conn=sink.conn_id,
                )
            except CancelledError:
                raise
            except Exception:
                # The client waits for more=False; closing makes it reconnect and retry.
                self._log.failure(
                    "sync of user {user_id} after seq {after} for {peer} failed: closing",
                    user_id=sink.user_id,
                    after=cursor,
                    peer=sink.peer,
                )
                sink.closeConnection()
                return
            if not sink.writable():
                return
            messages = page.messages
            pages += 1
            # event rows go only to clients that opted in; a page of nothing but
            # skipped rows writes nothing (unless it ends the sync) and moves on
            shown = for_connection(messages, getattr(sink, "features", 0))
            count += len(shown)
            last = not page.more or not messages
            if pages == 1 and page.trimmed and wants(sink.features, Feature.TRIMMED):
                # Message.trimmed goes on the first frame written
                trimmed_due = True
                self._log.info(
                    "sync of user {user_id} after seq {after}: history was trimmed by retention",
                    user_id=sink.user_id,
                    after=cursor,
                )
            if shown or last:
                if trimmed_due:
                    # room for the flag's two bytes is kept
                    values = pack_sync(shown, cap=sink.cap - len(TRIMMED_FIELD), last=last)
                    values[0] += TRIMMED_FIELD
                    trimmed_due = False
                else:
                    values = pack_sync(shown, cap=sink.cap, last=last)
                sink.write_messages(values)
                # each page meets the transport's backpressure before the next is fetched
                sink.flush()
            if last:
                break
            if messages[-1].seq <= cursor:
                self._log.error(
                    "sync page of user {user_id} after seq {after} did not advance: closing",
                    user_id=sink.user_id,
                    after=cursor,
                )
                sink.closeConnection()
                return
            cursor = messages[-1].seq
        self._log.debug(
            "synced {count} messages in {pages} pages after seq {after} to {peer}",
            count=count,
            pages=pages,
            after=after,
            peer=sink.peer,
        )
