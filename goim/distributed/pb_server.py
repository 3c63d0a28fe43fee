"""The logic node's side of connect → logic: a PB realm with one perspective per connect node.

Connect nodes log in with twisted.cred: the username is the node id, the password
the shared secret. A perspective serves the logic port to its node and trusts
nothing the node says about a device unless that device signed in through that
node (presence names it); every remote argument is type-checked.
"""

import re
from collections import OrderedDict
from typing import Any, Callable, TypeVar, cast

from twisted.cred import checkers, credentials, error, portal
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer  # type: ignore[import-untyped]

from goim.distributed.bus import RedisDelivery
from goim.distributed.presence import RedisPresence
from goim.logic.local import InProcessLogic
from goim.logs import goim_observer
from goim.pb import goim_pb2
from goim.protocols.batch import MalformedBatchError, decode_ack_batch, decode_send_batch, encode_send_results
from goim.protocols.codec import encode_message, send_request
from goim.types import SEND_INTERNAL_ERROR, ChangeRequest, SendResult, SignInResult, connection_node
from goim.util import Clock

log = Logger(observer=goim_observer)

T = TypeVar("T")

#: sends one remote call may carry
MAX_SEND_BATCH = 1000
#: acks one remote call may carry
MAX_ACK_BATCH = 5000
#: the longest edited content a remote call may carry (the service checks the real limit)
MAX_CHANGE_CONTENT = 65_535
#: connections a perspective remembers as checked against presence
MAX_TRUSTED = 100_000


class BadArgument(pb.Error):
    """A connect node sent an argument of the wrong type or range."""


class NotSignedInHere(pb.Error):
    """A connect node spoke for a device that did not sign in through it."""


def _int(value: Any, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**63:
        raise BadArgument(f"{name} must be an integer >= {minimum}")
    return value


@implementer(checkers.ICredentialsChecker)
class SharedSecretChecker:
    """Accepts any node id whose password is the shared secret."""

    credentialInterfaces = (credentials.IUsernameHashedPassword,)

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def requestAvatarId(self, creds: Any) -> Deferred[bytes]:
        if creds.checkPassword(self._secret):
            return succeed(creds.username)
        log.warn("refused a connect node login as {node!r}: wrong shared secret", node=creds.username)
        return fail(error.UnauthorizedLogin("wrong shared secret"))


_CONNECTION_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}/[A-Za-z0-9]{1,32}/[0-9]{1,18}$")


def _conn(value: Any, node: str) -> str:
    """A connection id of ``node``: a connect node speaks only for its own connections."""
    if not isinstance(value, str) or not _CONNECTION_ID.match(value):
        raise BadArgument("conn must be a connection id node/boot/serial")
    if connection_node(value) != node:
        raise NotSignedInHere(f"connection {value} is not one of node {node}")
    return value


def _decoded(data: Any, decode: Callable[..., list[T]], message: str, limit: int) -> list[T]:
    """A remote batch argument: the bytes of a ``goim.internal.<message>``, decoded."""
    if not isinstance(data, bytes):
        raise BadArgument(f"a batch is the bytes of a goim.internal.{message}")
    try:
        return decode(data, limit=limit)
    except MalformedBatchError as e:
        raise BadArgument(str(e)) from None


