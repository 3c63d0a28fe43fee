"""TLV framing of the client wire protocol (DESIGN section 3).

Every frame is ``type: uint16 BE | length: uint16 BE | value: length bytes``. The
functions here are pure (bytes in, bytes or frames out) and tested on their own;
:class:`TLVReceiver` is a Twisted protocol in the image of
``twisted.protocols.basic.IntNStringReceiver`` that only frames and buffers, with
correct behaviour while paused.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet import tcp
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from goim.logs import goim_observer

HEADER = struct.Struct("!HH")
HEADER_SIZE = HEADER.size
MAX_VALUE_LENGTH = 0xFFFF
MAX_FRAME_TYPE = 0xFFFF

_unpack_header_from = HEADER.unpack_from
_pack_header = HEADER.pack


class FrameTooLongError(ValueError):
    """A frame value is longer than a limit (a received length or one to send)."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame value of {length} bytes exceeds the limit of {limit}")
        self.length = length
        self.limit = limit


class Frame(NamedTuple):
    """One decoded frame: its type code and its value bytes."""

    type: int
    value: bytes


def encode_frame(frame_type: int, value: bytes) -> bytes:
    """Encode one frame.

    Args:
        frame_type: the frame's type code, 0..65535.
        value: the frame's value, at most 65535 bytes.

    Returns:
        The header followed by the value.

    Raises:
        FrameTooLongError: (a ``ValueError``) when ``value`` is over 65535 bytes.
        ValueError: when ``frame_type`` is outside 0..65535.
    """
    length = len(value)
    if length > MAX_VALUE_LENGTH:
        raise FrameTooLongError(length, MAX_VALUE_LENGTH)
    if not 0 <= frame_type <= MAX_FRAME_TYPE:
        raise ValueError(f"frame type {frame_type} is outside 0..{MAX_FRAME_TYPE}")
    return _pack_header(frame_type, length) + value


def parse_frame(
    buffer: bytes, offset: int = 0, max_length: int = MAX_VALUE_LENGTH
) -> tuple[int, bytes, int] | None:
    """Parse the frame that starts at ``offset`` in ``buffer``, if it is complete.

    The length is checked against ``max_length`` as soon as the header is complete,
    before the value has arrived, so an oversize frame is refused without buffering it.

    Args:
        buffer: received bytes.
        offset: where the next frame starts.
        max_length: the largest acceptable value length.

    Returns:
        ``(type, value, next_offset)``, or None when the buffer holds no complete frame
        at ``offset``.

    Raises:
        FrameTooLongError: the header announces a value longer than ``max_length``.
    """
    start = offset + HEADER_SIZE
    if len(buffer) < start:
        return None
    frame_type, length = _unpack_header_from(buffer, offset)
    if length > max_length:
        raise FrameTooLongError(length, max_length)
    end = start + length
    if len(buffer) < end:
        return None
    return frame_type, buffer[start:end], end


def decode_frames(
    buffer: bytes, max_length: int = MAX_VALUE_LENGTH
) -> tuple[list[Frame], bytes]:
    """Split a buffer into its complete frames and the incomplete remainder.

    Args:
        buffer: received bytes.
        max_length: the largest acceptable value length.

    Returns:
        The complete frames in order, and the bytes after the last of them.

    Raises:
        FrameTooLongError: a header announces a value longer than ``max_length``.
    """
    frames: list[Frame] = []
    append = frames.append
    new = tuple.__new__  # Frame(...) runs a Python-level __new__; this does not
    offset = 0
    size = len(buffer)
    # parse_frame inlined: this loop is the hot path of a busy connection.
    while size >= offset + HEADER_SIZE:
        frame_type, length = _unpack_header_from(buffer, offset)
        if length > max_length:
            raise FrameTooLongError(length, max_length)
        start = offset + HEADER_SIZE
        end = start + length
        if size < end:
            break
        append(new(Frame, (frame_type, buffer[start:end])))
        offset = end
    return frames, buffer[offset:]


