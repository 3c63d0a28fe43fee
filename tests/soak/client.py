"""The soak's clients: one :class:`SoakDevice` per registered device.

A device behaves like a careful goim client (docs/protocol.md §3-§6): it signs in,
syncs from the highest contiguous seq it holds, pipelines sends, retries code-1/5
and unanswered sends with the same send_sequence, syncs when it sees a gap, acks
what it holds, and reconnects with jittered back-off. On top of that the soak
makes it reconnect to the same or the other connect node, sign in again elsewhere
while its connection is open (a takeover), and sign in over HTTP (a new epoch).

Frames are encoded and decoded with goim's own framing and the codec's typed frames
(encoding through the helpers of ``tests/e2e/wire.py``). Everything seen is recorded in the
:class:`~tests.soak.history.History`.
"""

from __future__ import annotations

import json
import random
import time
import traceback
from typing import Any, Callable

import treq
from twisted.internet import reactor

_reactor: Any = reactor  # the global reactor, untyped (its stubs do not type the module)
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from goim.protocols import codec
from goim.protocols.codec import (
    HEARTBEAT_ACK,
    KICKED,
    MESSAGE,
    MESSAGE_SEND_ACK,
    MESSAGE_SYNC,
    SIGN_IN_ACK,
    MalformedFrameError,
)
from goim.protocols.framing import decode_frames
from tests.e2e.httpapi import PASSWORD
from tests.e2e.wire import heartbeat_frame, message_ack_frame, send_frame, sign_in_frame, sync_frame
from tests.soak.history import Attempt, Conn, History, Send

#: a connection with a request unanswered this long is stuck: the client closes it
STUCK_AFTER = 30.0
#: a SignInACK must come within this
SIGNIN_TIMEOUT = 15.0
#: a superseded connection that was not kicked within this is closed by the client
SUPERSEDED_GRACE = 20.0


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class HttpClient:
    """The HTTP API through whichever logic node answers (they are interchangeable)."""

    def __init__(self, bases: list[str], rng: random.Random) -> None:
        self.bases = bases
        self.rng = rng

    async def call(self, method: str, path: str, body: Any = None, *, auth: tuple[int, str] | None = None,
                   base: str | None = None) -> tuple[int, dict[str, Any]]:
        """One request to one node: (status, envelope); status 0 on a network error.

        The timeout (30 s) outlasts any pause the faults inject (at most 6 s), so a
        request is never given up while a paused node may still carry it out later
        (an HTTP sign-in applied after the client moved on would change the epoch
        behind its back).
        """
        headers: dict[bytes | str, list[bytes | str]] = {}
        if auth is not None:
            headers = {b"device_id": [str(auth[0]).encode()], b"token": [auth[1].encode()]}
        data = json.dumps(body).encode() if body is not None else None
        target = base if base is not None else self.rng.choice(self.bases)
        try:
            response = await treq.request(method, target + path, headers=headers, data=data,
                                          persistent=False, timeout=30)
            content = await response.content()
            return response.code, json.loads(content)
        except Exception as e:
            return 0, {"code": -1, "message": repr(e)}

    async def ok(self, method: str, path: str, body: Any = None, *, auth: tuple[int, str] | None = None,
                 attempts: int = 30) -> Any:
        """A request that must succeed: retried on every node until it does (setup only:
        the calls used are idempotent or checked by the caller)."""
        last: Any = None
        for i in range(attempts):
            status, env = await self.call(method, path, body, auth=auth, base=self.bases[i % len(self.bases)])
            if status == 200 and env.get("code") == 0:
                return env.get("data")
            last = (status, env)
            await sleep(0.3)
        raise RuntimeError(f"{method} {path} kept failing: {last}")


