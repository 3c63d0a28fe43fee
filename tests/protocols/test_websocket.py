"""The client protocol over WebSocket: autobahn on both ends, in memory (iosim).

The server side is the real ``GoimWebSocketFactory`` around a real
``ClientConnectionFactory`` (FakeLogic behind it, a task.Clock for its timers); the client
is autobahn's WebSocket client protocol. autobahn's own handshake timers are
turned off so nothing runs on the global reactor.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool
from twisted.python.usage import UsageError
from twisted.test.iosim import FakeTransport, IOPump, connectedServerAndClient
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from goim.types import copies_of
from goim.protocols import codec
from goim.connect.table import ConnectionTable
from goim.protocols.connection import ClientConnection, ClientConnectionFactory
from goim.protocols.framing import Frame, decode_frames, encode_frame
from goim.protocols.websocket import (
    GoimWebSocketFactory,
    GoimWebSocketProtocol,
    GoimWebSocketResource,
    WebSocketTransport,
    OriginPolicy,
    frames_end,
    parse_origins,
    parse_ws_url,
)
from goim.resources.web import WebRoot
from tests.protocols.fakes import FakeLogic


def sign_in(device_id: int = 3, user_id: int = 4) -> bytes:
    return codec.SignIn(device_id=device_id, user_id=user_id, token="t").to_frame()


HEARTBEAT = codec.Heartbeat().to_frame()


class Browser(WebSocketClientProtocol):
    """A WebSocket client that records every message and how the connection closed."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[bytes, bool]] = []
        self.opened = False
        self.closed: tuple[bool, int | None, str | None] | None = None

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (wasClean, code, reason)

    def frames(self) -> list[list[Frame]]:
        """The frames of each message received; each must hold whole frames only."""
        out = []
        for payload, binary in self.messages:
            assert binary, "a text message"
            frames, rest = decode_frames(payload)
            assert rest == b"", f"a message ends inside a frame ({len(rest)} bytes)"
            out.append(frames)
        return out


class PausableTransport(FakeTransport):
    """iosim's transport, recording whether the protocol paused reading and its TCP options."""

    paused = False
    nodelay = False
    keepalive = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def getTcpNoDelay(self) -> bool:
        return self.nodelay

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.keepalive = enabled

    def getTcpKeepAlive(self) -> bool:
        return self.keepalive

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False


class Conn:
    """A goim WebSocket server and an autobahn client, connected in memory."""

    def __init__(
        self,
        *,
        origin: str | None = None,
        path: str = "/ws",
        origins: OriginPolicy | None = None,
        max_message: int = 65536,
        **logic: bool,
    ) -> None:
        self.clock = Clock()
        self.logic = FakeLogic(**logic)
        self.table = ConnectionTable()
        self.client_factory = ClientConnectionFactory(logic=self.logic, clock=self.clock, table=self.table, max_frame_length=4096)
        self.ws_factory = GoimWebSocketFactory(
            self.client_factory,
            origins=origins,
            max_message=max_message,
            open_handshake_timeout=0,
            close_handshake_timeout=0,
        )
        headers = {"Origin": origin} if origin else None
        self.browser_factory = WebSocketClientFactory(f"ws://127.0.0.1:8080{path}", headers=headers)
        self.browser_factory.setProtocolOptions(
            openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0
        )
        self.browser: Browser
        self.server: GoimWebSocketProtocol
        self.browser, self.server, self.pump = connectedServerAndClient(
            lambda: self.ws_factory.buildProtocol(None),
            self._browser,
            serverTransportFactory=lambda p: PausableTransport(p, isServer=True),
        )

    def _browser(self) -> Browser:
        browser = Browser()
        browser.factory = self.browser_factory
        return browser

    @property
    def client(self) -> ClientConnection:
        assert self.server.client is not None
        return self.server.client

    def send(self, payload: bytes, *, binary: bool = True) -> None:
        self.browser.sendMessage(payload, isBinary=binary)
        self.flush()

    def flush(self) -> IOPump:
        """Deliver what is in flight, end the reactor turn (coalesced writes go out), deliver again."""
        self.pump.flush()
        self.clock.advance(0)
        self.pump.flush()
        return self.pump


