"""The client protocol over WebSocket (DESIGN section 9).

One protocol implementation, two transports: a WebSocket connection runs the very
same :class:`goim.protocols.connection.ClientConnection` as a TCP connection, with the
same codes, limits, timers, rate limit, flow control and kick rules. autobahn does
the RFC 6455 part (handshake, framing, masking, ping/pong, close handshake); this
module only adapts:

* :class:`GoimWebSocketProtocol` (an autobahn server protocol) accepts binary
  messages, checks that each carries whole TLV frames (one or several) and feeds
  their bytes to the ``ClientConnection``'s ``dataReceived``;
* :class:`WebSocketTransport` is what the ``ClientConnection`` sees as its transport:
  a write of frames becomes one binary message, ``loseConnection`` the WebSocket
  close handshake, and flow control (``pauseProducing``/``resumeProducing`` of the
  reading side, ``registerProducer`` of the sync producer) goes straight to the
  TCP (or TLS) transport underneath, so a slow browser pauses a sync exactly as a
  slow TCP client does;
* :class:`GoimWebSocketFactory` builds them for a listener of its own
  (``--ws ENDPOINT``) and :class:`GoimWebSocketResource` serves them at ``/ws`` of
  an HTTP site (the web page's own origin);
* :class:`OriginPolicy` decides which browser pages may connect: same-origin by
  default, or an allow-list.
"""

from __future__ import annotations

from typing import Any, Iterable, cast
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer  # type: ignore[import-untyped]

from goim.logs import goim_observer
from goim.protocols.connection import ClientConnection, ClientConnectionFactory
from goim.protocols.framing import HEADER, HEADER_SIZE, describe_peer

log = Logger(observer=goim_observer)

#: the path a goim WebSocket is served at
WS_PATH = "/ws"
#: the largest WebSocket message accepted: sixteen frames of the maximum size
DEFAULT_MAX_MESSAGE = 16 * (HEADER_SIZE + 0xFFFF)

_unpack_header_from = HEADER.unpack_from

CLOSE_NORMAL = WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL
CLOSE_UNSUPPORTED_DATA = WebSocketProtocol.CLOSE_STATUS_CODE_UNSUPPORTED_DATA
CLOSE_PROTOCOL_ERROR = WebSocketProtocol.CLOSE_STATUS_CODE_PROTOCOL_ERROR


def frames_end(data: bytes, max_length: int) -> int:
    """Where the last whole TLV frame in ``data`` ends.

    Only headers are read. A header announcing more than ``max_length`` stops the
    walk there, so that the receiver refuses the oversize frame itself.

    Args:
        data: the bytes of one message (or write).
        max_length: the largest value length the receiver accepts.

    Returns:
        The offset just past the last complete frame (``len(data)`` when the data
        is whole frames); the offset of an oversize header when one is found.
    """
    offset = 0
    size = len(data)
    while offset + HEADER_SIZE <= size:
        _, length = _unpack_header_from(data, offset)
        if length > max_length:
            return size
        end = offset + HEADER_SIZE + length
        if end > size:
            break
        offset = end
    return offset


def _normalise_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without the scheme's default port."""
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.hostname:
        return origin.strip().lower()
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return origin.strip().lower()
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    if port is None or port == default:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _host_port(netloc: str, scheme: str) -> str:
    """``host:port`` of a Host header or URL netloc, the port made explicit."""
    netloc = netloc.strip().lower()
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        return netloc
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if port is None:
        port = 443 if scheme in ("https", "wss") else 80
    return f"{host}:{port}"


