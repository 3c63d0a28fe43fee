"""Read receipts, recall and edit in distributed mode (issue 14): 2 logic + 2 connect
processes, MariaDB, a private Redis.

Changes are made over the HTTP API of either logic node; the event rows reach
connections on both connect nodes through the Redis delivery path, and an offline
device catches up through PB sync, in order, exactly once.
"""

import shutil

from twisted.trial.unittest import TestCase

from goim.types import KIND_EDIT, KIND_MESSAGE, KIND_READ, KIND_RECALL
from tests.distributed.harness import Cluster
from tests.e2e.httpapi import HttpApi
from goim.protocols import codec
from tests.e2e.test_receipts import change, kinds, sign_in_with_events
from tests.e2e.wire import WireClient, connect, items, wait_until
from tests.support.db import MySQLBackend


class DistributedReceiptTests(MySQLBackend, TestCase):
    timeout = 240

    if shutil.which("redis-server") is None:
        skip = "redis-server is not installed"

    async def test_events_cross_nodes_and_sync(self) -> None:
        """Reads, a group owner's recall and an edit, made on either logic node, reach
        event clients on both connect nodes once; an offline device syncs them in order;
        a goim 1.1 connection gets none; group read counts add up."""
        c = Cluster(self)
        await c.start()
        api0, api1 = HttpApi(c.http(0)), HttpApi(c.http(1))
        alice = await api0.new_user("alice")
        alice_late = await api0.another_device(alice)
        bob = await api0.new_user("bob")
        bob_old = await api0.another_device(bob)
        carol = await api0.new_user("carol")
        await api0.befriend(alice, bob)
        group = await api0.create_group(carol, "g", [alice, bob])

        async def events(port: int, device) -> WireClient:  # type: ignore[no-untyped-def]
            client = await connect(self, port)
            await sign_in_with_events(client, device)
            return client

        a = await events(c.tcp_port(0), alice)
        b = await events(c.tcp_port(1), bob)
        old = await connect(self, c.tcp_port(0))
        await old.sign_in(bob_old.device_id, bob_old.user_id, bob_old.token)

        hello = await a.send(bob.user_id, "hello", 1)
        in_group = await a.send_to_group(group, "hi group", 2)
        await wait_until(lambda: in_group.message_id in b.pushed_ids(), "the group message at bob")
        bob_seq = next(i.sync_sequence for i in b.pushed() if i.message_id == in_group.message_id)
        hello_seq = next(i.sync_sequence for i in b.pushed() if i.message_id == hello.message_id)

        # bob reads the 1:1 conversation on logic node 1, twice (a retry)
        for _ in range(2):
            await api1.ok("POST", "/message/read", {"conversation_type": 1, "conversation_id": alice.user_id, "seq": hello_seq}, auth=bob.auth)
        await wait_until(lambda: (KIND_READ, hello.message_id) in kinds(a), "the read tick on the other connect node")
        # and the group on logic node 0: the read count is 1 (bob), alice the sender not counted
        await api0.ok("POST", "/message/read", {"conversation_type": 2, "conversation_id": group, "seq": bob_seq}, auth=bob.auth)
        self.assertEqual(
            await api1.ok("GET", f"/message/reads/{in_group.message_id}", auth=carol.auth),
            {"message_id": in_group.message_id, "read_count": 1},
        )
        # the group's owner recalls alice's group message; alice edits her 1:1 message
        carol_conn = await events(c.tcp_port(1), carol)  # over the connection: connect node -> PB -> logic
        for request_id in (1, 2):  # the second is a retry
            ack = await change(carol_conn, codec.Recall(message_id=in_group.message_id, request_id=request_id))
            self.assertEqual(ack.code, 0)
        not_yours = await change(b, codec.Edit(message_id=hello.message_id, content="x", request_id=5))
        self.assertEqual(not_yours.code, 1017)
        await api0.ok("POST", "/message/edit", {"message_id": hello.message_id, "content": "hello!"}, auth=alice.auth)
        for client in (a, b):
            await wait_until(lambda cl=client: (KIND_EDIT, hello.message_id) in kinds(cl), "the edit event")
            self.assertEqual(kinds(client).count((KIND_RECALL, in_group.message_id)), 1)
        fence = await a.send(bob.user_id, "fence", 3)
        await wait_until(lambda: fence.message_id in old.pushed_ids(), "the fence at the goim 1.1 connection")
        self.assertEqual({i.kind for i in old.pushed()}, {KIND_MESSAGE})

        # alice's other device was offline: it syncs through the other connect node's PB link
        late = await events(c.tcp_port(1), alice_late)
        synced = items(await late.sync(0, timeout=60))
        self.assertEqual([i.sync_sequence for i in synced], list(range(1, len(synced) + 1)))
        self.assertEqual(
            [(i.kind, i.message_id) for i in synced],
            [
                (KIND_MESSAGE, hello.message_id),
                (KIND_MESSAGE, in_group.message_id),
                (KIND_READ, hello.message_id),
                (KIND_RECALL, in_group.message_id),
                (KIND_EDIT, hello.message_id),
                (KIND_MESSAGE, fence.message_id),
            ],
        )
        self.assertEqual((synced[0].content, synced[1].recalled, synced[1].content), ("hello!", True, ""))
        conversations = await api1.ok("GET", "/conversations?cursor=&limit=1", auth=bob.auth)
        self.assertEqual(len(conversations["items"]), 1)
        self.assertEqual(conversations["items"][0]["last_message"]["message_id"], fence.message_id)
        self.assertEqual(conversations["items"][0]["unread"], 1)
        self.assertIsNotNone(conversations["next_cursor"])