class HandshakeTests(SynchronousTestCase):
    def test_open_starts_the_goim_protocol(self) -> None:
        """After the handshake a ClientConnection runs with the WebSocket adapter as its transport."""
        conn = Conn()
        self.assertTrue(conn.browser.opened)
        self.assertIsInstance(conn.client, ClientConnection)
        # its sign-in timer runs on the injected clock
        self.assertEqual([c.getTime() for c in conn.clock.getDelayedCalls()], [10.0])

    def test_other_path_refused(self) -> None:
        """A path other than /ws is refused in the handshake (404)."""
        conn = Conn(path="/other")
        self.assertFalse(conn.browser.opened)
        self.assertIsNone(conn.server.client)

    def test_foreign_origin_refused(self) -> None:
        """A page of another origin cannot open a WebSocket (same-origin by default)."""
        conn = Conn(origin="http://evil.example")
        self.assertFalse(conn.browser.opened)

    def test_same_origin_allowed(self) -> None:
        """The page served from the same host and port may connect."""
        conn = Conn(origin="http://127.0.0.1:8080")
        self.assertTrue(conn.browser.opened)

    def test_allow_listed_origin(self) -> None:
        """An origin on the allow-list may connect."""
        conn = Conn(origin="https://chat.example.com", origins=OriginPolicy(["https://chat.example.com"]))
        self.assertTrue(conn.browser.opened)