class SoakProtocol(Protocol):
    """One client connection: frames in, handed to its device."""

    def __init__(self, device: SoakDevice, conn: Conn) -> None:
        self.device = device
        self.conn = conn
        self.buffer = b""
        self.open = False
        self.sends_written = 0
        self.heartbeat_at: float | None = None  # an unanswered heartbeat (monotonic)
        self.unanswered: dict[int, float] = {}  # send_sequence -> when written
        self.sync_pending_since: float | None = None
        self.last_frame_at = time.monotonic()
        self.ack_sent = 0
        self.ack_call: Any = None
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:  # noqa: N802
        self.open = True
        try:
            transport: Any = self.transport
            self.conn.local_port = int(transport.getHost().port)
        except Exception:
            pass

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            frames, self.buffer = decode_frames(self.buffer + data)
        except Exception as e:
            self.device.history.violation("protocol", f"conn {self.conn.serial}: undecodable bytes: {e!r}")
            self.close("undecodable frame")
            return
        self.last_frame_at = time.monotonic()
        for frame in frames:
            try:
                self.device.frame(self, frame.type, frame.value)
            except MalformedFrameError as e:
                self.device.history.violation(
                    "protocol", f"conn {self.conn.serial}: frame {frame.type} is not valid protobuf: {e}")
            except Exception:
                self.device.history.violation(
                    "harness", f"conn {self.conn.serial}: handling frame {frame.type}: {traceback.format_exc()[-1500:]}")

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        self.open = False
        self.conn.closed_at = time.time()
        self.conn.closed_tick = self.device.history.tick()
        if self.ack_call is not None and self.ack_call.active():
            self.ack_call.cancel()
        self.device.lost(self)
        self.lost.callback(None)

    def write(self, *frames: bytes) -> None:
        transport: Any = self.transport
        if self.open and transport is not None:
            transport.write(b"".join(frames))

    def close(self, why: str) -> None:
        """Close from the client side (recorded as such)."""
        if not self.open:
            return
        if not self.conn.closed_by_client:
            self.conn.closed_by_client = why
        transport: Any = self.transport
        transport.abortConnection()

    def schedule_ack(self) -> None:
        """A MessageACK with the device's contiguous seq, at most every 0.3 s."""
        if self.ack_call is not None and self.ack_call.active():
            return
        self.ack_call = _reactor.callLater(0.3, self._send_ack)

    def _send_ack(self) -> None:
        held = self.device.contiguous
        if held > self.ack_sent and self.open and self.conn.signed_in:
            self.ack_sent = held
            self.write(message_ack_frame(held))


