"""Exceptions of the goim client library."""

from __future__ import annotations

from typing import TYPE_CHECKING

from goim.types import SEND_INVALID, SEND_NO_SUCH_USER, SEND_NOT_FRIEND, SEND_NOT_IN_GROUP

if TYPE_CHECKING:
    from goim.client.state import OutgoingMessage

#: what the MessageSendACK codes that end a send mean (docs/protocol.md section 2)
SEND_FAILURE_TEXT: dict[int, str] = {
    SEND_NOT_FRIEND: "not a friend",
    SEND_NOT_IN_GROUP: "not in the group",
    SEND_INVALID: "invalid message (receiver type, empty or oversize content)",
    SEND_NO_SUCH_USER: "no such user",
}


class GoimClientError(Exception):
    """Base class of every error the client library raises on purpose."""


class APIError(GoimClientError):
    """The HTTP API answered with a non-zero envelope code (or no envelope at all).

    Attributes:
        code: the envelope's ``code`` (DESIGN section 4), or -1 when the answer was
            not an envelope (a proxy error page, a network failure).
        message: the envelope's ``message`` (the server's text for the user).
        status: the HTTP status, or 0 when there was no HTTP answer.
    """

    def __init__(self, code: int, message: str, status: int = 0) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.status = status


class SendFailed(GoimClientError):
    """The server refused a send for good (MessageSendACK code 2, 3, 4, 6 or unknown).

    Attributes:
        code: the MessageSendACK code.
        outgoing: the message that was refused.
    """

    def __init__(self, code: int, outgoing: OutgoingMessage) -> None:
        text = SEND_FAILURE_TEXT.get(code, f"refused with code {code}")
        super().__init__(f"send {outgoing.send_sequence} failed: {text}")
        self.code = code
        self.outgoing = outgoing
        self.reason = text


class SessionStopped(GoimClientError):
    """The session stopped (by ``stop()``, a kick or a refused sign-in) before an answer.

    A send that fails with this is still queued in the state: the next session of
    the same state resends it with the same ``send_sequence``.
    """


class StateError(GoimClientError):
    """The state file cannot be read (corrupt, or written by an unknown version)."""


class ProfileLocked(GoimClientError):
    """Another process holds the profile (two clients of one device would kick each other)."""