class FrameTests(SynchronousTestCase):
    def test_sign_in_and_heartbeat_in_one_message(self) -> None:
        """A message may carry several frames; each reply is a binary message of whole frames."""
        conn = Conn(auto_sign_in=True)
        conn.send(sign_in() + HEARTBEAT)
        frames = [f for message in conn.browser.frames() for f in message]
        self.assertEqual([f.type for f in frames], [codec.SIGN_IN_ACK, codec.HEARTBEAT_ACK])
        self.assertEqual(codec.SignInAck.from_bytes(frames[0].value).code, codec.SIGN_IN_OK)
        self.assertIs(conn.table.get(3), conn.client)

    def test_sync_pages_as_messages_of_whole_frames(self) -> None:
        """A sync of many messages arrives as binary messages of whole frames, more=False last."""
        conn = Conn(auto_sign_in=True, auto_sync=True)
        conn.logic.store(4, 300, content="x" * 100)
        conn.send(sign_in() + codec.SyncTrigger(sync_sequence=0).to_frame())
        frames = [f for message in conn.browser.frames() for f in message]
        messages = [codec.Message.from_bytes(f.value) for f in frames if f.type == codec.MESSAGE]
        seqs = [m.sync_sequence for message in messages for m in message.messages]
        self.assertEqual(seqs, list(range(1, 301)))
        self.assertEqual([m.more for m in messages][-1], False)
        self.assertTrue(all(m.more for m in messages[:-1]))
        self.assertTrue(all(len(f.value) <= codec.DEFAULT_MAX_FRAME for f in frames))

    def test_text_message_closes(self) -> None:
        """A text message is not part of the protocol: close 1003."""
        conn = Conn()
        conn.send(b"hello", binary=False)
        self.assertEqual(conn.browser.closed and conn.browser.closed[1], 1003)

    def test_partial_frame_closes(self) -> None:
        """A message that ends inside a frame closes the connection (1002)."""
        conn = Conn()
        conn.send(sign_in()[:-1])
        self.assertEqual(conn.browser.closed and conn.browser.closed[1], 1002)
        self.assertEqual(conn.logic.sign_ins, [])

    def test_oversize_frame_closes(self) -> None:
        """A frame over the limit closes the connection as on TCP."""
        conn = Conn()
        conn.send(encode_frame(codec.SIGN_IN, b"x" * 5000))
        self.assertIsNotNone(conn.browser.closed)
        self.assertIsNone(conn.server.client)

    def test_oversize_message_closes(self) -> None:
        """A message over the message limit is refused by autobahn with 1009 and a log line."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        conn = Conn(max_message=100)
        conn.send(sign_in() + codec.Heartbeat().to_frame() * 30)
        self.assertEqual(conn.browser.closed and conn.browser.closed[1], 1009)
        # autobahn says why in the log
        self.assertTrue(any("exceeds payload limit" in formatEvent(e) for e in events), [formatEvent(e) for e in events])
        self.assertEqual(conn.logic.sign_ins, [])

    def test_frame_before_sign_in_closes(self) -> None:
        """The sign-in gate is the TCP one: anything before SignIn closes."""
        conn = Conn()
        conn.send(HEARTBEAT)
        self.assertEqual(conn.browser.messages, [])
        self.assertEqual(conn.browser.closed and conn.browser.closed[1], 1000)


class TimerAndKickTests(SynchronousTestCase):
    def test_signin_timeout_closes(self) -> None:
        """No SignIn within the sign-in timeout: the WebSocket is closed."""
        conn = Conn()
        conn.clock.advance(10)
        conn.flush()
        self.assertIsNotNone(conn.browser.closed)

    def test_idle_timeout_closes_and_goes_offline(self) -> None:
        """A silent signed-in WebSocket is closed by the idle timeout and reported offline."""
        conn = Conn(auto_sign_in=True)
        conn.send(sign_in())
        conn.clock.advance(600)
        conn.flush()
        self.assertIsNotNone(conn.browser.closed)
        self.assertEqual(conn.logic.offlines, [dict(device_id=3, user_id=4)])
        self.assertIsNone(conn.table.get(3))

    def test_kick_sends_kicked_then_closes(self) -> None:
        """A second sign-in of the device kicks the WebSocket: Kicked frame, then close."""
        conn = Conn(auto_sign_in=True)
        conn.send(sign_in())
        conn.table.kick(3, "signed in elsewhere")
        conn.flush()
        frames = [f for message in conn.browser.frames() for f in message]
        self.assertEqual(frames[-1].type, codec.KICKED)
        self.assertEqual(codec.Kicked.from_bytes(frames[-1].value).reason, "signed in elsewhere")
        self.assertEqual(conn.browser.closed and conn.browser.closed[1], 1000)


class FlowControlTests(SynchronousTestCase):
    def test_sync_producer_is_registered_on_the_stream(self) -> None:
        """The sync producer sits on the TCP transport under the WebSocket, so a full
        socket buffer pauses a sync as on TCP."""
        conn = Conn()
        self.assertIs(conn.server.transport.producer, conn.client.producer)

    def test_tcp_options_reach_the_socket(self) -> None:
        """The socket under a WebSocket has TCP_NODELAY; TCP options set on the adapter
        go to it."""
        conn = Conn()
        adapter = cast(WebSocketTransport, conn.client.transport)
        stream = conn.server.transport
        self.assertTrue(stream.nodelay)  # set when the connection was made
        adapter.setTcpNoDelay(False)
        self.assertFalse(stream.nodelay)
        self.assertFalse(adapter.getTcpNoDelay())
        adapter.setTcpNoDelay(True)
        self.assertTrue(adapter.getTcpNoDelay())
        adapter.setTcpKeepAlive(True)
        self.assertTrue(stream.keepalive)
        self.assertTrue(adapter.getTcpKeepAlive())
        self.assertFalse(adapter.disconnecting)
        conn.client.closeConnection()
        self.assertTrue(adapter.disconnecting)

    def test_pending_sign_in_pauses_reading(self) -> None:
        """While sign-in is pending the stream transport is paused; it resumes after."""
        conn = Conn()
        conn.send(sign_in() + HEARTBEAT)
        transport = conn.server.transport
        self.assertTrue(transport.paused)
        conn.logic.sign_ins[0].deferred.callback(pb_ok())
        conn.flush()
        self.assertFalse(transport.paused)
        frames = [f.type for message in conn.browser.frames() for f in message]
        self.assertEqual(frames, [codec.SIGN_IN_ACK, codec.HEARTBEAT_ACK])

    def test_sync_waits_while_the_stream_is_paused(self) -> None:
        """A sync fetches no page while the socket under the WebSocket is full (its
        producer paused), and streams the rest once it drains."""
        conn = Conn(auto_sign_in=True, auto_sync=True)
        conn.logic.store(4, 450)
        conn.send(sign_in())
        conn.client.producer.pauseProducing()
        conn.send(codec.SyncTrigger(sync_sequence=0).to_frame())
        self.assertEqual(conn.logic.sync_pages, [])
        conn.client.producer.resumeProducing()
        conn.flush()
        self.assertEqual([c.args["after_seq"] for c in conn.logic.sync_pages], [0, 200, 400])
        frames = [f for m in conn.browser.frames() for f in m if f.type == codec.MESSAGE]
        seqs = [i.sync_sequence for f in frames for i in codec.Message.from_bytes(f.value).messages]
        self.assertEqual(seqs, list(range(1, 451)))

    def test_paused_push_is_made_good_by_sync(self) -> None:
        """Pushes skipped while the stream is paused are synced once it resumes."""
        conn = Conn(auto_sign_in=True, auto_sync=True)
        conn.send(sign_in())
        stored = conn.logic.store(4, 2)
        conn.client.producer.pauseProducing()
        conn.table.deliver(copies_of(stored))
        conn.flush()
        self.assertEqual([f.type for m in conn.browser.frames() for f in m], [codec.SIGN_IN_ACK])
        conn.client.producer.resumeProducing()
        conn.flush()
        frames = [f for m in conn.browser.frames() for f in m][1:]
        seqs = [i.sync_sequence for f in frames for i in codec.Message.from_bytes(f.value).messages]
        self.assertEqual(seqs, [1, 2])


def pb_ok() -> Any:
    from goim.types import SignInResult

    return SignInResult(ok=True)


class PureTests(SynchronousTestCase):
    def test_frames_end(self) -> None:
        """frames_end finds the end of the last whole frame; an oversize header stops the walk."""
        two = HEARTBEAT + sign_in()
        self.assertEqual(frames_end(two, 4096), len(two))
        self.assertEqual(frames_end(two[:-1], 4096), len(HEARTBEAT))
        self.assertEqual(frames_end(b"\x00", 4096), 0)
        big = encode_frame(1, b"x" * 100)
        self.assertEqual(frames_end(big[:10], 50), 10)

    def test_origin_policy(self) -> None:
        """Same-origin by default (host and port, default ports implied), an allow-list, or any."""
        same = OriginPolicy()
        self.assertTrue(same.allows(None, "h:1"))
        self.assertTrue(same.allows("", "h:1"))
        self.assertTrue(same.allows("http://chat.example:8080", "chat.example:8080"))
        self.assertTrue(same.allows("https://Chat.Example", "chat.example:443"))
        self.assertTrue(same.allows("http://chat.example", "chat.example"))
        self.assertFalse(same.allows("http://chat.example:8081", "chat.example:8080"))
        self.assertFalse(same.allows("http://other.example", "chat.example"))
        self.assertFalse(same.allows("null", "chat.example"))
        listed = OriginPolicy(["https://app.example/"])
        self.assertTrue(listed.allows("https://app.example:443", "api.example"))
        self.assertFalse(listed.allows("http://app.example", "api.example"))
        self.assertTrue(OriginPolicy(["*"]).allows("http://anything", "x"))

    def test_parse_origins(self) -> None:
        """--ws-origins takes origins or *, comma separated or a TOML list; rejects URLs with paths."""
        self.assertEqual(parse_origins(""), ())
        self.assertEqual(parse_origins("https://a.example, http://b.example:81"), ("https://a.example", "http://b.example:81"))
        self.assertEqual(parse_origins(["*"]), ("*",))
        for bad in ("a.example", "https://a.example/chat", "ftp://a.example"):
            with self.assertRaises(ValueError):
                parse_origins(bad)

    def test_parse_ws_url(self) -> None:
        """--web-ws-url takes ws[s]:// URLs or an absolute path."""
        self.assertEqual(parse_ws_url("/ws"), "/ws")
        self.assertEqual(parse_ws_url("wss://chat.example/ws"), "wss://chat.example/ws")
        for bad in ("http://x/ws", "ws", "//x/ws", "ws://"):
            with self.assertRaises(ValueError):
                parse_ws_url(bad)


