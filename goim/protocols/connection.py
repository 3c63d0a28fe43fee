"""The server side of one client connection (DESIGN section 3).

:class:`ClientConnection` runs the sign-in gate, timers, rate limit, pipelined sends,
acks and live pushes of one connection; its frame budget is a
:class:`goim.protocols.budget.TokenBucket` and its syncs a
:class:`goim.protocols.sync.SyncStream`. It talks to the logic layer only through
:class:`goim.ports.LogicPort`, to its node's connection table only through
:class:`goim.ports.ConnectionRegistry` (``goim.connect.table`` implements it) and to
time only through the injected clock. :class:`ClientConnectionFactory` builds it.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Coroutine
from typing import Sequence

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from goim.features import Feature, features_of
from goim.protocols.changes import items_for_connection
from goim.logs import debug_enabled, goim_observer, trace_pushed
from goim.pb import goim_pb2 as pb
from goim.ports import ConnectionRegistry, LogicPort
from goim.protocols.budget import TokenBucket
from goim.protocols.deadlines import Deadlines
from goim.protocols.codec import (
    DEFAULT_MAX_FRAME,
    HEARTBEAT,
    HEARTBEAT_ACK,
    KICKED,
    MESSAGE,
    MESSAGE_ACK,
    MESSAGE_SEND,
    MESSAGE_SEND_ACK,
    SIGN_IN,
    SIGN_IN_ACK,
    SIGN_IN_FAILED,
    SIGN_IN_OK,
    SYNC_TRIGGER,
    MalformedFrameError,
    code_name,
    decode_message_ack,
    decode_message_send,
    decode_sign_in,
    decode_sync_trigger,
    encode_kicked,
    encode_send_ack,
    encode_sign_in_ack,
    frame_cap,
    pack_push,
    send_request,
    stored_from_item,
)
from goim.protocols.codec import CHANGE_ACK, EDIT, READ_REPORT, RECALL, ChangeAck, Edit, ReadReport, Recall
from goim.protocols.framing import MAX_VALUE_LENGTH, TLVReceiver, encode_frame, set_no_delay, write_through
from goim.protocols.sync import SyncProducer, SyncStream
from goim.types import (
    SEND_INTERNAL_ERROR,
    SEND_RATE_LIMITED,
    SendOutcomeUnknown,
    SendRequest,
    SendResult,
    SignInResult,
    connection_id,
)
from goim.types import KIND_EDIT, KIND_READ, KIND_RECALL, ChangeRequest, ChangeResult
from goim.util import Clock, DelayedCall

SUPERSEDED = "a newer connection of this device signed in"

_HOLD_SIGN_IN = "sign-in"
_HOLD_SENDS = "in-flight sends"
_HOLD_OUTBOUND = "unsent output"
_HOLD_BUDGET = "over the send budget"
_HOLD_CHANGES = "in-flight read reports, recalls and edits"
#: after a send refused with code 5 the connection is not read for its retry hint
#: (this long when there is none), at most MAX_BUDGET_PAUSE: a pipelined flood then
#: waits in the client's socket instead of costing the server a refusal per frame
BUDGET_PAUSE = 0.1
MAX_BUDGET_PAUSE = 5.0
#: output queued during one reactor turn is written at the end of the turn as one
#: write (with TCP_NODELAY on, one write is one segment); once this many bytes are
#: queued they are written at once, so a sync page still meets the transport's
#: backpressure when it is written
COALESCE_LIMIT = 16384


def _cancel(timer: DelayedCall | None) -> None:
    if timer is not None and timer.active():
        timer.cancel()


class ClientConnection(TLVReceiver):
    """The server side of one client connection.

    Frames are handled strictly in arrival order. Handling may start asynchronous
    work (sign-in, sends, syncs, acks); sign-in and a full window of in-flight sends
    pause the delivery of further frames (and the transport) until they complete.

    Attributes:
        device_id: the device signed in on this connection (0 before sign-in).
        user_id: the user signed in on this connection (0 before sign-in).
        epoch: the device's send_sequence epoch at sign-in (part of each send's dedupe key).
        serial: this connection's number on its node (newer connections have higher ones).
        conn_id: the connection's id, unique across nodes and restarts
            (``goim.types.connection_id``).
        signed_in: whether sign-in succeeded.
        cap: the largest frame value written to this client.
        acked_seq: the highest seq the client acknowledged (MessageACK or SyncTrigger).
    """

    log = Logger(observer=goim_observer)

    # A connection's own state lives in slots. In an instance dict its forty-odd
    # attributes would cost every connection a key table of its own, about 1.5 KiB
    # (CPython shares one between the instances of a class only up to 30 keys):
    # most of what an idle connection holds (docs/benchmarks.md, issue 12, fifteenth
    # pass). What Protocol and TLVReceiver set stays in the (small) __dict__.
    __slots__ = (
        "factory", "MAX_LENGTH", "_logic", "_clock", "_table", "serial", "conn_id", "device_id", "user_id",
        "epoch", "signed_in", "cap", "features", "acked_seq", "_closing", "_lost", "_holds", "_signin_call",
        "deadline_key", "_abort_call", "_last_frame_at", "_budget", "_in_flight", "_changes_in_flight",
        "_lost_waiters", "producer", "_sync", "_grace_call", "_budget_call", "_budget_until",
        "_producer_registered", "_missed_after", "_out", "_out_size", "_flush_queued",
    )  # fmt: skip

    def __init__(self, factory: ClientConnectionFactory) -> None:
        self.factory = factory
        self.MAX_LENGTH = factory.max_frame_length
        self._logic = factory.logic
        self._clock = factory.clock
        self._table = factory.table
        self.serial = factory.next_serial()
        self.conn_id = connection_id(factory.node_id, factory.boot, self.serial)
        self.device_id = 0
        self.user_id = 0
        self.epoch = 0
        self.signed_in = False
        self.cap = DEFAULT_MAX_FRAME
        #: what the client opted in to at sign-in (docs/protocol.md "Features")
        self.features = Feature.NONE
        self.acked_seq = 0
        self._closing = False
        self._lost = False
        self._holds: set[str] | None = None  # made on the first hold: idle connections stay small
        self._signin_call: DelayedCall | None = None
        #: the key of this connection's idle check in the factory's ``idle_checks``
        self.deadline_key: int | None = None
        self._abort_call: DelayedCall | None = None
        self._last_frame_at = 0.0
        self._budget = TokenBucket(rate=factory.rate_limit, burst=factory.rate_burst)
        self._in_flight = 0
        self._changes_in_flight = 0
        self._lost_waiters: list[Deferred[None]] = []
        self.producer = SyncProducer()
        self.producer.on_resume = self._resumed
        self.producer.on_pause = self._outbound_full
        self._sync = SyncStream(
            self,
            logic=self._logic,
            producer=self.producer,
            page_size=factory.sync_page_size,
            run=self._run,
            log=self.log,
        )
        self._grace_call: DelayedCall | None = None
        self._budget_call: DelayedCall | None = None
        self._budget_until = 0.0
        self._producer_registered = False
        # while the transport is paused pushes are not written; a catch-up sync from
        # just below the first one skipped runs when it resumes
        self._missed_after: int | None = None
        # output of this reactor turn not yet handed to the transport (see flush)
        self._out: list[bytes] | None = None  # made on the first write: idle connections stay small
        self._out_size = 0
        self._flush_queued = False  # the factory flushes it at the end of this turn

    # --- public API ----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """How many sends are waiting for the logic layer."""
        return self._in_flight

    @property
    def syncing(self) -> bool:
        """Whether a sync is streaming."""
        return self._sync.running

    def push_items(self, seqs: Sequence[int], items: Sequence[bytes], audiences: Sequence[int]) -> None:
        """Write live-pushed serialised MessageItems as type-2 Message frames packed
        to the cap. A connect node forwards the items a logic node serialised
        without decoding them; event rows and state fields reach only connections
        that opted in (``goim.protocols.changes``).

        Does nothing before sign-in or once the connection is closing. While the
        transport is paused (the client reads too slowly) pushes are skipped and
        made good by a sync once it resumes. Never raises.

        Args:
            seqs: each item's ``sync_sequence``, ascending.
            items: copies stored for this connection's user, serialised.
            audiences: each item's ``AUDIENCE_*``.
        """
        if not self.signed_in or not self.writable() or not items:
            return
        if self.producer.paused:
            # The client is not reading fast enough: buffer nothing more for it.
            lowest = min(seqs) - 1
            self._missed_after = lowest if self._missed_after is None else min(self._missed_after, lowest)
            return
        shown = items_for_connection(items, audiences, self.features)
        if not shown:
            return
        try:
            self.write_messages(pack_push(shown, cap=self.cap))
            if debug_enabled():
                pushed = [stored_from_item(pb.MessageItem.FromString(i), user_id=self.user_id) for i in shown]
                trace_pushed(self.log, pushed, device_id=self.device_id, peer=self.peer)
        except Exception:
            self.log.failure("push to {peer} failed", peer=self.peer)

    def _outbound_full(self) -> None:
        # The transport's unsent bytes passed its bound (64 KiB on TCP): read no more
        # frames (they would only add replies), skip pushes, and give the client
        # write_grace seconds to read before the connection is aborted.
        if not self.writable():
            return
        self._hold(_HOLD_OUTBOUND)
        if self._grace_call is None:
            self._grace_call = self._later(self.factory.write_grace, self._write_grace_over)

    def _write_grace_over(self) -> None:
        self._grace_call = None
        if not self.writable() or not self.producer.paused:
            return
        self.log.info(
            "aborting the connection of device {device_id} at {peer}: it has not read its data for {grace} s",
            device_id=self.device_id,
            peer=self.peer,
            grace=self.factory.write_grace,
        )
        self.closeConnection()
        _cancel(self._abort_call)  # no flush to wait for: abort now
        self._abort()

    def _resumed(self) -> None:
        _cancel(self._grace_call)
        self._grace_call = None
        self._release(_HOLD_OUTBOUND)
        if self._missed_after is not None and self.signed_in and self.writable():
            after, self._missed_after = self._missed_after, None
            self.log.info(
                "device {device_id} at {peer} reads again: syncing the pushes skipped after seq {after}",
                device_id=self.device_id,
                peer=self.peer,
                after=after,
            )
            self._request_sync(after, from_client=False)

    def catch_up(self) -> None:
        """Sync this connection from the highest seq its client acknowledged.

        Used after the delivery path was interrupted so a client that never sends a
        SyncTrigger on its own still receives every message.
        """
        if not self.signed_in or not self.writable():
            return
        self._request_sync(self.acked_seq, from_client=False)

    def kick(self, reason: str) -> None:
        """Write a Kicked frame, then close the connection.

        Args:
            reason: the text for the client, clipped to 256 bytes.
        """
        if not self.writable():
            return
        self.log.info(
            "kicking device {device_id} of user {user_id} at {peer}: {reason}",
            device_id=self.device_id,
            user_id=self.user_id,
            peer=self.peer,
            reason=reason,
        )
        self.sendFrame(KICKED, encode_kicked(reason))
        self.closeConnection()

    def when_lost(self) -> Deferred[None]:
        """A Deferred that fires once the connection is lost (now, if it is)."""
        if self._lost:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._lost_waiters.append(waiter)
        return waiter

    # --- IProtocol -------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Set TCP_NODELAY, register the sync producer and start the sign-in timer."""
        set_no_delay(self.transport)
        self._budget.restart(self._clock.seconds())
        self._transport.registerProducer(self.producer, True)
        self._producer_registered = True
        self._signin_call = self._later(
            self.factory.signin_timeout, self._signin_timed_out
        )
        self.log.debug("connection from {peer}", peer=self.peer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Unregister, tell logic the device went offline, stop timers and syncs."""
        try:
            super().connectionLost(reason)
            self._lost = True
            self._drop_output()
            self._cancel_timers()
            _cancel(self._abort_call)
            self._abort_call = None
            self.producer.stopProducing()
            if self.signed_in:
                self.log.info(
                    "device {device_id} of user {user_id} at {peer} disconnected",
                    device_id=self.device_id,
                    user_id=self.user_id,
                    peer=self.peer,
                )
                if self._table.unregister(self):
                    self._run(self._offline(), "offline")
            waiters, self._lost_waiters = self._lost_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        except Exception:
            self.log.failure("error cleaning up the connection from {peer}", peer=self.peer)

    def closeConnection(self) -> None:
        """Stop handling frames and close; abort if the close has not finished in time."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._cancel_timers()
        # A TCP transport does not finish a close while a streaming producer that
        # it paused is registered: unregister it first. The sync then stops.
        if self._producer_registered and self.transport is not None:
            self._producer_registered = False
            self._transport.unregisterProducer()
        self.producer.stopProducing()
        self.flush()  # what was queued (a Kicked, a refused SignInACK) goes before the close
        super().closeConnection()
        self._abort_call = self._later(self.factory.close_timeout, self._abort)

    def frameReceived(self, frame_type: int, value: bytes) -> None:
        """Handle one frame: rate limit, sign-in gate, idle clock, dispatch."""
        if self._closing or self._lost:
            return
        now = self._clock.seconds()
        if not self._budget.take(now):
            self._close("frame rate limit exceeded")
            return
        try:
            if not self.signed_in:
                if frame_type != SIGN_IN:
                    self._close(f"{code_name(frame_type)} before sign-in")
                    return
                self._begin_sign_in(value)
                return
            self._last_frame_at = now
            handler = _HANDLERS.get(frame_type)
            if handler is None:
                self.log.debug(
                    "ignoring {code} from {peer}", code=code_name(frame_type), peer=self.peer
                )
                return
            handler(self, value)
        except MalformedFrameError as e:
            self._close(str(e))

    # --- frame handlers ------------------------------------------------------------------

    def _begin_sign_in(self, value: bytes) -> None:
        message = decode_sign_in(value)
        self._hold(_HOLD_SIGN_IN)
        self._run(self._sign_in(message), "sign-in")

    def _on_repeated_sign_in(self, value: bytes) -> None:
        self.log.info(
            "ignoring a repeated SignIn from device {device_id} at {peer}",
            device_id=self.device_id,
            peer=self.peer,
        )

    def _on_sync_trigger(self, value: bytes) -> None:
        after = max(0, decode_sync_trigger(value).sync_sequence)
        if after > self.acked_seq:
            self.acked_seq = after
        self._request_sync(after, from_client=True)

    def _on_heartbeat(self, value: bytes) -> None:
        self.sendFrame(HEARTBEAT_ACK, b"")

    def _on_message_send(self, value: bytes) -> None:
        request = send_request(
            decode_message_send(value), device_id=self.device_id, user_id=self.user_id, epoch=self.epoch, frame=value
        )
        self._in_flight += 1
        if self._in_flight >= self.factory.max_in_flight:
            self._hold(_HOLD_SENDS)
        # plain callbacks, no coroutine: on the reactor a send is mostly this
        maybeDeferred(self._logic.send, request, conn=self.conn_id).addCallbacks(
            self._sent, self._send_failed, callbackArgs=(request,), errbackArgs=(request,)
        ).addErrback(self._log_failure, "send")

    def _on_message_ack(self, value: bytes) -> None:
        message: pb.MessageACK = decode_message_ack(value)
        seq = message.sync_sequence
        if seq > self.acked_seq:
            self.acked_seq = seq
        # no coroutine per ack: a group member acks every push
        self._logic.ack(device_id=self.device_id, user_id=self.user_id, seq=seq, conn=self.conn_id).addErrback(
            self._log_failure, "ack"
        )

    # --- read reports, recalls and edits (issue 14; docs/protocol.md "Events") ----------

    def _on_read_report(self, value: bytes) -> None:
        frame = ReadReport.from_bytes(value)
        request = ChangeRequest(
            KIND_READ,
            conversation_type=frame.conversation_type,
            conversation_id=frame.conversation_id,
            seq=frame.sync_sequence,
        )
        self._begin_change(frame.request_id, request)

    def _on_recall(self, value: bytes) -> None:
        frame = Recall.from_bytes(value)
        self._begin_change(frame.request_id, ChangeRequest(KIND_RECALL, message_id=frame.message_id))

    def _on_edit(self, value: bytes) -> None:
        frame = Edit.from_bytes(value)
        self._begin_change(frame.request_id, ChangeRequest(KIND_EDIT, message_id=frame.message_id, content=frame.content))

    def _begin_change(self, request_id: int, request: ChangeRequest) -> None:
        # bounded like sends: past max_in_flight the connection's frames wait unread
        self._changes_in_flight += 1
        if self._changes_in_flight >= self.factory.max_in_flight:
            self._hold(_HOLD_CHANGES)
        self._run(self._change(request_id, request), "change")

    async def _change(self, request_id: int, request: ChangeRequest) -> None:
        try:
            try:
                result = await self._logic.change(
                    device_id=self.device_id, user_id=self.user_id, request=request, conn=self.conn_id
                )
            except CancelledError:
                raise
            except Exception:
                self.log.failure(
                    "change {request_id} (kind {kind}) of device {device_id} from {peer} failed",
                    request_id=request_id,
                    kind=request.kind,
                    device_id=self.device_id,
                    peer=self.peer,
                )
                result = ChangeResult(3, "internal error")  # API code 3
            if self.writable():
                ack = ChangeAck(request_id=request_id, code=result.code, message=result.message, read_sequence=result.read_seq)
                self.sendFrame(CHANGE_ACK, ack.to_bytes())
        finally:
            self._changes_in_flight -= 1
            if self._changes_in_flight < self.factory.max_in_flight:
                self._release(_HOLD_CHANGES)

    # --- async work -------------------------------------------------------------------

    async def _sign_in(self, message: pb.SignIn) -> None:
        device_id, user_id = message.device_id, message.user_id
        if device_id <= 0 or user_id <= 0:
            result = SignInResult(ok=False, message="invalid device_id or user_id")
        else:
            try:
                result = await self._logic.sign_in(
                    device_id=device_id, user_id=user_id, token=message.token, conn=self.conn_id
                )
            except CancelledError:
                raise
            except Exception:
                self.log.failure(
                    "sign-in of device {device_id} user {user_id} from {peer} failed",
                    device_id=device_id,
                    user_id=user_id,
                    peer=self.peer,
                )
                result = SignInResult(ok=False, message="internal error")
        if not self.writable():
            # Closed meanwhile (timeout, peer gone): undo a successful sign-in (only
            # this connection's presence: a newer one of the device is left alone).
            if result.ok:
                await self._logic.offline(device_id=device_id, user_id=user_id, conn=self.conn_id)
            return
        if not result.ok:
            self.log.info(
                "sign-in of device {device_id} user {user_id} from {peer} refused: {why}",
                device_id=device_id,
                user_id=user_id,
                peer=self.peer,
                why=result.message,
            )
            self.sendFrame(
                SIGN_IN_ACK, encode_sign_in_ack(SIGN_IN_FAILED, result.message or "sign-in failed")
            )
            self.closeConnection()
            return
        self.device_id = device_id
        self.user_id = user_id
        if not self._table.register(self):
            # a newer connection of this device signed in here first
            self.log.info(
                "sign-in of device {device_id} from {peer} superseded by a newer connection",
                device_id=device_id,
                peer=self.peer,
            )
            self.sendFrame(SIGN_IN_ACK, encode_sign_in_ack(SIGN_IN_FAILED, SUPERSEDED))
            self.closeConnection()
            await self._logic.offline(device_id=device_id, user_id=user_id, conn=self.conn_id)
            return
        self.epoch = result.epoch
        self.cap = frame_cap(message.max_frame)
        self.features = features_of(message.features)
        self.signed_in = True
        _cancel(self._signin_call)
        self._signin_call = None
        self.sendFrame(SIGN_IN_ACK, encode_sign_in_ack(SIGN_IN_OK))
        self._table.kick_if_early(self)
        self._last_frame_at = self._clock.seconds()
        self.factory.idle_checks.check(self, self._last_frame_at + self.factory.idle_timeout)
        self.log.info(
            "device {device_id} of user {user_id} signed in from {peer} (frame cap {cap})",
            device_id=device_id,
            user_id=user_id,
            peer=self.peer,
            cap=self.cap,
        )
        self._release(_HOLD_SIGN_IN)

    def _sent(self, result: SendResult, request: SendRequest) -> None:
        """A send's answer: its ACK goes out (the connection still open)."""
        try:
            if debug_enabled():
                self.log.debug(
                    "send {send_sequence} of device {device_id}: code {code}, message {message_id}, seq {seq}",
                    send_sequence=request.send_sequence,
                    device_id=request.device_id,
                    code=result.code,
                    message_id=result.message_id,
                    seq=result.seq,
                )
            if self.writable():
                self.sendFrame(MESSAGE_SEND_ACK, encode_send_ack(request.send_sequence, result))
                if result.code == SEND_RATE_LIMITED:
                    self._over_budget(result.retry_after_ms)
        finally:
            self._send_done()

    def _send_failed(self, failure: Failure, request: SendRequest) -> Failure | None:
        if failure.check(CancelledError):
            self._send_done()
            return failure  # not ACKed; logged by the next errback
        if failure.check(SendOutcomeUnknown):
            # neither ACK it nor let later sends overtake it: the client sends
            # again, in order, after it reconnects (dedupe makes that safe)
            try:
                self._close(f"send {request.send_sequence}: outcome unknown")
            finally:
                self._send_done()
            return None
        self.log.failure(
            "send {send_sequence} of device {device_id} from {peer} failed",
            failure,
            send_sequence=request.send_sequence,
            device_id=request.device_id,
            peer=self.peer,
        )
        self._sent(SendResult(code=SEND_INTERNAL_ERROR), request)
        return None

    def _send_done(self) -> None:
        self._in_flight -= 1
        if self._in_flight < self.factory.max_in_flight:
            self._release(_HOLD_SENDS)

    def _over_budget(self, retry_after_ms: int) -> None:
        delay = min(retry_after_ms / 1000.0, MAX_BUDGET_PAUSE) if retry_after_ms > 0 else BUDGET_PAUSE
        until = self._clock.seconds() + delay
        if self._budget_call is not None and self._budget_call.active():
            if until <= self._budget_until:
                return
            self._budget_call.cancel()
        self._budget_until = until
        self._hold(_HOLD_BUDGET)
        self._budget_call = self._later(delay, self._budget_refilled)

    def _budget_refilled(self) -> None:
        self._budget_call = None
        self._release(_HOLD_BUDGET)

    async def _offline(self) -> None:
        await self._logic.offline(device_id=self.device_id, user_id=self.user_id, conn=self.conn_id)

    def _request_sync(self, after: int, *, from_client: bool) -> None:
        self._sync.request(after, from_client=from_client)

    # --- helpers ---------------------------------------------------------------------

    def writable(self) -> bool:
        """Whether the connection is neither closing nor lost."""
        return not (self._closing or self._lost)

    def write_messages(self, values: list[bytes]) -> None:
        """Write Message frame values, each in its own frame (over the cap: logged)."""
        frames: list[bytes] = []
        for value in values:
            if len(value) > self.cap:
                if len(value) > MAX_VALUE_LENGTH:
                    self.log.error(
                        "dropping a {size}-byte Message value for {peer}: over the frame maximum",
                        size=len(value),
                        peer=self.peer,
                    )
                    continue
                self.log.warn(
                    "a single message needs {size} bytes, over the frame cap {cap} of {peer}: "
                    "sent alone",
                    size=len(value),
                    cap=self.cap,
                    peer=self.peer,
                )
            frames.append(encode_frame(MESSAGE, value))
        if frames:
            self._queue_output(frames)

    def sendFrame(self, frame_type: int, value: bytes) -> None:
        """Queue one frame for the end of this reactor turn (see :meth:`flush`).

        Raises:
            ValueError: the value is over 65535 bytes (nothing is queued).
        """
        self._queue_output([encode_frame(frame_type, value)])

    def flush(self) -> None:
        """Hand the output queued in this reactor turn to the transport as one write.

        Frames are queued rather than written one by one so that the replies and
        pushes one reactor turn produces for a connection leave in one segment now
        that the socket has TCP_NODELAY (no Nagle coalescing, no 40 ms delayed-ACK
        stall). Runs at the end of the turn (the factory's
        :meth:`ClientConnectionFactory.flush_later`), at once when
        :data:`COALESCE_LIMIT` bytes are queued, and before the connection closes.
        """
        self._flush_queued = False
        out = self._out
        if not out:
            return
        self._out, self._out_size = None, 0
        if self._lost or self.transport is None:
            return
        write_through(self._transport, out[0] if len(out) == 1 else b"".join(out))

    def _queue_output(self, frames: list[bytes]) -> None:
        if self._lost:
            return
        if self._out is None:
            self._out = frames
        else:
            self._out.extend(frames)
        self._out_size += sum(len(f) for f in frames)
        if self._out_size >= COALESCE_LIMIT:
            self.flush()
        elif not self._flush_queued:
            self._flush_queued = True
            self.factory.flush_later(self)

    def _drop_output(self) -> None:
        self._out, self._out_size = None, 0

    def _close(self, reason: str) -> None:
        if not self.writable():
            return
        self.log.info("closing the connection from {peer}: {reason}", peer=self.peer, reason=reason)
        self.closeConnection()

    def _hold(self, reason: str) -> None:
        if not self._holds:
            self.pauseProducing()
        if self._holds is None:
            self._holds = set()
        self._holds.add(reason)

    def _release(self, reason: str) -> None:
        if not self._holds or reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and self.writable():
            self.resumeProducing()

    def _signin_timed_out(self) -> None:
        self._signin_call = None
        self._close(f"not signed in within {self.factory.signin_timeout} s")

    def deadline_reached(self) -> None:
        """The idle check (``factory.idle_checks``): close the connection when it has
        sent nothing for ``idle_timeout``, else check again that long after its last frame."""
        timeout = self.factory.idle_timeout
        if self._clock.seconds() - self._last_frame_at >= timeout:
            self._close(f"idle for {timeout} s")
        else:
            self.factory.idle_checks.check(self, self._last_frame_at + timeout)

    def _abort(self) -> None:
        self._abort_call = None
        if self._lost:
            return
        self.log.info("aborting the connection from {peer}: close timed out", peer=self.peer)
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    def _cancel_timers(self) -> None:
        _cancel(self._signin_call)
        self.factory.idle_checks.forget(self)
        _cancel(self._grace_call)
        _cancel(self._budget_call)
        self._signin_call = None
        self._grace_call = None
        self._budget_call = None

    def _later(self, delay: float, function: Callable[[], None]) -> DelayedCall:
        return self._clock.callLater(delay, function)

    def _run(self, coroutine: Coroutine[Any, Any, None], what: str) -> None:
        Deferred.fromCoroutine(coroutine).addErrback(self._log_failure, what)

    def _log_failure(self, failure: Failure, what: str) -> None:
        self.log.failure(
            "{what} on the connection from {peer} failed", failure, what=what, peer=self.peer
        )


_HANDLERS: dict[int, Callable[[ClientConnection, bytes], None]] = {
    SIGN_IN: ClientConnection._on_repeated_sign_in,
    SYNC_TRIGGER: ClientConnection._on_sync_trigger,
    HEARTBEAT: ClientConnection._on_heartbeat,
    MESSAGE_SEND: ClientConnection._on_message_send,
    MESSAGE_ACK: ClientConnection._on_message_ack,
    READ_REPORT: ClientConnection._on_read_report,
    RECALL: ClientConnection._on_recall,
    EDIT: ClientConnection._on_edit,
}


class ClientConnectionFactory(Factory[ClientConnection]):
    """Builds :class:`ClientConnection` connections and holds what they share.

    Args:
        logic: the logic layer.
        clock: time source for every timer (``IReactorTime``: the reactor, or a
            ``twisted.internet.task.Clock`` in tests).
        table: the node's connection table (``goim.connect.table.ConnectionTable``).
        signin_timeout: seconds a connection may take to sign in.
        idle_timeout: seconds a signed-in connection may send nothing.
        sync_page_size: messages fetched per ``sync_page`` call.
        max_in_flight: sends per connection waiting for logic before reading pauses.
        rate_limit: frames per second a connection may send on average.
        rate_burst: frames a connection may send at once (token bucket size).
        close_timeout: seconds a closing connection gets to flush before it is aborted.
        write_grace: seconds a connection whose unsent bytes passed the transport's
            bound (it stopped reading) gets to read before it is aborted; meanwhile
            its frames are not read and pushes to it are skipped.
        max_frame_length: the largest frame value accepted from a client; a longer
            frame closes the connection (default and hard maximum 65,535).
        node_id: this node's id, the first part of every connection id.
        boot: random per start of the node (the second part); a new one by default.
    """

    def __init__(
        self,
        *,
        logic: LogicPort,
        clock: Clock,
        table: ConnectionRegistry,
        signin_timeout: float = 10.0,
        idle_timeout: float = 600.0,
        sync_page_size: int = 200,
        max_in_flight: int = 256,
        rate_limit: float = 2000.0,
        rate_burst: int = 4000,
        close_timeout: float = 30.0,
        max_frame_length: int = MAX_VALUE_LENGTH,
        node_id: str = "standalone",
        boot: str | None = None,
        write_grace: float = 60.0,
    ) -> None:
        for name, number in (
            ("signin_timeout", signin_timeout),
            ("idle_timeout", idle_timeout),
            ("sync_page_size", sync_page_size),
            ("max_in_flight", max_in_flight),
            ("rate_limit", rate_limit),
            ("rate_burst", rate_burst),
            ("close_timeout", close_timeout),
            ("write_grace", write_grace),
        ):
            if number <= 0:
                raise ValueError(f"{name} must be positive, not {number}")
        if not 0 < max_frame_length <= MAX_VALUE_LENGTH:
            raise ValueError(
                f"max_frame_length must be 1..{MAX_VALUE_LENGTH}, not {max_frame_length}"
            )
        self.logic = logic
        self.clock = clock
        self.table = table
        self.signin_timeout = signin_timeout
        self.idle_timeout = idle_timeout
        self.sync_page_size = sync_page_size
        self.max_in_flight = max_in_flight
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self.close_timeout = close_timeout
        self.max_frame_length = max_frame_length
        self.write_grace = write_grace
        self.node_id = node_id
        self.boot = boot if boot is not None else secrets.token_hex(6)
        self._serial = 0
        self._unflushed: list[ClientConnection] = []
        self._flush_call: DelayedCall | None = None
        #: every signed-in connection's idle check, on one timer (goim.protocols.deadlines)
        self.idle_checks = Deadlines(clock)

    def flush_later(self, connection: ClientConnection) -> None:
        """Flush ``connection`` at the end of this reactor turn.

        One timer per turn flushes every connection that queued output in it, rather
        than a timer per connection: a batch's pushes reach hundreds of them.
        """
        self._unflushed.append(connection)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush_all)

    def _flush_all(self) -> None:
        self._flush_call = None
        unflushed, self._unflushed = self._unflushed, []
        for connection in unflushed:
            try:
                connection.flush()
            except Exception:
                ClientConnection.log.failure("writing to {peer} failed", peer=connection.peer)

    def next_serial(self) -> int:
        """The next connection's serial number (1, 2, ...)."""
        self._serial += 1
        return self._serial

    def buildProtocol(self, addr: IAddress | None) -> ClientConnection:
        """Build the protocol of one accepted connection."""
        return ClientConnection(self)
