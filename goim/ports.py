"""The interfaces (ports) between layers.

``Connection`` and ``ConnectionRegistry`` sit between the server side of a client
connection (``goim.protocols.connection``) and the connection table that holds it
(``goim.connect.table``): neither package imports the other.

Each port has an in-process implementation (the standalone server) and a networked
one (distributed mode: Perspective Broker or Redis). Business logic and protocols
depend only on these protocols, never on an implementation.
"""

from typing import Protocol, Sequence

from twisted.internet.defer import Deferred

from goim.types import (
    ChangeRequest,
    ChangeResult,
    SendRequest,
    SendResult,
    SignInResult,
    StoredCopies,
    SyncPage,
)


class LogicPort(Protocol):
    """What a connect layer asks of logic on behalf of its client connections.

    Every call names the client connection it is made for (``conn``, see
    ``goim.types.connection_id``): a networked logic node serves a connection only
    while presence names it, and forgets it only by that id.
    """

    async def sign_in(self, *, device_id: int, user_id: int, token: str, conn: str) -> SignInResult:
        """Authenticate a device for a user on connection ``conn``; success makes it online."""

    def send(self, request: SendRequest, *, conn: str) -> Deferred[SendResult]:
        """Store a message (deduplicated by device and send_sequence) and ACK it.

        Sends of one connection are stored in the order of these calls. Queued when
        this returns; the Deferred fires with the ACK. A Deferred, not a coroutine:
        on the reactor a send is little more than its queued entry and its answer.

        The Deferred fails with ``goim.types.SendOutcomeUnknown`` when the send may
        or may not be stored: the connection must close without ACKing it.
        """

    async def sync_page(self, *, device_id: int, user_id: int, after_seq: int, limit: int, conn: str) -> SyncPage:
        """Return up to ``limit`` messages of ``user_id`` with seq > ``after_seq``.

        ``device_id`` is the signed-in device asking; a networked logic node
        serves only connections signed in through the asking connect node.
        """

    def ack(self, *, device_id: int, user_id: int, seq: int, conn: str) -> Deferred[None]:
        """Record that ``device_id`` holds every message of its user up to ``seq``.

        Queued when this returns; the Deferred fires once the ack is written. A
        Deferred, not a coroutine: a client acks every push (a group member one per
        group message), so an ack costs a queued entry and no more.
        """

    async def offline(self, *, device_id: int, user_id: int, conn: str) -> None:
        """Connection ``conn`` of the device closed (a no-op once a newer one took over)."""

    async def change(self, *, device_id: int, user_id: int, request: ChangeRequest, conn: str) -> ChangeResult:
        """A read report, recall or edit of the connection's user (safe to repeat).

        A refusal is a result with a non-zero API code, not an exception.
        """


class SessionPort(Protocol):
    """Where logic ends a device's client connection, wherever it is."""

    def end_session(self, *, device_id: int, user_id: int, reason: str) -> None:
        """Kick the device's connection (signed in as ``user_id``), if it has one.

        Best effort, like delivery: implementations must not raise.
        """


class DeliveryPort(Protocol):
    """Where logic hands messages after they were committed: "user U has message M"."""

    def deliver(self, batch: Sequence[StoredCopies]) -> None:
        """Push each stored copy to the online devices of its user (best effort).

        Delivery is best effort by design: a device that misses a push catches up
        through sync. Implementations must not raise.
        """


class Connection(Protocol):
    """One client connection as the connection table sees it
    (``goim.protocols.connection.ClientConnection`` provides it)."""

    #: the device signed in on the connection (0 before sign-in)
    device_id: int
    #: the user signed in on the connection (0 before sign-in)
    user_id: int
    #: the connection's number on its node: newer connections have higher ones
    serial: int
    #: the connection's id, unique across nodes and restarts (``goim.types.connection_id``)
    conn_id: str
    #: the device's send_sequence epoch at sign-in
    epoch: int

    @property
    def in_flight(self) -> int:
        """How many sends are waiting for the logic layer."""

    def push_items(self, seqs: Sequence[int], items: Sequence[bytes], audiences: Sequence[int]) -> None:
        """Write live-pushed messages serialised as MessageItems, with each one's seq
        and ``AUDIENCE_*`` (best effort, never raises)."""

    def kick(self, reason: str) -> None:
        """Write a Kicked frame, then close."""

    def catch_up(self) -> None:
        """Sync from the highest seq the client acknowledged."""

    def when_lost(self) -> "Deferred[None]":
        """A Deferred that fires once the connection is lost."""

    def pauseProducing(self) -> None:
        """Stop reading frames from the client."""


class ConnectionRegistry(Protocol):
    """What a client connection asks of its node's connection table."""

    def register(self, conn: Connection) -> bool:
        """Add a signed-in connection (False: a newer one of its device is registered)."""

    def unregister(self, conn: Connection) -> bool:
        """Remove a connection if the table still maps its device to it."""

    def kick_if_early(self, conn: Connection) -> None:
        """Kick a just-registered connection whose kick arrived before its sign-in finished."""
