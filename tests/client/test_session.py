"""The session over fake connections and a task.Clock: sync, order, acks, sends, reconnects."""

from __future__ import annotations

from typing import Sequence

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from goim.client.errors import SendFailed, SessionStopped
from goim.client.session import SendAck, Session, SessionConfig, SessionObserver, Status
from goim.client.state import ClientState, MemoryStateStore
from goim.protocols import codec
from goim.types import StoredMessage
from tests.client.fakes import FakeConnector, FakeServer, Recorder, message

DEVICE_ID = 10
USER_ID = 1


class SessionTestCase(SynchronousTestCase):
    """A session on a FakeConnector, a Clock and a MemoryStateStore; jitter fixed at 0.5."""

    config = SessionConfig()

    def setUp(self) -> None:
        self.clock = Clock()
        self.connector = FakeConnector()
        self.store = MemoryStateStore()
        self.state = ClientState(device_id=DEVICE_ID, token="tok", user_id=USER_ID)
        self.session = self.make_session(self.state)
        self.events = Recorder()
        self.session.add_observer(self.events)

    def make_session(self, state: ClientState) -> Session:
        return Session(
            state=state, store=self.store, connect=self.connector, clock=self.clock, config=self.config, random=lambda: 0.5
        )

    def connect(self, *, synced: Sequence[StoredMessage] = ()) -> FakeServer:
        """Start (if needed), accept the attempt, sign in, answer the first sync."""
        if self.session.status is Status.STOPPED:
            self.session.start()
        server = self.connector.accept()
        server.sign_in_ok()
        server.sync(synced)
        return server


class ConnectTests(SessionTestCase):
    def test_sign_in_and_sync_trigger_are_written_at_once(self) -> None:
        """On connect: SignIn (with max_frame 65535) and SyncTrigger from the held seq, before any ACK."""
        self.state.synced_seq = 7
        self.session.start()
        server = self.connector.accept()
        frames = server.decoded()
        self.assertEqual([code for code, _ in frames], [codec.SIGN_IN, codec.SYNC_TRIGGER])
        sign_in = frames[0][1]
        self.assertEqual(
            (sign_in.device_id, sign_in.user_id, sign_in.token, sign_in.max_frame), (DEVICE_ID, USER_ID, "tok", 65535)
        )
        self.assertEqual(frames[1][1].sync_sequence, 7)
        self.assertIs(self.session.status, Status.SIGNING_IN)

    def test_sign_in_ok_connects_and_sync_completes(self) -> None:
        """SignInACK code 1 gives 'connected'; the sync's last frame gives 'synced'."""
        self.connect(synced=[message(1), message(2)])
        self.assertTrue(self.session.connected)
        self.assertEqual(self.events.names(), ["connected", "messages", "synced"])
        self.assertEqual(self.events.of("synced"), [2])

    def test_start_needs_a_signed_in_device(self) -> None:
        """A state without a user cannot start a session."""
        session = self.make_session(ClientState(device_id=1, token="t"))
        self.assertRaises(ValueError, session.start)

    def test_wait_connected_and_wait_synced_fire(self) -> None:
        """wait_connected fires on sign-in; wait_synced with the held seq after the sync."""
        self.session.start()
        connected = self.session.wait_connected()
        synced = self.session.wait_synced()
        server = self.connector.accept()
        self.assertNoResult(connected)
        server.sign_in_ok()
        self.successResultOf(connected)
        self.assertNoResult(synced)
        server.sync([message(1)])
        self.assertEqual(self.successResultOf(synced), 1)


