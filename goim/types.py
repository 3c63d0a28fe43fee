"""Plain value types shared by the logic layer, the ports and the protocols.

They carry no behaviour and know nothing about protobuf, SQL or HTTP, so every layer
can use them without importing another layer.
"""

from dataclasses import dataclass, field

# receiver_type / sender_type values (DESIGN section 3)
RECEIVER_USER = 1
RECEIVER_GROUP = 2
SENDER_USER = 1
SENDER_SYSTEM = 2

# MessageSendACK codes (DESIGN section 3)
SEND_OK = 0
SEND_INTERNAL_ERROR = 1
SEND_NOT_FRIEND = 2
SEND_NOT_IN_GROUP = 3
SEND_INVALID = 4
SEND_RATE_LIMITED = 5
#: the receiver user does not exist (goim 1.1 answered 2, "not a friend")
SEND_NO_SUCH_USER = 6


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


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a MessageSendACK carries back: code, message id and the sender's own seq."""

    code: int
    message_id: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class SyncPage:
    """Messages of one user with seq greater than asked, ascending."""

    messages: list[StoredMessage] = field(default_factory=list)
    more: bool = False


@dataclass(frozen=True, slots=True)
class SignInResult:
    """Outcome of authenticating a client connection."""

    ok: bool
    message: str = ""
    #: the device's send_sequence epoch (with ``ok``)
    epoch: int = 0