class SoakDevice:
    """One device of one user, driven by the soak.

    Args:
        history: where everything is recorded.
        number: the user's number (for HTTP sign-in).
        ports: the connect nodes' TCP ports (index 0 is c1).
        http: the HTTP API.
        rng: this device's seeded random source.
        directory: ``(receiver_type, receiver_id) -> recipient user ids`` it may send to.
    """

    def __init__(self, history: History, *, device_id: int, token: str, user_id: int, number: str,
                 ports: list[int], http: HttpClient, rng: random.Random,
                 directory: dict[tuple[int, int], frozenset[int]], log: Callable[[str], None]) -> None:
        self.history = history
        self.device_id = device_id
        self.token = token
        self.user_id = user_id
        self.number = number
        self.ports = ports
        self.http = http
        self.rng = rng
        self.directory = directory
        self.targets = sorted(directory)
        self.log = log
        self.store: dict[int, int] = {}  # seq -> message_id: what the device holds
        self.contiguous = 0
        self.epoch = 0
        self.next_sequence = 1
        self.pending: dict[int, Send] = {}  # send_sequence -> send not yet answered 0 (this epoch)
        self.retry_due: set[int] = set()
        self.current: SoakProtocol | None = None
        self.connecting = False
        self.running = True
        self.quiet = False  # no new sends or churn (draining)
        self.http_busy = False
        self.backoff = 0.5
        self.node = rng.randrange(len(ports))
        self.protocols: list[SoakProtocol] = []
        self.sends: list[Send] = []  # every send of this device, all epochs
        self._timers: set[Any] = set()  # delayed calls and sleeps, cancelled by stop()

    # --- timers (all cancelled by stop(), so a run leaves the reactor clean) ----------

    def later(self, delay: float, function: Callable[..., object], *args: Any) -> None:
        def fire() -> None:
            self._timers.discard(call)
            if self.running:
                function(*args)

        call = _reactor.callLater(delay, fire)
        self._timers.add(call)

    async def sleep(self, seconds: float) -> None:
        d = deferLater(reactor, seconds, lambda: None)
        self._timers.add(d)
        try:
            await d
        finally:
            self._timers.discard(d)

    def spawn(self, coroutine: Any) -> None:
        """Run a coroutine in the background; a cancellation by stop() ends it quietly."""
        def done(failure: Failure) -> None:
            if not failure.check(CancelledError):
                self.history.violation("harness", f"device {self.device_id}: {failure.getTraceback()[-1500:]}")

        Deferred.fromCoroutine(coroutine).addErrback(done)

    # --- connecting -------------------------------------------------------------------

    def ensure_connected(self, delay: float = 0.0) -> None:
        """Connect (after ``delay``) unless connected, connecting or stopped."""
        if self.connecting or not self.running or self.http_busy:
            return
        if self.current is not None and self.current.open:
            return
        self.connecting = True
        self.spawn(self._connect_loop(delay))

    async def _connect_loop(self, delay: float) -> None:
        """Connect with jittered back-off until signed in (one loop at a time)."""
        try:
            await self.sleep(delay)
            while self.running and not self.http_busy and not (self.current is not None and self.current.open):
                if await self._connect(self.node) is not None:
                    return
                if self.rng.random() < 0.5:
                    self.node = self.rng.randrange(len(self.ports))
                await self.sleep(self.backoff * (0.5 + self.rng.random()))
                self.backoff = min(self.backoff * 2, 4.0)
        finally:
            self.connecting = False

    async def _connect(self, node: int) -> SoakProtocol | None:
        """Open a connection to ``node``, sign in, sync and resend what is pending.

        Returns:
            The signed-in connection (now the device's current one), or None.
        """
        conn = self.history.new_conn(self.device_id, self.user_id, f"c{node + 1}")
        proto = SoakProtocol(self, conn)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.ports[node], timeout=5)
        try:
            await connectProtocol(endpoint, proto)
        except Exception as e:
            conn.closed_at = time.time()
            conn.closed_by_client = f"connect failed: {type(e).__name__}"
            return None
        self.protocols.append(proto)
        base = self.contiguous
        conn.base = base
        conn.signin_at = self.history.tick()
        self.history.tcp_signins.setdefault(self.device_id, []).append(conn.signin_at)
        # goim 1.1 style: SyncTrigger right behind SignIn, without waiting
        proto.write(sign_in_frame(self.device_id, self.user_id, self.token), sync_frame(base))
        proto.sync_pending_since = time.monotonic()
        deadline = time.monotonic() + SIGNIN_TIMEOUT
        while conn.signin_code is None and proto.open and time.monotonic() < deadline:
            await self.sleep(0.05)
        if conn.signin_code is None:
            proto.close("no SignInACK in time")
        if not conn.signed_in:
            return None
        old = self.current
        self.current = proto
        self.node = node
        self.backoff = 0.5
        if old is not None and old.open and old is not proto:
            old.conn.superseded = True
            self.later(SUPERSEDED_GRACE, self._close_superseded, old,
                       f"the device signed in again on {proto.conn.node} (conn {proto.conn.serial})")
        self.flush_pending(all_pending=True)
        return proto

    def _close_superseded(self, proto: SoakProtocol, why: str) -> None:
        if proto.open:
            self.history.violation(
                "one-connection",
                f"conn {proto.conn.serial} of device {self.device_id} (user {self.user_id}) on {proto.conn.node} was "
                f"still open {SUPERSEDED_GRACE:.0f} s after {why}, without a Kicked frame (closed by the client)")
            proto.close("superseded and not kicked")

    def lost(self, proto: SoakProtocol) -> None:
        """A connection closed: every send unanswered on it will be resent on the next one."""
        for seq, send in self.pending.items():
            last = send.attempts[-1] if send.attempts else None
            if last is not None and last.conn == proto.conn.serial and last.code is None:
                self.retry_due.add(seq)
        if proto is self.current:
            self.current = None
            if self.running and not self.http_busy:
                kicked_elsewhere = any(r == "signed in elsewhere" for r in proto.conn.kicked)
                self.ensure_connected(0.2 if not kicked_elsewhere else 0.5)

    # --- frames -----------------------------------------------------------------------

    def frame(self, proto: SoakProtocol, code: int, value: bytes) -> None:
        conn = proto.conn
        if code == SIGN_IN_ACK:
            ack = codec.SignInAck.from_bytes(value)
            if conn.signin_code is None:
                conn.signin_code = ack.code
                if ack.code == 1:
                    conn.signed_in_at = self.history.tick()
        elif code == MESSAGE_SEND_ACK:
            self._send_ack(proto, codec.MessageSendAck.from_bytes(value))
        elif code == MESSAGE:
            self._messages(proto, codec.Message.from_bytes(value))
        elif code == KICKED:
            kicked = codec.Kicked.from_bytes(value)
            conn.kicked.append(kicked.reason)
        elif code == HEARTBEAT_ACK:
            proto.heartbeat_at = None
        else:
            self.history.notes.append(f"conn {conn.serial}: unexpected frame code {code}")

    def _send_ack(self, proto: SoakProtocol, ack: codec.MessageSendAck) -> None:
        now_tick = self.history.tick()
        proto.unanswered.pop(ack.send_sequence, None)
        send = self._find_send(proto.conn.serial, ack.send_sequence)
        if send is None:
            self.history.violation(
                "acks", f"conn {proto.conn.serial}: ACK for send_sequence {ack.send_sequence} never written there")
            return
        attempt = next(a for a in reversed(send.attempts) if a.conn == proto.conn.serial and a.code is None)
        attempt.code = ack.code
        attempt.message_id = ack.message_id
        attempt.seq = ack.sync_sequence
        attempt.answered_at = now_tick
        if ack.code == 0:
            if send.epoch == self.epoch:
                self.pending.pop(send.send_sequence, None)
                self.retry_due.discard(send.send_sequence)
        elif ack.code in (1, 5):
            if send.epoch == self.epoch and send.send_sequence in self.pending:
                delay = 0.3 + self.rng.random()
                self.later(delay, self._retry_one, send)
        else:
            self.history.violation(
                "acks", f"{send.describe()}: ACK code {ack.code} for a valid send (friends and groups never change)")
            if send.epoch == self.epoch:
                self.pending.pop(send.send_sequence, None)

    def _find_send(self, conn_serial: int, send_sequence: int) -> Send | None:
        # the most recent send with an unanswered attempt on this connection
        for send in reversed(self.sends):
            if send.send_sequence == send_sequence and any(
                a.conn == conn_serial and a.code is None for a in send.attempts
            ):
                return send
        return None

    def _messages(self, proto: SoakProtocol, message: codec.Message) -> None:
        conn = proto.conn
        if message.type != MESSAGE_SYNC:
            conn.pushes += 1
        for item in message.messages:
            seq, mid = item.sync_sequence, item.message_id
            held = self.store.get(seq)
            if held is not None and held != mid:
                self.history.violation(
                    "exactly-once",
                    f"device {self.device_id} (user {self.user_id}) got seq {seq} as message {mid} on conn "
                    f"{conn.serial}, but held it as message {held}: one seq, two messages",
                )
            before = conn.received.get(seq)
            if before is not None and before != mid:
                self.history.violation(
                    "exactly-once", f"conn {conn.serial}: seq {seq} arrived as {before} and as {mid}")
            conn.received[seq] = mid
            self.store[seq] = mid
        while self.contiguous + 1 in self.store:
            self.contiguous += 1
        if message.type == MESSAGE_SYNC and not message.more:
            proto.sync_pending_since = None
        top = max(self.store) if self.store else 0
        if top > self.contiguous:
            now = time.monotonic()
            if proto.sync_pending_since is None or now - proto.sync_pending_since > 10:
                proto.sync_pending_since = now
                proto.write(sync_frame(self.contiguous))
        proto.schedule_ack()

    # --- sending ----------------------------------------------------------------------

    def new_sends(self, count: int) -> None:
        """Queue ``count`` new sends to random targets and write them (pipelined)."""
        for _ in range(count):
            receiver_type, receiver_id = self.rng.choice(self.targets)
            seq = self.next_sequence
            self.next_sequence += 1
            send = Send(
                device_id=self.device_id, user_id=self.user_id, epoch=self.epoch, send_sequence=seq,
                receiver_type=receiver_type, receiver_id=receiver_id,
                content=f"soak d{self.device_id} e{self.epoch} s{seq}",
                recipients=self.directory[(receiver_type, receiver_id)],
            )
            self.history.sends.append(send)
            self.sends.append(send)
            self.pending[seq] = send
            self.retry_due.add(seq)
        self.flush_pending()

    def _retry_one(self, send: Send) -> None:
        if self.pending.get(send.send_sequence) is send:
            self.retry_due.add(send.send_sequence)
            self.flush_pending()

    def flush_pending(self, *, all_pending: bool = False) -> None:
        """Write the sends due (all pending ones on a new connection) in one write."""
        proto = self.current
        if proto is None or not proto.open or not proto.conn.signed_in or self.http_busy:
            return
        due = sorted(self.pending) if all_pending else sorted(s for s in self.retry_due if s in self.pending)
        frames = []
        for seq in due:
            if seq in proto.unanswered:
                continue  # in flight on this very connection: wait for its answer
            send = self.pending[seq]
            attempt = Attempt(conn=proto.conn.serial, index=proto.sends_written, written_at=self.history.tick())
            proto.sends_written += 1
            send.attempts.append(attempt)
            proto.unanswered[seq] = time.monotonic()
            frames.append(send_frame(send.receiver_id, send.content, seq, receiver_type=send.receiver_type))
            self.retry_due.discard(seq)
        if frames:
            proto.write(*frames)

    # --- churn ------------------------------------------------------------------------

    def reconnect(self, *, same_node: bool) -> None:
        """Close the connection and connect again at once (same or other node)."""
        proto = self.current
        if proto is None or not proto.open or self.connecting:
            return
        if not same_node:
            self.node = 1 - self.node
        proto.close("reconnect to the same node" if same_node else "reconnect to the other node")
        # lost() reconnects; make it immediate
        self.backoff = 0.5

    def takeover(self) -> None:
        """Sign the device in on a second connection (either node) while the first is open."""
        if self.connecting or self.http_busy or self.current is None or not self.current.open:
            return  # one sign-in at a time (TCP or HTTP), as a real client does
        node = self.rng.randrange(len(self.ports))
        self.connecting = True

        async def go() -> None:
            try:
                await self._connect(node)
            finally:
                self.connecting = False
                self.ensure_connected(0.5)

        self.spawn(go())

    async def http_sign_in(self) -> None:
        """Sign the device in over HTTP: a new send_sequence epoch; the open connection is kicked."""
        if self.http_busy or self.connecting:
            return
        self.http_busy = True
        started = False
        try:
            deadline = time.monotonic() + 10
            while self.pending and time.monotonic() < deadline:
                await self.sleep(0.1)
            # ticks while an HTTP sign-in is in flight (its start, each retry, its end):
            # it may kick any connection that signed in before the last of them
            self.history.http_signins.setdefault(self.device_id, []).append(self.history.tick())
            started = True
            for i in range(60):
                status, env = await self.http.call(
                    "POST", "/user/signin", {"number": self.number, "password": PASSWORD},
                    auth=(self.device_id, self.token))
                if status == 200 and env.get("code") == 0:
                    data = env["data"]
                    if data.get("send_sequence") != 0 or data.get("user_id") != self.user_id:
                        self.history.violation("http", f"device {self.device_id}: HTTP sign-in answered {data}")
                    break
                # an unknown outcome may have started a new epoch already: only a
                # definite success tells the numbering can restart at 1
                self.history.http_signins[self.device_id].append(self.history.tick())
                await self.sleep(0.5 + self.rng.random())
            else:
                self.history.notes.append(f"device {self.device_id}: HTTP sign-in kept failing")
                raise RuntimeError("HTTP sign-in kept failing")
            for send in self.pending.values():
                send.abandoned = True
            self.pending.clear()
            self.retry_due.clear()
            self.epoch += 1
            self.next_sequence = 1
            old = self.current
            if old is not None and old.open:
                old.conn.superseded = True
                self.later(SUPERSEDED_GRACE, self._close_superseded, old, "the device signed in over HTTP")
            # a connection signed in after the HTTP sign-in has the new epoch
            self.current = None
        except RuntimeError:
            pass
        finally:
            if started:
                self.history.http_signins[self.device_id].append(self.history.tick())
            self.http_busy = False
            self.ensure_connected(0.1)

    # --- housekeeping -----------------------------------------------------------------

    def watchdog(self) -> None:
        """Close stuck connections; heartbeat; nudge retries and reconnects."""
        now = time.monotonic()
        for proto in list(self.protocols):
            if not proto.open:
                self.protocols.remove(proto)
                continue
            waiting = [*proto.unanswered.values(), proto.sync_pending_since, proto.heartbeat_at]
            oldest = min((t for t in waiting if t is not None), default=None)
            if oldest is not None and now - oldest > STUCK_AFTER:
                proto.close(f"stuck: a request unanswered for {STUCK_AFTER:.0f} s")
            elif now - proto.last_frame_at > 20 and proto.conn.signed_in and proto.heartbeat_at is None:
                proto.write(heartbeat_frame())
                proto.heartbeat_at = now
        if self.running:
            self.ensure_connected()
            if self.retry_due:
                self.flush_pending()

    def stop(self) -> list[Deferred[None]]:
        """Stop and close every connection."""
        self.running = False
        for timer in list(self._timers):
            if isinstance(timer, Deferred):
                timer.cancel()
            elif timer.active():
                timer.cancel()
        self._timers.clear()
        waiters = []
        for proto in self.protocols:
            if proto.open:
                waiters.append(proto.lost)
                proto.close("soak over")
        return waiters