class WebRootTests(SynchronousTestCase):
    """The site root in memory: DummyRequest drives static files' pull producers."""

    def setUp(self) -> None:
        api = Resource()
        api.putChild(b"healthz", _Text(b"api healthz"))
        self.root = WebRoot(api, ws_url="ws://connect.example:50080/ws")

    def get(self, path: str, method: bytes = b"GET") -> tuple[int, Any, bytes]:
        request = DummyRequest(path.encode().lstrip(b"/").split(b"/"))
        request.method = method
        resource = getChildForRequest(self.root, request)
        result = resource.render(request)
        if isinstance(result, bytes):
            request.write(result)
            request.finish()
        self.assertTrue(request.finished, path)
        return request.responseCode or 200, request.responseHeaders, b"".join(request.written)

    def test_page_and_files(self) -> None:
        """/ is the page; its files are under /static with exact types and the security headers."""
        code, headers, body = self.get("/")
        self.assertEqual(code, 200)
        self.assertIn(b"<title>goim chat</title>", body)
        self.assertEqual(headers.getRawHeaders(b"Content-Type"), [b"text/html; charset=utf-8"])
        self.assertIn(b"frame-ancestors 'none'", headers.getRawHeaders(b"Content-Security-Policy")[0])
        code, headers, body = self.get("/static/app.js")
        self.assertEqual((code, headers.getRawHeaders(b"Content-Type")), (200, [b"text/javascript; charset=utf-8"]))
        self.assertIn(b"SIGN_IN", body)
        code, _, body = self.get("/static/vendor/protobuf.min.js")
        self.assertEqual(code, 200)
        self.assertIn(b"protobuf.js v", body[:200])
        self.assertIn(b"syntax = \"proto3\"", self.get("/static/goim.proto")[2])

    def test_no_listing_and_no_escape(self) -> None:
        """Directories are not listed and paths cannot leave the static folder."""
        self.assertEqual(self.get("/static/")[0], 404)
        self.assertEqual(self.get("/static/vendor/")[0], 404)
        self.assertEqual(self.get("/static/../web.py")[0], 404)
        self.assertEqual(self.get("/static/nothing.js")[0], 404)

    def test_config_and_api_paths(self) -> None:
        """/web-config.json names the WebSocket URL; every other path goes to the API unchanged."""
        code, _, body = self.get("/web-config.json")
        self.assertEqual((code, body), (200, b'{"ws_url": "ws://connect.example:50080/ws"}'))
        self.assertEqual(self.get("/healthz")[2], b"api healthz")


