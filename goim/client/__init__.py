"""The goim client library: HTTP API, device state, TCP session, blocking facade.

See docs/client.md. The pieces, each usable on its own:

* :class:`HTTPAPI` — every HTTP route, errors as :class:`APIError`;
* :class:`Session` — one device's TCP session (sign-in, heartbeats, sync, acks,
  exactly-once sends, reconnects), reporting to :class:`SessionObserver` objects;
* :class:`JSONStateStore` / :class:`ClientState` — the device state between runs;
* :class:`GoimClient` — the three together, what an app uses;
* :class:`BlockingClient` — the same for scripts that do not run Twisted;
* :class:`MessageLog` — a local exactly-once message log (what ``goim-cli`` keeps).
"""

from goim.client.api import Contact, DeviceCredentials, DeviceInfo, Group, HTTPAPI, UserInfo, UserSession
from goim.client.backoff import Backoff
from goim.client.blocking import BlockingClient
from goim.client.client import GoimClient
from goim.client.errors import APIError, GoimClientError, ProfileLocked, SendFailed, SessionStopped, StateError
from goim.client.history import MessageLog
from goim.client.protocol import ClientConnection, ConnectionListener
from goim.client.session import (
    Connector,
    SendAck,
    Session,
    SessionConfig,
    SessionObserver,
    Status,
    endpoint_connector,
    tcp_connector,
)
from goim.client.state import ClientState, JSONStateStore, MemoryStateStore, OutgoingMessage, ProfileLock, StateStore
from goim.types import RECEIVER_GROUP, RECEIVER_USER, StoredMessage

__all__ = [
    "APIError",
    "Backoff",
    "BlockingClient",
    "ClientConnection",
    "ClientState",
    "ConnectionListener",
    "Connector",
    "Contact",
    "DeviceCredentials",
    "DeviceInfo",
    "GoimClient",
    "GoimClientError",
    "Group",
    "HTTPAPI",
    "JSONStateStore",
    "MemoryStateStore",
    "MessageLog",
    "OutgoingMessage",
    "ProfileLock",
    "ProfileLocked",
    "RECEIVER_GROUP",
    "RECEIVER_USER",
    "SendAck",
    "SendFailed",
    "Session",
    "SessionConfig",
    "SessionObserver",
    "SessionStopped",
    "StateError",
    "StateStore",
    "Status",
    "StoredMessage",
    "UserInfo",
    "UserSession",
    "endpoint_connector",
    "tcp_connector",
]
