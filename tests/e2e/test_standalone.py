"""End to end: a real ``twistd -n goim`` process, real TCP and HTTP, on SQLite and MariaDB.

Every test starts its own server (on free ports, with a fresh database of the
backend), registers devices and users over HTTP, signs clients in over TCP with
:class:`tests.e2e.wire.WireClient` and checks what each connection received. Waits
poll with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from goim.protocols import codec
from goim.protocols.codec import (
    DEFAULT_MAX_FRAME,
    HEARTBEAT_ACK,
    KICKED,
    MESSAGE,
    MESSAGE_PUSH,
    MESSAGE_SEND,
    MESSAGE_SYNC,
    SIGN_IN,
    SIGN_IN_ACK,
)
from goim.protocols.framing import encode_frame
from goim.types import (
    RECEIVER_GROUP,
    RECEIVER_USER,
    SEND_INVALID,
    SEND_NOT_FRIEND,
    SEND_NOT_IN_GROUP,
    SEND_OK,
)
from tests.e2e.httpapi import PASSWORD, Device, HttpApi
from tests.e2e.wire import (
    WireClient,
    connect,
    heartbeat_frame,
    items,
    message_ack_frame,
    parse,
    send_frame,
    sign_in_frame,
    sync_frame,
    wait_until,
)
from tests.support.db import BackendMixin, MySQLBackend, SQLiteBackend
from tests.support.server import StandaloneServer, run_to_exit, server_database

if TYPE_CHECKING:

    class _Base(BackendMixin, TestCase):
        pass

else:
    _Base = object

KICK_SIGNED_IN_ELSEWHERE = "signed in elsewhere"
KICK_SHUTDOWN = "server shutting down"


class StandaloneEndToEnd(_Base):
    """The scenarios; the subclasses below pick the database backend."""

    async def serve(self, *extra: str) -> tuple[StandaloneServer, HttpApi]:
        """Start a server on a fresh database of this test's backend; both go when the test ends."""
        database = server_database(self)
        server = StandaloneServer(self, database, *extra)
        await server.start()
        return server, HttpApi(server.http)

    async def online(self, server: StandaloneServer, device: Device, *, max_frame: int = 0) -> WireClient:
        """A TCP connection signed in as ``device``."""
        client = await connect(self, server.tcp_port)
        await client.sign_in(device.device_id, device.user_id, device.token, max_frame=max_frame)
        return client

    async def history(self, client: WireClient) -> list[str]:
        """The contents of the user's whole history, synced on a signed-in connection."""
        frames = await client.sync(0)
        seqs = [item.sync_sequence for item in items(frames)]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)), "sync is gapless and in seq order")
        return [item.content for item in items(frames)]

    # --- 1:1 -----------------------------------------------------------------------------

    async def test_one_to_one_reaches_every_device_of_both_users_once(self) -> None:
        """A 1:1 message is pushed exactly once to both devices of sender and receiver, and ACKed with id and seq."""
        server, api = await self.serve()
        a1 = await api.new_user("alice")
        a2 = await api.another_device(a1)
        b1 = await api.new_user("bob")
        b2 = await api.another_device(b1)
        await api.befriend(a1, b1)
        friends_of_bob = await api.ok("GET", "/friend/all", auth=b2.auth)
        self.assertEqual([f["user_id"] for f in friends_of_bob], [a1.user_id], "friendship is mutual")
        clients = {d.device_id: await self.online(server, d) for d in (a1, a2, b1, b2)}
        everyone = list(clients.values())

        ack = await clients[a1.device_id].send(b1.user_id, "hello bob", 1)

        self.assertEqual((ack.send_sequence, ack.code, ack.sync_sequence), (1, SEND_OK, 1))
        self.assertGreater(ack.message_id, 0)
        await wait_until(lambda: all(ack.message_id in c.pushed_ids() for c in everyone), "the push on all 4 devices")
        # A second message, pushed after the first, fences late duplicates of the first.
        reply = await clients[b2.device_id].send(a1.user_id, "hi alice", 1)
        self.assertEqual(reply.code, SEND_OK)
        await wait_until(lambda: all(reply.message_id in c.pushed_ids() for c in everyone), "the reply everywhere")
        for device, client in clients.items():
            self.assertEqual(client.pushed_ids().count(ack.message_id), 1, f"device {device}: exactly once")
            self.assertEqual(client.pushed_ids().count(reply.message_id), 1, f"device {device}: exactly once")
            for message in client.messages(MESSAGE_PUSH):
                self.assertFalse(message.more)
            self.assertEqual(client.messages(MESSAGE_SYNC), [], "nothing but pushes was asked for")
            item = next(i for i in client.pushed() if i.message_id == ack.message_id)
            self.assertEqual(
                (item.sender_id, item.sender_device_id, item.receiver_type, item.receiver_id, item.content),
                (a1.user_id, a1.device_id, RECEIVER_USER, b1.user_id, "hello bob"),
            )
            self.assertEqual(item.sync_sequence, 1, "the first message of each user has seq 1")
        self.assertEqual(clients[a1.device_id].ack_for(1), ack, "the sender got one ACK")
        self.assertEqual(len(clients[a1.device_id].send_acks()), 1)

    async def test_send_to_a_stranger_is_refused(self) -> None:
        """A send to a user who is not (or no longer) a friend is ACKed code 2 and stored for nobody."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        carol = await api.new_user("carol")
        await api.befriend(alice, bob)
        to_alice = await self.online(server, alice)
        from_carol = await self.online(server, carol)
        from_bob = await self.online(server, bob)

        refused = await from_carol.send(alice.user_id, "hi, stranger", 1)
        self.assertEqual((refused.code, refused.message_id, refused.sync_sequence), (SEND_NOT_FRIEND, 0, 0))

        self.assertEqual((await from_bob.send(alice.user_id, "friends", 1)).code, SEND_OK)
        await api.ok("DELETE", f"/friend/{alice.user_id}", auth=bob.auth)
        self.assertEqual((await from_bob.send(alice.user_id, "unfriended", 2)).code, SEND_NOT_FRIEND)

        self.assertEqual(await self.history(to_alice), ["friends"])
        self.assertEqual(await self.history(from_carol), [])
        self.assertEqual([i.content for i in to_alice.pushed()], ["friends"])

    # --- groups ----------------------------------------------------------------------------

    async def test_group_send_reaches_members_only(self) -> None:
        """A group send reaches every member; a non-member is refused code 3; a removed member stops receiving."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        carol = await api.new_user("carol")
        dave = await api.new_user("dave")
        group_id = await api.create_group(alice, "team", [bob, carol])
        ca, cb, cc, cd = [await self.online(server, d) for d in (alice, bob, carol, dave)]

        first = await ca.send_to_group(group_id, "hello team", 1)
        self.assertEqual((first.code, first.sync_sequence), (SEND_OK, 1))
        await wait_until(lambda: all(first.message_id in c.pushed_ids() for c in (ca, cb, cc)), "the group push")
        item = next(i for i in cc.pushed() if i.message_id == first.message_id)
        self.assertEqual((item.receiver_type, item.receiver_id, item.sender_id), (RECEIVER_GROUP, group_id, alice.user_id))

        self.assertEqual((await cd.send_to_group(group_id, "let me in", 1)).code, SEND_NOT_IN_GROUP)

        await api.ok("DELETE", "/group/user", {"group_id": group_id, "user_ids": [carol.user_id]}, auth=alice.auth)
        self.assertEqual((await cc.send_to_group(group_id, "still here?", 1)).code, SEND_NOT_IN_GROUP)
        second = await ca.send_to_group(group_id, "without carol", 2)
        self.assertEqual((second.code, second.sync_sequence), (SEND_OK, 2))
        await wait_until(lambda: all(second.message_id in c.pushed_ids() for c in (ca, cb)), "the second push")

        # A push to carol would have been written before alice's ACK; her sync comes after it.
        self.assertEqual([i.content for i in items(await cc.sync(0))], ["hello team"])
        self.assertEqual(cc.pushed_ids(), [first.message_id])
        self.assertEqual(cd.pushed(), [])
        self.assertEqual([i.content for i in items(await cb.sync(0))], ["hello team", "without carol"])
        self.assertEqual(cb.pushed_ids(), [first.message_id, second.message_id])
        group = await api.ok("GET", f"/group/one/{group_id}", auth=bob.auth)
        self.assertEqual(sorted(u["user_id"] for u in group["users"]), sorted([alice.user_id, bob.user_id]))

    # --- dedupe ----------------------------------------------------------------------------

    async def test_retried_send_sequence_is_stored_once(self) -> None:
        """A retried send_sequence (after its ACK, or pipelined right behind it) gets the first ACK and is stored once."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        ca = await self.online(server, alice)
        cb = await self.online(server, bob)

        first = await ca.send(bob.user_id, "once", 7)
        again = await ca.send(bob.user_id, "once", 7)
        self.assertEqual(again, first)
        changed = await ca.send(bob.user_id, "different content, same send_sequence", 7)
        self.assertEqual(changed, first, "(device, send_sequence) identifies the send")

        ca.write(send_frame(bob.user_id, "twice", 8), send_frame(bob.user_id, "twice", 8))
        acks = await wait_until(
            lambda: (found := [a for a in ca.send_acks() if a.send_sequence == 8]) and len(found) == 2 and found,
            "two ACKs of send_sequence 8",
        )
        self.assertEqual(acks[0], acks[1])
        self.assertEqual((acks[0].code, acks[0].sync_sequence), (SEND_OK, 2))

        self.assertEqual(await self.history(cb), ["once", "twice"])
        self.assertEqual(await self.history(ca), ["once", "twice"])
        self.assertEqual(cb.pushed_ids(), [first.message_id, acks[0].message_id])

    # --- sessions --------------------------------------------------------------------------

    async def test_second_sign_in_of_a_device_kicks_the_first(self) -> None:
        """Signing the same device in again sends Kicked to the older connection, which is then closed."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        first = await self.online(server, alice)
        second = await self.online(server, alice)

        await first.wait_closed()
        self.assertEqual([k.reason for k in first.kicks()], [KICK_SIGNED_IN_ELSEWHERE])
        self.assertEqual(first.codes()[-1], KICKED, "Kicked is the last frame before the close")
        self.assertFalse(second.closed)
        self.assertEqual(second.kicks(), [])

        from_bob = await (await self.online(server, bob)).send(alice.user_id, "to the new connection", 1)
        await wait_until(lambda: from_bob.message_id in second.pushed_ids(), "the push on the second connection")

    async def test_http_sign_in_ends_the_devices_connection(self) -> None:
        """An HTTP sign-in of a connected device (a new send_sequence epoch) kicks its TCP connection."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        connection = await self.online(server, alice)
        await api.ok("POST", "/user/signin", {"number": "alice", "password": PASSWORD}, auth=alice.auth)
        await connection.wait_closed()
        self.assertEqual([k.reason for k in connection.kicks()], ["signed in again"])
        again = await self.online(server, alice)
        self.assertFalse(again.closed)

    async def test_fresh_device_syncs_whole_history_in_capped_frames(self) -> None:
        """A new device syncs 300 ~1 KB messages in order, in frames of at most 4,092 bytes, more=true but last."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        ca = await self.online(server, alice)
        count = 300
        contents = [f"{n:04d} " + "ü" * 500 for n in range(1, count + 1)]  # 1,005 UTF-8 bytes each
        ca.write(*[send_frame(bob.user_id, content, n) for n, content in enumerate(contents, 1)])
        await wait_until(lambda: len(ca.send_acks()) == count, f"{count} ACKs")
        acks = {a.send_sequence: a for a in ca.send_acks()}
        self.assertEqual({a.code for a in acks.values()}, {SEND_OK})
        self.assertEqual(sorted(a.sync_sequence for a in acks.values()), list(range(1, count + 1)))

        fresh = await api.another_device(bob)
        cb = await self.online(server, fresh)
        start = len(cb.frames)
        synced = await cb.sync(0, timeout=30)

        raw = [f for f in cb.frames[start:] if f.type == MESSAGE]
        self.assertEqual(len(raw), len(synced))
        self.assertLessEqual(max(len(f.value) for f in raw), DEFAULT_MAX_FRAME)
        self.assertLess(len(synced), count, "several messages share a frame")
        self.assertEqual([m.more for m in synced], [True] * (len(synced) - 1) + [False])
        self.assertEqual({m.type for m in synced}, {MESSAGE_SYNC})
        got = items(synced)
        self.assertEqual([i.sync_sequence for i in got], list(range(1, count + 1)))
        self.assertEqual([i.content for i in got], contents)
        self.assertEqual([i.message_id for i in got], [acks[n].message_id for n in range(1, count + 1)])

        # The device acknowledges; an HTTP sign-in then reports what the user's devices hold.
        cb.write(message_ack_frame(count))
        other = await api.new_device()

        async def all_acknowledged() -> bool:
            data = await api.ok("POST", "/user/signin", {"number": "bob", "password": PASSWORD}, auth=other)
            return int(data["sync_sequence"]) == count

        await wait_until(all_acknowledged, f"bob's sync_sequence at {count}", timeout=15, interval=0.05)

    async def test_pipelined_sign_in_sync_and_send_are_answered(self) -> None:
        """SignIn + SyncTrigger + MessageSend in one TCP write: SignInACK first, then the whole sync and the send's ACK."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        earlier = await self.online(server, alice)
        for n in (1, 2):
            self.assertEqual((await earlier.send(bob.user_id, f"earlier {n}", n)).code, SEND_OK)
        await earlier.close()

        client = await connect(self, server.tcp_port)
        client.write(
            sign_in_frame(alice.device_id, alice.user_id, alice.token),
            sync_frame(0),
            send_frame(bob.user_id, "pipelined", 3),
        )
        synced = await client.sync_result(since=0)
        ack = await wait_until(lambda: client.ack_for(3), "the MessageSendACK")

        self.assertEqual(client.frames[0].type, SIGN_IN_ACK, client.describe())
        self.assertEqual(parse(codec.SignInAck, client.frames[0]).code, 1)
        self.assertEqual((ack.code, ack.sync_sequence), (SEND_OK, 3))
        self.assertEqual([a.send_sequence for a in client.send_acks()], [3])
        history = items(synced)
        self.assertEqual([i.content for i in history][:2], ["earlier 1", "earlier 2"])
        self.assertEqual([i.sync_sequence for i in history], list(range(1, len(history) + 1)))
        self.assertFalse(client.closed)
        # Not asserted: that the MessageSendACK comes after the last sync frame. The
        # server runs the sync's page reads and the send concurrently (protocol.md
        # section 3.5), and on MariaDB the ACK overtakes the sync now and then.

    # --- restarts and shutdown -------------------------------------------------------------

    async def test_data_and_dedupe_survive_a_restart(self) -> None:
        """After a graceful restart the history syncs in full and a retried send is still deduped."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        ca = await self.online(server, alice)
        cb = await self.online(server, bob)
        sent = [await ca.send(bob.user_id, f"before {n}", n) for n in (1, 2, 3)]
        reply = await cb.send(alice.user_id, "reply", 1)
        self.assertEqual({a.code for a in [*sent, reply]}, {SEND_OK})

        self.assertTrue(await server.stop(), server.log_text())
        for client in (ca, cb):
            await client.wait_closed()
            self.assertEqual([k.reason for k in client.kicks()], [KICK_SHUTDOWN])
        await server.start()

        ca = await self.online(server, alice)
        history = items(await ca.sync(0))
        self.assertEqual([i.content for i in history], ["before 1", "before 2", "before 3", "reply"])
        self.assertEqual([i.sync_sequence for i in history], [1, 2, 3, 4])
        self.assertEqual([i.message_id for i in history], [a.message_id for a in [*sent, reply]])

        retried = await ca.send(bob.user_id, "before 2", 2)
        self.assertEqual(retried, sent[1], "the retry after the restart gets the first ACK")
        new = await ca.send(bob.user_id, "after", 4)
        self.assertEqual((new.code, new.sync_sequence), (SEND_OK, 5))
        self.assertNotIn(new.message_id, {i.message_id for i in history}, "message ids are not reused")
        self.assertEqual(
            await self.history(await self.online(server, bob)), ["before 1", "before 2", "before 3", "reply", "after"]
        )

    async def test_sigterm_kicks_clients_and_loses_no_send(self) -> None:
        """SIGTERM: clients get Kicked("server shutting down"), the process exits cleanly, no send is lost or doubled."""
        server, api = await self.serve()
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        ca = await self.online(server, alice)
        cb = await self.online(server, bob)

        # The heartbeat ACK proves the server has read the send before it is told to stop.
        ca.write(send_frame(bob.user_id, "fenced", 1), heartbeat_frame())
        await wait_until(lambda: ca.of_code(HEARTBEAT_ACK), "the heartbeat ACK")
        # These are still on their way when the signal arrives.
        burst = range(2, 22)
        ca.write(*[send_frame(bob.user_id, f"burst {n}", n) for n in burst])
        stopped: Deferred[bool] = Deferred.fromCoroutine(server.stop())
        self.assertTrue(await stopped, server.log_text())

        for client in (ca, cb):
            await client.wait_closed()
            self.assertEqual([k.reason for k in client.kicks()], [KICK_SHUTDOWN], client.describe())
            self.assertEqual(client.codes()[-1], KICKED)
        fenced = ca.ack_for(1)
        self.assertIsNotNone(fenced, "a send the server had read is ACKed before it closes: " + ca.describe())
        acked = {a.send_sequence: a for a in ca.send_acks()}
        self.assertEqual({a.code for a in acked.values()}, {SEND_OK})

        # After the restart the client resends what was not ACKed, as the protocol says.
        await server.start()
        ca = await self.online(server, alice)
        for n in burst:
            if n not in acked:
                self.assertEqual((await ca.send(bob.user_id, f"burst {n}", n)).code, SEND_OK)
        for n, ack in acked.items():
            self.assertEqual(await ca.send(bob.user_id, "retry", n), ack)
        expected = ["fenced", *[f"burst {n}" for n in burst]]
        self.assertEqual(await self.history(await self.online(server, bob)), expected)
        self.assertEqual(await self.history(ca), expected)

    # --- robustness ------------------------------------------------------------------------

    async def test_bad_input_closes_only_the_offending_connection(self) -> None:
        """Garbage, malformed frames and a silent connection are closed, bad HTTP bodies get 400 (413 when too large); the server keeps serving."""
        server, api = await self.serve("--signin-timeout", "1")
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        good = await self.online(server, alice)

        garbage = await connect(self, server.tcp_port)
        garbage.write(b"\xde\xad\x00\x04\xbe\xef\xca\xfe")  # a whole frame of an unknown code
        # Read as a header, "GET " announces 21,536 value bytes: the sign-in timeout ends it.
        http_talk = await connect(self, server.tcp_port)
        http_talk.write(b"GET / HTTP/1.1\r\nHost: goim\r\n\r\n")
        bad_sign_in = await connect(self, server.tcp_port)
        bad_sign_in.write(encode_frame(SIGN_IN, b"\x1a\x05tok"))  # token announced as 5 bytes, 3 follow
        bad_send = await self.online(server, bob)
        bad_send.write(encode_frame(MESSAGE_SEND, b"\x22\x09truncated"[:6]))
        wrong_token = await connect(self, server.tcp_port)
        refused = await wrong_token.sign_in(alice.device_id, alice.user_id, "not-the-token", expect_ok=False)
        self.assertEqual(refused.code, 2)
        for client in (garbage, http_talk, bad_sign_in, bad_send, wrong_token):
            await client.wait_closed()
        self.assertEqual(garbage.frames, [])
        self.assertEqual(http_talk.frames, [])
        self.assertEqual(bad_sign_in.frames, [])
        self.assertEqual(bad_send.kicks(), [], "a malformed frame closes without Kicked")

        status, env = await api.call("POST", "/device", raw=b'{"type": 1, "brand": ')
        self.assertEqual((status, env["code"], env["data"]), (400, 2, None))
        self.assertIn("JSON", env["message"])
        status, env = await api.call("POST", "/device", raw=b"x" * (64 * 1024 + 1))
        self.assertEqual((status, env["code"]), (413, 2))  # refused by the listener before the body is read
        status, env = await api.call("POST", "/friend", {"friend_id": "2"}, auth=alice.auth)
        self.assertEqual((status, env["code"]), (400, 2))
        status, env = await api.call("GET", "/friend/all", auth=(alice.device_id, "wrong"))
        self.assertEqual((status, env["code"]), (401, 1001))
        status, env = await api.call("GET", "/no/such/route")
        self.assertEqual((status, env["code"]), (404, 2))

        assert server.process is not None
        self.assertIsNone(server.process.poll(), "the process is still running")
        self.assertFalse(good.closed)
        ack = await good.send(bob.user_id, "still serving", 1)
        self.assertEqual(ack.code, SEND_OK)
        cb = await self.online(server, bob)
        self.assertEqual([i.content for i in items(await cb.sync(0))], ["still serving"])
        health = await api.ok("GET", "/healthz")
        self.assertEqual(health["mode"], "standalone")

    async def test_config_file_sets_options_and_flags_win(self) -> None:
        """--config TOML: idle-timeout and max-content apply; listener flags override the file's."""
        config = Path(self.mktemp() + ".toml")
        config.write_text(
            "idle-timeout = 1.0\n"
            "max_content = 20\n"  # underscores work too
            'tcp = "tcp:1:interface=127.0.0.1"\n'
            'http = "tcp:2:interface=127.0.0.1"\n'
        )
        server, api = await self.serve("--config", str(config.resolve()))
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        # Both sends ride with the SignIn: the 1-second idle timer must not close ca first.
        ca = await connect(self, server.tcp_port)
        ca.write(
            sign_in_frame(alice.device_id, alice.user_id, alice.token),
            send_frame(bob.user_id, "x" * 21, 1),
            send_frame(bob.user_id, "x" * 20, 2),
        )
        await wait_until(lambda: len(ca.send_acks()) == 2, "two MessageSendACKs")
        self.assertEqual({a.send_sequence: a.code for a in ca.send_acks()}, {1: SEND_INVALID, 2: SEND_OK})

        cb = await self.online(server, bob)
        await cb.wait_closed(timeout=10)
        self.assertEqual(cb.kicks(), [], "an idle connection is closed without Kicked")