class _Text(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request: Any) -> bytes:
        return self.body


class RealSocketTests(TestCase):
    """/ws of a real twisted.web Site on a real socket: the HTTP channel hands over."""

    async def test_ws_on_the_http_site(self) -> None:
        """The upgrade at /ws leaves the connection to the goim protocol: the sync
        producer is the socket's, and the HTTP channel's idle timer no longer runs."""
        from twisted.internet import reactor

        logic = FakeLogic(auto_sign_in=True)
        table = ConnectionTable()
        client_factory = ClientConnectionFactory(logic=logic, clock=reactor, table=table)
        ws_factory = GoimWebSocketFactory(client_factory, path=None, open_handshake_timeout=0, close_handshake_timeout=0)
        site = Site(WebRoot(Resource(), ws=GoimWebSocketResource(ws_factory)), timeout=0.2)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port

        got_ack: Deferred[None] = Deferred()
        closed: Deferred[None] = Deferred()

        class Client(Browser):
            def onOpen(self) -> None:
                self.sendMessage(sign_in(), isBinary=True)

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                super().onMessage(payload, isBinary)
                if not got_ack.called:
                    got_ack.callback(None)

            def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
                super().onClose(wasClean, code, reason)
                closed.callback(None)

        browser_factory = WebSocketClientFactory(f"ws://127.0.0.1:{number}/ws", headers={"Origin": f"http://127.0.0.1:{number}"})
        browser_factory.protocol = Client
        browser_factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0)
        reactor.connectTCP("127.0.0.1", number, browser_factory)
        await got_ack
        conn = table.get(3)
        assert conn is not None and conn.transport is not None
        stream = cast(WebSocketTransport, conn.transport)._ws.transport
        self.assertIs(stream.producer, conn.producer)
        # past the site's 0.2 s HTTP timeout the WebSocket is still up
        await deferLater(reactor, 0.5, lambda: None)
        self.assertIs(table.get(3), conn)
        self.assertFalse(closed.called)
        conn.kick("test over")
        await closed


