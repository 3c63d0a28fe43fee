"""Plain value types shared by the logic layer, the ports and the protocols.

They carry no behaviour and know nothing about protobuf, SQL or HTTP, so every layer
can use them without importing another layer.
"""

from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Sequence, TypeVar

# receiver_type / sender_type values (DESIGN section 3)
RECEIVER_USER = 1
RECEIVER_GROUP = 2
SENDER_USER = 1
SENDER_SYSTEM = 2

class SignInCode(IntEnum):
    """``SignInACK.code`` (DESIGN section 3).

    Members compare equal to their numbers and format as numbers (``str``, f-strings,
    JSON, metrics labels); ``repr`` and :meth:`describe` name them for logs.
    """

    OK = 1
    FAILED = 2

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}({self.value})"

    @classmethod
    def describe(cls, value: int) -> str:
        """``"2 (FAILED)"`` for a known code, ``"7"`` for any other number."""
        return describe_code(cls, value)


class SendCode(IntEnum):
    """``MessageSendACK.code`` (DESIGN section 3); see :class:`SignInCode`."""

    OK = 0
    INTERNAL_ERROR = 1
    NOT_FRIEND = 2
    NOT_IN_GROUP = 3
    INVALID = 4
    RATE_LIMITED = 5
    #: the receiver user does not exist (goim 1.1 answered 2, "not a friend")
    NO_SUCH_USER = 6

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}({self.value})"

    @classmethod
    def describe(cls, value: int) -> str:
        """``"2 (NOT_FRIEND)"`` for a known code, ``"7"`` for any other number."""
        return describe_code(cls, value)


_E = TypeVar("_E", bound=IntEnum)


def known_code(enum: type[_E], value: int) -> _E | int:
    """``value`` as a member of ``enum`` when it names one, else the plain number
    (a newer peer may send codes this version does not know)."""
    member = enum._value2member_map_.get(value)
    return value if member is None else member  # type: ignore[return-value]


def describe_code(enum: type[IntEnum], value: int) -> str:
    """A code for a log line: its number and, when ``enum`` knows it, its name."""
    member = known_code(enum, value)
    return f"{int(value)} ({member.name})" if isinstance(member, IntEnum) else str(int(value))


# The module-level names predate the enums; both spell the same members.
SIGN_IN_OK = SignInCode.OK
SIGN_IN_FAILED = SignInCode.FAILED
SEND_OK = SendCode.OK
SEND_INTERNAL_ERROR = SendCode.INTERNAL_ERROR
SEND_NOT_FRIEND = SendCode.NOT_FRIEND
SEND_NOT_IN_GROUP = SendCode.NOT_IN_GROUP
SEND_INVALID = SendCode.INVALID
SEND_RATE_LIMITED = SendCode.RATE_LIMITED
SEND_NO_SUCH_USER = SendCode.NO_SUCH_USER


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One copy of a message, stored for one user under that user's sequence."""

    user_id: int
    seq: int
    message_id: int
    sender_type: int
    sender_id: int
    sender_device_id: int
    receiver_type: int
    receiver_id: int
    type: int
    content: str
    send_time: int
    #: what the row is (``KIND_MESSAGE``, or an event: ``KIND_READ``, ``KIND_RECALL``,
    #: ``KIND_EDIT``); events reach only connections with ``Feature.EVENTS``
    kind: int = 0
    #: an event's position in this user's stream: the seq read up to (read) or the
    #: seq of the changed copy (recall, edit)
    ref_seq: int = 0
    #: when the message was last edited (ms since the epoch; 0: never)
    edited_at: int = 0
    #: the message was recalled (its content is removed, the row is a tombstone)
    recalled: bool = False


@dataclass(frozen=True, slots=True)
class StoredCopies:
    """The copies of one message one transaction stored: ``message`` as it was
    stored for each of ``users``, under the seq at the same index of ``seqs``.

    A send to a group of 500 is one of these, not 500 ``StoredMessage`` objects:
    delivery encodes the message once and splices in each copy's seq, and skips
    users with no connection without building anything for them (issue 12).
    """

    #: the first copy (``users[0]``, ``seqs[0]``)
    message: StoredMessage
    users: tuple[int, ...]
    seqs: tuple[int, ...]
    #: each copy names its own user as receiver (a business push to a list of users)
    receiver_is_user: bool = False

    @classmethod
    def of(cls, message: StoredMessage) -> "StoredCopies":
        """One stored copy."""
        return cls(message, (message.user_id,), (message.seq,))

    def __len__(self) -> int:
        return len(self.users)

    def copy(self, index: int) -> StoredMessage:
        """The copy at ``index``."""
        if index == 0:
            return self.message
        user_id = self.users[index]
        receiver_id = user_id if self.receiver_is_user else self.message.receiver_id
        return replace(self.message, user_id=user_id, seq=self.seqs[index], receiver_id=receiver_id)

    def messages(self) -> list[StoredMessage]:
        """Every copy, in order (one object each: not for hot paths)."""
        return [self.copy(i) for i in range(len(self.users))]


