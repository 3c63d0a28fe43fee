"""Tests for goim.protocols.framing: pure TLV encoding/decoding and TLVReceiver."""

from __future__ import annotations

import socket
from typing import Any

from hypothesis import given, settings, strategies as st
from twisted.internet.address import IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientCreator, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from goim.protocols.framing import (
    HEADER_SIZE,
    MAX_VALUE_LENGTH,
    Frame,
    FrameTooLongError,
    TLVReceiver,
    decode_frames,
    describe_peer,
    encode_frame,
    parse_frame,
    write_through,
)

frame_lists = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=64)).map(lambda t: Frame(*t)),
    max_size=8,
)


class Recorder(TLVReceiver):
    """Records frames; can pause itself after a given number of frames."""

    def __init__(self, pause_after: int | None = None) -> None:
        self.frames: list[Frame] = []
        self.pause_after = pause_after
        self.limits: list[int] = []

    def frameReceived(self, frame_type: int, value: bytes) -> None:
        self.frames.append(Frame(frame_type, value))
        if self.pause_after is not None and len(self.frames) == self.pause_after:
            self.pauseProducing()


def connected(receiver: TLVReceiver) -> StringTransport:
    transport = StringTransport()
    receiver.makeConnection(transport)
    return transport


def stream(frames: list[Frame]) -> bytes:
    return b"".join(encode_frame(f.type, f.value) for f in frames)


class PureFramingTests(SynchronousTestCase):
    def test_encode_layout(self) -> None:
        """encode_frame writes type and length as big-endian uint16 before the value."""
        self.assertEqual(encode_frame(0x0102, b"abc"), b"\x01\x02\x00\x03abc")
        self.assertEqual(encode_frame(4, b""), b"\x00\x04\x00\x00")

    def test_encode_limits(self) -> None:
        """encode_frame accepts 65535 value bytes, refuses 65536 and bad type codes."""
        self.assertEqual(len(encode_frame(1, b"x" * MAX_VALUE_LENGTH)), MAX_VALUE_LENGTH + 4)
        self.assertRaises(ValueError, encode_frame, 1, b"x" * (MAX_VALUE_LENGTH + 1))
        self.assertRaises(FrameTooLongError, encode_frame, 1, b"x" * (MAX_VALUE_LENGTH + 1))
        self.assertRaises(ValueError, encode_frame, -1, b"")
        self.assertRaises(ValueError, encode_frame, 0x10000, b"")

    def test_parse_incomplete(self) -> None:
        """parse_frame returns None for a partial header or a partial value."""
        data = encode_frame(3, b"hello")
        for cut in range(len(data)):
            self.assertIsNone(parse_frame(data[:cut]))
        self.assertEqual(parse_frame(data), (3, b"hello", len(data)))

    def test_parse_offset(self) -> None:
        """parse_frame reads the frame at an offset and returns the next offset."""
        data = encode_frame(1, b"a") + encode_frame(2, b"bc")
        self.assertEqual(parse_frame(data, 5), (2, b"bc", len(data)))

    def test_parse_oversize_header(self) -> None:
        """An oversize length is refused as soon as the header is complete."""
        with self.assertRaises(FrameTooLongError) as caught:
            parse_frame(b"\x00\x01\x00\x0b", 0, 10)
        self.assertEqual(caught.exception.length, 11)

    def test_decode_frames_remainder(self) -> None:
        """decode_frames returns complete frames and the incomplete remainder."""
        data = encode_frame(1, b"a") + encode_frame(2, b"") + encode_frame(3, b"xyz")[:5]
        frames, rest = decode_frames(data)
        self.assertEqual(frames, [Frame(1, b"a"), Frame(2, b"")])
        self.assertEqual(rest, encode_frame(3, b"xyz")[:5])

    def test_decode_frames_oversize(self) -> None:
        """decode_frames raises FrameTooLongError past max_length."""
        self.assertRaises(FrameTooLongError, decode_frames, encode_frame(1, b"x" * 11), 10)

    @settings(deadline=None)
    @given(frame_lists)
    def test_decode_roundtrip(self, frames: list[Frame]) -> None:
        """Encoding then decoding any frames gives them back with no remainder."""
        self.assertEqual(decode_frames(stream(frames)), (frames, b""))

    def test_describe_peer(self) -> None:
        """describe_peer renders host:port, brackets IPv6 and survives no transport."""
        self.assertEqual(describe_peer(StringTransport()), "192.168.1.1:54321")
        ipv6 = StringTransport(peerAddress=IPv6Address("TCP", "::1", 5000))
        self.assertEqual(describe_peer(ipv6), "[::1]:5000")
        self.assertEqual(describe_peer(None), "<not connected>")