class OptionTests(TestCase):
    """--ws, --ws-origins and --web-ws-url of the three twistd plugins, and the listeners they make."""

    def setUp(self) -> None:
        secret = Path(self.mktemp())
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text("a-shared-secret-of-32-characters")
        self.secret = str(secret)

    def test_standalone(self) -> None:
        """twistd goim: /ws on the HTTP port always, --ws adds a listener, origins parsed."""
        from twisted.internet.testing import MemoryReactorClock

        from goim import tap
        from goim.standalone import StandaloneService

        options = tap.Options()
        options.parseOptions(["--ws", "tcp:50080", "--ws-origins", "https://a.example,http://b.example:8080"])
        config = options.config()
        self.assertEqual((config.ws, config.ws_origins), ("tcp:50080", ("https://a.example", "http://b.example:8080")))
        class Reactor(MemoryReactorClock):
            def getThreadPool(self) -> ThreadPool:
                return ThreadPool()  # never started: the service is only built here

        config = replace(config, database=f"sqlite:{self.mktemp()}.db")
        service = StandaloneService(config, Reactor())
        endpoints = [endpoint for endpoint, _ in service.listeners]
        self.assertEqual(endpoints, ["tcp:50000", "tcp:8080", "tcp:50080"])
        ws_factory = service.listeners[2][1]
        self.assertIsInstance(ws_factory, GoimWebSocketFactory)
        self.assertIs(cast(GoimWebSocketFactory, ws_factory).client_factory, service.client_factory)
        self.assertTrue(cast(GoimWebSocketFactory, ws_factory).origins.allows("https://a.example", "x"))
        default = tap.Options()
        default.parseOptions([])
        self.assertEqual((default.config().ws, default.config().ws_origins), ("", ()))
        bad = tap.Options()
        with self.assertRaises(UsageError):
            bad.parseOptions(["--ws-origins", "a.example"])

    def test_connect_node(self) -> None:
        """twistd goim-connect --ws adds a WebSocket listener around the node's ClientConnectionFactory."""
        from goim.connect import tap as connect_tap

        options = connect_tap.Options()
        options.parseOptions(["--node-id", "c1", "--secret-file", self.secret, "--ws", "tcp:50080", "--ws-origins", "*"])
        config = options.config()
        self.assertEqual((config.ws, config.ws_origins), ("tcp:50080", ("*",)))
        plain = connect_tap.Options()
        plain.parseOptions(["--node-id", "c1", "--secret-file", self.secret])
        self.assertEqual((plain.config().ws, plain.config().ws_origins), ("", ()))

    async def test_connect_node_listeners(self) -> None:
        """A connect node with --ws listens with a WebSocket factory around its ClientConnectionFactory."""
        from twisted.internet.testing import MemoryReactorClock

        from goim.connect.node import ConnectNodeConfig, ConnectNodeService

        config = ConnectNodeConfig(node_id="c1", secret=b"x" * 32, ws="tcp:50080", ws_origins=("*",))
        service = ConnectNodeService(config, MemoryReactorClock())
        # its Redis pool connects lazily on the real reactor: close it
        self.addCleanup(lambda: Deferred.fromCoroutine(service.redis.close()))
        [(endpoint, factory)] = [(e, f) for e, f in service.listeners if e == "tcp:50080"]
        self.assertIsInstance(factory, GoimWebSocketFactory)
        self.assertIs(cast(GoimWebSocketFactory, factory).client_factory, service.client_factory)
        self.assertTrue(cast(GoimWebSocketFactory, factory).origins.any)

    def test_logic_node(self) -> None:
        """twistd goim-logic --web-ws-url tells the page where to connect; bad URLs are usage errors."""
        from goim.distributed import logic_tap

        options = logic_tap.Options()
        options.parseOptions(["--database", "mysql://u@127.0.0.1/goim", "--secret-file", self.secret,
                              "--web-ws-url", "wss://connect.example/ws"])  # fmt: skip
        self.assertEqual(options.config().web_ws_url, "wss://connect.example/ws")
        default = logic_tap.Options()
        default.parseOptions(["--database", "mysql://u@127.0.0.1/goim", "--secret-file", self.secret])
        self.assertEqual(default.config().web_ws_url, "/ws")
        with self.assertRaises(UsageError):
            logic_tap.Options().parseOptions(["--database", "mysql://u@127.0.0.1/goim", "--secret-file", self.secret,
                                              "--web-ws-url", "http://x/ws"])  # fmt: skip


