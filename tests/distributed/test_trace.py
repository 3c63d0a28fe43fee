"""One message id followed through the JSON logs of a logic node and two connect
nodes (docs/operations.md, "Following one message")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from goim.client.client import GoimClient
from goim.client.state import JSONStateStore
from tests.client.fakes import Recorder
from tests.client.live import FAST, PASSWORD, wait_until
from tests.client.test_trace import events
from tests.distributed.harness import Cluster
from tests.support.db import MySQLBackend


class ClusterTraceTests(MySQLBackend, TestCase):
    timeout = 180

    def client(self, cluster: Cluster, connect_node: int) -> tuple[GoimClient, Recorder]:
        client = GoimClient(
            reactor=reactor,
            http_url=cluster.http(),
            store=JSONStateStore(Path(self.mktemp()) / "state.json"),
            tcp=("127.0.0.1", cluster.tcp_port(connect_node)),
            config=FAST,
            persistent_http=False,
        )
        recorder = Recorder()
        client.add_observer(recorder)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client, recorder

    async def test_message_id_in_every_node_log(self) -> None:
        """Alice on c1 sends to Bob on c2: c1 logs the ACK, the logic node the store
        and the delivery, c2 the push to Bob's device, all under one message_id."""
        cluster = Cluster(self, logic_nodes=1, connect_nodes=2)
        for node in [*cluster.logic, *cluster.connect]:
            node.args += ["--log-format", "json", "--log-level", "debug"]
        await cluster.start()
        (alice, _), (bob, bob_seen) = self.client(cluster, 0), self.client(cluster, 1)
        await alice.register("alice", "Alice", PASSWORD)
        await bob.register("bob", "Bob", PASSWORD)
        await alice.api.add_friend(bob.state.user_id)
        for c in (alice, bob):
            c.start()
            await wait_until(lambda c=c: c.session.connected, "sign-in")
        ack = await alice.send_to_user(bob.state.user_id, "follow me")
        await wait_until(lambda: any(m.message_id == ack.message_id for m in bob_seen.messages), "the push to bob")

        def kinds(node: Any) -> list[str]:
            return [
                e["log_format"].split(" ")[0]
                for e in events(node.log_text())
                if e.get("message_id") == ack.message_id
            ]

        c1, c2, logic = cluster.connect[0], cluster.connect[1], cluster.logic[0]
        await wait_until(lambda: "pushed" in kinds(c2), "c2's pushed event", timeout=10)
        self.assertIn("send", kinds(c1), cluster.logs())
        self.assertEqual({"stored", "delivering"} & set(kinds(logic)), {"stored", "delivering"}, cluster.logs())
        pushed = [
            e["device_id"]
            for e in events(c2.log_text())
            if e.get("message_id") == ack.message_id and e["log_format"].startswith("pushed")
        ]
        self.assertEqual(pushed, [bob.state.device_id])