class TLVReceiverTests(SynchronousTestCase):
    @settings(max_examples=50, deadline=None)
    @given(frame_lists)
    def test_split_at_every_boundary(self, frames: list[Frame]) -> None:
        """A stream split in two at any byte decodes to the same frames."""
        data = stream(frames)
        for cut in range(len(data) + 1):
            receiver = Recorder()
            connected(receiver)
            receiver.dataReceived(data[:cut])
            receiver.dataReceived(data[cut:])
            self.assertEqual(receiver.frames, frames)

    @settings(deadline=None)
    @given(frame_lists)
    def test_byte_at_a_time_and_one_chunk(self, frames: list[Frame]) -> None:
        """Byte-by-byte feeding and one chunk decode to the same frames."""
        data = stream(frames)
        one_chunk = Recorder()
        connected(one_chunk)
        one_chunk.dataReceived(data)
        bytewise = Recorder()
        connected(bytewise)
        for i in range(len(data)):
            bytewise.dataReceived(data[i : i + 1])
        self.assertEqual(one_chunk.frames, frames)
        self.assertEqual(bytewise.frames, frames)

    @settings(deadline=None)
    @given(st.binary(max_size=512), st.integers(0, 70_000))
    def test_random_bytes_never_raise(self, data: bytes, max_length: int) -> None:
        """Arbitrary bytes never raise out of dataReceived, whatever MAX_LENGTH."""
        receiver = Recorder()
        receiver.MAX_LENGTH = max_length
        connected(receiver)
        for i in range(0, len(data), 7):
            receiver.dataReceived(data[i : i + 7])

    def test_empty_and_largest_values(self) -> None:
        """0-byte and 65535-byte values are delivered intact."""
        receiver = Recorder()
        connected(receiver)
        big = bytes(range(256)) * 255 + b"\x00" * 255
        self.assertEqual(len(big), MAX_VALUE_LENGTH)
        receiver.dataReceived(encode_frame(4, b"") + encode_frame(6, big))
        self.assertEqual(receiver.frames, [Frame(4, b""), Frame(6, big)])

    def test_over_limit_closes(self) -> None:
        """A length over MAX_LENGTH closes the connection; earlier frames still arrive."""
        receiver = Recorder()
        receiver.MAX_LENGTH = 10
        transport = connected(receiver)
        receiver.dataReceived(encode_frame(1, b"ok") + b"\x00\x02\x00\x0b" + b"x" * 11)
        self.assertEqual(receiver.frames, [Frame(1, b"ok")])
        self.assertTrue(transport.disconnecting)
        receiver.dataReceived(encode_frame(1, b"late"))
        self.assertEqual(receiver.frames, [Frame(1, b"ok")])

    def test_length_limit_hook(self) -> None:
        """lengthLimitExceeded gets the announced length and can be overridden."""
        seen: list[int] = []

        class Custom(Recorder):
            def lengthLimitExceeded(self, length: int) -> None:
                seen.append(length)

        receiver = Custom()
        receiver.MAX_LENGTH = 3
        transport = connected(receiver)
        receiver.dataReceived(b"\x00\x01\x00\x04")
        self.assertEqual(seen, [4])
        self.assertFalse(transport.disconnecting)

    def test_pause_stops_buffered_delivery(self) -> None:
        """Pausing stops delivery of already-buffered frames and pauses the transport;
        resuming delivers them in order, then resumes the transport."""
        receiver = Recorder(pause_after=1)
        transport = connected(receiver)
        receiver.dataReceived(encode_frame(1, b"a") + encode_frame(2, b"b"))
        self.assertEqual(receiver.frames, [Frame(1, b"a")])
        self.assertEqual(transport.producerState, "paused")
        receiver.dataReceived(encode_frame(3, b"c"))
        self.assertEqual(receiver.frames, [Frame(1, b"a")])
        receiver.resumeProducing()
        self.assertEqual(receiver.frames, [Frame(1, b"a"), Frame(2, b"b"), Frame(3, b"c")])
        self.assertEqual(transport.producerState, "producing")

    def test_pause_before_data(self) -> None:
        """Data received while paused from outside is buffered until resume."""
        receiver = Recorder()
        connected(receiver)
        receiver.pauseProducing()
        receiver.dataReceived(encode_frame(1, b"a"))
        self.assertEqual(receiver.frames, [])
        receiver.resumeProducing()
        self.assertEqual(receiver.frames, [Frame(1, b"a")])

    def test_pause_again_while_resuming(self) -> None:
        """A frame delivered on resume may pause again; the rest stays buffered."""
        receiver = Recorder(pause_after=1)
        transport = connected(receiver)
        receiver.dataReceived(stream([Frame(1, b""), Frame(2, b""), Frame(3, b"")]))
        receiver.pause_after = 2
        receiver.resumeProducing()
        self.assertEqual([f.type for f in receiver.frames], [1, 2])
        self.assertEqual(transport.producerState, "paused")
        receiver.resumeProducing()
        self.assertEqual([f.type for f in receiver.frames], [1, 2, 3])

    def test_resume_inside_frame_received_keeps_order(self) -> None:
        """Pause then resume from inside frameReceived delivers every frame once, in order."""

        class Bouncer(Recorder):
            def frameReceived(self, frame_type: int, value: bytes) -> None:
                super().frameReceived(frame_type, value)
                self.pauseProducing()
                self.resumeProducing()

        receiver = Bouncer()
        connected(receiver)
        receiver.dataReceived(stream([Frame(i, b"v") for i in range(5)]))
        self.assertEqual([f.type for f in receiver.frames], list(range(5)))

    def test_stop_producing_closes(self) -> None:
        """stopProducing closes the connection and drops buffered frames."""
        receiver = Recorder(pause_after=1)
        transport = connected(receiver)
        receiver.dataReceived(stream([Frame(1, b""), Frame(2, b"")]))
        receiver.stopProducing()
        self.assertTrue(transport.disconnecting)
        receiver.resumeProducing()
        self.assertEqual([f.type for f in receiver.frames], [1])

    def test_send_frame(self) -> None:
        """sendFrame writes one encoded frame; over 65535 bytes raises and writes nothing."""
        receiver = Recorder()
        transport = connected(receiver)
        receiver.sendFrame(5, b"")
        self.assertEqual(transport.value(), b"\x00\x05\x00\x00")
        self.assertRaises(ValueError, receiver.sendFrame, 8, b"x" * (MAX_VALUE_LENGTH + 1))
        self.assertEqual(transport.value(), b"\x00\x05\x00\x00")

    def test_frame_received_error_logged_and_closed(self) -> None:
        """An exception in frameReceived is logged and closes; it never escapes."""

        class Broken(TLVReceiver):
            pass

        receiver = Broken()
        transport = connected(receiver)
        receiver.dataReceived(encode_frame(1, b"") + encode_frame(2, b""))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(NotImplementedError)), 1)

    def test_connection_lost_drops_buffer(self) -> None:
        """After connectionLost, buffered frames are never delivered."""
        receiver = Recorder(pause_after=1)
        connected(receiver)
        receiver.dataReceived(stream([Frame(1, b""), Frame(2, b"")]))
        receiver.connectionLost()
        receiver.resumeProducing()
        receiver.dataReceived(encode_frame(3, b""))
        self.assertEqual([f.type for f in receiver.frames], [1])

    def test_header_size(self) -> None:
        """The header is four bytes."""
        self.assertEqual(HEADER_SIZE, 4)


