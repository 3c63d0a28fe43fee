"""The connect node's side of connect → logic: ``LogicPort`` over Perspective Broker.

The node keeps one PB connection to every configured logic node, reconnecting
with jittered backoff, spreads calls over the connected ones, and runs a call
again on another node when its node dies or hangs mid-call (safe: sends are
deduped). Sends made in the same reactor turn travel in one remote call, at most
one batch per client connection at a time (per-sender order).
"""

import random
from collections import OrderedDict, deque
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, endpoints
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.spread import pb

from goim.batching import Batcher, FifoQueue, shared
from goim.clock import Clock as ReactorClock
from goim.clock import DelayedCall
from goim.logs import goim_observer
from goim.pb import goim_pb2
from goim.protocols.batch import BatchedAck, MalformedBatchError, decode_send_results, encode_ack_batch, encode_send_batch
from goim.protocols.codec import stored_from_item
from goim.types import (
    SEND_INTERNAL_ERROR,
    ChangeRequest,
    ChangeResult,
    SendOutcomeUnknown,
    SendRequest,
    SendResult,
    SignInResult,
    SyncPage,
)
from goim.util import Clock, run_in_background

log = Logger(observer=goim_observer)

#: acks one remote call carries at most (a logic node takes up to 5,000)
MAX_ACK_BATCH = 2000

#: errors after which the same call may be run on another logic node
_CONNECTION_ERRORS = (pb.PBConnectionLost, pb.DeadReferenceError, ConnectionLost, ConnectionDone)


class NoLogicNode(Exception):
    """No logic node answered within the call deadline."""


class LogicLink:
    """One logic node: connect, log in, and keep doing so after every loss."""

    #: seconds a PB login may take
    LOGIN_TIMEOUT = 10.0

    def __init__(self, reactor: Any, address: str, node: str, secret: bytes) -> None:
        self._reactor = reactor
        self._clock: Clock = reactor
        self.address = address
        host, _, port = address.rpartition(":")
        # typed Any: mypy cannot match zope interfaces (no mypy-zope here)
        self._endpoint: Any = endpoints.HostnameEndpoint(reactor, host, int(port), timeout=5)
        self._credentials = UsernamePassword(node.encode(), secret)
        self.perspective: pb.RemoteReference | None = None
        self._running = False
        self._delay = 0.0
        self._waiters: list[Deferred[None]] = []
        self._wakeup: Any = None

    def start(self) -> None:
        self._running = True
        run_in_background(self._connect_loop(), f"link to logic {self.address}")

    def drop(self) -> None:
        """Close the connection to this node (it did not answer); the loop reconnects."""
        perspective, self.perspective = self.perspective, None
        if perspective is not None:
            perspective.broker.transport.loseConnection()

    def stop(self) -> None:
        self._running = False
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        if self.perspective is not None:
            broker = self.perspective.broker
            self.perspective = None
            broker.transport.loseConnection()

    async def _connect_loop(self) -> None:
        failures = 0
        while self._running:
            factory = pb.PBClientFactory()
            try:
                await self._endpoint.connect(factory)
                login = factory.login(self._credentials)
                login.addTimeout(self.LOGIN_TIMEOUT, self._clock)
                perspective = await login
            except Exception as e:
                factory.disconnect()  # a refused login leaves the connection open otherwise
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warn("cannot reach logic node {address}: {error!r}", address=self.address, error=e)
                delay = min(5.0, 0.1 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.5)
                done: Deferred[None] = Deferred()
                self._wakeup = self._clock.callLater(delay, done.callback, None)
                await done
                continue
            if not self._running:
                perspective.broker.transport.loseConnection()
                return
            failures = 0
            self.perspective = perspective
            log.info("connected to logic node {address}", address=self.address)
            lost: Deferred[None] = Deferred()
            perspective.notifyOnDisconnect(lambda _: lost.callback(None))
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(None)
            await lost
            self.perspective = None
            if self._running:
                log.warn("lost logic node {address}; reconnecting", address=self.address)


