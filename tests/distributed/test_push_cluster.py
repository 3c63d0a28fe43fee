"""Business push and the offline webhook in a cluster (2 logic + 2 connect nodes,
MariaDB, Redis): one job across nodes, retries through another logic node deduped,
online decided by Redis presence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from goim.types import RECEIVER_GROUP, SENDER_SYSTEM
from tests.distributed.harness import Cluster
from tests.e2e.httpapi import HttpApi
from tests.e2e.wire import connect, items, wait_until
from tests.logic.test_webhook import SECRET, Receiver
from tests.support.db import MySQLBackend

KEY = "cluster-push-key-0123456789"


class PushClusterTests(MySQLBackend, TestCase):
    timeout = 240

    if shutil.which("redis-server") is None:
        skip = "redis-server is not installed"

    async def push(self, base: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await treq.post(
            base + "/push/messages", json.dumps(body).encode(), headers={b"Authorization": [f"Bearer {KEY}".encode()]}, persistent=False, timeout=15
        )
        env = json.loads(await response.content())
        self.assertEqual((response.code, env["code"]), (200, 0), env)
        return dict(env["data"])

    async def test_group_push_across_nodes(self) -> None:
        """A group push created on logic node 1 and retried on node 2 is one job: the
        members online on either connect node get it live once, the offline member by
        sync once, and the webhook (Redis presence) hears only of the offline one."""
        receiver = Receiver()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(receiver))
        self.addCleanup(port.stopListening)
        files = Path(self.mktemp()).absolute()
        files.mkdir(parents=True)
        (files / "key").write_text(KEY)
        (files / "secret").write_bytes(SECRET)
        cluster = Cluster(self)
        for node in cluster.logic:
            node.args += [
                "--push-key-file", str(files / "key"),
                "--webhook-url", f"http://127.0.0.1:{port.getHost().port}/hook",
                "--webhook-secret-file", str(files / "secret"),
            ]  # fmt: skip
        await cluster.start()
        api = HttpApi(cluster.http(0))
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        carol = await api.new_user("carol")
        group = await api.create_group(alice, "news", [bob, carol])
        a = await connect(self, cluster.tcp_port(0))
        await a.sign_in(alice.device_id, alice.user_id, alice.token)
        b = await connect(self, cluster.tcp_port(1))
        await b.sign_in(bob.device_id, bob.user_id, bob.token)

        body = {"idempotency_key": "news-1", "target": "group", "group_id": group, "content": "hello members"}
        job = await self.push(cluster.http(0), body)
        again = await self.push(cluster.http(1), body)
        self.assertEqual((again["id"], again["created"]), (job["id"], False))
        for client in (a, b):
            await wait_until(lambda client=client: len(client.pushed()) == 1, "the push")
            [item] = client.pushed()
            self.assertEqual(
                (item.sender_type, item.receiver_type, item.receiver_id, item.content, item.message_id),
                (SENDER_SYSTEM, RECEIVER_GROUP, group, "hello members", job["message_id"]),
            )
        await wait_until(lambda: len(receiver.events) >= 1, "the webhook event")
        self.assertEqual(sorted(receiver.events), [f"{job['message_id']}-{carol.user_id}"])
        c = await connect(self, cluster.tcp_port(1))
        await c.sign_in(carol.device_id, carol.user_id, carol.token)
        synced = items(await c.sync(0))
        self.assertEqual([(i.message_id, i.sender_type) for i in synced], [(job["message_id"], SENDER_SYSTEM)])
        self.assertEqual([len(x.pushed()) for x in (a, b)], [1, 1])