class ProducerTransport(TypingProtocol):
    """The part of a stream transport (ITransport, IPushProducer, IConsumer) we use."""

    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: list[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def getPeer(self) -> Any: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def registerProducer(self, producer: Any, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...


def describe_peer(transport: object) -> str:
    """Describe a transport's peer for log lines, as ``host:port`` when it can.

    Args:
        transport: a transport, or None.

    Returns:
        A short text; never raises.
    """
    if transport is None:
        return "<not connected>"
    try:
        peer = cast(ProducerTransport, transport).getPeer()
    except Exception:
        return "<unknown peer>"
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return str(peer)


def set_no_delay(transport: object) -> None:
    """Turn TCP_NODELAY on for a transport that has the option (TCP, a WebSocket's).

    goim frames are small and latency-bound: with Nagle's algorithm on, a frame
    written while an earlier segment is unacknowledged waits for the peer's delayed
    ACK (40 ms on Linux). Writers coalesce their frames per reactor turn instead.
    Transports without the option (pipes, test transports) are left alone.

    Args:
        transport: a transport, or None.
    """
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is None:
        return
    try:
        setter(True)
    except OSError as e:  # a socket closed under us: its close is handled elsewhere
        TLVReceiver.log.debug("could not set TCP_NODELAY: {error}", error=str(e))


def write_through(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sending at once what the socket takes when a plain
    TCP transport has nothing buffered.

    Twisted's TCP transport buffers every write and sends it once epoll reports the
    socket writable: an ``epoll_ctl`` to watch for writability, a poll round, and
    another ``epoll_ctl`` to stop, for every write. Writing a batch's pushes to
    hundreds of connections, that was the largest single cost of the reactor
    (docs/benchmarks.md, issue 12). With nothing buffered the bytes may go out
    now; whatever the socket does not take is handed to ``transport.write``, as is
    everything written to a TLS or closing transport or one with bytes still
    buffered, so order, backpressure and the producer's pause work as before.

    Args:
        transport: the connection's transport (any; only Twisted's plain TCP
            server transport is written through).
        data: the bytes to write.
    """
    if (
        type(transport) is tcp.Server
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:  # would block, or the peer is gone: the transport finds out
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class TLVReceiver(Protocol):
    """A protocol that turns a byte stream into ``frameReceived(type, value)`` calls.

    Like ``IntNStringReceiver`` it keeps an internal buffer, refuses frames whose
    value is longer than ``MAX_LENGTH`` through ``lengthLimitExceeded``, and acts as
    the push producer of its input: ``pauseProducing`` stops the delivery of frames
    already buffered (and pauses the transport) until ``resumeProducing``. Nothing
    received ever raises out of ``dataReceived``: a failing ``frameReceived`` is
    logged with the peer address and the connection closed.
    """

    MAX_LENGTH: int = MAX_VALUE_LENGTH
    log = Logger(observer=goim_observer)

    paused: bool = False
    _buffer: bytes = b""
    _offset: int = 0
    _delivering: bool = False
    _receiving_stopped: bool = False
    _peer_text: str | None = None

    # --- to override -------------------------------------------------------------

    def frameReceived(self, frame_type: int, value: bytes) -> None:
        """Handle one complete frame. Override this.

        Args:
            frame_type: the frame's type code.
            value: the frame's value bytes.
        """
        raise NotImplementedError

    def lengthLimitExceeded(self, length: int) -> None:
        """Handle a header announcing a value over ``MAX_LENGTH``.

        The default logs and closes the connection. The stream cannot be re-synchronised
        after an oversize header, so no further frame is delivered either way.

        Args:
            length: the announced value length.
        """
        self.log.warn(
            "frame of {length} bytes from {peer} exceeds the limit of {limit}: closing",
            length=length,
            limit=self.MAX_LENGTH,
            peer=self.peer,
        )
        self.closeConnection()

    # --- helpers -------------------------------------------------------------------

    @property
    def peer(self) -> str:
        """The peer's address for log lines (``host:port``)."""
        if self._peer_text is None:
            if self.transport is None:
                return describe_peer(None)
            self._peer_text = describe_peer(self.transport)
        return self._peer_text

    @property
    def _transport(self) -> ProducerTransport:
        return cast(ProducerTransport, self.transport)

    def sendFrame(self, frame_type: int, value: bytes) -> None:
        """Write one frame to the transport.

        Args:
            frame_type: the frame's type code.
            value: the frame's value, at most 65535 bytes.

        Raises:
            ValueError: the value is over 65535 bytes (nothing is written).
        """
        self._transport.write(encode_frame(frame_type, value))

    def closeConnection(self) -> None:
        """Stop delivering frames, drop the buffer and close the connection."""
        self._stop_receiving()
        if self.transport is not None:
            self._transport.loseConnection()

    def _stop_receiving(self) -> None:
        self._receiving_stopped = True
        self._buffer = b""
        self._offset = 0

    # --- IProtocol -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Buffer ``data`` and deliver every complete frame, unless paused."""
        if self._receiving_stopped:
            return
        self._buffer = self._buffer + data if self._buffer else bytes(data)
        self._deliver_safely()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Drop whatever is still buffered."""
        self._stop_receiving()

    # --- IPushProducer (of the frames we hand to frameReceived) ---------------------

    def pauseProducing(self) -> None:
        """Stop delivering frames (buffered ones too) and pause the transport."""
        self.paused = True
        if self.transport is not None:
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        """Deliver the frames buffered meanwhile, then resume the transport."""
        self.paused = False
        self._deliver_safely()
        if not self.paused and not self._receiving_stopped and self.transport is not None:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """Close the connection."""
        self.closeConnection()

    # --- internals -------------------------------------------------------------------

    def _deliver_safely(self) -> None:
        try:
            self._deliver()
        except Exception:
            self.log.failure("error handling a frame from {peer}: closing", peer=self.peer)
            self.closeConnection()

    def _deliver(self) -> None:
        # A frameReceived that pauses and resumes synchronously (a Deferred that has
        # already fired) re-enters here: the outer loop carries on, in order.
        if self._delivering:
            return
        self._delivering = True
        try:
            max_length = self.MAX_LENGTH
            unpack = _unpack_header_from
            # parse_frame inlined. The buffer is re-read on every round because a
            # frameReceived may append to it (a re-entrant dataReceived) or drop it.
            while not self.paused and not self._receiving_stopped:
                buffer = self._buffer
                offset = self._offset
                start = offset + HEADER_SIZE
                if len(buffer) < start:
                    break
                frame_type, length = unpack(buffer, offset)
                if length > max_length:
                    self._stop_receiving()
                    self.lengthLimitExceeded(length)
                    return
                end = start + length
                if len(buffer) < end:
                    break
                self._offset = end
                self.frameReceived(frame_type, buffer[start:end])
        finally:
            self._delivering = False
            if self._offset:
                self._buffer = self._buffer[self._offset :]
                self._offset = 0
