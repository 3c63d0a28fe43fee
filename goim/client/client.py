"""A goim app's client in one object: HTTP API, device state and TCP session."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from goim.client.api import HTTPAPI, DeviceInfo, HTTPRequester, UserSession
from goim.client.errors import APIError
from goim.client.session import Connector, SendAck, Session, SessionConfig, SessionObserver, Status, tcp_connector
from goim.client.state import ClientState, OutgoingMessage, StateStore

#: HTTP API code for a wrong device id or token (docs/http-api.md); the client
#: depends on the API contract, not on the server's modules
WRONG_DEVICE_OR_TOKEN = 1001

class GoimClient:
    """Registers the device, signs the user in, and runs the session.

    The device state is loaded from ``store`` once, shared by the HTTP API (its
    credentials) and the session (sequences, pending sends), and saved on every change.

    Args:
        reactor: the reactor (``IReactorTCP`` and ``IReactorTime``); tests may pass
            a ``task.Clock`` together with ``connect`` and ``http``.
        http_url: the HTTP API's base URL.
        store: where the device state lives (``JSONStateStore(path)``).
        tcp: ``(host, port)`` of the connect node; ignored when ``connect`` is given.
        connect: a connector for the session (see :mod:`goim.client.session`).
        config: session timings.
        http: a treq-like client for the API (``StubTreq`` in tests).
        persistent_http: keep HTTP connections open between requests.
        device_info: what ``POST /device`` is told.
        random: jitter source for the session (tests).
    """

    log = Logger()

    def __init__(
        self,
        *,
        reactor: Any,
        http_url: str,
        store: StateStore,
        tcp: tuple[str, int] = ("127.0.0.1", 50000),
        connect: Connector | None = None,
        config: SessionConfig | None = None,
        http: HTTPRequester | None = None,
        persistent_http: bool = True,
        device_info: DeviceInfo | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.state: ClientState = store.load()
        self.device_info = device_info or DeviceInfo()
        self.api = HTTPAPI(http_url, reactor=reactor if http is None else None, http=http, persistent=persistent_http)
        self.api.set_credentials(self.state.device_id, self.state.token)
        self.session = Session(
            state=self.state,
            store=store,
            connect=connect or tcp_connector(reactor, tcp[0], tcp[1]),
            clock=reactor,
            config=config,
            random=random,
        )

    # --- account --------------------------------------------------------------------

    async def ensure_device(self) -> int:
        """Register a device unless the state has one; returns the device id."""
        if not self.state.has_device:
            await self._new_device()
        return self.state.device_id

    async def _new_device(self, *, save: bool = True) -> None:
        credentials = await self.api.register_device(self.device_info)
        dropped = self.state.set_device(credentials.id, credentials.token)
        self._log_dropped(dropped)
        self.api.set_credentials(credentials.id, credentials.token)
        if save:
            self.store.save(self.state)
        self.log.info("registered device {device_id}", device_id=credentials.id)

    async def register(self, number: str, nickname: str, password: str, *, sex: int = 0, avatar: str = "") -> UserSession:
        """Register a user and bind the device to it (registering a device first if needed).

        Raises:
            APIError: e.g. code 1002, the number is already used.
        """
        return await self._bind(lambda: self.api.register_user(number, nickname, password, sex=sex, avatar=avatar))

    async def login(self, number: str, password: str) -> UserSession:
        """Sign in an existing user on this device (registering a device first if needed).

        Raises:
            APIError: e.g. code 1003, wrong number or password.
        """
        return await self._bind(lambda: self.api.sign_in(number, password))

    async def _bind(self, call: Callable[[], Any]) -> UserSession:
        """Run the registration or sign-in ``call`` with a device; the state is saved
        only when it succeeds, so a refused sign-in leaves the stored state as it was
        (a device registered for the attempt is forgotten, never stored)."""
        if self.session.status not in (Status.STOPPED, Status.KICKED, Status.REFUSED):
            raise RuntimeError("stop the session before signing in again")
        before = ClientState.from_json(self.state.to_json())
        try:
            if not self.state.has_device:
                await self._new_device(save=False)
            try:
                session: UserSession = await call()
            except APIError as e:
                if e.code != WRONG_DEVICE_OR_TOKEN:
                    raise
                # The server does not know the device any more (e.g. a new database).
                await self._new_device(save=False)
                session = await call()
        except BaseException:
            if self.state.device_id != before.device_id:
                self.log.info(
                    "forgetting device {device_id}: it was registered for a sign-in that failed",
                    device_id=self.state.device_id,
                )
            for name in ClientState.__slots__:  # the session shares this object
                setattr(self.state, name, getattr(before, name))
            self.api.set_credentials(self.state.device_id, self.state.token)
            raise
        dropped = self.state.start_epoch(
            user_id=session.user_id, send_sequence=session.send_sequence, sync_sequence=session.sync_sequence
        )
        self._log_dropped(dropped)
        self.store.save(self.state)
        return session

    def _log_dropped(self, dropped: list[OutgoingMessage]) -> None:
        for message in dropped:
            self.log.warn(
                "dropped unsent message {send_sequence} to {receiver_id}: the device or user changed",
                send_sequence=message.send_sequence,
                receiver_id=message.receiver_id,
            )

    # --- session --------------------------------------------------------------------

    def add_observer(self, observer: SessionObserver) -> None:
        """Receive the session's events."""
        self.session.add_observer(observer)

    def start(self) -> None:
        """Start the TCP session (it reconnects by itself until stopped)."""
        self.session.start()

    def stop(self) -> Deferred[None]:
        """Stop the TCP session; fires once the connection is closed."""
        return self.session.stop()

    def send_to_user(self, user_id: int, content: str, *, message_type: int = 1) -> Deferred[SendAck]:
        """Send a one-to-one message; fires with the ACK (see :meth:`Session.send`)."""
        return self.session.send_to_user(user_id, content, message_type=message_type)

    def send_to_group(self, group_id: int, content: str, *, message_type: int = 1) -> Deferred[SendAck]:
        """Send a group message; fires with the ACK (see :meth:`Session.send`)."""
        return self.session.send_to_group(group_id, content, message_type=message_type)

    async def close(self) -> None:
        """Stop the session and close the HTTP connections."""
        await self.session.stop()
        await self.api.close()