class PBLogicClient:
    """``goim.ports.LogicPort`` spread over several logic nodes.

    Per-sender order: a connection has at most one send batch in flight. Its later
    sends wait (and travel together) until that batch is answered, and a logic node
    stores the sends of one batch in order before answering, so a connection's sends
    are stored in the order it read them whichever logic node takes each batch.

    A call whose node dies or does not answer within ``remote_timeout`` runs again on
    another node (the slow node's link is dropped and reconnects). For sends that is
    safe and keeps the order: the retry is the same batch, deduped, and the
    connection's later sends still wait for it. Should no node answer a batch that
    was sent somewhere before ``send_deadline``, its sends may or may not be stored:
    they and the connection's queued sends fail with ``SendOutcomeUnknown`` (the
    connection closes; the client sends again, in order, after reconnecting).
    """

    #: connections whose outcome was unknown, remembered so none of their sends go out
    MAX_BROKEN = 4096

    def __init__(
        self,
        reactor: Any,
        addresses: list[str],
        *,
        node: str,
        secret: bytes,
        call_timeout: float = 5.0,
        remote_timeout: float = 10.0,
        send_deadline: float = 30.0,
        max_batch: int = 500,
    ) -> None:
        """
        Args:
            addresses: ``host:port`` of each logic node's PB listener.
            node: this connect node's id (its login name).
            secret: the shared secret.
            call_timeout: how long a call may wait for some logic node to be connected
                (shorter than the sign-in timeout, so a refused sign-in is answered).
            remote_timeout: how long one remote call may take on one node before it
                runs again on another.
            send_deadline: how long a send batch may keep trying before its outcome
                is declared unknown.
            max_batch: sends per remote call at most.
        """
        self._reactor = reactor
        self._clock: Clock = reactor
        self.links = [LogicLink(reactor, a, node, secret) for a in addresses]
        self._call_timeout = call_timeout
        self._remote_timeout = remote_timeout
        self._send_deadline = send_deadline
        self._max_batch = max_batch
        self._next = 0
        batch_clock = self._batch_clock = ReactorClock(reactor)
        # per connection: its sends not yet in a remote call, in order; a connection
        # with a batch in flight is in _in_flight, one with sends waiting for the
        # next call (and none in flight) is in _ready
        self._queued: dict[str, deque[tuple[SendRequest, Deferred[SendResult]]]] = {}
        self._in_flight: set[str] = set()
        self._ready: dict[str, None] = {}
        self._dispatching: DelayedCall | None = None
        self._drained: list[Deferred[None]] = []
        # the acks of one reactor turn travel in one remote call, one call at a time
        self._acks: Batcher[None, BatchedAck, None] = Batcher(
            "ack call", batch_clock, self._ack_call, queue=lambda: FifoQueue(MAX_ACK_BATCH), delay=0
        )
        self._broken: OrderedDict[str, None] = OrderedDict()

    def start(self) -> None:
        for link in self.links:
            link.start()

    def stop(self) -> None:
        for link in self.links:
            link.stop()

    def connected(self) -> int:
        """How many logic nodes are connected now."""
        return sum(1 for link in self.links if link.perspective is not None)

    async def _perspective(self, deadline: float) -> tuple[LogicLink, pb.RemoteReference]:
        while True:
            # PB fails a dead connection's calls before notifyOnDisconnect runs:
            # skip brokers that are already disconnected instead of spinning on them
            healthy = [
                link
                for link in self.links
                if link.perspective is not None and not link.perspective.broker.disconnected
            ]
            if healthy:
                self._next = (self._next + 1) % len(healthy)
                link = healthy[self._next]
                assert link.perspective is not None
                return link, link.perspective
            remaining = deadline - self._clock.seconds()
            if remaining <= 0:
                raise NoLogicNode("no logic node is reachable")
            # wait for any link to connect, or the deadline
            waiter: Deferred[None] = Deferred()
            for link in self.links:
                link._waiters.append(waiter)

            def give_up() -> None:
                if not waiter.called:
                    waiter.callback(None)

            timer = self._clock.callLater(remaining, give_up)
            try:
                await waiter
            finally:
                if timer.active():
                    timer.cancel()
                for link in self.links:
                    if waiter in link._waiters:
                        link._waiters.remove(waiter)

    async def _call(self, method: str, *args: Any, send: bool = False, quick: bool = False) -> Any:
        """Run a remote call on some logic node, again on another when one fails.

        Every call waits at most ``call_timeout`` for some node to be connected. It
        then has until ``send_deadline``: each attempt may take ``remote_timeout``,
        and a node that does not answer in time is dropped. A ``quick`` call (the
        sign-in) must instead finish within ``call_timeout``, each attempt getting
        half of it, so that a client's sign-in is answered before its own deadline
        even when one node hangs. Sync pages, acks, offline notices and changes are
        safe to repeat and no client waits on a deadline for them: a logic node that
        is seconds behind (saturated) still answers them, instead of their timing
        out and closing the connections that asked.

        Raises:
            NoLogicNode: nothing reached a node before the deadline (nothing was done),
                or, for other calls, every attempt failed.
            _Unanswered: a send batch reached a node but no answer came back before
                ``send_deadline``.
        """
        start = self._clock.seconds()
        find_by = start + self._call_timeout
        deadline = find_by if quick else start + self._send_deadline
        attempt_timeout = self._call_timeout / 2 if quick else self._remote_timeout
        reached = False
        while True:
            try:
                link, perspective = await self._perspective(deadline if reached else min(deadline, find_by))
            except NoLogicNode:
                if reached and send:
                    raise _Unanswered(method) from None
                raise
            try:
                call = perspective.callRemote(method, *args)
                reached = True
                # a logic node that hangs (paused, overloaded) must not stall its callers
                call.addTimeout(max(0.001, min(attempt_timeout, deadline - self._clock.seconds())), self._clock)
                return await call
            except _CONNECTION_ERRORS as e:
                log.info("{method} interrupted ({error!r}); trying another logic node", method=method, error=e)
            except defer.TimeoutError:
                log.warn(
                    "{method} got no answer from logic node {address} in time: trying another",
                    method=method,
                    address=link.address,
                )
                if not quick:
                    # a node that sits on a call this long is not serving: reconnect to it
                    link.drop()
            if self._clock.seconds() >= deadline:
                if send:
                    raise _Unanswered(method)
                raise NoLogicNode(f"{method}: every attempt was interrupted")

    async def sign_in(self, *, device_id: int, user_id: int, token: str, conn: str) -> SignInResult:
        # past this instant this node has given up on the call: a logic node that
        # only gets to it later (paused, overloaded) must not write presence for it
        # (the nodes' clocks must agree to well within call_timeout; run NTP)
        deadline_ms = int((self._clock.seconds() + self._call_timeout) * 1000)
        ok, message, epoch = await self._call("sign_in", device_id, user_id, token, conn, deadline_ms, quick=True)
        return SignInResult(bool(ok), str(message), int(epoch))

    def send(self, request: SendRequest, *, conn: str) -> "Deferred[SendResult]":
        if conn in self._broken:
            return defer.fail(SendOutcomeUnknown(f"an earlier send of connection {conn} has no known outcome"))
        answer: Deferred[SendResult] = Deferred()
        queue = self._queued.get(conn)
        if queue is None:
            queue = self._queued[conn] = deque()
        queue.append((request, answer))
        if conn not in self._in_flight:
            self._make_ready(conn)
        return answer

    async def drain(self) -> None:
        """Wait until every send and ack taken so far is answered (or has failed)."""
        while self._queued or self._in_flight:
            waiter: Deferred[None] = Deferred()
            self._drained.append(waiter)
            await waiter
        await self._acks.drain()

    def _make_ready(self, conn: str) -> None:
        """The connection's queued sends go in the remote call at the end of this turn."""
        self._ready[conn] = None
        if self._dispatching is None:
            self._dispatching = self._batch_clock.call_later(0, self._dispatch)

    def _dispatch(self) -> None:
        """Start the remote calls of one turn: every ready connection's queued sends
        (``max_batch`` of them at most) as its batch, ``max_batch`` sends per call at
        most; a connection's batch is never split between two calls.

        Plain callbacks and one coroutine per call, not per send: on a connect node
        this is most of the work of a send.
        """
        self._dispatching = None
        ready, self._ready = self._ready, {}
        call: list[tuple[str, list[tuple[SendRequest, Deferred[SendResult]]]]] = []
        size = 0
        for conn in ready:
            queue = self._queued.get(conn)
            if not queue:
                continue
            if conn in self._broken:
                # an earlier batch of this connection has no known outcome
                del self._queued[conn]
                for _, answer in queue:
                    answer.errback(SendOutcomeUnknown("an earlier send of this connection has no known outcome"))
                continue
            count = min(len(queue), self._max_batch)
            part = [queue.popleft() for _ in range(count)]
            if not queue:
                del self._queued[conn]
            if call and size + count > self._max_batch:
                run_in_background(self._send_call(call), "send call")
                call, size = [], 0
            call.append((conn, part))
            size += count
            self._in_flight.add(conn)
        if call:
            run_in_background(self._send_call(call), "send call")
        self._notify_drained()

    async def _send_call(self, call: list[tuple[str, list[tuple[SendRequest, "Deferred[SendResult]"]]]]) -> None:
        """One remote send call; every send in it gets its result from the answer.

        The batch goes as the bytes of one ``SendBatch`` and comes back as one
        ``SendResults`` (``goim.protocols.batch``): Banana is fast for one bytes
        object and slow for nested tuples.
        """
        count = sum(len(part) for _, part in call)
        results: list[SendResult] | None = None
        try:
            payload = encode_send_batch([(conn, request) for conn, part in call for request, _ in part])
            answered = await self._call("send_batch", payload, send=True)
        except _Unanswered:
            log.error(
                "a batch of {count} sends got no answer from any logic node: closing {conns} connections "
                "(their clients send again after reconnecting)",
                count=count,
                conns=len(call),
            )
        except Exception as e:
            # nothing was stored: the batch could not be encoded, no node was reachable,
            # or the node refused the call
            log.warn("a batch of {count} sends failed: {error!r}", count=count, error=e)
            results = [SendResult(SEND_INTERNAL_ERROR)] * count
        else:
            try:
                if not isinstance(answered, bytes):
                    raise MalformedBatchError("send_batch answered something other than bytes")
                results = decode_send_results(answered)
                if len(results) != count:
                    raise MalformedBatchError(f"{len(results)} results for {count} sends")
            except MalformedBatchError as e:
                # the node took the batch: what it stored is unknown
                log.error("a batch of {count} sends got a malformed answer: {error}", count=count, error=str(e))
                results = None
        at = 0
        for conn, part in call:
            self._in_flight.discard(conn)
            if results is None:
                # the connection's later sends must not go out: they could be stored
                # before this batch, if it was stored at all
                self._break(conn)
                for _, answer in part:
                    answer.errback(SendOutcomeUnknown("no logic node answered"))
            else:
                for (_, answer), result in zip(part, results[at : at + len(part)]):
                    answer.callback(result)
                at += len(part)
            if conn in self._queued and conn not in self._in_flight:
                self._make_ready(conn)
        self._notify_drained()

    def _notify_drained(self) -> None:
        if not self._queued and not self._in_flight and self._drained:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)

    def _break(self, conn: str) -> None:
        """Refuse the connection's later sends (its queued ones fail as their batch comes up)."""
        self._broken[conn] = None
        while len(self._broken) > self.MAX_BROKEN:
            self._broken.popitem(last=False)

    async def sync_page(self, *, device_id: int, user_id: int, after_seq: int, limit: int, conn: str) -> SyncPage:
        payload = await self._call("sync_page", device_id, user_id, after_seq, limit, conn)
        if not isinstance(payload, bytes):
            raise TypeError("sync_page answered something other than bytes")
        return decode_page(payload, user_id)

    def ack(self, *, device_id: int, user_id: int, seq: int, conn: str) -> "Deferred[None]":
        # a Deferred, no coroutine: a group member acks every push
        return self._acks.add(BatchedAck(conn, device_id, user_id, seq), key=None)

    async def _ack_call(self, _: None, acks: list[BatchedAck]) -> list[None]:
        """One remote call for the acks queued since the last one (a client acks every
        push: a call each was most of a logic node's Perspective Broker work)."""
        await self._call("ack_batch", encode_ack_batch(acks))
        return shared(None, acks)

    async def offline(self, *, device_id: int, user_id: int, conn: str) -> None:
        # The connection is gone: its sends still queued behind a batch in flight must
        # not go out after it. Its client sends them again, in order, on its next
        # connection; sent from here they could be stored before the batch ahead of
        # them (which may still be on its way to a paused node) and break per-sender order.
        self._break(conn)
        await self._call("offline", device_id, user_id, conn)

    async def change(self, *, device_id: int, user_id: int, request: ChangeRequest, conn: str) -> ChangeResult:
        """A read report, recall or edit (issue 14); safe to repeat, so retried on another node."""
        r = request
        answer = await self._call(
            "change", device_id, user_id, r.kind, r.conversation_type, r.conversation_id, r.seq, r.message_id,
            r.content, conn,
        )
        if not isinstance(answer, (list, tuple)) or len(answer) != 3:
            raise TypeError("change answered something other than (code, message, read_seq)")
        code, message, read_seq = answer
        return ChangeResult(int(code), str(message), int(read_seq))


class _Unanswered(Exception):
    """A call reached a logic node but no answer came back before its deadline."""


def decode_page(payload: bytes, user_id: int) -> SyncPage:
    """A sync page from the bytes of a ``goim.Message``."""
    message = goim_pb2.Message()
    message.ParseFromString(payload)
    return SyncPage(
        [stored_from_item(i, user_id=user_id) for i in message.messages], more=message.more, trimmed=message.trimmed
    )
