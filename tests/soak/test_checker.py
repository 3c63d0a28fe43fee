"""The soak's model check on made-up histories: it flags what breaks a promise and
nothing the docs allow."""

from twisted.trial.unittest import SynchronousTestCase

from tests.soak.checker import Row, Verdict, check_online, check_order, check_sessions, check_storage
from tests.soak.history import Attempt, Conn, Fault, History, Send

ALICE, BOB = 1, 2


class Builder:
    """A history of alice's device 10 sending to bob, with the database rows it led to."""

    def __init__(self) -> None:
        self.history = History()
        self.rows: list[Row] = []
        self.next_id = 100
        self.conn = self.history.new_conn(10, ALICE, "c1")
        self.conn.signin_code = 1
        self.index = 0

    def send(self, n: int, *codes: int | None, conn: Conn | None = None) -> Send:
        """A send written once per code (its attempts' answers), all on ``conn``."""
        conn = conn or self.conn
        send = Send(device_id=10, user_id=ALICE, epoch=0, send_sequence=n, receiver_type=1, receiver_id=BOB,
                    content=f"soak d10 e0 s{n}", recipients=frozenset({ALICE, BOB}))
        for code in codes:
            attempt = Attempt(conn=conn.serial, index=self.index, written_at=self.history.tick())
            self.index += 1
            send.attempts.append(attempt)
            if code is not None:
                attempt.code = code
                attempt.answered_at = self.history.tick()
        self.history.sends.append(send)
        return send

    def store(self, *sends: Send) -> None:
        """Store the sends in this order for both users (dense seqs); fill in the ACKs."""
        for send in sends:
            self.next_id += 1
            for user in (ALICE, BOB):
                seq = sum(1 for r in self.rows if r.user_id == user) + 1
                self.rows.append(Row(user, seq, self.next_id, 10, send.content))
                for attempt in send.attempts:
                    if attempt.code == 0:
                        attempt.message_id = self.next_id
                        if user == ALICE:
                            attempt.seq = seq

    def check(self) -> Verdict:
        verdict = Verdict()
        tops = {u: max(r.seq for r in self.rows if r.user_id == u) for u in {r.user_id for r in self.rows}}
        placed = check_storage(self.history, self.rows, tops, verdict)
        check_order(self.history, placed, verdict)
        return verdict


class StorageTests(SynchronousTestCase):
    def test_clean_history_passes(self) -> None:
        """Sends stored once each, in order, dense: no violation."""
        b = Builder()
        sends = [b.send(n, 0) for n in range(1, 6)]
        b.store(*sends)
        verdict = b.check()
        self.assertTrue(verdict.passed, verdict.report())

    def test_acked_send_missing(self) -> None:
        """An ACKed send that is not stored is an exactly-once violation."""
        b = Builder()
        one, two = b.send(1, 0), b.send(2, 0)
        b.store(one)
        two.attempts[0].message_id = 999
        self.assertEqual(b.check().first, "exactly-once")

    def test_retry_stored_twice(self) -> None:
        """A retried send stored twice is an exactly-once violation (and a message id is not reused)."""
        b = Builder()
        send = b.send(1, None, 0)
        b.store(send, send)
        self.assertEqual(b.check().first, "exactly-once")

    def test_unacked_send_stored_for_some_recipients(self) -> None:
        """A send never ACKed may be stored, but for all its recipients or none."""
        b = Builder()
        send = b.send(1, None)
        b.rows.append(Row(ALICE, 1, 500, 10, send.content))
        self.assertEqual(b.check().first, "exactly-once")

    def test_unacked_send_stored_whole_is_fine(self) -> None:
        """A send whose ACK was lost may be stored (for all recipients)."""
        b = Builder()
        lost, later = b.send(1, None), b.send(2, 0)
        b.store(lost, later)
        self.assertTrue(b.check().passed)

    def test_gap_in_seqs(self) -> None:
        """Seqs 1, 3 for a user: not dense."""
        b = Builder()
        one, two = b.send(1, 0), b.send(2, 0)
        b.store(one, two)
        b.rows = [Row(r.user_id, 3 if r.seq == 2 else r.seq, r.message_id, 10, r.content) for r in b.rows]
        verdict = Verdict()
        check_storage(b.history, b.rows, {ALICE: 3, BOB: 3}, verdict)
        self.assertIn("dense", verdict.violations)

    def test_received_seq_disagrees_with_database(self) -> None:
        """A client that got seq 1 as another message than the stored one: exactly-once."""
        b = Builder()
        send = b.send(1, 0)
        b.store(send)
        b.conn.received[1] = 12345
        self.assertEqual(b.check().first, "exactly-once")