class ReceiveTests(SessionTestCase):
    def test_duplicate_pushes_are_dropped(self) -> None:
        """A message pushed twice, or pushed after the sync brought it, is handed over once."""
        server = self.connect(synced=[message(1)])
        server.push(message(2))
        server.push(message(2))
        server.push(message(1))
        self.assertEqual([m.seq for m in self.events.messages], [1, 2])

    def test_gap_in_pushes_triggers_sync_from_highest_contiguous(self) -> None:
        """Push 3 while holding 1: SyncTrigger{1}; 3 is held back until 2 arrives."""
        server = self.connect(synced=[message(1)])
        server.frames()
        server.push(message(3))
        self.assertEqual([t.sync_sequence for t in server.of(codec.SYNC_TRIGGER)], [1])
        self.assertEqual([m.seq for m in self.events.messages], [1])
        server.sync([message(2), message(3)])
        self.assertEqual([m.seq for m in self.events.messages], [1, 2, 3])

    def test_out_of_order_pushes_are_reordered(self) -> None:
        """Pushes 3, 2 then 4 come out as 2, 3, 4."""
        server = self.connect(synced=[message(1)])
        server.push(message(3))
        server.push(message(2))
        server.push(message(4))
        self.assertEqual([m.seq for m in self.events.messages], [1, 2, 3, 4])

    def test_one_sync_at_a_time_and_again_when_pushes_saw_a_gap(self) -> None:
        """A gap seen while a sync runs sends no second trigger until that sync ends."""
        server = self.connect(synced=[message(1)])
        server.frames()
        server.push(message(4))
        server.push(message(6))
        self.assertEqual(len(server.of(codec.SYNC_TRIGGER)), 1)
        server.sync([message(2), message(3), message(4)])  # 5 not in the snapshot yet
        self.assertEqual([t.sync_sequence for t in server.of(codec.SYNC_TRIGGER)], [4])
        server.sync([message(5), message(6)])
        self.assertEqual([m.seq for m in self.events.messages], [1, 2, 3, 4, 5, 6])
        self.assertEqual(self.events.of("synced")[-1], 6)

    def test_sync_without_progress_is_retried_after_a_pause(self) -> None:
        """A sync that fills nothing of a gap is tried again after gap_retry, not in a tight loop."""
        server = self.connect(synced=[message(1)])
        server.frames()
        server.push(message(3))
        server.of(codec.SYNC_TRIGGER)
        server.sync([])
        self.assertEqual(server.of(codec.SYNC_TRIGGER), [])
        self.clock.advance(self.config.gap_retry)
        self.assertEqual([t.sync_sequence for t in server.of(codec.SYNC_TRIGGER)], [1])

    def test_multi_frame_sync_ends_at_more_false(self) -> None:
        """Frames with more=true do not end the sync; the one with more=false does."""
        self.session.start()
        server = self.connector.accept()
        server.sign_in_ok()
        server.sync([message(1)], more=True)
        self.assertNotIn("synced", self.events.names())
        server.sync([message(2)], more=False)
        self.assertEqual(self.events.of("synced"), [2])

    def test_ack_follows_processing_with_the_highest_contiguous_seq(self) -> None:
        """MessageACK names the last contiguous seq and its message id, once per batch."""
        server = self.connect()
        server.frames()
        server.push(message(1), message(2))
        server.push(message(4))
        acks = server.of(codec.MESSAGE_ACK)
        self.assertEqual([(a.sync_sequence, a.message_id) for a in acks], [(2, 1002)])
        self.clock.advance(5)
        server.push(message(3))
        acks = server.of(codec.MESSAGE_ACK)
        self.assertEqual([(a.sync_sequence, a.message_id, a.receive_time) for a in acks], [(4, 1004, 5000)])

    def test_state_is_saved_before_the_ack_is_written(self) -> None:
        """When the observer sees a batch, neither the state nor the ACK has gone out yet."""
        server = self.connect()
        server.frames()
        seen: list[tuple[int, int]] = []
        test = self

        class Check(SessionObserver):
            def messages_received(self, messages: Sequence[StoredMessage]) -> None:
                saved = test.store.saved or {}
                seen.append((saved.get("synced_seq", 0), len(server.of(codec.MESSAGE_ACK))))

        self.session.add_observer(Check())
        server.push(message(1))
        self.assertEqual(seen, [(0, 0)])
        self.assertEqual(self.store.saved and self.store.saved["synced_seq"], 1)
        self.assertEqual(len(server.of(codec.MESSAGE_ACK)), 1)

    def test_unrequested_catch_up_is_taken_like_a_sync(self) -> None:
        """Server-initiated type-1 frames (after a delivery outage) are deduplicated and taken."""
        server = self.connect(synced=[message(1), message(2)])
        server.sync([message(1), message(2), message(3)], more=True)
        server.sync([message(4)])
        self.assertEqual([m.seq for m in self.events.messages], [1, 2, 3, 4])

    def test_failing_observer_does_not_break_the_session(self) -> None:
        """An observer that raises is logged; others still get the event and the ACK is sent."""

        class Broken(SessionObserver):
            def message_received(self, message: StoredMessage) -> None:
                raise RuntimeError("app bug")

        self.session.observers.insert(0, Broken())
        server = self.connect()
        server.frames()
        server.push(message(1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([m.seq for m in self.events.messages], [1])
        self.assertEqual(len(server.of(codec.MESSAGE_ACK)), 1)


class SendTests(SessionTestCase):
    def test_send_is_saved_then_written(self) -> None:
        """send() numbers the message, saves it as pending, then writes MessageSend."""
        server = self.connect()
        server.frames()
        d = self.session.send_to_user(2, "hello")
        self.assertEqual([m.send_sequence for m in self.store.load().pending], [1])
        (sent,) = server.of(codec.MESSAGE_SEND)
        self.assertEqual((sent.send_sequence, sent.receiver_type, sent.receiver_id, sent.content), (1, 1, 2, "hello"))
        self.assertNoResult(d)

    def test_ack_fires_the_deferred_and_hands_over_the_own_copy(self) -> None:
        """ACK code 0: the Deferred fires, pending empties, the own copy is a message at its seq."""
        server = self.connect()
        d = self.session.send_to_group(5, "hey")
        server.send_ack(1, message_id=77, seq=1)
        self.assertEqual(self.successResultOf(d), SendAck(send_sequence=1, message_id=77, sync_sequence=1))
        self.assertEqual(self.session.pending, [])
        (own,) = self.events.messages
        self.assertEqual((own.seq, own.message_id, own.content, own.receiver_id), (1, 77, "hey", 5))
        self.assertTrue(self.session.is_own(own))
        server.push(own)  # the pushed copy is a duplicate
        self.assertEqual(len(self.events.messages), 1)

    def test_code_1_retries_later_with_the_same_send_sequence(self) -> None:
        """ACK code 1 (and 5): the same send_sequence goes out again after a delay; then it succeeds."""
        server = self.connect()
        server.frames()
        d = self.session.send_to_user(2, "retry me")
        server.of(codec.MESSAGE_SEND)
        server.send_ack(1, code=1)
        self.assertEqual(server.of(codec.MESSAGE_SEND), [])
        self.clock.advance(self.config.retry_max)
        self.assertEqual([s.send_sequence for s in server.of(codec.MESSAGE_SEND)], [1])
        server.send_ack(1, code=5)
        self.clock.advance(self.config.retry_max)
        (again,) = server.of(codec.MESSAGE_SEND)
        self.assertEqual((again.send_sequence, again.content), (1, "retry me"))
        server.send_ack(1, message_id=9, seq=1)
        self.assertEqual(self.successResultOf(d).message_id, 9)

    def test_unacked_send_is_resent_with_its_send_sequence_after_reconnect(self) -> None:
        """A send whose ACK never came is written again, same number, once signed in anew."""
        server = self.connect()
        d = self.session.send_to_user(2, "in flight")
        self.session.send_to_user(2, "second")
        server.drop()
        self.clock.advance(self.config.reconnect_initial)
        server2 = self.connector.accept()
        self.assertEqual(server2.of(codec.MESSAGE_SEND), [])  # not before SignInACK
        server2.sign_in_ok()
        self.assertEqual([(s.send_sequence, s.content) for s in server2.of(codec.MESSAGE_SEND)], [(1, "in flight"), (2, "second")])
        server2.send_ack(1, message_id=5, seq=1)
        server2.send_ack(1, message_id=5, seq=1)  # a second ACK of the same send is ignored
        self.assertEqual(self.successResultOf(d).message_id, 5)
        self.assertEqual(len(self.events.of("send_acked")), 1)

    def test_send_while_disconnected_waits_for_sign_in(self) -> None:
        """A send made while no connection is up is queued and written after the next sign-in."""
        self.session.start()
        self.session.send_to_user(2, "early")
        server = self.connector.accept()
        self.assertEqual(server.of(codec.MESSAGE_SEND), [])
        server.sign_in_ok()
        self.assertEqual([s.content for s in server.of(codec.MESSAGE_SEND)], ["early"])

    def test_codes_2_3_4_fail_the_send_for_good(self) -> None:
        """Not a friend, not in the group, invalid: SendFailed, a send_failed event, no retry."""
        server = self.connect()
        ds = [self.session.send_to_user(2, f"m{i}") for i in range(3)]
        server.frames()
        for seq, code in ((1, 2), (2, 3), (3, 4)):
            server.send_ack(seq, code=code)
        for d, code in zip(ds, (2, 3, 4)):
            self.assertEqual(self.failureResultOf(d, SendFailed).value.code, code)
        self.assertEqual(self.events.of("send_failed"), [(1, 2), (2, 3), (3, 4)])
        self.assertEqual(self.session.pending, [])
        self.clock.advance(100)
        self.assertEqual(server.of(codec.MESSAGE_SEND), [])

    def test_message_too_large_for_a_frame_is_refused_before_queueing(self) -> None:
        """Content no frame can carry raises ValueError; no number is used, nothing is queued."""
        server = self.connect()
        server.frames()
        self.assertRaises(ValueError, self.session.send_to_user, 2, "x" * 70000)
        self.assertEqual((self.state.send_sequence, self.session.pending, server.frames()), (0, [], []))

    def test_send_sequence_keeps_counting_from_the_state(self) -> None:
        """A session whose state says 41 was the last send_sequence numbers the next one 42."""
        self.state.send_sequence = 41
        server = self.connect()
        server.frames()
        self.session.send_to_user(2, "next")
        self.assertEqual([s.send_sequence for s in server.of(codec.MESSAGE_SEND)], [42])


class ReconnectTests(SessionTestCase):
    def test_backoff_grows_with_jitter_and_resets_after_sign_in(self) -> None:
        """Refused attempts wait 0.75, 1.5, 3 s (jitter 0.5 of 1, 2, 4 s); a sign-in resets to 0.75."""
        self.session.start()
        delays = []
        for _ in range(3):
            self.connector.refuse()
            delays.append(self.events.of("reconnecting")[-1])
            self.clock.advance(delays[-1])
        self.assertEqual(delays, [0.75, 1.5, 3.0])
        server = self.connector.accept()
        server.sign_in_ok()
        server.drop()
        self.assertEqual(self.events.of("reconnecting")[-1], 0.75)

    def test_no_attempt_before_the_delay(self) -> None:
        """The next attempt starts only once the back-off delay has passed."""
        self.session.start()
        self.connector.refuse()
        self.clock.advance(0.74)
        self.assertEqual(self.connector.attempts, [])
        self.clock.advance(0.01)
        self.assertEqual(len(self.connector.attempts), 1)

    def test_reconnect_resyncs_from_what_was_held(self) -> None:
        """After a drop the new connection sends SyncTrigger from the highest contiguous seq."""
        server = self.connect(synced=[message(1), message(2)])
        server.push(message(4))
        server.drop()
        self.assertEqual(self.events.names()[-2:], ["disconnected", "reconnecting"])
        self.clock.advance(1)
        server2 = self.connector.accept()
        self.assertEqual([t.sync_sequence for t in server2.of(codec.SYNC_TRIGGER)], [2])
        server2.sign_in_ok()
        server2.sync([message(3), message(4)])
        self.assertEqual([m.seq for m in self.events.messages], [1, 2, 3, 4])

    def test_kicked_stops_reconnecting(self) -> None:
        """Kicked 'signed in elsewhere': a kicked event, status KICKED, no further attempt ever."""
        server = self.connect()
        d = self.session.send_to_user(2, "pending")
        server.kick("signed in elsewhere")
        self.assertEqual(self.events.of("kicked"), ["signed in elsewhere"])
        self.assertIs(self.session.status, Status.KICKED)
        self.clock.advance(3600)
        self.assertEqual(self.connector.attempts, [])
        self.failureResultOf(d, SessionStopped)
        self.assertEqual(len(self.session.pending), 1)  # kept for a later session

    def test_kick_for_shutdown_reconnects(self) -> None:
        """Kicked 'server shutting down' is an ordinary disconnect: reconnect with back-off."""
        server = self.connect()
        server.kick("server shutting down")
        self.assertEqual(self.events.of("kicked"), [])
        self.assertEqual(self.events.of("disconnected"), ["server shutting down"])
        self.clock.advance(1)
        self.assertEqual(len(self.connector.attempts), 1)

    def test_refused_sign_in_stops(self) -> None:
        """SignInACK code 2: a sign_in_refused event and no retry with the same token."""
        self.session.start()
        server = self.connector.accept()
        server.sign_in_failed("wrong device id or token")
        self.assertEqual(self.events.of("refused"), ["wrong device id or token"])
        self.assertIs(self.session.status, Status.REFUSED)
        self.clock.advance(3600)
        self.assertEqual(self.connector.attempts, [])

    def test_sign_in_timeout_drops_and_retries(self) -> None:
        """No SignInACK within signin_timeout: the connection is aborted and retried."""
        self.session.start()
        server = self.connector.accept()
        self.clock.advance(self.config.signin_timeout)
        self.assertFalse(server.transport.connected)
        self.clock.advance(1)
        self.assertEqual(len(self.connector.attempts), 1)

    def test_stop_cancels_a_pending_attempt_and_the_reconnect_timer(self) -> None:
        """stop() while connecting or waiting leaves no timer and no further attempt."""
        self.session.start()
        self.successResultOf(self.session.stop())
        self.assertEqual(self.connector.cancelled, 1)
        self.session.start()
        self.connector.attempts.clear()
        self.assertIs(self.session.status, Status.CONNECTING)

    def test_stop_closes_the_connection_and_keeps_pending_sends(self) -> None:
        """stop(): the connection closes, waiting sends fail with SessionStopped but stay queued."""
        server = self.connect()
        d = self.session.send_to_user(2, "unanswered")
        stopped = self.session.stop()
        self.successResultOf(stopped)
        self.failureResultOf(d, SessionStopped)
        self.assertIs(self.session.status, Status.STOPPED)
        self.assertEqual([m.content for m in self.store.load().pending], ["unanswered"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(server.transport.connected)


class HeartbeatTests(SessionTestCase):
    config = SessionConfig(heartbeat_interval=240, heartbeat_timeout=60)

    def test_heartbeat_every_interval(self) -> None:
        """A Heartbeat frame every 240 s while connected."""
        server = self.connect()
        server.frames()
        self.clock.advance(239)
        self.assertEqual(server.of(codec.HEARTBEAT), [])
        self.clock.advance(1)
        self.assertEqual(len(server.of(codec.HEARTBEAT)), 1)
        server.heartbeat_ack()
        self.clock.advance(240)
        self.assertEqual(len(server.of(codec.HEARTBEAT)), 1)
        self.assertTrue(self.session.connected)

    def test_unanswered_heartbeat_drops_the_connection(self) -> None:
        """No frame at all within heartbeat_timeout after a beat: the connection is aborted."""
        server = self.connect()
        self.clock.advance(240)
        self.assertTrue(server.transport.connected)
        self.clock.advance(60)
        self.assertFalse(server.transport.connected)
        self.assertEqual(self.events.of("disconnected"), ["heartbeat timed out"])


class ConfiguredHeartbeatTests(SessionTestCase):
    config = SessionConfig(heartbeat_interval=30)

    def test_interval_is_configurable(self) -> None:
        """heartbeat_interval=30 beats every 30 s."""
        server = self.connect()
        server.frames()
        self.clock.advance(30)
        server.heartbeat_ack()
        self.clock.advance(30)
        self.assertEqual(len(server.of(codec.HEARTBEAT)), 2)


class FailoverTests(SynchronousTestCase):
    def test_attempts_go_round_the_addresses_with_the_backoff(self) -> None:
        """With two connect nodes, a refused attempt moves to the other node after the
        jittered back-off; a lost connection moves on too, and a sign-in resets the back-off."""
        from goim.client.session import round_robin

        clock = Clock()
        first, second = FakeConnector(), FakeConnector()
        session = Session(
            state=ClientState(device_id=DEVICE_ID, token="tok", user_id=USER_ID),
            store=MemoryStateStore(),
            connect=round_robin([first, second]),
            clock=clock,
            random=lambda: 0.5,
        )
        events = Recorder()
        session.add_observer(events)
        session.start()
        self.assertEqual((len(first.attempts), len(second.attempts)), (1, 0))
        first.refuse()
        self.assertEqual(events.of("reconnecting")[-1], 0.75)
        clock.advance(0.75)
        self.assertEqual((len(first.attempts), len(second.attempts)), (0, 1))
        second.refuse()
        self.assertEqual(events.of("reconnecting")[-1], 1.5)
        clock.advance(1.5)
        server = first.accept()
        server.sign_in_ok()
        server.sync([])
        self.assertIs(session.status, Status.CONNECTED)
        server.drop()
        self.assertEqual(events.of("reconnecting")[-1], 0.75)
        clock.advance(0.75)
        self.assertEqual((len(first.attempts), len(second.attempts)), (0, 1))

    def test_no_addresses_is_an_error(self) -> None:
        """An empty address list is refused at once."""
        from goim.client.session import round_robin

        self.assertRaises(ValueError, round_robin, [])