class OriginPolicy:
    """Which web pages may open a goim WebSocket.

    Browsers send the page's origin in the ``Origin`` header; other clients send
    none and are always allowed (the token is what authenticates a client; origin
    checking only stops other sites' pages from using a visitor's browser).

    Args:
        allowed: origins allowed besides the same origin, such as
            ``https://chat.example.com``; ``*`` allows every origin. Empty: only a
            page served from the host and port the WebSocket request was sent to.
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        items = [item.strip() for item in allowed if item.strip()]
        self.any = "*" in items
        self.allowed = frozenset(_normalise_origin(item) for item in items if item != "*")

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a WebSocket request may proceed.

        Args:
            origin: the request's ``Origin`` header (None or empty when absent).
            host: the request's ``Host`` header.

        Returns:
            True for no origin, an allowed origin, or the same host and port.
        """
        if not origin:
            return True
        if self.any:
            return True
        normalised = _normalise_origin(origin)
        if normalised in self.allowed:
            return True
        if not host:
            return False
        parts = urlsplit(normalised)
        return _host_port(parts.netloc, parts.scheme) == _host_port(host, parts.scheme)


def parse_origins(value: Any) -> tuple[str, ...]:
    """``ORIGIN[,ORIGIN...]`` (or a TOML list) to a tuple; ``*`` allows any origin.

    Raises:
        ValueError: an item is neither ``*`` nor ``scheme://host[:port]``.
    """
    if value in (None, ""):
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    origins = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if text != "*":
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"{text!r} is not an origin such as https://chat.example.com or *")
        origins.append(text.rstrip("/"))
    return tuple(origins)


def parse_ws_url(value: Any) -> str:
    """Where a web page opens its WebSocket: ``ws://`` or ``wss://`` URL, or an absolute path.

    Raises:
        ValueError: anything else.
    """
    text = str(value).strip()
    if text.startswith("/") and not text.startswith("//"):
        return text
    parts = urlsplit(text)
    if parts.scheme in ("ws", "wss") and parts.hostname:
        return text
    raise ValueError("use ws://HOST:PORT/ws, wss://HOST/ws or a path such as /ws")