class OrderTests(SynchronousTestCase):
    def test_pipelined_sends_out_of_order(self) -> None:
        """O1: two clean sends of one connection stored in the reverse order."""
        b = Builder()
        one, two = b.send(1, 0), b.send(2, 0)
        b.store(two, one)
        verdict = b.check()
        self.assertEqual(verdict.first, "order")
        self.assertIn("O1", verdict.violations["order"][0])

    def test_code_1_retry_may_land_after_later_sends(self) -> None:
        """O2: a send answered 1 and retried on the same connection may land after sends
        written between its attempts, but before sends written after its answered retry."""
        b = Builder()
        first = b.send(1, 0)
        retried = b.send(2, 1)
        between = b.send(3, 0)
        retried.attempts.append(Attempt(conn=b.conn.serial, index=b.index, written_at=b.history.tick(), code=0,
                                        answered_at=b.history.tick()))
        b.index += 1
        after = b.send(4, 0)
        b.store(first, between, retried, after)
        self.assertTrue(b.check().passed, b.check().report())

    def test_code_1_retry_after_a_later_send_is_flagged(self) -> None:
        """O2: the retried send stored after a send written after its successful attempt."""
        b = Builder()
        retried = b.send(1, 1)
        retried.attempts.append(Attempt(conn=b.conn.serial, index=b.index, written_at=b.history.tick(), code=0,
                                        answered_at=b.history.tick()))
        b.index += 1
        after = b.send(2, 0)
        b.store(after, retried)
        self.assertEqual(b.check().first, "order")

    def test_causality_across_connections(self) -> None:
        """O3: a send ACKed before another was written is stored before it (any connection)."""
        b = Builder()
        first = b.send(1, None)  # unanswered on conn 0 ...
        other = b.history.new_conn(10, ALICE, "c2")
        other.signin_code = 1
        first.attempts.append(Attempt(conn=other.serial, index=0, written_at=b.history.tick(), code=0,
                                      answered_at=b.history.tick()))  # ... ACKed on conn 1
        later = b.send(2, 0, conn=other)
        b.store(later, first)
        self.assertEqual(b.check().first, "order")

    def test_unanswered_send_resent_after_a_later_one_is_flagged(self) -> None:
        """O4: a send left unanswered by a dropped connection keeps its place before
        sends first written after it, across the reconnect."""
        b = Builder()
        dropped = b.send(1, None)
        other = b.history.new_conn(10, ALICE, "c2")
        other.signin_code = 1
        b.index = 0
        fresh = b.send(2, 0, conn=other)
        dropped.attempts.append(Attempt(conn=other.serial, index=b.index, written_at=b.history.tick(), code=0,
                                        answered_at=b.history.tick()))
        b.store(fresh, dropped)
        verdict = b.check()
        self.assertEqual(verdict.first, "order")
        self.assertIn("O4", verdict.violations["order"][0])

    def test_code_1_send_resent_on_a_new_connection_may_land_later(self) -> None:
        """A send answered 1 may land after later sends, on a new connection too."""
        b = Builder()
        failed = b.send(1, 1)
        other = b.history.new_conn(10, ALICE, "c2")
        other.signin_code = 1
        b.index = 0
        fresh = b.send(2, 0, conn=other)
        failed.attempts.append(Attempt(conn=other.serial, index=b.index, written_at=b.history.tick(), code=0,
                                       answered_at=b.history.tick()))
        b.store(fresh, failed)
        self.assertTrue(b.check().passed, b.check().report())