class ConnectNodePerspective(pb.Avatar):
    """What one connect node may ask of this logic node."""

    def __init__(
        self,
        node: str,
        logic: InProcessLogic,
        presence: RedisPresence,
        delivery: RedisDelivery,
        clock: Clock | None = None,
    ) -> None:
        """
        Args:
            clock: checks sign-in deadlines (without one, deadlines are not checked).
        """
        self.node = node
        self.logic = logic
        self.presence = presence
        self.delivery = delivery
        self.clock = clock
        # connection id -> (device, user, send_sequence epoch) of connections known
        # to be signed in through this node (checked against presence; the epoch is
        # the device's at that connection's sign-in, part of each send's dedupe key).
        # Bounded: another logic node may get a connection's offline, so entries are
        # also dropped least recently used (the next call checks presence again).
        self._trusted: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        # device -> its one trusted connection: a newer one trusted replaces it, so a
        # send still queued on the device's old connection is checked against presence
        self._trusted_conn: dict[int, str] = {}

    async def _check(self, conn: Any, device_id: Any, user_id: Any) -> tuple[str, int, int, int]:
        """``(conn, device_id, user_id, epoch)`` of a connection signed in through this node.

        Raises:
            BadArgument: ids of the wrong type or range.
            NotSignedInHere: presence does not name this connection for the device.
        """
        conn = _conn(conn, self.node)
        device_id = _int(device_id, "device_id", minimum=1)
        user_id = _int(user_id, "user_id", minimum=1)
        epoch = self._trusted_epoch(conn, device_id, user_id)
        if epoch is not None:
            return conn, device_id, user_id, epoch
        # signed in while another logic node served it
        entry = await self.presence.entry(device_id=device_id, user_id=user_id)
        if entry is not None and entry.conn == conn:
            self._trust(conn, device_id, user_id, entry.epoch)
            return conn, device_id, user_id, entry.epoch
        log.warn(
            "node {node} spoke for device {device_id} of user {user_id} on connection {conn}, "
            "which presence does not name",
            node=self.node,
            device_id=device_id,
            user_id=user_id,
            conn=conn,
        )
        raise NotSignedInHere(f"device {device_id} is not signed in on connection {conn}")

    def _trusted_epoch(self, conn: str, device_id: int, user_id: int) -> int | None:
        """The epoch of a connection known to be signed in through this node as this
        device of this user; None when presence must be asked."""
        trusted = self._trusted.get(conn)
        if trusted is None or trusted[0] != device_id or trusted[1] != user_id:
            return None
        self._trusted.move_to_end(conn)
        return trusted[2]

    async def _epochs(self, callers: list[tuple[str | None, int, int]]) -> list[int | None]:
        """The epoch of each ``(conn, device_id, user_id)`` of a batch, None where the
        connection is another node's (``conn`` None) or presence does not name it.

        A connection this node knows is checked without a coroutine (this is most of
        a logic node's work per send); the others are asked of presence together,
        once per connection (after a failover every connection is new to this node).

        Raises:
            Whatever asking presence raised, other than ``NotSignedInHere``.
        """
        epochs = [None if conn is None else self._trusted_epoch(conn, d, u) for conn, d, u in callers]
        # each connection once, in batch order
        asked = list(dict.fromkeys(c for c, epoch in zip(callers, epochs) if c[0] is not None and epoch is None))
        if not asked:
            return epochs
        answers = await DeferredList([Deferred.fromCoroutine(self._check(*c)) for c in asked], consumeErrors=True)
        found: dict[tuple[str | None, int, int], int] = {}
        for c, (_, value) in zip(asked, answers):
            if not isinstance(value, Failure):
                found[c] = value[3]
            elif value.check(NotSignedInHere) is None:
                value.raiseException()
        return [found.get(c) if epoch is None else epoch for c, epoch in zip(callers, epochs)]

    def _trust(self, conn: str, device_id: int, user_id: int, epoch: int) -> None:
        older = self._trusted_conn.get(device_id)
        if older is not None and older != conn:
            self._trusted.pop(older, None)
        self._trusted_conn[device_id] = conn
        self._trusted[conn] = (device_id, user_id, epoch)
        self._trusted.move_to_end(conn)
        while len(self._trusted) > MAX_TRUSTED:
            self._distrust(next(iter(self._trusted)))

    def _distrust(self, conn: str) -> None:
        entry = self._trusted.pop(conn, None)
        if entry is not None and self._trusted_conn.get(entry[0]) == conn:
            del self._trusted_conn[entry[0]]

    def perspective_sign_in(
        self, device_id: Any, user_id: Any, token: Any, conn: Any, deadline_ms: Any = 0
    ) -> Deferred[tuple[bool, str, int]]:
        return Deferred.fromCoroutine(self._sign_in(device_id, user_id, token, conn, deadline_ms))

    async def _sign_in(
        self, device_id: Any, user_id: Any, token: Any, conn: Any, deadline_ms: Any
    ) -> tuple[bool, str, int]:
        device_id = _int(device_id, "device_id")
        user_id = _int(user_id, "user_id")
        conn = _conn(conn, self.node)
        deadline_ms = _int(deadline_ms, "deadline_ms")
        if not isinstance(token, str) or len(token) > 256:
            raise BadArgument("token must be a string")
        result: SignInResult = await self.logic.sign_in(device_id=device_id, user_id=user_id, token=token)
        if not result.ok:
            return False, result.message, 0
        if deadline_ms and self.clock is not None and self.clock.seconds() * 1000 > deadline_ms:
            # The connect node gave up on this sign-in (this process was paused or
            # overloaded): writing presence now would name a closed connection and
            # kick the device's newer connection elsewhere. A late event must not.
            log.warn(
                "sign-in of device {device_id} on connection {conn} finished after its deadline: dropped",
                device_id=device_id,
                conn=conn,
            )
            return False, "sign-in took too long, try again", 0
        try:
            taken, previous = await self.presence.online(
                device_id=device_id, user_id=user_id, conn=conn, epoch=result.epoch
            )
        except Exception as e:
            log.warn("sign-in of device {device_id} failed: presence unavailable ({error!r})", device_id=device_id, error=e)
            return False, "service temporarily unavailable, try again", 0
        if not taken:
            return False, "a newer connection of this device signed in", 0
        self._trust(conn, device_id, user_id, result.epoch)
        if previous is not None and previous.node != self.node:
            # same node: the node's connection table replaces the older connection
            try:
                await self.delivery.kick(
                    node=previous.node,
                    device_id=device_id,
                    conn=previous.conn,
                    reason="signed in elsewhere",
                    new_node=self.node,
                )
            except Exception as e:
                log.warn("could not kick device {device_id} on node {node}: {error!r}", device_id=device_id, node=previous.node, error=e)
        return True, "", result.epoch

    def perspective_send_batch(self, data: Any) -> Deferred[bytes]:
        """Store a batch of sends given as the bytes of a ``SendBatch``; answers the
        bytes of a ``SendResults`` (one result per send, in batch order)."""
        return Deferred.fromCoroutine(self._send_batch(data))

    async def _send_batch(self, data: Any) -> bytes:
        sends = _decoded(data, decode_send_batch, "SendBatch", MAX_SEND_BATCH)
        parsed = [
            (
                send.message,
                self._own_conn(send.conn),
                _int(send.device_id, "device_id", minimum=1),
                _int(send.user_id, "user_id", minimum=1),
            )
            for send in sends
        ]
        return encode_send_results([r or SendResult(code=SEND_INTERNAL_ERROR) for r in await self._store(parsed)])

    def perspective_send(self, batch: Any) -> Deferred[list[tuple[int, ...]]]:
        """The batch as a list of tuples: what connect nodes before ``send_batch`` call."""
        return Deferred.fromCoroutine(self._send(batch))

    async def _send(self, batch: Any) -> list[tuple[int, ...]]:
        """``(code, message_id, seq, retry_after_ms)`` of each send, in batch order."""
        if not isinstance(batch, list) or len(batch) > MAX_SEND_BATCH:
            raise BadArgument(f"a send batch is a list of at most {MAX_SEND_BATCH} sends")
        parsed: list[tuple[goim_pb2.MessageSend, str | None, int, int]] = []
        for entry in batch:
            if not isinstance(entry, (list, tuple)) or len(entry) != 4 or not isinstance(entry[3], bytes):
                raise BadArgument("each send is (conn, device_id, user_id, MessageSend bytes)")
            conn = self._own_conn(entry[0])
            device_id = _int(entry[1], "device_id", minimum=1)
            user_id = _int(entry[2], "user_id", minimum=1)
            message = goim_pb2.MessageSend()
            try:
                message.ParseFromString(entry[3])
            except Exception:
                raise BadArgument("malformed MessageSend") from None
            parsed.append((message, conn, device_id, user_id))
        # plain ints: PB's jelly refuses IntEnum members (codes are SendCode)
        return [
            (int(r.code), r.message_id, r.seq, r.retry_after_ms) if r is not None else (int(SEND_INTERNAL_ERROR), 0, 0)
            for r in await self._store(parsed)
        ]

    def _own_conn(self, value: Any) -> str | None:
        """The connection id if it is one of this node's; None for another node's
        (that send alone fails, with code 1); BadArgument when it is malformed."""
        try:
            return _conn(value, self.node)
        except NotSignedInHere:
            return None

    async def _store(
        self, parsed: list[tuple[goim_pb2.MessageSend, str | None, int, int]]
    ) -> list[SendResult | None]:
        """The result of each checked send, in batch order (None: it failed, code 1).

        A malformed entry refused the whole batch before this (the node is broken); a
        connection that presence does not name fails only its own sends, with code 1.
        """
        # queued in batch order, each without a coroutine: the writer stores in queue
        # order, so a connection's sends are stored in the order it read them
        epochs = await self._epochs([(conn, device_id, user_id) for _, conn, device_id, user_id in parsed])
        sends: list[Deferred[Any]] = []
        for (message, _, device_id, user_id), epoch in zip(parsed, epochs):
            if epoch is None:
                sends.append(succeed(None))
                continue
            try:
                sends.append(self.logic.send(send_request(message, device_id=device_id, user_id=user_id, epoch=epoch)))
            except Exception:
                sends.append(fail())
        results: list[SendResult | None] = []
        for ok, value in await DeferredList(sends, consumeErrors=True):
            if not ok:
                log.failure("send failed", value)
                value = None
            results.append(value)
        return results

    def perspective_sync_page(
        self, device_id: Any, user_id: Any, after_seq: Any, limit: Any, conn: Any
    ) -> Deferred[bytes]:
        return Deferred.fromCoroutine(self._sync_page(device_id, user_id, after_seq, limit, conn))

    async def _sync_page(self, device_id: Any, user_id: Any, after_seq: Any, limit: Any, conn: Any) -> bytes:
        _, device_id, user_id, _ = await self._check(conn, device_id, user_id)
        page = await self.logic.sync_page(
            device_id=device_id,
            user_id=user_id,
            after_seq=_int(after_seq, "after_seq"),
            limit=_int(limit, "limit", minimum=1),
        )
        value = encode_message(1, page.messages, page.more)
        # Message.trimmed (field 4) for the connect node's sync stream
        return value + b"\x20\x01" if page.trimmed else value

    def perspective_ack_batch(self, data: Any) -> Deferred[None]:
        """Acks given as the bytes of an ``AckBatch``. An ack of a connection that
        presence does not name is dropped (and logged); a malformed batch is refused."""
        return Deferred.fromCoroutine(self._ack_batch(data))

    async def _ack_batch(self, data: Any) -> None:
        acks = _decoded(data, decode_ack_batch, "AckBatch", MAX_ACK_BATCH)
        checked = [
            (
                self._own_conn(a.conn),
                _int(a.device_id, "device_id", minimum=1),
                _int(a.user_id, "user_id", minimum=1),
                _int(a.seq, "seq"),
            )
            for a in acks
        ]
        # queued together (a group member acks every push); an ack of a connection
        # presence does not name is dropped (logged by _check: the device acks again
        # on the connection it has now)
        epochs = await self._epochs([(conn, device_id, user_id) for conn, device_id, user_id, _ in checked])
        known = [(device_id, seq) for (_, device_id, _, seq), epoch in zip(checked, epochs) if epoch is not None]
        if known:
            await self.logic.ack_many(known)

    def perspective_ack(self, device_id: Any, user_id: Any, seq: Any, conn: Any) -> Deferred[None]:
        """One ack: what connect nodes before ``ack_batch`` call."""
        return Deferred.fromCoroutine(self._ack(device_id, user_id, seq, conn))

    async def _ack(self, device_id: Any, user_id: Any, seq: Any, conn: Any) -> None:
        _, device_id, user_id, _ = await self._check(conn, device_id, user_id)
        await self.logic.ack(device_id=device_id, user_id=user_id, seq=_int(seq, "seq"))

    def perspective_change(
        self,
        device_id: Any,
        user_id: Any,
        kind: Any,
        conversation_type: Any,
        conversation_id: Any,
        seq: Any,
        message_id: Any,
        content: Any,
        conn: Any,
    ) -> Deferred[tuple[int, str, int]]:
        """A read report, recall or edit of a connection signed in through this node (issue 14)."""
        return Deferred.fromCoroutine(
            self._change(device_id, user_id, kind, conversation_type, conversation_id, seq, message_id, content, conn)
        )

    async def _change(
        self,
        device_id: Any,
        user_id: Any,
        kind: Any,
        conversation_type: Any,
        conversation_id: Any,
        seq: Any,
        message_id: Any,
        content: Any,
        conn: Any,
    ) -> tuple[int, str, int]:
        _, device_id, user_id, _ = await self._check(conn, device_id, user_id)
        if not isinstance(content, str) or len(content) > MAX_CHANGE_CONTENT:
            raise BadArgument(f"content must be a string of at most {MAX_CHANGE_CONTENT} characters")
        request = ChangeRequest(
            kind=_int(kind, "kind"),
            conversation_type=_int(conversation_type, "conversation_type"),
            conversation_id=_int(conversation_id, "conversation_id"),
            seq=_int(seq, "seq"),
            message_id=_int(message_id, "message_id"),
            content=content,
        )
        result = await self.logic.change(device_id=device_id, user_id=user_id, request=request)
        # plain ints over PB (an ApiCode member would not be serialisable)
        return int(result.code), str(result.message), int(result.read_seq)

    def perspective_offline(self, device_id: Any, user_id: Any, conn: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(self._offline(device_id, user_id, conn))

    async def _offline(self, device_id: Any, user_id: Any, conn: Any) -> None:
        device_id = _int(device_id, "device_id", minimum=1)
        user_id = _int(user_id, "user_id", minimum=1)
        conn = _conn(conn, self.node)
        self._distrust(conn)
        # compare-and-delete: removes the entry only if it names this connection
        await self.presence.offline(device_id=device_id, user_id=user_id, conn=conn)


@implementer(portal.IRealm)
class LogicRealm:
    """Hands each connect node its perspective."""

    def __init__(
        self, logic: InProcessLogic, presence: RedisPresence, delivery: RedisDelivery, clock: Clock | None = None
    ) -> None:
        self.logic = logic
        self.presence = presence
        self.delivery = delivery
        self.clock = clock

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("only PB perspectives")
        node = avatar_id.decode("utf-8", "replace") if isinstance(avatar_id, bytes) else str(avatar_id)
        log.info("connect node {node} logged in", node=node)
        perspective = ConnectNodePerspective(node, self.logic, self.presence, self.delivery, self.clock)

        def logout() -> None:
            log.info("connect node {node} disconnected", node=node)

        return pb.IPerspective, perspective, logout


def pb_factory(secret: bytes, realm: LogicRealm) -> pb.PBServerFactory:
    """The PB server factory of a logic node."""
    checker: Any = SharedSecretChecker(secret)  # Any: mypy cannot match zope interfaces
    return pb.PBServerFactory(portal.Portal(cast(Any, realm), [checker]))
