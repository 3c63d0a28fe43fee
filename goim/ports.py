"""The interfaces (ports) between layers.

Each port has an in-process implementation (the standalone server) and a networked
one (distributed mode: Perspective Broker or Redis). Business logic and protocols
depend only on these protocols, never on an implementation.
"""

from typing import Protocol, Sequence

from goim.types import SendRequest, SendResult, SignInResult, StoredMessage, SyncPage


class LogicPort(Protocol):
    """What a connect layer asks of logic on behalf of its client connections.

    Every call names the client connection it is made for (``conn``, see
    ``goim.types.connection_id``): a networked logic node serves a connection only
    while presence names it, and forgets it only by that id.
    """

    async def sign_in(self, *, device_id: int, user_id: int, token: str, conn: str) -> SignInResult:
        """Authenticate a device for a user on connection ``conn``; success makes it online."""

    async def send(self, request: SendRequest, *, conn: str) -> SendResult:
        """Store a message (deduplicated by device and send_sequence) and ACK it.

        Sends of one connection are stored in the order of these calls.

        Raises:
            goim.types.SendOutcomeUnknown: the send may or may not be stored; the
                connection must close without ACKing it.
        """

    async def sync_page(self, *, device_id: int, user_id: int, after_seq: int, limit: int, conn: str) -> SyncPage:
        """Return up to ``limit`` messages of ``user_id`` with seq > ``after_seq``.

        ``device_id`` is the signed-in device asking; a networked logic node
        serves only connections signed in through the asking connect node.
        """

    async def ack(self, *, device_id: int, user_id: int, seq: int, conn: str) -> None:
        """Record that ``device_id`` holds every message of its user up to ``seq``."""

    async def offline(self, *, device_id: int, user_id: int, conn: str) -> None:
        """Connection ``conn`` of the device closed (a no-op once a newer one took over)."""


class SessionPort(Protocol):
    """Where logic ends a device's client connection, wherever it is."""

    def end_session(self, *, device_id: int, user_id: int, reason: str) -> None:
        """Kick the device's connection (signed in as ``user_id``), if it has one.

        Best effort, like delivery: implementations must not raise.
        """


class DeliveryPort(Protocol):
    """Where logic hands messages after they were committed: "user U has message M"."""

    def deliver(self, messages: Sequence[StoredMessage]) -> None:
        """Push each stored copy to the online devices of its user (best effort).

        Delivery is best effort by design: a device that misses a push catches up
        through sync. Implementations must not raise.
        """