class OnlineAndSessionTests(SynchronousTestCase):
    def test_open_connection_without_the_sentinel(self) -> None:
        """A connection open at the end that never got the sentinel: online-complete."""
        conn = Conn(0, 10, ALICE, "c1", 0.0, signin_code=1, base=0, received={1: 7})
        verdict = Verdict()
        check_online([(conn, {1})], {ALICE: 2}, [Row(ALICE, 1, 7, 10, "a"), Row(ALICE, 2, 8, 10, "b")], verdict)
        self.assertEqual(verdict.first, "online-complete")
        verdict = Verdict()
        conn.received[2] = 8
        check_online([(conn, {1, 2})], {ALICE: 2}, [Row(ALICE, 1, 7, 10, "a"), Row(ALICE, 2, 8, 10, "b")], verdict)
        self.assertTrue(verdict.passed, verdict.report())

    def test_close_without_kick(self) -> None:
        """Closed by the server without Kicked and without a cause: session-lost; but not
        when its node was killed then, or when the node logged a failed sync read."""
        history = History()
        conn = history.new_conn(10, ALICE, "c1")
        conn.signin_code, conn.local_port, conn.closed_at, conn.closed_tick = 1, 40000, conn.opened_at + 5, 9
        verdict = Verdict()
        check_sessions(history, {"c1": ""}, verdict)
        self.assertEqual(verdict.first, "session-lost")

        stamp = __import__("time").strftime("%Y-%m-%dT%H:%M:%S+0000", __import__("time").gmtime(conn.closed_at))
        log = (f"{stamp} [goim#critical] sync of user 1 after seq 3 for 127.0.0.1:40000 failed: closing\n"
               f"\tTraceback (most recent call last):\n\tpymysql.err.OperationalError: (2013, 'Lost connection')\n")
        verdict = Verdict()
        check_sessions(history, {"c1": log}, verdict)
        self.assertTrue(verdict.passed, verdict.report())

        stale = log.replace("pymysql.err.OperationalError: (2013, 'Lost connection')",
                            "twisted.spread.pb.RemoteError: device 10 is not signed in through node c1")
        verdict = Verdict()
        check_sessions(history, {"c1": stale}, verdict)
        self.assertEqual(verdict.first, "session-lost")

        history.faults.append(Fault(at=1, wall=conn.closed_at - 0.2, action="kill", target="c1", duration=1,
                                    end_wall=conn.closed_at + 1))
        verdict = Verdict()
        check_sessions(history, {"c1": ""}, verdict)
        self.assertTrue(verdict.passed, verdict.report())


class OnlyConnectionTests(SynchronousTestCase):
    def test_only_connection_must_hold_everything_after_its_base(self) -> None:
        """A device's only connection that missed seq 2 (though the sentinel, seq 3, came)."""
        conn = Conn(0, 10, ALICE, "c1", 0.0, signin_code=1, base=0, received={1: 7, 3: 9}, signin_at=1)
        rows = [Row(ALICE, 1, 7, 10, "a"), Row(ALICE, 2, 8, 10, "b"), Row(ALICE, 3, 9, 10, "c")]
        verdict = Verdict()
        check_online([(conn, {1, 2, 3})], {ALICE: 3}, rows, verdict, [conn])
        self.assertEqual(verdict.first, "online-complete")
        # an older connection of the device was open meanwhile: it may have taken seq 2
        older = Conn(1, 10, ALICE, "c2", 0.0, signin_code=1, base=0, received={2: 8}, signin_at=0, closed_tick=5)
        verdict = Verdict()
        check_online([(conn, {1, 2, 3})], {ALICE: 3}, rows, verdict, [conn, older])
        self.assertTrue(verdict.passed, verdict.report())


class KickTests(SynchronousTestCase):
    def test_kick_needs_a_later_sign_in(self) -> None:
        """A Kicked frame with no later TCP or HTTP sign-in of the device is a stale kick;
        one during an HTTP sign-in that was still in flight is not."""
        history = History()
        conn = history.new_conn(10, ALICE, "c1")
        conn.signin_code, conn.signin_at, conn.kicked = 1, 5, ["signed in again"]
        history.http_signins[10] = [2]
        verdict = Verdict()
        check_sessions(history, {}, verdict)
        self.assertEqual(verdict.first, "session-lost")
        self.assertIn("stale kick", verdict.violations["session-lost"][0])
        history.http_signins[10] = [2, 9]  # that HTTP sign-in ended after the connection signed in
        verdict = Verdict()
        check_sessions(history, {}, verdict)
        self.assertTrue(verdict.passed, verdict.report())
