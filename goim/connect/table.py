"""The signed-in client connections of one node, by device and by user.

The table is the connect side's :class:`goim.ports.DeliveryPort` and
:class:`goim.ports.SessionPort` (in the standalone server too), and the
:class:`goim.ports.ConnectionRegistry` its connections register with. It holds them
as :class:`goim.ports.Connection` values: it never imports the protocol that
implements them.
"""

from collections import OrderedDict
from typing import Sequence

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from goim.logs import goim_observer
from goim.ports import Connection
from goim.protocols.changes import items_by_user
from goim.types import StoredCopies

KICK_SIGNED_IN_ELSEWHERE = "signed in elsewhere"
KICK_SHUTDOWN = "server shutting down"


class ConnectionTable:
    """The signed-in client connections of one connect node, by device and by user.

    One connection per device: registering a device that already has a connection
    kicks the older one. The table is the node's :class:`goim.ports.DeliveryPort`.
    """

    log = Logger(observer=goim_observer)

    #: kicks remembered for connections that have not registered yet
    MAX_EARLY_KICKS = 4096

    def __init__(self) -> None:
        self._by_device: dict[int, Connection] = {}
        self._by_user: dict[int, dict[int, Connection]] = {}
        # connection id -> reason: a kick that arrived before its connection's
        # sign-in finished here (kicks travel through Redis, sign-in answers through PB)
        self._early_kicks: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_device)

    def connections(self) -> list[Connection]:
        """Every registered connection."""
        return list(self._by_device.values())

    def register(self, conn: Connection) -> bool:
        """Add a signed-in connection; kick an older connection of the same device.

        Sign-ins of one device may finish out of order: a connection whose sign-in
        finishes after a newer connection of the device registered is refused.

        Args:
            conn: the connection, with ``device_id`` and ``user_id`` set.

        Returns:
            False when a newer connection of the device is registered already.
        """
        old = self._by_device.get(conn.device_id)
        if old is conn:
            return True
        if old is not None and old.serial > conn.serial:
            return False
        if old is not None:
            self._remove_from_user(old)
        self._by_device[conn.device_id] = conn
        self._by_user.setdefault(conn.user_id, {})[conn.device_id] = conn
        if old is not None:
            old.kick(KICK_SIGNED_IN_ELSEWHERE)
        return True

    def kick_if_early(self, conn: Connection) -> None:
        """Kick a just-registered connection whose kick arrived before its sign-in finished."""
        reason = self._early_kicks.pop(conn.conn_id, None)
        if reason is not None:
            conn.kick(reason)

    def unregister(self, conn: Connection) -> bool:
        """Remove a connection if the table still maps its device to it.

        Args:
            conn: the connection.

        Returns:
            True when it was removed; False when it was not (or no longer) registered.
        """
        if self._by_device.get(conn.device_id) is not conn:
            return False
        del self._by_device[conn.device_id]
        self._remove_from_user(conn)
        return True

    def get(self, device_id: int) -> Connection | None:
        """The connection of a device, if it has one here."""
        return self._by_device.get(device_id)

    def connections_of(self, user_id: int) -> list[Connection]:
        """The connections of every device of a user online here."""
        devices = self._by_user.get(user_id)
        return list(devices.values()) if devices else []

    def kick(self, device_id: int, reason: str) -> bool:
        """Kick a device's connection (Kicked frame, then close).

        Args:
            device_id: the device.
            reason: the text for the client.

        Returns:
            Whether the device had a connection here.
        """
        conn = self._by_device.get(device_id)
        if conn is None:
            return False
        conn.kick(reason)
        return True

    def kick_connection(self, device_id: int, conn_id: str, reason: str) -> bool:
        """Kick one connection of a device, named by its id; never a newer one.

        A kick for a connection that has not registered yet (its sign-in answer is
        still on its way) is remembered and applied when it registers.

        Returns:
            Whether that connection was registered here.
        """
        conn = self._by_device.get(device_id)
        if conn is not None and conn.conn_id == conn_id:
            conn.kick(reason)
            return True
        # an older connection of the device is registered, or none: the named one
        # may still be signing in (ids are unique, so a stale one is never matched)
        self._early_kicks[conn_id] = reason
        while len(self._early_kicks) > self.MAX_EARLY_KICKS:
            self._early_kicks.popitem(last=False)
        return False

    def end_session(self, *, device_id: int, user_id: int, reason: str) -> None:
        """Kick the device's connection here, whichever user it signed in as
        (``goim.ports.SessionPort``)."""
        self.kick(device_id, reason)

    def deliver(self, batch: Sequence[StoredCopies]) -> None:
        """Push each stored copy to every connection of its user. Never raises.

        Each message is serialised once; a copy is only encoded (its seq spliced
        in) when its user has a connection here.

        Args:
            batch: the copies of each message, each for its user.
        """
        by_user = items_by_user(batch, self._by_user)
        for user_id, (seqs, items, audiences) in by_user.items():
            for conn in self.connections_of(user_id):
                try:
                    conn.push_items(seqs, items, audiences)
                except Exception:
                    self.log.failure("push to user {user_id} failed", user_id=user_id)

    def catch_up_all(self) -> None:
        """Sync every connection from what its client acknowledged (delivery resumed)."""
        for conn in self.connections():
            try:
                conn.catch_up()
            except Exception:
                self.log.failure("catch-up of device {device_id} failed", device_id=conn.device_id)

    def close_all(self, reason: str = KICK_SHUTDOWN) -> Deferred[None]:
        """Kick every connection, e.g. at shutdown.

        Args:
            reason: the text for the clients.

        Returns:
            A Deferred that fires once all of them are closed.
        """
        conns = self.connections()
        waiters = [conn.when_lost() for conn in conns]
        for conn in conns:
            conn.kick(reason)
        return gatherResults(waiters).addCallback(lambda _: None)

    def _remove_from_user(self, conn: Connection) -> None:
        devices = self._by_user.get(conn.user_id)
        if devices is None:
            return
        if devices.get(conn.device_id) is conn:
            del devices[conn.device_id]
        if not devices:
            del self._by_user[conn.user_id]