class _Held(Protocol):
    """The server side of a loopback connection: hands its transport over once connected."""

    def __init__(self, made: Deferred[Any]) -> None:
        self._made = made

    def connectionMade(self) -> None:
        self._made.callback(self.transport)


class _Reader(Protocol):
    """The client side: collects what arrives until ``expected`` bytes did."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.data = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.done.called:
            self.done.callback(bytes(self.data))


class WriteThroughTests(TestCase):
    """write_through on real loopback TCP sockets (the reactor's own transports)."""

    async def connect(self, expected: int) -> tuple[Any, _Reader]:
        from twisted.internet import reactor

        made: Deferred[Any] = Deferred()
        port = reactor.listenTCP(0, Factory.forProtocol(lambda: _Held(made)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        reader = _Reader(expected)
        client = await ClientCreator(reactor, lambda: reader).connectTCP("127.0.0.1", port.getHost().port)
        self.addCleanup(client.transport.loseConnection)
        server = await made
        self.addCleanup(server.loseConnection)
        return server, reader

    async def test_an_idle_transport_sends_at_once(self) -> None:
        """With nothing buffered the bytes leave without the transport buffering them or watching for
        writability."""
        from twisted.internet import reactor

        server, reader = await self.connect(5)
        write_through(server, b"hello")
        self.assertEqual((server._tempDataBuffer, server.dataBuffer), ([], b""))
        self.assertNotIn(server, reactor.getWriters())
        self.assertEqual(await reader.done, b"hello")

    async def test_order_and_buffering_when_the_peer_does_not_read(self) -> None:
        """Once the socket takes no more, the rest is buffered by the transport, and so is every later
        write: the peer receives everything, in order."""
        chunks = [bytes([i % 251]) * 16_384 for i in range(6)]
        server, reader = await self.connect(sum(map(len, chunks)))
        # small kernel buffers on both sides, so that the socket soon takes no more
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        reader.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # type: ignore[attr-defined]
        reader.transport.pauseProducing()  # type: ignore[attr-defined]
        for chunk in chunks:
            write_through(server, chunk)
        self.assertTrue(server._tempDataBuffer or server.dataBuffer, "the transport buffered nothing")
        reader.transport.resumeProducing()  # type: ignore[attr-defined]
        self.assertEqual(await reader.done, b"".join(chunks))

    def test_other_transports_are_written_normally(self) -> None:
        """A transport that is not Twisted's plain TCP server transport gets a plain write."""
        transport = StringTransport()
        write_through(transport, b"abc")
        self.assertEqual(transport.value(), b"abc")
