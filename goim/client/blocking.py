"""A blocking facade over :class:`goim.client.client.GoimClient` for plain scripts.

The first :class:`BlockingClient` starts the Twisted reactor in a daemon thread; every
method hands its work to that thread (``callFromThread``) and waits for the answer,
with a timeout. Received messages and other session events are queued for the
calling thread. Do not use it from the reactor thread itself (Twisted code should use
``GoimClient`` directly).
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Sequence, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.python.failure import Failure

from goim.client.api import Contact, Group, UserInfo, UserSession
from goim.client.client import GoimClient
from goim.client.session import SendAck, SessionConfig, SessionObserver
from goim.client.state import JSONStateStore, OutgoingMessage
from goim.types import StoredMessage

T = TypeVar("T")

_lock = threading.Lock()
_threads: dict[int, threading.Thread] = {}


def _reactor_thread(reactor: Any) -> threading.Thread:
    """Start ``reactor`` in a daemon thread unless this module already did."""
    with _lock:
        thread = _threads.get(id(reactor))
        if thread is None:
            if reactor.running:
                raise RuntimeError("the reactor already runs elsewhere: use GoimClient from Twisted code")
            thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False}, name="goim-reactor", daemon=True
            )
            thread.start()
            _threads[id(reactor)] = thread
        return thread


def _cancel_all(deferreds: list[Deferred[Any]]) -> None:
    for d in deferreds:
        d.cancel()


class _QueueObserver(SessionObserver):
    def __init__(self, messages: queue.Queue[StoredMessage], events: queue.Queue[tuple[str, Any]]) -> None:
        self.messages = messages
        self.events = events

    def message_received(self, message: StoredMessage) -> None:
        self.messages.put(message)

    def send_acked(self, message: OutgoingMessage, ack: SendAck) -> None:
        self.events.put(("send_acked", (message, ack)))

    def send_failed(self, message: OutgoingMessage, code: int) -> None:
        self.events.put(("send_failed", (message, code)))

    def connected(self) -> None:
        self.events.put(("connected", None))

    def disconnected(self, reason: str) -> None:
        self.events.put(("disconnected", reason))

    def kicked(self, reason: str) -> None:
        self.events.put(("kicked", reason))

    def sign_in_refused(self, message: str) -> None:
        self.events.put(("sign_in_refused", message))


class BlockingClient:
    """A goim client whose methods block until done.

    Args:
        http_url: the HTTP API's base URL.
        state_path: the device's state file.
        tcp: ``(host, port)`` of the connect node.
        config: session timings.
        timeout: default seconds a call may take before ``TimeoutError``.
        reactor: the reactor to run in the background (the global one by default).

    Example::

        with BlockingClient(http_url="http://127.0.0.1:8080", state_path="alice.json") as c:
            c.login("alice", "secret-pw")
            c.connect()
            print(c.send_to_user(2, "hello").message_id)
            print(c.receive(timeout=10))
    """

    def __init__(
        self,
        *,
        http_url: str,
        state_path: str | os.PathLike[str],
        tcp: tuple[str, int] = ("127.0.0.1", 50000),
        config: SessionConfig | None = None,
        timeout: float = 30.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        self._thread = _reactor_thread(reactor)
        self.timeout = timeout
        self.messages: queue.Queue[StoredMessage] = queue.Queue()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        observer = _QueueObserver(self.messages, self.events)

        def build() -> GoimClient:
            client = GoimClient(
                reactor=reactor, http_url=http_url, store=JSONStateStore(state_path), tcp=tcp, config=config
            )
            client.add_observer(observer)
            return client

        self.client: GoimClient = self._call(build)

    def _call(self, f: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        if threading.current_thread() is self._thread:
            raise RuntimeError("BlockingClient called from the reactor thread")
        answer: queue.Queue[Any] = queue.Queue(maxsize=1)
        running: list[Deferred[Any]] = []

        def run() -> None:
            d = maybeDeferred(f, *args)

            def coroutine(result: Any) -> Any:
                return ensureDeferred(result) if hasattr(result, "__await__") and not isinstance(result, Deferred) else result

            d.addCallback(coroutine)
            running.append(d)
            d.addBoth(answer.put)

        self._reactor.callFromThread(run)
        try:
            result = answer.get(timeout=self.timeout if timeout is None else timeout)
        except queue.Empty:
            self._reactor.callFromThread(_cancel_all, running)
            raise TimeoutError(f"no answer within {self.timeout if timeout is None else timeout} s") from None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    # --- account and contacts ---------------------------------------------------------

    def register(self, number: str, nickname: str, password: str) -> UserSession:
        """Register a user on this device (see :meth:`GoimClient.register`)."""
        result: UserSession = self._call(self.client.register, number, nickname, password)
        return result

    def login(self, number: str, password: str) -> UserSession:
        """Sign in a user on this device (see :meth:`GoimClient.login`)."""
        result: UserSession = self._call(self.client.login, number, password)
        return result

    def user_info(self) -> UserInfo:
        """The signed-in user."""
        result: UserInfo = self._call(self.client.api.user_info)
        return result

    def friends(self) -> list[Contact]:
        """The user's friends."""
        result: list[Contact] = self._call(self.client.api.friends)
        return result

    def add_friend(self, user_id: int, label: str = "") -> None:
        """Befriend a user."""
        self._call(self.client.api.add_friend, user_id, label)

    def delete_friend(self, user_id: int) -> None:
        """Unfriend a user."""
        self._call(self.client.api.delete_friend, user_id)

    def groups(self) -> list[Group]:
        """The user's groups."""
        result: list[Group] = self._call(self.client.api.groups)
        return result

    def group(self, group_id: int) -> Group:
        """One group with its members."""
        result: Group = self._call(self.client.api.group, group_id)
        return result

    def create_group(self, name: str, user_ids: Sequence[int] = ()) -> int:
        """Create a group; returns its id."""
        result: int = self._call(self.client.api.create_group, name, list(user_ids))
        return result

    def add_members(self, group_id: int, user_ids: Sequence[int]) -> None:
        """Add members to a group."""
        self._call(self.client.api.add_members, group_id, list(user_ids))

    def remove_members(self, group_id: int, user_ids: Sequence[int]) -> None:
        """Remove members from a group."""
        self._call(self.client.api.remove_members, group_id, list(user_ids))

    # --- session ------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Start the session and wait until it is signed in."""

        def start() -> Deferred[None]:
            self.client.start()
            return self.client.session.wait_connected()

        self._call(start, timeout=timeout)

    def wait_synced(self, timeout: float | None = None) -> int:
        """Wait for the next complete sync; returns the seq the device holds."""
        result: int = self._call(self.client.session.wait_synced, timeout=timeout)
        return result

    def send_to_user(self, user_id: int, content: str, timeout: float | None = None) -> SendAck:
        """Send to a user and wait for the server's ACK.

        Raises:
            SendFailed: the server refused the message.
            TimeoutError: no ACK in time (the message stays queued and is resent).
        """
        result: SendAck = self._call(self.client.send_to_user, user_id, content, timeout=timeout)
        return result

    def send_to_group(self, group_id: int, content: str, timeout: float | None = None) -> SendAck:
        """Send to a group and wait for the server's ACK (see :meth:`send_to_user`)."""
        result: SendAck = self._call(self.client.send_to_group, group_id, content, timeout=timeout)
        return result

    def receive(self, timeout: float | None = None) -> StoredMessage | None:
        """The next received message in seq order, or None after ``timeout`` seconds."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop the session and close HTTP connections (the reactor thread keeps running)."""
        self._call(self.client.close)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