def copies_of(messages: Sequence[StoredMessage]) -> list[StoredCopies]:
    """Each stored copy on its own (event rows, tests)."""
    return [StoredCopies.of(m) for m in messages]


def flatten(batch: Sequence[StoredCopies]) -> list[StoredMessage]:
    """Every copy of a batch, in order (one object each: not for hot paths)."""
    return [m for copies in batch for m in copies.messages()]


# StoredMessage.kind (docs/protocol.md "Events")
KIND_MESSAGE = 0
KIND_READ = 1
KIND_RECALL = 2
KIND_EDIT = 3


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """A read report, recall or edit from a client connection (issue 14).

    ``kind`` is ``KIND_READ`` (with ``conversation_type``, ``conversation_id`` and
    ``seq``), ``KIND_RECALL`` (``message_id``) or ``KIND_EDIT`` (``message_id`` and
    ``content``).
    """

    kind: int
    conversation_type: int = 0
    conversation_id: int = 0
    seq: int = 0
    message_id: int = 0
    content: str = ""


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The outcome of a :class:`ChangeRequest`: an API code (0 ok), its message, and
    for a read report the read position now stored."""

    code: int = 0
    message: str = ""
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A client's MessageSend, with the identity of the connection that sent it.

    ``device_id``, ``user_id`` and ``epoch`` come from the connection's successful
    sign-in, never from the frame itself. ``(device_id, epoch, send_sequence)``
    identifies a send for dedupe; the epoch is the device's send_sequence epoch
    when the connection signed in (HTTP sign-in starts a new one and ends open
    connections of the device, so a connection never spans two epochs).
    """

    device_id: int
    user_id: int
    receiver_type: int
    receiver_id: int
    type: int
    content: str
    send_sequence: int
    send_time: int
    epoch: int = 0
    #: a business push's recipients, ascending user ids (empty for a user's send):
    #: each gets one copy, the rules of 1:1 and group sends do not apply
    recipients: tuple[int, ...] = ()
    #: a message id given in advance (a business push's chunks share one); 0: allocate
    message_id: int = 0
    #: the MessageSend value as the client wrote it, which a connect node forwards
    #: to logic as is (b"": re-encoded from the fields when forwarded)
    frame: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a MessageSendACK carries back: code, message id and the sender's own seq.

    ``retry_after_ms`` is set with code 5 (rate limited): when the send would be taken.
    """

    code: int
    message_id: int = 0
    seq: int = 0
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class SyncPage:
    """Messages of one user with seq greater than asked, ascending."""

    messages: list[StoredMessage] = field(default_factory=list)
    more: bool = False
    #: retention deleted some of the user's messages with seq > the seq asked for
    trimmed: bool = False


@dataclass(frozen=True, slots=True)
class SignInResult:
    """Outcome of authenticating a client connection."""

    ok: bool
    message: str = ""
    #: the device's send_sequence epoch (with ``ok``)
    epoch: int = 0


def connection_id(node: str, boot: str, serial: int) -> str:
    """The id of one client connection, unique across nodes and restarts.

    ``node`` is the connect node's id (no ``/`` in it), ``boot`` is random per start
    of that node, ``serial`` counts the node's connections from 1. Presence entries,
    offline notices, kicks and catch-ups carry it, so that a late event about an old
    connection never touches a newer connection of the same device.
    """
    return f"{node}/{boot}/{serial}"


def connection_node(conn: str) -> str:
    """The node part of a connection id."""
    return conn.split("/", 1)[0]


class SendOutcomeUnknown(Exception):
    """A send reached logic but no answer came back: it may or may not be stored.

    The connection must not ACK it, nor let later sends of the connection be stored
    before it: it is closed, and the client sends again, in order, after reconnecting
    (dedupe makes that safe).
    """
