"""The HTTP listener's guards: deadlines, body limits and connection caps.

Twisted's ``Site`` resets its idle timeout on every byte and spools large bodies to a
temporary file before any handler sees them. ``GuardedSite`` serves the same
resources with:

* a **total** deadline for a request's headers (from the moment the connection
  waits for a request) and another for its body, never reset by arriving bytes;
* ``Content-Length`` checked as soon as the headers end, and chunked bodies
  counted while they stream: a body over the limit is answered 413 and the
  connection closed without reading the rest; bodies are kept in memory (they
  are small), never in a temporary file;
* caps on concurrent connections per client address (IPv6 per /64) and overall:
  a connection over a cap is answered 503 and closed at once.

Refusals are counted (``goim_http_refused_total{reason}``) and logged, at most one
line per reason and second.
"""

import io
import json
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from goim.logic.errors import BAD_REQUEST
from goim.logic.throttle import address_key
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.resources.envelope import MAX_BODY_BYTES
from goim.util import Clock, DelayedCall

log = Logger(observer=goim_observer)


@dataclass(frozen=True)
class HTTPLimits:
    """What ``--http-header-timeout`` and friends set."""

    #: seconds from the start of waiting for a request until its headers must be complete
    header_timeout: float = 10.0
    #: seconds from the end of the headers until the body must be complete
    body_timeout: float = 30.0
    #: the largest request body in bytes
    max_body: int = MAX_BODY_BYTES
    #: concurrent connections from one client address (IPv6: one /64)
    max_connections_per_address: int = 64
    #: concurrent connections overall
    max_connections: int = 4096
    #: seconds a closing connection may take to flush before it is aborted
    abort_after: float = 5.0


def _raw_response(status: bytes, message: str) -> bytes:
    body = json.dumps({"code": BAD_REQUEST, "message": message, "data": None}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + body
    )


class GuardedRequest(Request):
    """A request whose body goes to memory and is counted while it arrives."""

    _body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        # the channel has refused anything over max_body already: memory suffices
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if not isinstance(channel, GuardedChannel) or channel.refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > channel.limits.max_body:
            channel.refuse(b"413 Payload Too Large", f"request body is larger than {channel.limits.max_body} bytes", "body too large")
            return
        content: Any = self.content
        content.write(data)


class GuardedChannel(HTTPChannel):
    """``HTTPChannel`` with total deadlines and an early body-size check."""

    site: "GuardedSite"
    refused = False
    _deadline: DelayedCall | None = None
    _abort: DelayedCall | None = None

    @property
    def limits(self) -> HTTPLimits:
        return self.site.limits

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm(self.limits.header_timeout, "headers")

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.site.clock.callLater(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self, what: str) -> None:
        self._deadline = None
        self.refuse(b"408 Request Timeout", f"request {what} took too long", f"{what} deadline")

    def allHeadersReceived(self) -> None:
        self._disarm()
        length = self.length
        if length is not None and length > self.limits.max_body:
            self.refuse(b"413 Payload Too Large", f"request body is larger than {self.limits.max_body} bytes", "body too large")
            return
        super().allHeadersReceived()
        if length != 0:
            self._arm(self.limits.body_timeout, "body")

    def allContentReceived(self) -> None:
        if self.refused:
            return
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        # armed before the buffered next request is parsed, which may disarm it at once
        if self.persistent and not self.refused:
            self._arm(self.limits.header_timeout, "headers")
        super().requestDone(request)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's parser refusing a malformed request line or header: an envelope too
        self.refuse(b"400 Bad Request", "malformed HTTP request", "malformed request")

    def refuse(self, status: bytes, message: str, reason: str) -> None:
        """Answer with an error envelope and close, reading nothing more."""
        if self.refused:
            return
        self.refused = True
        self._disarm()
        transport: Any = self.transport
        peer = getattr(transport.getPeer(), "host", "?") if transport is not None else "?"
        self.site.refusal(reason, str(peer))
        if transport is None:
            return
        transport.write(_raw_response(status, message))
        self.loseConnection()
        self._abort = self.site.clock.callLater(self.limits.abort_after, transport.abortConnection)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        self.site.released(self)
        super().connectionLost(reason)


class _Refusal(Protocol):
    """Answers 503 and closes: the connection is over a cap."""

    def __init__(self, message: str) -> None:
        self.message = message

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(_raw_response(b"503 Service Unavailable", self.message))
        transport.loseConnection()


class GuardedSite(Site):
    """A ``Site`` of ``GuardedChannel`` connections, capped per address and overall."""

    protocol = GuardedChannel  # type: ignore[assignment]
    requestFactory = GuardedRequest

    def __init__(
        self, resource: Any, *, clock: Clock, limits: HTTPLimits = HTTPLimits(), metrics: Metrics | None = None
    ) -> None:
        super().__init__(resource, timeout=None, reactor=clock)  # our deadlines replace the idle timeout
        self.clock = clock
        self.limits = limits
        self._open: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        self._refused: Any = None
        self._log_state: dict[str, tuple[float, int]] = {}
        if metrics is not None:
            from prometheus_client import Counter

            self._refused = Counter(
                "goim_http_refused_total",
                "HTTP connections and requests refused by a guard, by reason",
                ["reason"],
                registry=metrics.registry,
            )

    def refusal(self, reason: str, address: str) -> None:
        """Count a refusal and log it, at most one line per reason and second.

        A flood of refused connections must not become a flood of log lines:
        the next line says how many refusals went unlogged.
        """
        if self._refused is not None:
            self._refused.labels(reason).inc()
        now = self.clock.seconds()
        last, suppressed = self._log_state.get(reason, (float("-inf"), 0))
        if now - last < 1.0:
            self._log_state[reason] = (last, suppressed + 1)
            return
        self._log_state[reason] = (now, 0)
        log.info(
            "HTTP refused ({reason}) for {address} ({suppressed} more refused since the last line)",
            reason=reason,
            address=address,
            suppressed=suppressed,
        )

    @property
    def connections(self) -> int:
        """Open connections."""
        return len(self._keys)

    def buildProtocol(self, addr: IAddress | None) -> Any:
        key = address_key(str(getattr(addr, "host", "") or type(addr).__name__))
        if len(self._keys) >= self.limits.max_connections:
            reason, message = "too many connections", "the server has too many connections: retry later"
        elif self._open.get(key, 0) >= self.limits.max_connections_per_address:
            reason, message = "too many connections from the address", "too many connections from your address"
        else:
            channel = super().buildProtocol(addr)
            self._open[key] = self._open.get(key, 0) + 1
            self._keys[id(channel)] = key
            return channel
        self.refusal(reason, key)
        return _Refusal(message)

    def released(self, channel: GuardedChannel) -> None:
        """A channel's connection closed."""
        key = self._keys.pop(id(channel), None)
        if key is None:
            return
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)
