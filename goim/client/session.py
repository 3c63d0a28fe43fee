"""A device's TCP session: sign-in, sync, acks, sends, heartbeats and reconnects.

:class:`Session` keeps one connection to a goim connect node alive for as long as it
runs, and gives the application the guarantees of docs/protocol.md:

* every message stored for the user is handed to the application exactly once and in
  ``sync_sequence`` order, whether it came by sync, by live push (which may be out of
  order, repeated or missing: a jump in sequence triggers a sync) or by the ACK of the
  device's own send;
* every send keeps its ``send_sequence`` across retries, reconnects and restarts until
  the server answers it, so the server's dedupe makes delivery exactly-once.

Time comes from an injected clock and connections from an injected connector, so the
whole session runs under ``twisted.internet.task.Clock`` and ``StringTransport`` in
unit tests. State changes are written through a :class:`goim.client.state.StateStore`
before the server is told about them (sends before they are written, received
messages before they are acknowledged).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Sequence, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from goim.client.backoff import Backoff
from goim.client.errors import SendFailed, SessionStopped
from goim.client.inbox import Inbox
from goim.client.protocol import CLIENT_MAX_FRAME, ClientConnection, ConnectionListener, encode_message_send
from goim.client.state import ClientState, OutgoingMessage, StateStore
from goim.features import Feature
from goim.protocols import codec
from goim.types import (
    RECEIVER_GROUP,
    RECEIVER_USER,
    SEND_INTERNAL_ERROR,
    SEND_OK,
    SEND_RATE_LIMITED,
    SENDER_USER,
    SendCode,
    StoredMessage,
)
from goim.util import Clock, DelayedCall, now_ms

#: Kicked reasons after which the session reconnects as usual (docs/protocol.md §6)
RECONNECT_KICK_REASONS = frozenset({"server shutting down"})

#: MessageSendACK codes after which a send is retried with the same send_sequence
RETRY_CODES = frozenset({SEND_INTERNAL_ERROR, SEND_RATE_LIMITED})

#: ``connector(listener)``: open a connection whose protocol is ``ClientConnection(listener)``
Connector = Callable[[ConnectionListener], "Deferred[ClientConnection]"]


def endpoint_connector(endpoint: IStreamClientEndpoint) -> Connector:
    """A connector that opens each connection through a Twisted client endpoint.

    Args:
        endpoint: e.g. ``HostnameEndpoint(reactor, host, port)`` or a TLS endpoint.
    """

    def connect(listener: ConnectionListener) -> Deferred[ClientConnection]:
        return connectProtocol(endpoint, ClientConnection(listener))

    return connect


def tcp_connector(reactor: Any, host: str, port: int, *, timeout: float = 30.0) -> Connector:
    """A connector for plain TCP to ``host:port`` (names, IPv4 and IPv6).

    Args:
        reactor: the reactor (``IReactorTCP`` and ``IReactorTime``).
        host: host name or address.
        port: the connect node's client port (50000 by default).
        timeout: seconds a connection attempt may take.
    """
    return endpoint_connector(cast(IStreamClientEndpoint, HostnameEndpoint(reactor, host, port, timeout=timeout)))


def failover_connector(
    reactor: Any, addresses: Sequence[tuple[str, int]], *, timeout: float = 30.0
) -> Connector:
    """A connector over several connect nodes: the first attempt goes to the first
    address, and every later attempt (the session makes one only after an attempt
    failed or a connection was lost) to the next one, round the list. The session's
    jittered back-off spaces the attempts as it does for one address.

    Args:
        reactor: the reactor (``IReactorTCP`` and ``IReactorTime``).
        addresses: ``(host, port)`` of each connect node, at least one.
        timeout: seconds a connection attempt may take.
    """
    return round_robin([tcp_connector(reactor, host, port, timeout=timeout) for host, port in addresses])


def round_robin(connectors: Sequence[Connector]) -> Connector:
    """A connector that uses ``connectors`` in turn, one per attempt (see
    ``failover_connector``)."""
    if not connectors:
        raise ValueError("name at least one connect node address")
    calls = 0

    def connect(listener: ConnectionListener) -> Deferred[ClientConnection]:
        nonlocal calls
        index = calls % len(connectors)
        calls += 1
        return connectors[index](listener)

    return connect


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timings of a session; the defaults are what a goim 1.1 app does.

    Attributes:
        heartbeat_interval: seconds between heartbeats (goim 1.1 beats every 240 s;
            the server closes a connection silent for 600 s).
        heartbeat_timeout: seconds a heartbeat may go unanswered (no frame at all
            arrives) before the connection counts as dead and is dropped.
        signin_timeout: seconds the server may take to answer SignIn.
        close_timeout: seconds a closing connection gets before it is aborted.
        reconnect_initial: first reconnect delay in seconds.
        reconnect_max: largest reconnect delay in seconds.
        reconnect_jitter: the largest fraction taken off a reconnect delay.
        retry_initial: first delay before a send answered with code 1 or 5 is retried.
        retry_max: largest such delay.
        gap_retry: seconds before a sync is tried again when one ended with a gap it
            could not fill.
        max_frame: what SignIn announces as the largest frame this client reads.
        features: the opt-in bits SignIn announces (``goim.features``). TRIMMED by
            default: the session reports trimmed history (``history_trimmed``); with
            EVENTS (1), read, recall and edit events arrive as messages with a
            non-zero ``kind``.
    """

    heartbeat_interval: float = 240.0
    heartbeat_timeout: float = 60.0
    signin_timeout: float = 30.0
    close_timeout: float = 5.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    reconnect_jitter: float = 0.5
    retry_initial: float = 1.0
    retry_max: float = 30.0
    gap_retry: float = 2.0
    max_frame: int = CLIENT_MAX_FRAME
    features: int = int(Feature.TRIMMED)