class StandaloneSQLiteTests(StandaloneEndToEnd, SQLiteBackend, TestCase):
    """The scenarios on a SQLite file."""


class StandaloneMySQLTests(StandaloneEndToEnd, MySQLBackend, TestCase):
    """The scenarios on MariaDB/MySQL (``GOIM_TEST_MYSQL``)."""


class CommandLineTests(TestCase):
    """``twistd goim`` refuses bad options with a usage error naming the option (no database needed)."""

    async def run_twistd(self, *args: str, timeout: float = 20.0) -> tuple[int, str]:
        """Run ``twistd -n goim ARGS`` to its end; returns ``(exit status, output)``."""
        database = f"sqlite:{Path(self.mktemp()).resolve()}.db"
        # should a bad value be accepted, the server must not take real ports
        # (a repeated flag overrides the one here)
        return await run_to_exit(
            self,
            "goim",
            ["--database", database, "--tcp", "tcp:0:interface=127.0.0.1", "--http", "tcp:0:interface=127.0.0.1", *args],
            timeout=timeout,
        )

    async def test_bad_option_values_are_usage_errors(self) -> None:
        """--tcp nonsense, --max-content 0 and bad config file values exit 1 with a message naming the option."""
        bad_file = Path(self.mktemp() + ".toml")
        bad_file.write_text("idle-timeout = -5\n")
        unknown_key = Path(self.mktemp() + ".toml")
        unknown_key.write_text("idle-timout = 5\n")
        cases = [
            (["--tcp", "nonsense"], ["--tcp", "nonsense"]),
            (["--max-content", "0"], ["--max-content", "must be positive"]),
            (["--config", str(bad_file.resolve())], ["idle-timeout in", "must be positive"]),
            (["--config", str(unknown_key.resolve())], ["--config", "unknown key 'idle-timout'"]),
        ]
        runs = [Deferred.fromCoroutine(self.run_twistd(*args)) for args, _ in cases]
        results = await gatherResults(runs)
        for (args, expected), (status, output) in zip(cases, results):
            self.assertEqual(status, 1, f"{args}: {output}")
            for text in expected:
                self.assertIn(text, output, f"{args}")
            self.assertNotIn("Traceback", output, f"{args}")
