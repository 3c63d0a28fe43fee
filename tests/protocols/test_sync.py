"""The sync stream and its producer, without a connection or a transport."""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from goim.protocols import codec
from goim.protocols.sync import SyncProducer, SyncStream
from goim.types import SyncPage
from tests.protocols.fakes import make_message


class Sink:
    """A connection as a sync stream sees it."""

    device_id = 1
    user_id = 2
    conn_id = "n/b/1"
    cap = 4092
    peer = "test"

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.open = True
        self.flushes = 0

    def writable(self) -> bool:
        return self.open

    def write_messages(self, values: list[bytes]) -> None:
        self.values.extend(values)

    def flush(self) -> None:
        self.flushes += 1

    def closeConnection(self) -> None:
        self.open = False


class PagedLogic:
    """Answers each ``sync_page`` with a Deferred the test fires."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, Deferred[SyncPage]]] = []

    async def sync_page(self, *, device_id: int, user_id: int, after_seq: int, limit: int, conn: str) -> SyncPage:
        d: Deferred[SyncPage] = Deferred()
        self.asked.append((after_seq, d))
        return await d


def run(coroutine: Any, what: str) -> None:
    Deferred.fromCoroutine(coroutine)


class SyncProducerTests(SynchronousTestCase):
    def test_wait_for_resume(self) -> None:
        """Not paused: the wait fires at once; paused: it fires on resume, and on stop."""
        producer = SyncProducer()
        self.successResultOf(producer.wait_for_resume())
        producer.pauseProducing()
        waiting = producer.wait_for_resume()
        self.assertNoResult(waiting)
        producer.resumeProducing()
        self.successResultOf(waiting)
        producer.pauseProducing()
        waiting = producer.wait_for_resume()
        producer.stopProducing()
        self.successResultOf(waiting)
        self.assertTrue(producer.stopped)

    def test_pause_hook_runs_once_per_pause(self) -> None:
        """on_pause runs when the producer becomes paused, not on a repeated pause."""
        producer = SyncProducer()
        calls: list[str] = []
        producer.on_pause = lambda: calls.append("pause")
        producer.on_resume = lambda: calls.append("resume")
        producer.pauseProducing()
        producer.pauseProducing()
        producer.resumeProducing()
        self.assertEqual(calls, ["pause", "resume"])


class SyncStreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sink = Sink()
        self.logic = PagedLogic()
        self.producer = SyncProducer()
        self.stream = SyncStream(
            self.sink, logic=self.logic, producer=self.producer, page_size=2, run=run, log=Logger()
        )

    def test_pages_until_no_more(self) -> None:
        """Pages are fetched after the last seq of the previous one until more is false."""
        self.stream.request(0, from_client=True)
        self.assertTrue(self.stream.running)
        after, d = self.logic.asked[-1]
        d.callback(SyncPage([make_message(2, 1), make_message(2, 2)], more=True))
        after, d = self.logic.asked[-1]
        self.assertEqual(after, 2)
        d.callback(SyncPage([make_message(2, 3)], more=False))
        self.assertFalse(self.stream.running)
        self.assertEqual(len(self.logic.asked), 2)
        self.assertEqual(self.sink.flushes, 2, "each page is handed to the transport before the next is fetched")
        self.assertEqual(self.sink.values[-1], codec.pack_sync([make_message(2, 3)], cap=4092, last=True)[-1])

    def test_waits_while_paused(self) -> None:
        """A paused producer holds the next page until it resumes."""
        self.producer.pauseProducing()
        self.stream.request(0, from_client=True)
        self.assertEqual(self.logic.asked, [])
        self.producer.resumeProducing()
        self.assertEqual(len(self.logic.asked), 1)

    def test_requests_while_running_coalesce(self) -> None:
        """While a sync runs, a client trigger replaces the queued one; a catch-up keeps the lower."""
        self.stream.request(0, from_client=True)
        self.stream.request(7, from_client=False)
        self.stream.request(9, from_client=False)
        self.stream.request(5, from_client=False)
        self.logic.asked[-1][1].callback(SyncPage([], more=False))
        self.assertEqual(self.logic.asked[-1][0], 5)
        self.stream.request(8, from_client=True)
        self.stream.request(3, from_client=True)
        self.logic.asked[-1][1].callback(SyncPage([], more=False))
        self.assertEqual(self.logic.asked[-1][0], 3)
        self.logic.asked[-1][1].callback(SyncPage([], more=False))
        self.assertFalse(self.stream.running)

    def test_failed_page_closes(self) -> None:
        """A page that fails closes the connection: the client reconnects and syncs again."""
        self.stream.request(0, from_client=True)
        self.logic.asked[-1][1].errback(RuntimeError("db down"))
        self.assertFalse(self.sink.open)
        self.assertFalse(self.stream.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_page_that_does_not_advance_closes(self) -> None:
        """A page whose last seq is not past the cursor closes instead of looping."""
        self.stream.request(5, from_client=True)
        self.logic.asked[-1][1].callback(SyncPage([make_message(2, 5)], more=True))
        self.assertFalse(self.sink.open)
        self.assertEqual(len(self.logic.asked), 1)
