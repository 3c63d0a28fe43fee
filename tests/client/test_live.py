"""The client library against a real standalone server (SQLite): restarts, overlapping
pushes and syncs, dropped connections, client restarts, kicks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.utils import getProcessOutputAndValue

from goim.client.protocol import ClientConnection, ConnectionListener
from goim.client.session import SendAck, Status
from goim.client.state import JSONStateStore
from goim.protocols import codec
from tests.client.live import PASSWORD, LiveTestCase, contents, wait_until
from tests.support.db import SQLiteBackend

ROOT = Path(__file__).resolve().parents[2]


class AckDroppingConnection(ClientConnection):
    """Swallows the first MessageSendACK and breaks the connection instead: the send is
    stored on the server but the client never hears of it."""

    dropped: list[tuple[int, int]] = []

    def frameReceived(self, frame_type: int, value: bytes) -> None:
        if frame_type == codec.MESSAGE_SEND_ACK and not AckDroppingConnection.dropped:
            ack = codec.MessageSendAck.from_bytes(value)
            AckDroppingConnection.dropped.append((ack.send_sequence, ack.message_id))
            self.abort()
            return
        super().frameReceived(frame_type, value)


class LibraryLiveTests(SQLiteBackend, LiveTestCase):
    async def test_reconnects_after_the_server_restarts(self) -> None:
        """A graceful restart (Kicked 'server shutting down') and a SIGKILL: both clients come back."""
        await self.serve()
        (alice, ra), (bob, rb) = await self.friends()
        await bob.send_to_user(alice.state.user_id, "before")
        await wait_until(lambda: "before" in contents(ra.messages), "the first message")

        await self.server.restart()
        await wait_until(lambda: len(ra.of("connected")) == 2 and len(rb.of("connected")) == 2, "reconnects")
        self.assertIn("server shutting down", ra.of("disconnected"))
        await bob.send_to_user(alice.state.user_id, "after restart")

        self.server.kill()
        await self.server.start()
        await wait_until(lambda: len(ra.of("connected")) == 3 and len(rb.of("connected")) == 3, "reconnects after kill")
        await bob.send_to_user(alice.state.user_id, "after kill")
        await wait_until(lambda: "after kill" in contents(ra.messages), "the last message")
        self.assertEqual(contents(ra.messages), ["before", "after restart", "after kill"])
        self.assertEqual((ra.of("kicked"), alice.session.status), ([], Status.CONNECTED))

    async def test_no_duplicates_when_a_push_and_a_sync_overlap(self) -> None:
        """A sync from seq 0 streams while live pushes arrive: every message is handed over once, in order."""
        await self.serve()
        (alice, ra), (bob, rb) = await self.friends()
        to = alice.state.user_id
        await gatherResults([bob.send_to_user(to, f"first {i}") for i in range(20)])
        await wait_until(lambda: len(ra.messages) == 20, "the first 20")
        # Ask for everything again, behind the session's back, while 20 more are pushed.
        assert alice.session.connection is not None
        alice.session.connection.sync(0)
        await gatherResults([bob.send_to_user(to, f"second {i}") for i in range(20)])
        await wait_until(lambda: len(ra.messages) == 40, "all 40")
        # the pushes may all arrive before the overlapping sync's frames do
        await wait_until(lambda: alice.session.duplicates_dropped >= 20, "the overlapping sync")
        expected = [f"first {i}" for i in range(20)] + [f"second {i}" for i in range(20)]
        self.assertEqual(contents(ra.messages), expected)
        self.assertEqual([m.seq for m in ra.messages], list(range(1, 41)))
        self.assertGreaterEqual(alice.session.duplicates_dropped, 20)

    async def test_send_retried_after_a_dropped_connection_is_delivered_once(self) -> None:
        """The connection closes right after the MessageSend is written: the resend is deduplicated."""
        await self.serve()
        (alice, ra), (bob, rb) = await self.friends()
        d = alice.send_to_user(bob.state.user_id, "exactly once")
        assert alice.session.connection is not None and alice.session.connection.transport is not None
        alice.session.connection.transport.loseConnection()  # flushes the send, then closes
        ack = await d
        self.assertEqual(ack.send_sequence, 1)
        await wait_until(lambda: "exactly once" in contents(rb.messages), "delivery")
        await bob.send_to_user(alice.state.user_id, "marker")
        await wait_until(lambda: "marker" in contents(rb.messages), "the marker")
        self.assertEqual(contents(rb.messages).count("exactly once"), 1)
        self.assertEqual(contents(await self.history_of("bob")), ["exactly once", "marker"])
        self.assertEqual(contents(await self.history_of("alice")), ["exactly once", "marker"])

    async def test_send_whose_ack_was_lost_is_answered_with_the_first_message_id(self) -> None:
        """The server stored the send but the ACK was lost: the retry gets the same message id, one copy."""
        await self.serve()
        AckDroppingConnection.dropped = []
        endpoint: Any = None

        def connect(listener: ConnectionListener) -> Deferred[ClientConnection]:
            return connectProtocol(endpoint, AckDroppingConnection(listener))

        bob, rb = await self.user("bob")
        alice, ra = self.client(connect=connect)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.tcp_port or 0)
        await alice.register("alice", "Alice", PASSWORD)
        await alice.api.add_friend(bob.state.user_id)
        await self.connected(alice)
        await self.connected(bob)
        ack: SendAck = await alice.send_to_user(bob.state.user_id, "ack lost")
        self.assertEqual(AckDroppingConnection.dropped, [(ack.send_sequence, ack.message_id)])
        self.assertEqual(len(ra.of("connected")), 2)
        await wait_until(lambda: "ack lost" in contents(rb.messages), "delivery")
        self.assertEqual(contents(await self.history_of("bob")), ["ack lost"])
        self.assertEqual([m.content for m in ra.messages], ["ack lost"])

    async def test_state_survives_a_client_restart(self) -> None:
        """A new client on the same state file: next send_sequence, nothing re-delivered, queued send delivered."""
        await self.serve()
        (alice, ra), (bob, rb) = await self.friends()
        path = Path(self.mktemp()) / "alice.json"
        for text in ("a1", "a2"):
            await alice.send_to_user(bob.state.user_id, text)
        for text in ("b1", "b2"):
            await bob.send_to_user(alice.state.user_id, text)
        await wait_until(lambda: contents(ra.messages) == ["a1", "a2", "b1", "b2"], "four messages")
        await alice.close()
        queued = alice.send_to_user(bob.state.user_id, "queued while stopped")  # saved, not sent
        queued.addErrback(lambda f: None)
        # A restarted process: a new client object on (a copy of) the same file.
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cast(JSONStateStore, alice.store).path.read_bytes())

        again, r2 = self.client(state_path=path)
        self.assertEqual((again.state.send_sequence, again.state.synced_seq, len(again.state.pending)), (3, 4, 1))
        await self.connected(again)
        ack = await again.send_to_user(bob.state.user_id, "after restart")
        self.assertEqual(ack.send_sequence, 4)
        await wait_until(lambda: "after restart" in contents(rb.messages), "delivery")
        self.assertEqual(contents(rb.messages), ["a1", "a2", "b1", "b2", "queued while stopped", "after restart"])
        self.assertEqual(contents(r2.messages), ["queued while stopped", "after restart"])
        self.assertEqual(again.state.pending, [])

    async def test_second_session_of_a_device_kicks_the_first_which_stays_down(self) -> None:
        """Two processes with one device: the older session gets 'signed in elsewhere' and does not reconnect."""
        await self.serve()
        first, r1 = await self.user("alice")
        await self.connected(first)
        path = Path(self.mktemp()) / "copy.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(first.state.to_json()))
        second, r2 = self.client(state_path=path)
        await self.connected(second)
        await wait_until(lambda: first.session.status is Status.KICKED, "the kick")
        self.assertEqual(r1.of("kicked"), ["signed in elsewhere"])
        await wait_until(lambda: second.session.connected, "the second session")
        self.assertEqual(len(r2.of("connected")), 1)


class BlockingFacadeLiveTests(SQLiteBackend, LiveTestCase):
    async def test_plain_script_registers_sends_and_receives(self) -> None:
        """A script without Twisted code: two BlockingClients befriend, send and receive."""
        await self.serve()
        workdir = Path(self.mktemp())
        workdir.mkdir(parents=True)
        script = f"""
import json
from goim.client import BlockingClient
http = {self.server.http!r}
tcp = ("127.0.0.1", {self.server.tcp_port})
a = BlockingClient(http_url=http, tcp=tcp, state_path="a.json", timeout=30)
b = BlockingClient(http_url=http, tcp=tcp, state_path="b.json", timeout=30)
ua = a.register("alice", "Alice", "secret-pw").user_id
ub = b.register("bob", "Bob", "secret-pw").user_id
a.add_friend(ub)
a.connect(); b.connect()
ack = a.send_to_user(ub, "hello from a script")
got = b.receive(timeout=30)
own = a.receive(timeout=30)
friends = [c.nickname for c in b.friends()]
a.close(); b.close()
print(json.dumps({{"ack": ack.message_id, "got": got.content, "from": got.sender_id, "ua": ua,
                  "own": own.message_id, "friends": friends}}))
"""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT)
        out, err, code = await getProcessOutputAndValue(sys.executable, ["-c", script], env=env, path=str(workdir))
        self.assertEqual(code, 0, err.decode())
        result = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual((result["got"], result["from"], result["friends"]), ("hello from a script", result["ua"], ["Alice"]))
        self.assertEqual(result["own"], result["ack"])
