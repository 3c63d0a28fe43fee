"""The offline push webhook: unit tests with task.Clock and a fake poster, and an
integration test against a real local HTTP receiver through an outage."""

import json
from typing import Any, Sequence

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock as TaskClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from goim.clock import Clock
from goim.logic.webhook import SIGNATURE_HEADER, OfflineWebhook, sign, verify
from goim.testing.harness import wait_until
from goim.types import SENDER_SYSTEM, SENDER_USER, StoredMessage

SECRET = b"0123456789abcdef-webhook"


def copy(user_id: int, message_id: int, *, sender: int = 99, sender_type: int = SENDER_USER) -> StoredMessage:
    return StoredMessage(user_id, 1, message_id, sender_type, sender, 7, 1, user_id, 1, "hi", 1000)


class FakeResponse:
    def __init__(self, code: int) -> None:
        self.code = code

    def content(self) -> "defer.Deferred[bytes]":
        return defer.succeed(b"")


class FakePoster:
    """Records POSTs; each answers with the next queued result (a code or an exception)."""

    def __init__(self) -> None:
        self.posts: list[tuple[bytes, dict[str, list[str]]]] = []
        self.pending: list[defer.Deferred[Any]] = []

    def __call__(self, url: str, *, data: bytes, headers: dict[str, list[str]], timeout: float) -> "defer.Deferred[Any]":
        self.posts.append((data, headers))
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d

    def answer(self, code: int) -> None:
        self.pending.pop(0).callback(FakeResponse(code))

    def fail(self) -> None:
        self.pending.pop(0).errback(ConnectionRefusedError("receiver down"))

    def events(self, index: int) -> list[dict[str, Any]]:
        return list(json.loads(self.posts[index][0])["events"])


def offline_except(*online: int) -> Any:
    async def check(user_ids: Sequence[int]) -> set[int]:
        return set(user_ids) & set(online)

    return check


class WebhookUnitTests(SynchronousTestCase):
    def make(self, *, online: Any = None, max_queue: int = 100, max_batch: int = 10) -> tuple[OfflineWebhook, FakePoster, TaskClock]:
        clock = TaskClock()
        poster = FakePoster()
        hook = OfflineWebhook(
            "http://example.invalid/hook",
            SECRET,
            Clock(clock, seed=1),
            online or offline_except(),
            post=poster,
            max_queue=max_queue,
            max_batch=max_batch,
            backoff=1.0,
            backoff_max=8.0,
        )
        return hook, poster, clock

    def test_offline_users_only_signed(self) -> None:
        """Only copies of offline users become events; the sender's own copy never;
        the body is signed with HMAC-SHA256 in the Goim-Signature header."""
        hook, poster, _ = self.make(online=offline_except(2))
        hook.notify([copy(1, 10), copy(2, 10), copy(99, 10), copy(3, 11, sender_type=SENDER_SYSTEM, sender=0)])
        [(body, headers)] = poster.posts
        self.assertEqual([e["event_id"] for e in poster.events(0)], ["10-1", "11-3"])
        self.assertEqual(headers[SIGNATURE_HEADER], [sign(SECRET, body)])
        self.assertTrue(verify(SECRET, body, headers[SIGNATURE_HEADER][0]))
        self.assertFalse(verify(b"another-secret-16", body, headers[SIGNATURE_HEADER][0]))
        poster.answer(204)
        self.assertEqual(hook.metrics.sent._value.get(), 2)

    def test_retries_with_exponential_backoff(self) -> None:
        """A failed POST is retried after 1, 2, 4, 8, 8 s (±10% jitter) with the same body."""
        hook, poster, clock = self.make()
        hook.notify([copy(1, 10)])
        poster.fail()
        waits = []
        for _ in range(5):
            before = len(poster.posts)
            waited = 0.0
            while len(poster.posts) == before:
                clock.advance(0.1)
                waited += 0.1
            waits.append(round(waited))
            poster.answer(503)
        self.assertEqual(waits, [1, 2, 4, 8, 8])
        self.assertEqual({p[0] for p in poster.posts}, {poster.posts[0][0]})
        clock.advance(10)
        poster.answer(200)
        self.assertEqual(hook.metrics.sent._value.get(), 1)
        self.assertEqual(hook.metrics.posts.labels("error")._value.get(), 6)

    def test_overflow_drops_oldest_and_counts(self) -> None:
        """While the receiver is down the queue stays bounded: the oldest are dropped and counted."""
        hook, poster, clock = self.make(max_queue=3, max_batch=1)
        hook.notify([copy(1, 1)])  # in flight
        hook.notify([copy(1, m) for m in range(2, 8)])  # 6 more into a queue of 3
        self.assertEqual(len(hook), 3)
        self.assertEqual(hook.metrics.dropped._value.get(), 3)
        for _ in range(4):
            poster.answer(200)
        self.assertEqual([poster.events(i)[0]["message_id"] for i in range(4)], [1, 5, 6, 7])

    def test_notify_never_waits(self) -> None:
        """notify returns at once even while a POST hangs."""
        hook, poster, _ = self.make()
        hook.notify([copy(1, 1)])
        hook.notify([copy(2, 2)])
        self.assertEqual((len(poster.posts), len(hook)), (1, 1))


class Receiver(Resource):
    """A webhook receiver that checks signatures and dedupes by event id; it can be down."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = request.content.read()
        if not verify(SECRET, body, (request.getHeader(SIGNATURE_HEADER) or "")):
            self.bad_signatures += 1
            request.setResponseCode(401)
            return b""
        for e in json.loads(body)["events"]:
            self.events[e["event_id"]] = e
        request.setResponseCode(204)
        return b""


class WebhookReceiverTests(TestCase):
    async def test_outage_and_recovery(self) -> None:
        """Events queued while the receiver is down reach it once it is back; every
        event arrives (at least once), signed."""
        receiver = Receiver()
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(Site(receiver))
        address = port.getHost()
        url = f"http://127.0.0.1:{address.port}/hook"
        hook = OfflineWebhook(url, SECRET, Clock(reactor), offline_except(), reactor=reactor, backoff=0.05, backoff_max=0.2, timeout=2)
        self.addCleanup(hook.stop)
        hook.notify([copy(1, 1), copy(2, 1)])
        await wait_until(lambda: len(receiver.events) == 2, "the first events")
        # outage: the port closes; events keep coming and are retried
        await port.stopListening()
        hook.notify([copy(1, 2)])
        hook.notify([copy(3, 3)])
        await wait_until(lambda: hook.metrics.posts.labels("error")._value.get() >= 2, "failed POSTs")
        # recovery on the same port
        port = await TCP4ServerEndpoint(reactor, address.port, interface="127.0.0.1").listen(Site(receiver))
        self.addCleanup(port.stopListening)
        await wait_until(lambda: len(receiver.events) == 4, "the events queued during the outage")
        await hook.idle()
        self.assertEqual(sorted(receiver.events), ["1-1", "1-2", "2-1", "3-3"])
        self.assertEqual(receiver.bad_signatures, 0)