@implementer(ITransport, IConsumer, IPushProducer)
class WebSocketTransport:
    """The transport a :class:`ClientConnection` sees on a WebSocket connection.

    Writes are whole frames (``ClientConnection`` writes a frame or a sequence of
    frames at a time); each write goes out as one binary message. Should a write
    ever end inside a frame, the partial tail waits for the rest so that no message
    splits a frame. Producer calls go to the stream transport under the WebSocket.

    Args:
        ws: the WebSocket protocol this adapter belongs to.
    """

    def __init__(self, ws: GoimWebSocketProtocol) -> None:
        self._ws = ws
        self._tail = b""

    @property
    def _stream(self) -> Any:
        return self._ws.transport

    # --- ITransport ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send whole frames as one binary message (nothing once the WebSocket closes)."""
        if self._tail:
            data = self._tail + data
            self._tail = b""
        end = frames_end(data, 0xFFFF)
        if end < len(data):
            self._tail = data[end:]
            data = data[:end]
        if data:
            self._ws.send_binary(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Send a sequence of frames as one binary message."""
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Start the WebSocket close handshake."""
        self._ws.close_websocket()

    def abortConnection(self) -> None:
        """Drop the connection at once."""
        self._ws.dropConnection(abort=True)

    def getPeer(self) -> Any:
        """The address of the client (of the stream transport underneath)."""
        stream = self._stream
        return stream.getPeer() if stream is not None else None

    def getHost(self) -> Any:
        """The local address."""
        stream = self._stream
        return stream.getHost() if stream is not None else None

    @property
    def disconnecting(self) -> bool:
        """Whether the connection is closing or closed (as ``ITCPTransport`` says)."""
        return not self._ws.websocket_open()

    # the TCP options of the socket under the WebSocket (ITCPTransport)

    def setTcpNoDelay(self, enabled: bool) -> None:
        if self._stream is not None and hasattr(self._stream, "setTcpNoDelay"):
            self._stream.setTcpNoDelay(enabled)

    def getTcpNoDelay(self) -> bool:
        stream = self._stream
        return bool(stream.getTcpNoDelay()) if stream is not None and hasattr(stream, "getTcpNoDelay") else False

    def setTcpKeepAlive(self, enabled: bool) -> None:
        if self._stream is not None and hasattr(self._stream, "setTcpKeepAlive"):
            self._stream.setTcpKeepAlive(enabled)

    def getTcpKeepAlive(self) -> bool:
        stream = self._stream
        return bool(stream.getTcpKeepAlive()) if stream is not None and hasattr(stream, "getTcpKeepAlive") else False

    # --- IPushProducer: the reading side --------------------------------------------

    def pauseProducing(self) -> None:
        """Stop reading from the client (frames are handled strictly in order)."""
        stream = self._stream
        if stream is not None and self._ws.websocket_open():
            stream.pauseProducing()

    def resumeProducing(self) -> None:
        """Read from the client again."""
        stream = self._stream
        if stream is not None:
            stream.resumeProducing()

    def stopProducing(self) -> None:
        """Drop the connection."""
        self.abortConnection()

    # --- IConsumer: the sync producer -------------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register the sync producer on the stream transport (paused when it fills)."""
        stream = self._stream
        if stream is not None:
            stream.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Unregister the sync producer."""
        stream = self._stream
        if stream is not None:
            stream.unregisterProducer()


class GoimWebSocketProtocol(WebSocketServerProtocol):
    """One client WebSocket: autobahn's server protocol around a ``ClientConnection``."""

    factory: GoimWebSocketFactory
    client: ClientConnection | None = None
    _adapter: WebSocketTransport | None = None
    _close_code: int = CLOSE_NORMAL
    _close_reason: str | None = None

    @property
    def _peer(self) -> str:
        return describe_peer(self.transport)

    def websocket_open(self) -> bool:
        """Whether the WebSocket is open (handshake done, close not begun)."""
        return bool(self.state == WebSocketProtocol.STATE_OPEN)

    def connectionMade(self) -> None:
        """Start the WebSocket handshake on a socket with TCP_NODELAY.

        autobahn tries to set TCP_NODELAY before it has copied its options from the
        factory, and swallows the failure; small messages would then wait for Nagle.
        """
        super().connectionMade()
        stream: Any = self.transport
        try:
            stream.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # not a TCP socket (a UNIX socket, a test transport)

    def onConnect(self, request: ConnectionRequest) -> None:
        """Check the path and the page's origin before the handshake completes."""
        factory = self.factory
        if factory.path is not None and request.path != factory.path:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "not found")
        origin = request.headers.get("origin")
        if not factory.origins.allows(origin, request.headers.get("host")):
            log.info(
                "refused a WebSocket from {peer}: origin {origin} is not allowed",
                peer=self._peer,
                origin=origin,
            )
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")

    def onOpen(self) -> None:
        """Start the goim protocol on this connection (its sign-in timer starts now)."""
        self._adapter = WebSocketTransport(self)
        client = self.factory.client_factory.buildProtocol(self._adapter.getPeer())
        self.client = client
        client.makeConnection(cast(ITransport, self._adapter))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Feed the frames of one binary message to the goim protocol."""
        client = self.client
        if client is None:
            return
        if not isBinary:
            self._refuse(CLOSE_UNSUPPORTED_DATA, "text messages are not part of the goim protocol")
            return
        if frames_end(payload, client.MAX_LENGTH) != len(payload):
            self._refuse(CLOSE_PROTOCOL_ERROR, "a message must carry whole frames")
            return
        client.dataReceived(payload)

    def onMessageEnd(self) -> None:
        """Hand the whole message to ``onMessage``, as autobahn does, without also firing
        autobahn's observable "message" event: nobody subscribes to it here, and it
        costs a Deferred per message (a fifth of the server's time per message)."""
        if not self.failedByMe:
            self._onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]  # as autobahn does

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Tell the goim protocol the connection is gone."""
        client, self.client = self.client, None
        if client is None:
            return
        if wasClean:
            failure = Failure(ConnectionDone(f"WebSocket closed ({code})"))
        else:
            failure = Failure(ConnectionLost(f"WebSocket lost ({code} {reason or ''})".strip()))
        client.connectionLost(failure)

    def send_binary(self, data: bytes) -> None:
        """Send one binary message; nothing once the WebSocket is closing."""
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(data, isBinary=True)

    def close_websocket(self) -> None:
        """Begin the close handshake (or drop a connection that never opened)."""
        if self.state == WebSocketProtocol.STATE_OPEN:
            # read again, or the client's close frame would wait behind a pause
            if self.transport is not None:
                self.transport.resumeProducing()
            # sendClose allows only 1000 and 3000-4999; a protocol violation gets its
            # RFC 6455 code (1002, 1003) through the frame-level call
            reason = self._close_reason.encode()[:123] if self._close_reason else None
            self.sendCloseFrame(code=self._close_code, reasonUtf8=reason)
        elif self.state == WebSocketProtocol.STATE_CONNECTING:
            self.dropConnection(abort=True)

    def _refuse(self, code: int, reason: str) -> None:
        log.info("closing the WebSocket from {peer}: {reason}", peer=self._peer, reason=reason)
        self._close_code = code
        self._close_reason = reason
        if self.client is not None:
            self.client.closeConnection()


class GoimWebSocketFactory(WebSocketServerFactory):
    """Builds goim WebSocket connections around a :class:`ClientConnectionFactory`'s protocols.

    Args:
        client_factory: builds the ``ClientConnection`` of each connection (and holds
            the connection table, timeouts and limits shared with TCP).
        origins: which web pages may connect.
        path: the only request path accepted (None: any path, as under a resource
            that routes already).
        reactor: the reactor (autobahn's handshake timers).
        max_message: the largest message accepted, in bytes.
        open_handshake_timeout: seconds a connection has to finish the opening
            handshake (0: no limit).
        close_handshake_timeout: seconds the client has to answer our close frame
            before the connection is dropped (0: no limit).
        auto_ping_interval: seconds between WebSocket pings (0: none; the goim
            heartbeat and the idle timeout already close dead peers).
    """

    protocol = GoimWebSocketProtocol  # type: ignore[assignment]

    def __init__(
        self,
        client_factory: ClientConnectionFactory,
        *,
        origins: OriginPolicy | None = None,
        path: str | None = WS_PATH,
        reactor: Any = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        open_handshake_timeout: float = 10.0,
        close_handshake_timeout: float = 5.0,
        auto_ping_interval: float = 0.0,
    ) -> None:
        super().__init__(server="goim", reactor=reactor)
        self.client_factory = client_factory
        self.origins = origins if origins is not None else OriginPolicy()
        self.path = path
        self.setProtocolOptions(
            maxFramePayloadSize=max_message,
            maxMessagePayloadSize=max_message,
            openHandshakeTimeout=open_handshake_timeout,
            closeHandshakeTimeout=close_handshake_timeout,
            autoPingInterval=auto_ping_interval,
            autoPingTimeout=max(auto_ping_interval, 1.0) if auto_ping_interval else None,
            failByDrop=False,
            # clients speak only binary frames; nothing to validate as UTF-8
            utf8validateIncoming=False,
        )


class GoimWebSocketResource(WebSocketResource):
    """``/ws`` of an HTTP site: takes the connection over from twisted.web.

    Before autobahn takes the transport, the HTTP channel stops being the
    transport's producer (so that the goim protocol can register its sync producer
    there) and its idle timer is cancelled (twisted.web suspends it while a request
    is handled already; this keeps it so whatever the site does), so that only the
    goim protocol's timers rule the connection.
    """

    def render(self, request: Request) -> Any:
        channel = request.channel
        transport = getattr(channel, "transport", None)
        if transport is not None:
            channel.setTimeout(None)
            # the channel registered itself as the producer of its transport
            transport.unregisterProducer()
        return super().render(request)
