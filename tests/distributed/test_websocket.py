"""Distributed mode over WebSocket: a connect node's --ws listener and a logic node's page.

One logic node (HTTP API and the web page) and one connect node with ``--ws``,
MariaDB and a private Redis. A TCP client and a WebSocket client of the connect
node chat; the logic node's page tells browsers the connect node's WebSocket URL.
"""

from __future__ import annotations

import json
import shutil

import treq
from twisted.trial.unittest import TestCase

from tests.distributed.harness import Cluster
from tests.e2e.httpapi import HttpApi
from tests.e2e.test_websocket import connect_ws
from tests.e2e.wire import connect, wait_until
from tests.support.db import MySQLBackend
from tests.support.server import free_port


class ConnectNodeWebSocketTests(MySQLBackend, TestCase):
    timeout = 180

    if shutil.which("redis-server") is None:
        skip = "redis-server is not installed"

    async def test_connect_node_ws_and_logic_page(self) -> None:
        """TCP to WebSocket and back through a connect node's --ws; the logic node serves
        the page and names that WebSocket in /web-config.json; a page origin not allowed
        by --ws-origins is refused."""
        cluster = Cluster(self, logic_nodes=1, connect_nodes=1)
        # the logic node names the connect node's WebSocket before that node exists:
        # the one port picked in advance
        ws_port = free_port()
        ws_url = f"ws://127.0.0.1:{ws_port}/ws"
        cluster.logic[0].args += ["--web-ws-url", ws_url]
        await cluster.start_logic()
        page = cluster.http(0)
        cluster.connect[0].args += ["--ws", f"tcp:{ws_port}:interface=127.0.0.1", "--ws-origins", page]
        await cluster.start_connect()

        response = await treq.get(page + "/web-config.json", persistent=False)
        self.assertEqual(json.loads(await response.content()), {"ws_url": ws_url})
        response = await treq.get(page + "/", persistent=False)
        self.assertIn(b"<title>goim chat</title>", await response.content())

        api = HttpApi(page)
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        await api.befriend(alice, bob)
        a = await connect(self, cluster.tcp_port(0))
        await a.sign_in(alice.device_id, alice.user_id, alice.token)
        b = await connect_ws(self, ws_url, origin=page)
        await b.sign_in(bob.device_id, bob.user_id, bob.token)

        self.assertEqual((await a.send(bob.user_id, "to the browser", 1)).code, 0)
        await wait_until(lambda: "to the browser" in [i.content for i in b.pushed()], "the push over WebSocket")
        self.assertEqual((await b.send(alice.user_id, "from the browser", 1)).code, 0)
        await wait_until(lambda: "from the browser" in [i.content for i in a.pushed()], "the push over TCP")

        with self.assertRaises(ConnectionRefusedError):
            await connect_ws(self, ws_url, origin="http://elsewhere.example")