@dataclass(frozen=True, slots=True)
class SendAck:
    """The server stored a send.

    Attributes:
        send_sequence: the send's number.
        message_id: the stored message's id (the same for every copy).
        sync_sequence: the seq of the sender's own copy (0 from a server that does
            not fill in this extension).
    """

    send_sequence: int
    message_id: int
    sync_sequence: int


class Status(enum.Enum):
    """Where a session is."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    SIGNING_IN = "signing in"
    CONNECTED = "connected"
    WAITING = "waiting to reconnect"
    KICKED = "kicked"
    REFUSED = "sign-in refused"


class SessionObserver:
    """Receives a session's events; override the methods you need (all do nothing).

    Events are called on the reactor thread. An observer that raises is logged and
    does not disturb the session or the other observers.
    """

    def messages_received(self, messages: Sequence[StoredMessage]) -> None:
        """New messages, in seq order, each handed over exactly once.

        Called once per batch (one received frame, or the device's own copy after a
        send's ACK) before the state is saved and the batch acknowledged to the
        server; the default calls :meth:`message_received` for each message. Your own
        sends are included (``sender_device_id`` is this device): a device's log is the
        user's whole conversation, including what sibling devices sent.
        """
        for message in messages:
            self.message_received(message)

    def message_received(self, message: StoredMessage) -> None:
        """One new message (see :meth:`messages_received`)."""

    def send_acked(self, message: OutgoingMessage, ack: SendAck) -> None:
        """The server stored a send."""

    def send_failed(self, message: OutgoingMessage, code: int) -> None:
        """The server refused a send for good (code 2 not a friend, 3 not in the group, 4 invalid)."""

    def connected(self) -> None:
        """Signed in; sends flow."""

    def disconnected(self, reason: str) -> None:
        """A signed-in connection was lost."""

    def reconnecting(self, delay: float, reason: str) -> None:
        """A connection attempt failed or a connection was lost; the next attempt is in ``delay`` s."""

    def synced(self, sync_sequence: int) -> None:
        """A sync finished and the device holds every message up to ``sync_sequence``."""

    def kicked(self, reason: str) -> None:
        """The server ended the session (e.g. ``signed in elsewhere``); no reconnect follows."""

    def sign_in_refused(self, message: str) -> None:
        """SignIn was refused (bad token, device not bound); no reconnect follows."""

    def history_trimmed(self) -> None:
        """A sync started past the device's position: the server deleted older
        messages (retention), so some history this device never saw is gone."""


class Session:
    """One device's session with a goim server.

    Args:
        state: the device's state (credentials, sequences, pending sends); the session
            updates it in place and saves it through ``store``.
        store: where the state is saved.
        connect: opens connections (:func:`tcp_connector`, :func:`endpoint_connector`).
        clock: time for every timer (the reactor, or ``task.Clock`` in tests).
        config: timings.
        random: a float source in [0, 1) for jitter (tests pass a fixed one).
    """

    log = Logger()

    def __init__(
        self,
        *,
        state: ClientState,
        store: StateStore,
        connect: Connector,
        clock: Clock,
        config: SessionConfig | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.config = config or SessionConfig()
        self._connect_fn = connect
        self._clock = clock
        self._random = random
        c = self.config
        self.backoff = Backoff(
            initial=c.reconnect_initial, maximum=c.reconnect_max, jitter=c.reconnect_jitter, random=random
        )
        self.status = Status.STOPPED
        self.observers: list[SessionObserver] = []
        self.connection: ClientConnection | None = None
        self.last_error = ""
        self._attempt: Deferred[ClientConnection] | None = None
        self._stopping = False
        self._end: tuple[Status, str] | None = None
        self._kick_reason = ""
        self._timers: dict[str, DelayedCall] = {}
        self._inbox = Inbox(state.synced_seq)
        self._sync_running = False
        self._sync_again = False
        self._sync_base = 0
        # sends written on the current connection and not answered yet
        self._in_flight: set[int] = set()
        self._retry_timers: dict[int, DelayedCall] = {}
        self._retry_backoff: dict[int, Backoff] = {}
        self._send_waiters: dict[int, list[Deferred[SendAck]]] = {}
        self._sync_waiters: list[Deferred[int]] = []
        self._connect_waiters: list[Deferred[None]] = []
        self._stop_waiters: list[Deferred[None]] = []

    # --- public API -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the session is signed in right now."""
        return self.status is Status.CONNECTED

    @property
    def synced_seq(self) -> int:
        """The highest seq up to which every message was handed to the application."""
        return self.state.synced_seq

    @property
    def duplicates_dropped(self) -> int:
        """How many received messages were dropped as already held (since :meth:`start`)."""
        return self._inbox.duplicates

    @property
    def pending(self) -> list[OutgoingMessage]:
        """Sends waiting for the server's answer, in send order."""
        return list(self.state.pending)

    def add_observer(self, observer: SessionObserver) -> None:
        """Start calling ``observer`` on events."""
        self.observers.append(observer)

    def remove_observer(self, observer: SessionObserver) -> None:
        """Stop calling ``observer``."""
        if observer in self.observers:
            self.observers.remove(observer)

    def is_own(self, message: StoredMessage) -> bool:
        """Whether this device sent ``message``."""
        return message.sender_type == SENDER_USER and message.sender_device_id == self.state.device_id

    def start(self) -> None:
        """Connect, and keep reconnecting until :meth:`stop`, a kick or a refused sign-in.

        Raises:
            ValueError: the state has no device bound to a user (sign in over HTTP first).
        """
        if not self.state.signed_in:
            raise ValueError("the device is not signed in: register or log in over HTTP first")
        if self.status not in (Status.STOPPED, Status.KICKED, Status.REFUSED):
            return
        self._stopping = False
        self._end = None
        self.last_error = ""
        self._inbox = Inbox(self.state.synced_seq)
        self.backoff.reset()
        self._connect()

    def stop(self) -> Deferred[None]:
        """Stop reconnecting and close the connection.

        Sends still waiting fail with :class:`SessionStopped` but stay queued in the
        state: the next session resends them with the same ``send_sequence``.

        Returns:
            A Deferred that fires once the connection is closed.
        """
        self._stopping = True
        self._cancel_timers()
        self._cancel_retries()
        if self._attempt is not None:
            attempt, self._attempt = self._attempt, None
            attempt.cancel()
        self._fail_waiters(SessionStopped("the session was stopped"))
        conn = self.connection
        if conn is None:
            self.status = Status.STOPPED
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stop_waiters.append(d)
        self._later("close", self.config.close_timeout, conn.abort)
        conn.close()
        return d

    def send(
        self, receiver_type: int, receiver_id: int, content: str, *, message_type: int = 1
    ) -> Deferred[SendAck]:
        """Queue a message, save it, and write it when (or as soon as) signed in.

        Args:
            receiver_type: 1 user, 2 group (:data:`goim.types.RECEIVER_USER`, ``RECEIVER_GROUP``).
            receiver_id: the user or group id.
            content: the text.
            message_type: the message type (1 text).

        Returns:
            A Deferred that fires with the :class:`SendAck`, or fails with
            :class:`SendFailed` (refused for good) or :class:`SessionStopped`.

        Raises:
            ValueError: the message is too large for a frame (over 65,535 bytes
                encoded); nothing is queued. The server's own content limit (about
                3,900 bytes by default) is answered with code 4 instead.
        """
        message = OutgoingMessage(
            send_sequence=self.state.send_sequence + 1,
            receiver_type=receiver_type,
            receiver_id=receiver_id,
            type=message_type,
            content=content,
            send_time=now_ms(self._clock),
        )
        encode_message_send(message)  # raises for a message no frame can carry
        self.state.send_sequence = message.send_sequence
        self.state.pending.append(message)
        self._save()
        d: Deferred[SendAck] = Deferred()
        self._send_waiters.setdefault(message.send_sequence, []).append(d)
        if self.connected:
            self._write_send(message)
        return d

    def send_to_user(self, user_id: int, content: str, *, message_type: int = 1) -> Deferred[SendAck]:
        """:meth:`send` to a user."""
        return self.send(RECEIVER_USER, user_id, content, message_type=message_type)

    def send_to_group(self, group_id: int, content: str, *, message_type: int = 1) -> Deferred[SendAck]:
        """:meth:`send` to a group."""
        return self.send(RECEIVER_GROUP, group_id, content, message_type=message_type)

    def resync(self) -> None:
        """Ask the server for everything after :attr:`synced_seq` now (when connected)."""
        self._trigger_sync()

    def wait_connected(self) -> Deferred[None]:
        """A Deferred that fires once signed in (now, if it is); fails on stop or kick."""
        if self.connected:
            return succeed(None)
        if self._stopped_for_good():
            return fail(SessionStopped(self.last_error or "the session is not running"))
        d: Deferred[None] = Deferred()
        self._connect_waiters.append(d)
        return d

    def wait_synced(self) -> Deferred[int]:
        """A Deferred that fires with :attr:`synced_seq` when the next sync completes with no gap."""
        if self._stopped_for_good():
            return fail(SessionStopped(self.last_error or "the session is not running"))
        d: Deferred[int] = Deferred()
        self._sync_waiters.append(d)
        return d

    # --- connecting -----------------------------------------------------------------

    def _stopped_for_good(self) -> bool:
        return self._stopping or self.status in (Status.STOPPED, Status.KICKED, Status.REFUSED)

    def _connect(self) -> None:
        self._timers.pop("reconnect", None)
        self.status = Status.CONNECTING
        try:
            attempt = self._connect_fn(self)
        except Exception:
            self._attempt_failed(Failure())
            return
        self._attempt = attempt
        attempt.addCallbacks(self._attempt_succeeded, self._attempt_failed)

    def _attempt_succeeded(self, conn: ClientConnection) -> None:
        self._attempt = None

    def _attempt_failed(self, failure: Failure) -> None:
        self._attempt = None
        if self._stopping:
            return
        reason = failure.getErrorMessage() or repr(failure.value)
        self.log.info("connecting failed: {reason}", reason=reason)
        self._schedule_reconnect(f"connecting failed: {reason}")

    def _schedule_reconnect(self, reason: str) -> None:
        delay = self.backoff.next_delay()
        self.status = Status.WAITING
        self.last_error = reason
        self._later("reconnect", delay, self._connect)
        self._emit("reconnecting", delay, reason)

    # --- ConnectionListener ---------------------------------------------------------

    def connection_made(self, connection: ClientConnection) -> None:
        """Sign in and ask for a sync at once (the server holds the trigger until sign-in)."""
        if self._stopping or self.connection is not None or self.status is not Status.CONNECTING:
            connection.abort()
            return
        self.connection = connection
        self.status = Status.SIGNING_IN
        self._kick_reason = ""
        state = self.state
        connection.sign_in(
            device_id=state.device_id,
            user_id=state.user_id,
            token=state.token,
            max_frame=self.config.max_frame,
            features=self.config.features,
        )
        self._trigger_sync()
        self._later("signin", self.config.signin_timeout, self._signin_timed_out, connection)

    def sign_in_answered(self, connection: ClientConnection, ack: codec.SignInAck) -> None:
        """Code 1: connected, resend what is pending. Code 2: give up (a new token is needed)."""
        if connection is not self.connection or self.status is not Status.SIGNING_IN:
            return
        self._cancel_timer("signin")
        if ack.code != codec.SIGN_IN_OK:
            self.log.warn("sign-in refused: {message}", message=ack.message)
            self._end = (Status.REFUSED, ack.message or "sign-in refused")
            connection.close()
            return
        self.status = Status.CONNECTED
        self.last_error = ""
        self.backoff.reset()
        self._schedule_heartbeat()
        self.log.info(
            "signed in as device {device_id} of user {user_id}",
            device_id=self.state.device_id,
            user_id=self.state.user_id,
        )
        waiters, self._connect_waiters = self._connect_waiters, []
        for d in waiters:
            d.callback(None)
        self._emit("connected")
        self._resend_pending()

    def messages_received(self, connection: ClientConnection, message: codec.Message) -> None:
        """Take new messages in order; a sync ends with ``more`` false; a gap triggers a sync."""
        if connection is not self.connection:
            return
        user_id = self.state.user_id
        stored = message.stored(user_id=user_id)
        if message.trimmed:
            # what lies between our position and the first message kept is gone
            self.log.info("the server trimmed history after seq {seq}", seq=self.state.synced_seq)
            if stored:
                self._inbox.skip_to(stored[0].seq - 1)
            self._emit("history_trimmed")
        self._accept(stored)
        if message.type == codec.MESSAGE_SYNC and not message.more:
            self._sync_finished()
        elif self._inbox.has_gap:
            self._trigger_sync()

    def send_answered(self, connection: ClientConnection, ack: codec.MessageSendAck) -> None:
        """Finish, retry or fail the send the ACK names."""
        if connection is not self.connection:
            return
        seq = ack.send_sequence
        self._in_flight.discard(seq)
        message = next((m for m in self.state.pending if m.send_sequence == seq), None)
        if message is None:
            return  # answered before (a retry's second ACK)
        if ack.code in RETRY_CODES:
            self._schedule_retry(message, ack.code)
            return
        self.state.pending.remove(message)
        self._retry_backoff.pop(seq, None)
        waiters = self._send_waiters.pop(seq, [])
        if ack.code != SEND_OK:
            self._save()
            self.log.info("send {seq} refused with code {code}", seq=seq, code=SendCode.describe(ack.code))
            for d in waiters:
                d.errback(SendFailed(ack.code, message))
            self._emit("send_failed", message, ack.code)
            return
        result = SendAck(send_sequence=seq, message_id=ack.message_id, sync_sequence=ack.sync_sequence)
        own = self._own_copy(message, result)
        if own is not None:
            self._accept([own])  # saves the state too
        else:
            self._save()
        for d in waiters:
            d.callback(result)
        self._emit("send_acked", message, result)
        if self._inbox.has_gap:
            self._trigger_sync()

    def heartbeat_answered(self, connection: ClientConnection) -> None:
        """Nothing to do: every frame counts as a sign of life."""

    def kicked(self, connection: ClientConnection, reason: str) -> None:
        """Remember why; after anything but a shutdown, do not reconnect."""
        if connection is not self.connection:
            return
        self.log.info("kicked: {reason}", reason=reason)
        self._kick_reason = reason or "kicked"
        if reason not in RECONNECT_KICK_REASONS:
            self._end = (Status.KICKED, reason)
        connection.close()

    def connection_lost(self, connection: ClientConnection, reason: Failure) -> None:
        """Clean up, then stop, end (kicked, refused) or reconnect with back-off."""
        if connection is not self.connection:
            return
        self.connection = None
        was_connected = self.status is Status.CONNECTED
        self._cancel_timers()
        self._cancel_retries()
        self._in_flight.clear()
        self._sync_running = False
        self._sync_again = False
        text = self._kick_reason or reason.getErrorMessage() or "connection lost"
        self.log.info("connection lost: {reason}", reason=text)
        if was_connected:
            self._emit("disconnected", text)
        if self._stopping:
            self.status = Status.STOPPED
            waiters, self._stop_waiters = self._stop_waiters, []
            for d in waiters:
                d.callback(None)
            return
        if self._end is not None:
            status, why = self._end
            self.status = status
            self.last_error = why
            self._fail_waiters(SessionStopped(f"{status.value}: {why}"))
            self._emit("kicked" if status is Status.KICKED else "sign_in_refused", why)
            return
        self._schedule_reconnect(text)

    # --- receiving ------------------------------------------------------------------

    def _accept(self, messages: Sequence[StoredMessage]) -> None:
        ready = self._inbox.add(messages)
        if not ready:
            return
        self.state.synced_seq = self._inbox.held
        self._emit("messages_received", ready)
        self._save()
        if self.connection is not None:
            self.connection.ack(
                message_id=ready[-1].message_id,
                sync_sequence=self.state.synced_seq,
                receive_time=now_ms(self._clock),
            )

    def _own_copy(self, message: OutgoingMessage, ack: SendAck) -> StoredMessage | None:
        # The ACK names the seq of the sender's copy: the device has it without waiting.
        if self._inbox.knows(ack.sync_sequence):
            return None
        return StoredMessage(
            user_id=self.state.user_id,
            seq=ack.sync_sequence,
            message_id=ack.message_id,
            sender_type=SENDER_USER,
            sender_id=self.state.user_id,
            sender_device_id=self.state.device_id,
            receiver_type=message.receiver_type,
            receiver_id=message.receiver_id,
            type=message.type,
            content=message.content,
            send_time=message.send_time,
        )

    def _trigger_sync(self) -> None:
        conn = self.connection
        if conn is None or self.status not in (Status.SIGNING_IN, Status.CONNECTED):
            return
        if self._sync_running:
            self._sync_again = True
            return
        self._cancel_timer("gap")
        self._sync_running = True
        self._sync_again = False
        self._sync_base = self.state.synced_seq
        conn.sync(self.state.synced_seq)

    def _sync_finished(self) -> None:
        self._sync_running = False
        if self._inbox.has_gap:
            # A hole remains (pushes overtook the sync's snapshot): sync again, at once
            # if this sync made progress or a push asked for it, else after a pause.
            if self._sync_again or self.state.synced_seq > self._sync_base:
                self._trigger_sync()
            elif "gap" not in self._timers:
                self._later("gap", self.config.gap_retry, self._trigger_sync)
            return
        self._sync_again = False
        waiters, self._sync_waiters = self._sync_waiters, []
        for d in waiters:
            d.callback(self.state.synced_seq)
        self._emit("synced", self.state.synced_seq)

    # --- sending --------------------------------------------------------------------

    def _write_send(self, message: OutgoingMessage) -> None:
        if self.connection is None or message.send_sequence in self._in_flight:
            return
        self._in_flight.add(message.send_sequence)
        self.connection.send_message(message)

    def _resend_pending(self) -> None:
        self._cancel_retries()
        for message in list(self.state.pending):
            self._write_send(message)

    def _schedule_retry(self, message: OutgoingMessage, code: int) -> None:
        seq = message.send_sequence
        backoff = self._retry_backoff.get(seq)
        if backoff is None:
            c = self.config
            backoff = Backoff(initial=c.retry_initial, maximum=c.retry_max, random=self._random)
            self._retry_backoff[seq] = backoff
        delay = backoff.next_delay()
        self.log.info(
            "send {seq} answered with code {code}: retrying in {delay:.1f} s",
            seq=seq, code=SendCode.describe(code), delay=delay,
        )
        old = self._retry_timers.pop(seq, None)
        if old is not None and old.active():
            old.cancel()
        self._retry_timers[seq] = self._clock.callLater(delay, self._retry, seq)

    def _retry(self, seq: int) -> None:
        self._retry_timers.pop(seq, None)
        if not self.connected:
            return  # the next sign-in resends everything pending
        message = next((m for m in self.state.pending if m.send_sequence == seq), None)
        if message is not None:
            self._write_send(message)

    def _cancel_retries(self) -> None:
        timers, self._retry_timers = self._retry_timers, {}
        for timer in timers.values():
            if timer.active():
                timer.cancel()

    # --- heartbeats and timeouts -------------------------------------------------------

    def _schedule_heartbeat(self) -> None:
        self._later("heartbeat", self.config.heartbeat_interval, self._beat)

    def _beat(self) -> None:
        self._timers.pop("heartbeat", None)
        conn = self.connection
        if conn is None or not self.connected:
            return
        conn.heartbeat()
        if "alive" not in self._timers:
            self._later("alive", self.config.heartbeat_timeout, self._check_alive, conn, conn.frames_received)
        self._schedule_heartbeat()

    def _check_alive(self, conn: ClientConnection, mark: int) -> None:
        self._timers.pop("alive", None)
        if conn is self.connection and conn.frames_received == mark:
            self.log.warn("no answer to a heartbeat in {timeout} s: dropping the connection", timeout=self.config.heartbeat_timeout)
            self._kick_reason = "heartbeat timed out"
            conn.abort()

    def _signin_timed_out(self, conn: ClientConnection) -> None:
        self._timers.pop("signin", None)
        if conn is self.connection and self.status is Status.SIGNING_IN:
            self.log.warn("no SignInACK in {timeout} s: dropping the connection", timeout=self.config.signin_timeout)
            self._kick_reason = "sign-in timed out"
            conn.abort()

    # --- helpers ----------------------------------------------------------------------

    def _later(self, name: str, delay: float, f: Callable[..., Any], *args: Any) -> None:
        self._cancel_timer(name)
        self._timers[name] = self._clock.callLater(delay, self._fire_timer, name, f, *args)

    def _fire_timer(self, name: str, f: Callable[..., Any], *args: Any) -> None:
        self._timers.pop(name, None)
        f(*args)

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _cancel_timers(self) -> None:
        for name in list(self._timers):
            self._cancel_timer(name)

    def _fail_waiters(self, error: Exception) -> None:
        sends, self._send_waiters = self._send_waiters, {}
        for waiters in sends.values():
            for d in waiters:
                d.errback(error)
        syncs, self._sync_waiters = self._sync_waiters, []
        for s in syncs:
            s.errback(error)
        connects, self._connect_waiters = self._connect_waiters, []
        for c in connects:
            c.errback(error)

    def _save(self) -> None:
        self.store.save(self.state)

    def _emit(self, event: str, *args: Any) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, event)(*args)
            except Exception:
                self.log.failure("observer {observer!r} failed on {event}", observer=observer, event=event)