def self_signed(directory: Path) -> tuple[str, str]:
    """A throw-away key and certificate for 127.0.0.1; returns their paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


class TLSTests(TestCase):
    """wss:// by endpoint string: an ssl: HTTP site's /ws and an ssl: --ws listener."""

    async def test_wss_on_both_listeners(self) -> None:
        """A client signs in over TLS on /ws of an ssl: site and on an ssl: WebSocket listener."""
        from twisted.internet import endpoints, reactor, ssl

        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        key, cert = self_signed(directory)
        table = ConnectionTable()
        client_factory = ClientConnectionFactory(logic=FakeLogic(auto_sign_in=True), clock=reactor, table=table)
        site = Site(WebRoot(Resource(), ws=GoimWebSocketResource(
            GoimWebSocketFactory(client_factory, path=None, open_handshake_timeout=0, close_handshake_timeout=0))))
        bare = GoimWebSocketFactory(client_factory, open_handshake_timeout=0, close_handshake_timeout=0)  # fmt: skip
        ports = []
        for factory in (site, bare):
            endpoint = endpoints.serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
            port = await endpoint.listen(factory)
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)

        for device_id, number in zip((5, 6), ports):
            got_ack: Deferred[None] = Deferred()
            closed: Deferred[None] = Deferred()

            class Client(Browser):
                def onOpen(self) -> None:
                    self.sendMessage(sign_in(device_id=device_id), isBinary=True)

                def onMessage(self, payload: bytes, isBinary: bool) -> None:
                    super().onMessage(payload, isBinary)
                    if not got_ack.called:
                        got_ack.callback(None)

                def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
                    closed.callback(None)

            browser_factory = WebSocketClientFactory(f"wss://127.0.0.1:{number}/ws")
            browser_factory.protocol = Client
            browser_factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0)
            reactor.connectSSL("127.0.0.1", number, browser_factory, ssl.CertificateOptions(verify=False))
            await got_ack
            conn = table.get(device_id)
            assert conn is not None
            self.assertEqual(conn.user_id, 4)
            conn.kick("test over")
            await closed
