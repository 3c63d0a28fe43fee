"""The connect node's side of connect → logic: ``LogicPort`` over Perspective Broker.

The node keeps one PB connection to every configured logic node, reconnecting
with jittered backoff, spreads calls over the connected ones, and runs a call
again on another node when its node dies mid-call (safe: sends are deduped).
Sends made in the same reactor turn travel in one remote call.
"""

import random
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.spread import pb
from twisted.spread.flavors import NoSuchMethod

from goim.logs import goim_observer
from goim.pb import goim_pb2
from goim.protocols.codec import encode_message_send, stored_from_item
from goim.types import SendRequest, SendResult, SignInResult, SyncPage
from goim.util import Clock, run_in_background

log = Logger(observer=goim_observer)

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
    """``goim.ports.LogicPort`` spread over several logic nodes."""

    def __init__(
        self,
        reactor: Any,
        addresses: list[str],
        *,
        node: str,
        secret: bytes,
        call_timeout: float = 5.0,
        remote_timeout: float = 30.0,
        max_batch: int = 500,
    ) -> None:
        """
        Args:
            addresses: ``host:port`` of each logic node's PB listener.
            node: this connect node's id (its login name).
            secret: the shared secret.
            call_timeout: how long a call may wait for some logic node to be connected
                (shorter than the sign-in timeout, so a refused sign-in is answered).
            remote_timeout: how long one remote call may take before it fails.
            max_batch: sends per remote call at most.
        """
        self._reactor = reactor
        self._clock: Clock = reactor
        self.links = [LogicLink(reactor, a, node, secret) for a in addresses]
        self._call_timeout = call_timeout
        self._remote_timeout = remote_timeout
        self._max_batch = max_batch
        self._next = 0
        self._pending: list[tuple[SendRequest, Deferred[SendResult]]] = []
        self._flush_call: Any = None

    def start(self) -> None:
        for link in self.links:
            link.start()

    def stop(self) -> None:
        for link in self.links:
            link.stop()

    def connected(self) -> int:
        """How many logic nodes are connected now."""
        return sum(1 for link in self.links if link.perspective is not None)

    async def _perspective(self, deadline: float) -> pb.RemoteReference:
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
                perspective = healthy[self._next].perspective
                assert perspective is not None
                return perspective
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

    async def _call(self, method: str, *args: Any) -> Any:
        deadline = self._clock.seconds() + self._call_timeout
        while True:
            perspective = await self._perspective(deadline)
            try:
                call = perspective.callRemote(method, *args)
                # a logic node that hangs must not stall its callers forever
                call.addTimeout(self._remote_timeout, self._clock)
                return await call
            except _CONNECTION_ERRORS as e:
                log.info("{method} interrupted ({error!r}); trying another logic node", method=method, error=e)
                if self._clock.seconds() >= deadline:
                    raise NoLogicNode(f"{method}: every attempt was interrupted") from e
            except NoSuchMethod:
                raise

    async def sign_in(self, *, device_id: int, user_id: int, token: str) -> SignInResult:
        ok, message = await self._call("sign_in", device_id, user_id, token)
        return SignInResult(bool(ok), str(message))

    async def send(self, request: SendRequest) -> SendResult:
        waiter: Deferred[SendResult] = Deferred()
        self._pending.append((request, waiter))
        if self._flush_call is None:
            # everything sent during this reactor turn goes in one remote call
            self._flush_call = self._clock.callLater(0, self._flush)
        return await waiter

    def _flush(self) -> None:
        self._flush_call = None
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._max_batch):
            run_in_background(self._send_batch(pending[start : start + self._max_batch]), "send batch")

    async def _send_batch(self, batch: list[tuple[SendRequest, Deferred[SendResult]]]) -> None:
        payload = [(r.device_id, r.user_id, encode_message_send(r)) for r, _ in batch]
        try:
            results = await self._call("send", payload)
        except Exception as e:
            log.warn("a batch of {count} sends failed: {error!r}", count=len(batch), error=e)
            results = [(1, 0, 0)] * len(batch)
        for (_, waiter), (code, message_id, seq) in zip(batch, results):
            waiter.callback(SendResult(int(code), int(message_id), int(seq)))

    async def sync_page(self, *, device_id: int, user_id: int, after_seq: int, limit: int) -> SyncPage:
        payload = await self._call("sync_page", device_id, user_id, after_seq, limit)
        if not isinstance(payload, bytes):
            raise TypeError("sync_page answered something other than bytes")
        return decode_page(payload, user_id)

    async def ack(self, *, device_id: int, user_id: int, seq: int) -> None:
        await self._call("ack", device_id, user_id, seq)

    async def offline(self, *, device_id: int, user_id: int) -> None:
        await self._call("offline", device_id, user_id)


def decode_page(payload: bytes, user_id: int) -> SyncPage:
    """A sync page from the bytes of a ``goim.Message``."""
    message = goim_pb2.Message()
    message.ParseFromString(payload)
    return SyncPage([stored_from_item(i, user_id=user_id) for i in message.messages], more=message.more)
