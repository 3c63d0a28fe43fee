"""GuardedSite on a fake clock and string transports: deadlines, body limits, connection caps."""

import json
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from goim.metrics import Metrics
from goim.resources.http import GuardedChannel, GuardedSite, HTTPLimits


class Recorder(Resource):
    """A leaf resource that records what reached it and echoes the body's length."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render(self, request: Request) -> bytes:
        body = request.content.read() if request.content is not None else b""
        self.bodies.append(body)
        return json.dumps({"length": len(body)}).encode()


class GuardedSiteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Recorder()
        self.metrics = Metrics()
        self.site = GuardedSite(
            self.resource,
            clock=self.clock,
            limits=HTTPLimits(
                header_timeout=10, body_timeout=20, max_body=1000, max_connections_per_address=2, max_connections=3
            ),
            metrics=self.metrics,
        )

    def connect(self, host: str = "192.0.2.1") -> tuple[Any, StringTransport]:
        address = IPv6Address("TCP", host, 1234) if ":" in host else IPv4Address("TCP", host, 1234)
        protocol = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def close(self, protocol: Any, transport: StringTransport) -> None:
        transport.loseConnection()
        protocol.connectionLost(Failure(ConnectionDone()))

    def status(self, transport: StringTransport) -> bytes:
        return transport.value().split(b"\r\n", 1)[0]

    def refused(self, reason: str) -> float:
        sample = self.metrics.registry.get_sample_value("goim_http_refused_total", {"reason": reason})
        return sample or 0.0

    def test_a_normal_request_is_served(self) -> None:
        """A complete request within the deadlines reaches the resource and is answered."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(self.resource.bodies, [b"hello"])
        self.assertEqual(self.status(transport), b"HTTP/1.1 200 OK")
        self.assertFalse(transport.disconnecting)

    def test_header_deadline_is_total(self) -> None:
        """Headers trickling in a byte at a time are cut off at the deadline (408), not kept alive by each byte."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /x HTTP/1.1\r\n")
        for _ in range(9):
            self.clock.advance(1)
            protocol.dataReceived(b"X")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.status(transport), b"HTTP/1.1 408 Request Timeout")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.bodies, [])
        self.assertEqual(self.refused("headers deadline"), 1)
        self.close(protocol, transport)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_body_deadline_is_total(self) -> None:
        """A body arriving slowly is cut off body_timeout after the headers ended."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
        for _ in range(19):
            self.clock.advance(1)
            protocol.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.status(transport), b"HTTP/1.1 408 Request Timeout")
        self.assertEqual(self.resource.bodies, [])

    def test_abort_when_the_client_does_not_read(self) -> None:
        """A refused connection that does not close is aborted after abort_after."""
        protocol, transport = self.connect()
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.clock.advance(5)
        self.assertTrue(transport.disconnected)

    def test_content_length_over_the_limit_is_refused_before_the_body(self) -> None:
        """A Content-Length over max_body is answered 413 at once; nothing of the body is kept."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /x HTTP/1.1\r\nContent-Length: 300000000\r\n\r\n")
        self.assertEqual(self.status(transport), b"HTTP/1.1 413 Payload Too Large")
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(b"x" * 5000)
        self.assertEqual(self.resource.bodies, [])
        body = json.loads(transport.value().split(b"\r\n\r\n", 1)[1])
        self.assertEqual(body["code"], 2)
        self.assertEqual(self.refused("body too large"), 1)
        self.close(protocol, transport)
        self.assertEqual(self.site.connections, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_chunked_body_over_the_limit_is_aborted_while_streaming(self) -> None:
        """A chunked body is counted as it arrives and refused once it passes max_body."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        protocol.dataReceived(b"258\r\n" + b"x" * 600 + b"\r\n")
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"258\r\n" + b"x" * 600 + b"\r\n0\r\n\r\n")
        self.assertEqual(self.status(transport), b"HTTP/1.1 413 Payload Too Large")
        self.assertEqual(self.resource.bodies, [])
        self.close(protocol, transport)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_bodies_stay_in_memory(self) -> None:
        """Whatever the announced length, the request body is a BytesIO, never a temporary file."""
        import io

        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /x HTTP/1.1\r\nContent-Length: 999\r\n\r\n")
        self.assertIsInstance(protocol.requests[-1].content, io.BytesIO)

    def test_keep_alive_requests_get_a_fresh_header_deadline(self) -> None:
        """After a response, the next request has header_timeout again; an idle connection is then closed."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.clock.advance(9)
        protocol.dataReceived(b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.resource.bodies), 2)
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_pipelined_request_is_not_cut_off(self) -> None:
        """Two requests in one write are both served and no deadline fires early."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.resource.bodies), 2)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)

    def test_malformed_request_gets_an_envelope(self) -> None:
        """A header Twisted's parser refuses (NUL in a value) is answered 400 with the envelope, then closed."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /x HTTP/1.1\r\nToken: a\x00b\r\n\r\n")
        self.assertEqual(self.status(transport), b"HTTP/1.1 400 Bad Request")
        self.assertEqual(json.loads(transport.value().split(b"\r\n\r\n", 1)[1])["code"], 2)
        self.assertTrue(transport.disconnecting)

    def test_connections_per_address_are_capped(self) -> None:
        """Past max_connections_per_address, a connection gets 503 and is closed; closing one frees a slot."""
        first = self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        protocol, transport = self.connect("192.0.2.1")
        self.assertNotIsInstance(protocol, GuardedChannel)
        self.assertEqual(self.status(transport), b"HTTP/1.1 503 Service Unavailable")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.refused("too many connections from the address"), 1)
        self.close(*first)
        protocol, _ = self.connect("192.0.2.1")
        self.assertIsInstance(protocol, GuardedChannel)

    def test_ipv6_addresses_count_by_prefix(self) -> None:
        """Addresses of one IPv6 /64 share the per-address cap."""
        self.connect("2001:db8::1")
        self.connect("2001:db8::2")
        protocol, _ = self.connect("2001:db8::3")
        self.assertNotIsInstance(protocol, GuardedChannel)

    def test_refusal_log_lines_are_rate_limited(self) -> None:
        """A flood of refused connections logs one line per second, then the count of the unlogged ones."""
        from twisted.logger import globalLogPublisher

        lines: list[int] = []

        def observe(event: dict[str, Any]) -> None:
            if str(event.get("log_format", "")).startswith("HTTP refused"):
                lines.append(event["suppressed"])

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        for _ in range(100):
            self.connect("192.0.2.1")
        self.clock.advance(1)
        self.connect("192.0.2.1")
        self.assertEqual(lines, [0, 99])
        self.assertEqual(self.refused("too many connections from the address"), 101)

    def test_total_connections_are_capped(self) -> None:
        """Past max_connections, any address is refused with 503."""
        self.connect("192.0.2.1")
        self.connect("192.0.2.2")
        self.connect("192.0.2.3")
        self.assertEqual(self.site.connections, 3)
        protocol, transport = self.connect("192.0.2.4")
        self.assertEqual(self.status(transport), b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(self.refused("too many connections"), 1)
