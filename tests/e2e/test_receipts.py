"""End to end (issue 14): read receipts, recall and edit against a real ``twistd -n
goim``, on SQLite and MariaDB.

Changes are made over HTTP; clients that signed in with ``features`` bit 1 get the
event rows live and by sync, in order after the original, exactly once; a goim 1.1
connection of the same user sees only messages, without fields 11-14; retried reports
and recalls write nothing twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from twisted.trial.unittest import TestCase

from goim.features import Feature
from goim.protocols import codec
from goim.protocols.codec import SIGN_IN_ACK
from goim.types import KIND_EDIT, KIND_MESSAGE, KIND_READ, KIND_RECALL, RECEIVER_USER, SEND_OK
from tests.e2e.httpapi import Device, HttpApi
from tests.e2e.wire import WireClient, connect, items, parse, wait_until
from tests.support.db import BackendMixin, MySQLBackend, SQLiteBackend
from tests.support.server import StandaloneServer, server_database

if TYPE_CHECKING:

    class _Base(BackendMixin, TestCase):
        pass

else:
    _Base = object


async def sign_in_with_events(client: WireClient, device: Device) -> None:
    """SignIn with ``features`` bit 1 and wait for a successful ACK."""
    start = len(client.frames)
    client.write(
        codec.SignIn(
            device_id=device.device_id, user_id=device.user_id, token=device.token, features=int(Feature.EVENTS)
        ).to_frame()
    )
    frame = await wait_until(lambda: next(iter(client.of_code(SIGN_IN_ACK, since=start)), None), "SignInACK")
    assert parse(codec.SignInAck, frame).code == 1


async def change(client: WireClient, frame: codec.ReadReport | codec.Recall | codec.Edit) -> codec.ChangeAck:
    """Write a code 11/12/13 frame and wait for the ChangeACK with its request_id."""
    client.write(frame.to_frame())

    def answered() -> codec.ChangeAck | None:
        for f in client.of_code(codec.CHANGE_ACK):
            ack = parse(codec.ChangeAck, f)
            if ack.request_id == frame.request_id:
                return ack
        return None

    ack: codec.ChangeAck = await wait_until(answered, f"ChangeACK {frame.request_id}")
    return ack


def kinds(client: WireClient) -> list[tuple[int, int]]:
    """``(kind, message_id)`` of every pushed item."""
    return [(i.kind, i.message_id) for i in client.pushed()]


class ReceiptsEndToEnd(_Base):
    async def serve(self) -> tuple[StandaloneServer, HttpApi]:
        server = StandaloneServer(self, server_database(self))
        await server.start()
        return server, HttpApi(server.http)

    async def events_client(self, server: StandaloneServer, device: Device) -> WireClient:
        client = await connect(self, server.tcp_port)
        await sign_in_with_events(client, device)
        return client

    async def test_reads_recall_edit_live_by_sync_and_for_old_clients(self) -> None:
        """The whole flow over the wire: reads tick both sides, recall and edit reach
        every holder, an offline device catches up by sync in order, a goim 1.1
        connection never sees an event, retries write nothing."""
        server, api = await self.serve()
        a1 = await api.new_user("alice")
        a2 = await api.another_device(a1)  # offline until the end
        b1 = await api.new_user("bob")
        b_old = await api.another_device(b1)
        await api.befriend(a1, b1)
        alice = await self.events_client(server, a1)
        bob = await self.events_client(server, b1)
        old = await connect(self, server.tcp_port)
        await old.sign_in(b_old.device_id, b_old.user_id, b_old.token)

        first = await alice.send(b1.user_id, "hello", 1)
        self.assertEqual(first.code, SEND_OK)
        await wait_until(lambda: first.message_id in old.pushed_ids() and first.message_id in bob.pushed_ids(), "push")
        bob_seq = next(i.sync_sequence for i in bob.pushed() if i.message_id == first.message_id)

        # bob reads (over the connection): his devices and alice's learn it, in their own seq spaces
        report = codec.ReadReport(conversation_type=1, conversation_id=a1.user_id, sync_sequence=bob_seq, request_id=1)
        self.assertEqual(await change(bob, report), codec.ChangeAck(request_id=1, read_sequence=bob_seq))
        await wait_until(lambda: (KIND_READ, first.message_id) in kinds(alice), "the read tick at alice")
        tick = next(i for i in alice.pushed() if i.kind == KIND_READ)
        self.assertEqual((tick.sender_id, tick.ref_seq), (b1.user_id, first.sync_sequence))
        await wait_until(lambda: (KIND_READ, first.message_id) in kinds(bob), "the read event at bob's device")
        # retried, over the connection and over HTTP: nothing new
        retried = await change(bob, replace(report, request_id=2))
        self.assertEqual((retried.code, retried.read_sequence), (0, bob_seq))
        again = await api.ok(
            "POST", "/message/read", {"conversation_type": 1, "conversation_id": a1.user_id, "seq": bob_seq}, auth=b1.auth
        )
        self.assertEqual(again, {"read_seq": bob_seq})

        self.assertEqual((await change(alice, codec.Recall(message_id=first.message_id, request_id=7))).code, 0)
        await api.ok("POST", "/message/recall", {"message_id": first.message_id}, auth=a1.auth)  # retried
        status, env = await api.call("POST", "/message/recall", {"message_id": first.message_id}, auth=b1.auth)
        self.assertEqual((status, env["code"]), (403, 1017))
        refused = await change(bob, codec.Recall(message_id=first.message_id, request_id=3))
        self.assertEqual(refused.code, 1017)
        second = await alice.send(b1.user_id, "helo", 2)
        edited = await change(alice, codec.Edit(message_id=second.message_id, content="hello again", request_id=8))
        self.assertEqual(edited.code, 0)
        for client in (alice, bob):
            await wait_until(lambda c=client: (KIND_EDIT, second.message_id) in kinds(c), "the edit event")
        self.assertEqual(kinds(bob).count((KIND_RECALL, first.message_id)), 1, "one recall event, retry or not")
        self.assertEqual(kinds(bob).count((KIND_READ, first.message_id)), 1, "one read event, retry or not")
        await wait_until(lambda: second.message_id in old.pushed_ids(), "the second message at the old client")
        self.assertEqual({i.kind for i in old.pushed()}, {KIND_MESSAGE}, "a goim 1.1 client is pushed no event")

        conversations = await api.ok("GET", "/conversations", auth=b1.auth)
        (conv,) = conversations["items"]
        self.assertEqual(
            (conv["conversation_type"], conv["conversation_id"], conv["unread"], conv["read_seq"]),
            (RECEIVER_USER, a1.user_id, 1, bob_seq),
        )
        self.assertEqual(conv["last_message"]["content"], "hello again")
        self.assertEqual(conversations["next_cursor"], None)

        # alice's second device was offline all along: sync brings everything, in order
        late = await self.events_client(server, a2)
        synced = items(await late.sync(0))
        self.assertEqual([i.sync_sequence for i in synced], list(range(1, len(synced) + 1)))
        self.assertEqual(
            [(i.kind, i.message_id) for i in synced],
            [
                (KIND_MESSAGE, first.message_id),
                (KIND_READ, first.message_id),
                (KIND_RECALL, first.message_id),
                (KIND_MESSAGE, second.message_id),
                (KIND_EDIT, second.message_id),
            ],
        )
        self.assertEqual((synced[0].recalled, synced[0].content), (True, ""))
        self.assertEqual((synced[3].content, synced[3].edited_at > 0), ("hello again", True))
        # the goim 1.1 connection syncs the same history: messages only, as goim 1.1 saw them
        old_synced = items(await old.sync(0))
        self.assertEqual([i.message_id for i in old_synced], [first.message_id, second.message_id])
        self.assertTrue(all(i.kind == 0 and not i.recalled and i.edited_at == 0 for i in old_synced))
        self.assertEqual(old_synced[1].content, "hello again")


class ReceiptsSQLiteTests(ReceiptsEndToEnd, SQLiteBackend, TestCase):
    pass


class ReceiptsMySQLTests(ReceiptsEndToEnd, MySQLBackend, TestCase):
    pass
