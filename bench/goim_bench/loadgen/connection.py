"""A load generator's client connections: TCP, or WebSocket carrying whole frames."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure

from goim.pb import goim_pb2 as pb
from goim.protocols.codec import HEARTBEAT_ACK, KICKED, MESSAGE, MESSAGE_SEND_ACK, SIGN_IN_ACK
from goim.protocols.framing import decode_frames, set_no_delay
from goim_bench.loadgen.device import Device
from goim_bench.loadgen.frames import _now

if TYPE_CHECKING:
    from goim_bench.loadgen.generator import LoadGenerator



class Connection(Protocol):
    """One client connection: frames in, handlers on the generator."""

    def __init__(self, gen: LoadGenerator, device: Device) -> None:
        self.gen = gen
        self.device = device
        self._buffer = b""
        self.lost = False

    def connectionMade(self) -> None:
        # the writes of one reactor turn leave together (Twisted buffers them until
        # the socket is writable); Nagle would hold the next turn's behind a delayed ACK
        set_no_delay(self.transport)
        self.device.conn = self
        self.gen.on_connected(self)

    def write(self, data: bytes) -> None:
        transport: Any = self.transport
        if not self.lost and transport is not None:
            transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        gen = self.gen
        gen.last_frame_at = _now()
        frames, self._buffer = decode_frames(self._buffer + data if self._buffer else data)
        device = self.device
        for frame_type, value in frames:
            if frame_type == MESSAGE:
                gen.on_message(device, pb.Message.FromString(value))
            elif frame_type == MESSAGE_SEND_ACK:
                gen.on_send_ack(device, pb.MessageSendACK.FromString(value))
            elif frame_type == HEARTBEAT_ACK:
                device.heartbeat_acks += 1
            elif frame_type == SIGN_IN_ACK:
                gen.on_sign_in_ack(self, pb.SignInACK.FromString(value))
            elif frame_type == KICKED:
                device.kicked = pb.Kicked.FromString(value).reason

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        if self.device.conn is self:
            self.device.conn = None
            was_signed_in = self.device.signed_in
            self.device.signed_in = False
            self.gen.on_lost(self, was_signed_in)


class _Attempt(ClientFactory):
    """One connection attempt of one device."""

    def __init__(self, gen: LoadGenerator, device: Device) -> None:
        self.gen = gen
        self.device = device

    def buildProtocol(self, addr: Any) -> Connection:
        return Connection(self.gen, self.device)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.gen.on_connect_failed(self.device, reason)


class _WebSocketStream:
    """What a :class:`Connection` writes to on a WebSocket: each write is one binary
    message (writes are whole frames), closes go through the close handshake."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def write(self, data: bytes) -> None:
        if self.ws.state == self.ws.STATE_OPEN:
            self.ws.sendMessage(data, isBinary=True)

    def loseConnection(self) -> None:
        if self.ws.state == self.ws.STATE_OPEN:
            self.ws.sendClose(1000)
        else:
            self.ws.dropConnection(abort=True)

    def abortConnection(self) -> None:
        self.ws.dropConnection(abort=True)

    def getPeer(self) -> Any:
        return self.ws.transport.getPeer() if self.ws.transport is not None else None


def _websocket_attempt(gen: LoadGenerator, device: Device, url: str) -> Any:
    """An autobahn client factory for one connection attempt over WebSocket: the same
    :class:`Connection` runs inside, fed with each binary message's frames."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

    class WebSocketConnection(WebSocketClientProtocol):
        inner: Connection | None = None

        def onOpen(self) -> None:
            self.inner = Connection(gen, device)
            self.inner.makeConnection(_WebSocketStream(self))

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if self.inner is not None:
                self.inner.dataReceived(payload)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            inner, self.inner = self.inner, None
            if inner is not None:
                inner.connectionLost(Failure(ConnectionDone()) if wasClean else Failure(ConnectionLost()))
            else:
                gen.on_connect_failed(device, Failure(ConnectionRefusedError(f"WebSocket handshake: {reason}")))

    class Attempt(WebSocketClientFactory):
        protocol = WebSocketConnection

        def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
            gen.on_connect_failed(device, reason)

    factory = Attempt(url)
    # the goim heartbeat and the server's idle timeout do the liveness work
    factory.setProtocolOptions(openHandshakeTimeout=20, closeHandshakeTimeout=2, tcpNoDelay=True)
    return factory
