"""End to end over WebSocket: a real ``twistd -n goim``, TCP and WebSocket clients together.

The WebSocket clients are autobahn's client protocol around the same
:class:`tests.e2e.wire.WireClient` the TCP tests use, so every check reads the same
frames: each binary message is fed to it whole (and must hold whole frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from goim.protocols import codec
from goim.protocols.codec import KICKED, MESSAGE_PUSH
from goim.protocols.framing import decode_frames
from tests.e2e.httpapi import HttpApi
from tests.e2e.wire import WireClient, connect, items, wait_until
from tests.support.server import StandaloneServer


class _Stream:
    """The transport a WireClient writes to on a WebSocket: one binary message per write."""

    def __init__(self, ws: WebSocketClientProtocol) -> None:
        self.ws = ws

    def write(self, data: bytes) -> None:
        self.ws.sendMessage(data, isBinary=True)

    def loseConnection(self) -> None:
        self.ws.sendClose(1000)


async def connect_ws(testcase: TestCase, url: str, *, origin: str | None = None) -> WireClient:
    """A WireClient over a WebSocket to ``url``; fails when the handshake is refused."""
    client = WireClient()
    opened: Deferred[None] = Deferred()

    class Protocol(WebSocketClientProtocol):
        def onOpen(self) -> None:
            client.makeConnection(_Stream(self))  # type: ignore[arg-type]
            opened.callback(None)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            assert isBinary, "a text message from the server"
            frames, rest = decode_frames(payload)
            assert rest == b"", "a message ending inside a frame"
            client.dataReceived(payload)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            if opened.called:
                client.connectionLost(Failure(ConnectionDone()))
            else:
                opened.errback(Failure(ConnectionRefusedError(f"handshake refused: {code} {reason}")))

    factory = WebSocketClientFactory(url, headers={"Origin": origin} if origin else None)
    factory.protocol = Protocol
    factory.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=2)
    reactor.connectTCP(factory.host, factory.port, factory)
    await opened
    testcase.addCleanup(client.close)
    return client


class WebSocketEndToEndTests(TestCase):
    timeout = 120

    async def start(self, *extra: str, ws: bool = False) -> tuple[StandaloneServer, HttpApi]:
        database = Path(self.mktemp()).resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
        server = StandaloneServer(self, f"sqlite:{database}.db", *extra, ws=ws)
        await server.start()
        return server, HttpApi(server.http)

    async def test_tcp_and_websocket_clients_chat(self) -> None:
        """Alice on TCP and Bob on two WebSockets (/ws of the HTTP port and --ws) chat
        both ways live; a sync over WebSocket returns the history; a new sign-in of the
        device over TCP kicks its WebSocket."""
        server, api = await self.start(ws=True)
        ws_port = server.port("--ws")
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        bob2 = await api.another_device(bob)
        await api.befriend(alice, bob)

        a = await connect(self, server.tcp_port)
        await a.sign_in(alice.device_id, alice.user_id, alice.token)
        b = await connect_ws(self, f"ws://127.0.0.1:{server.http_port}/ws", origin=server.http)
        await b.sign_in(bob.device_id, bob.user_id, bob.token, max_frame=65535)
        b2 = await connect_ws(self, f"ws://127.0.0.1:{ws_port}/ws")
        await b2.sign_in(bob2.device_id, bob2.user_id, bob2.token)

        ack = await a.send(bob.user_id, "tcp to ws", 1)
        self.assertEqual(ack.code, 0)
        for client in (b, b2):
            await wait_until(lambda c=client: "tcp to ws" in [i.content for i in c.pushed()], "the push over WebSocket")
        ack = await b.send(alice.user_id, "ws to tcp", 1)
        self.assertEqual(ack.code, 0)
        await wait_until(lambda: "ws to tcp" in [i.content for i in a.pushed()], "the push over TCP")
        await wait_until(lambda: "ws to tcp" in [i.content for i in b2.pushed()], "the sibling device's copy")

        history = items(await b2.sync(0))
        self.assertEqual([i.content for i in history], ["tcp to ws", "ws to tcp"])
        self.assertEqual([i.sync_sequence for i in history], [1, 2])

        again = await connect(self, server.tcp_port)
        await again.sign_in(bob.device_id, bob.user_id, bob.token)
        await b.wait_closed()
        self.assertEqual([codec.Kicked.from_bytes(f.value).reason for f in b.of_code(KICKED)], ["signed in elsewhere"])
        self.assertTrue(all(m.type == MESSAGE_PUSH for m in b.messages()))

    async def test_origins(self) -> None:
        """A page of another origin is refused unless --ws-origins allows it."""
        server, api = await self.start("--ws-origins", "https://chat.example")
        url = f"ws://127.0.0.1:{server.http_port}/ws"
        with self.assertRaises(ConnectionRefusedError):
            await connect_ws(self, url, origin="http://evil.example")
        allowed: Any = await connect_ws(self, url, origin="https://chat.example")
        self.assertFalse(allowed.closed)
        same = await connect_ws(self, url, origin=server.http)
        self.assertFalse(same.closed)
        self.assertIn("origin http://evil.example is not allowed", server.log_text())
