"""The goim HTTP API (DESIGN section 4) from the client's side, over treq.

Every route of ``goim/resources/api.py`` is one coroutine method of :class:`HTTPAPI`
returning plain dataclasses. An answer whose envelope code is not 0 raises
:class:`goim.client.errors.APIError` carrying the server's code and message; so does
a server that cannot be reached or does not answer with an envelope.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, cast

from twisted.internet.defer import CancelledError, Deferred

import goim
from goim.client.errors import APIError

# POST /device "type" values
DEVICE_ANDROID = 1
DEVICE_IOS = 2
DEVICE_WINDOWS = 3
DEVICE_MACOS = 4
DEVICE_WEB = 5


def _default_device_type() -> int:
    if sys.platform == "darwin":
        return DEVICE_MACOS
    if sys.platform.startswith("win"):
        return DEVICE_WINDOWS
    return DEVICE_WEB  # the API has no type for Linux and other desktops


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What ``POST /device`` is told about the device."""

    type: int = field(default_factory=_default_device_type)
    brand: str = "goim"
    model: str = "goim-python-client"
    system_version: str = field(default_factory=lambda: platform.platform()[:60] or "unknown")
    app_version: str = goim.__version__


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """A registered device: its id and token (the token is shown only once)."""

    id: int
    token: str


@dataclass(frozen=True, slots=True)
class UserSession:
    """What registration and sign-in return; ``send_sequence`` 0 starts a new epoch."""

    user_id: int
    send_sequence: int
    sync_sequence: int


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user's profile."""

    id: int
    number: str
    nickname: str
    sex: int
    avatar: str


@dataclass(frozen=True, slots=True)
class Contact:
    """A friend, or a member of a group (``label`` is the friend's or the member's label)."""

    user_id: int
    label: str
    number: str
    nickname: str
    sex: int
    avatar: str


@dataclass(frozen=True, slots=True)
class Group:
    """A group with its members."""

    id: int
    name: str
    owner_id: int
    users: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class Conversation:
    """One line of the chat list (``GET /conversations``)."""

    #: 1 user, 2 group
    type: int
    id: int
    unread: int
    #: the read position, a seq of the user's own stream (0: nothing read)
    read_seq: int
    last_message_id: int
    last_seq: int
    last_sender_id: int
    last_content: str
    last_recalled: bool


class HTTPRequester(Protocol):
    """The part of ``treq.client.HTTPClient`` used here (``treq.testing.StubTreq`` has it too)."""

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...


def _contact(data: Any) -> Contact:
    return Contact(
        user_id=int(data["user_id"]),
        label=str(data.get("label") or ""),
        number=str(data.get("number") or ""),
        nickname=str(data.get("nickname") or ""),
        sex=int(data.get("sex") or 0),
        avatar=str(data.get("avatar") or ""),
    )


def _group(data: Any) -> Group:
    return Group(
        id=int(data["id"]),
        name=str(data.get("name") or ""),
        owner_id=int(data.get("owner_id") or 0),
        users=tuple(_contact(u) for u in data.get("users") or []),
    )


class HTTPAPI:
    """An HTTP API client bound to one server and (once set) one device's credentials.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080``.
        reactor: the reactor, for the connection pool and request timeouts (the global
            one when None and no ``http`` is given).
        http: a treq-like client to use instead of a new one (``StubTreq`` in tests).
        persistent: keep connections open between requests (call :meth:`close` at the end).
        timeout: seconds a request may take (only applied when ``reactor`` is given).
    """

    def __init__(
        self,
        base_url: str,
        *,
        reactor: Any = None,
        http: HTTPRequester | None = None,
        persistent: bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._reactor = reactor
        self._timeout = timeout
        self._pool: Any = None
        if http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool
            from twisted.web.iweb import IAgent

            if reactor is None:
                from twisted.internet import reactor as global_reactor

                reactor = self._reactor = global_reactor
            self._pool = HTTPConnectionPool(reactor, persistent=persistent)
            http = cast(HTTPRequester, HTTPClient(cast(IAgent, Agent(reactor, pool=self._pool))))
        self._http: HTTPRequester = http
        self.device_id = 0
        self.token = ""

    def set_credentials(self, device_id: int, token: str) -> None:
        """Authenticate further requests as this device (headers ``device_id`` and ``token``)."""
        self.device_id = device_id
        self.token = token

    async def close(self) -> None:
        """Close pooled connections."""
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    async def call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """One request; returns the envelope's ``data``.

        Args:
            method: the HTTP method.
            path: the path below the base URL, starting with ``/``.
            body: a JSON-able body, or None for none.
            auth: send the device's credentials.

        Raises:
            APIError: the envelope code is not 0, the answer is no envelope, or the
                server cannot be reached (code -1).
        """
        headers = {b"Accept": [b"application/json"]}
        if auth:
            if not self.device_id or not self.token:
                raise APIError(1, "no device registered: register or log in first", 0)
            headers[b"device_id"] = [str(self.device_id).encode()]
            headers[b"token"] = [self.token.encode()]
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            headers[b"Content-Type"] = [b"application/json"]
            kwargs["data"] = json.dumps(body).encode("utf-8")
        if self._reactor is not None:
            kwargs["reactor"] = self._reactor
            kwargs["timeout"] = self._timeout
        url = self.base_url + path
        try:
            response = await self._http.request(method, url, **kwargs)
            raw = await response.content()
        except CancelledError:
            raise
        except Exception as e:
            raise APIError(-1, f"cannot reach {self.base_url}: {e}", 0) from e
        status = int(response.code)
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("code"), int):
            raise APIError(-1, f"{method} {path}: HTTP {status} without a goim envelope", status)
        if envelope["code"] != 0:
            raise APIError(envelope["code"], str(envelope.get("message") or ""), status)
        return envelope.get("data")

    # --- devices and users

    async def register_device(self, info: DeviceInfo | None = None) -> DeviceCredentials:
        """``POST /device``; does not change the credentials in use."""
        info = info or DeviceInfo()
        data = await self.call(
            "POST",
            "/device",
            {
                "type": info.type,
                "brand": info.brand,
                "model": info.model,
                "system_version": info.system_version,
                "app_version": info.app_version,
            },
            auth=False,
        )
        return DeviceCredentials(id=int(data["id"]), token=str(data["token"]))

    async def register_user(
        self, number: str, nickname: str, password: str, *, sex: int = 0, avatar: str = ""
    ) -> UserSession:
        """``POST /user``: create a user and bind this device to it (a new send epoch)."""
        data = await self.call(
            "POST",
            "/user",
            {"number": number, "nickname": nickname, "sex": sex, "avatar": avatar, "password": password},
        )
        return _session(data)

    async def sign_in(self, number: str, password: str) -> UserSession:
        """``POST /user/signin``: bind this device to an existing user (a new send epoch)."""
        return _session(await self.call("POST", "/user/signin", {"number": number, "password": password}))

    async def user_info(self) -> UserInfo:
        """``GET /user/info``: the signed-in user."""
        data = await self.call("GET", "/user/info")
        return UserInfo(
            id=int(data["id"]),
            number=str(data.get("number") or ""),
            nickname=str(data.get("nickname") or ""),
            sex=int(data.get("sex") or 0),
            avatar=str(data.get("avatar") or ""),
        )

    # --- friends

    async def friends(self) -> list[Contact]:
        """``GET /friend/all``."""
        return [_contact(c) for c in await self.call("GET", "/friend/all") or []]

    async def add_friend(self, friend_id: int, label: str = "") -> None:
        """``POST /friend``: befriend a user (both ways)."""
        await self.call("POST", "/friend", {"friend_id": friend_id, "label": label})

    async def delete_friend(self, friend_id: int) -> None:
        """``DELETE /friend/{friend_id}`` (both ways)."""
        await self.call("DELETE", f"/friend/{int(friend_id)}")

    # --- groups

    async def groups(self) -> list[Group]:
        """``GET /group/all``: the groups the user belongs to, with members."""
        return [_group(g) for g in await self.call("GET", "/group/all") or []]

    async def group(self, group_id: int) -> Group:
        """``GET /group/one/{group_id}``."""
        return _group(await self.call("GET", f"/group/one/{int(group_id)}"))

    async def create_group(self, name: str, user_ids: Sequence[int] = ()) -> int:
        """``POST /group``: the caller owns the new group and is a member; returns its id."""
        data = await self.call("POST", "/group", {"name": name, "user_ids": list(user_ids)})
        return int(data["id"])

    async def add_members(self, group_id: int, user_ids: Sequence[int]) -> None:
        """``POST /group/user``."""
        await self.call("POST", "/group/user", {"group_id": group_id, "user_ids": list(user_ids)})

    async def remove_members(self, group_id: int, user_ids: Sequence[int]) -> None:
        """``DELETE /group/user``: the owner removes anyone, others only themselves."""
        await self.call("DELETE", "/group/user", {"group_id": group_id, "user_ids": list(user_ids)})

    async def set_group_label(self, group_id: int, label: str) -> None:
        """``PUT /group/user/label``: the caller's label in the group."""
        await self.call("PUT", "/group/user/label", {"group_id": group_id, "label": label})

    # --- read receipts, recall and edit (issue 14)

    async def read(self, conversation_type: int, conversation_id: int, seq: int) -> int:
        """``POST /message/read``: read up to ``seq``; returns the position now stored."""
        data = await self.call(
            "POST",
            "/message/read",
            {"conversation_type": conversation_type, "conversation_id": conversation_id, "seq": seq},
        )
        return int(data["read_seq"])

    async def conversations(self, *, cursor: str = "", limit: int = 100) -> tuple[list[Conversation], str | None]:
        """``GET /conversations``: one page of the chat list and the next page's cursor."""
        data = await self.call("GET", f"/conversations?cursor={int(cursor) if cursor else ''}&limit={int(limit)}")
        page = []
        for c in data["items"]:
            last = c["last_message"]
            page.append(
                Conversation(
                    type=int(c["conversation_type"]),
                    id=int(c["conversation_id"]),
                    unread=int(c["unread"]),
                    read_seq=int(c["read_seq"]),
                    last_message_id=int(last["message_id"]),
                    last_seq=int(last["seq"]),
                    last_sender_id=int(last["sender_id"]),
                    last_content=str(last["content"]),
                    last_recalled=bool(last["recalled"]),
                )
            )
        return page, data.get("next_cursor")

    async def read_count(self, message_id: int) -> int:
        """``GET /message/reads/{message_id}``: how many members read a group message."""
        return int((await self.call("GET", f"/message/reads/{int(message_id)}"))["read_count"])

    async def recall(self, message_id: int) -> None:
        """``POST /message/recall``."""
        await self.call("POST", "/message/recall", {"message_id": message_id})

    async def edit(self, message_id: int, content: str) -> None:
        """``POST /message/edit``."""
        await self.call("POST", "/message/edit", {"message_id": message_id, "content": content})

    # --- operations

    async def health(self) -> Any:
        """``GET /healthz``."""
        return await self.call("GET", "/healthz", auth=False)

    async def openapi(self) -> Any:
        """``GET /openapi.json``: the API's OpenAPI document."""
        return await self.call("GET", "/openapi.json", auth=False)

    async def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition.

        Raises:
            APIError: the server does not serve metrics (or cannot be reached).
        """
        try:
            response = await self._http.request("GET", self.base_url + "/metrics")
            raw = await response.content()
        except CancelledError:
            raise
        except Exception as e:
            raise APIError(-1, f"cannot reach {self.base_url}: {e}", 0) from e
        if int(response.code) != 200:
            raise APIError(-1, f"GET /metrics: HTTP {response.code}", int(response.code))
        return bytes(raw).decode("utf-8", "replace")


def _session(data: Any) -> UserSession:
    return UserSession(
        user_id=int(data["user_id"]),
        send_sequence=int(data.get("send_sequence") or 0),
        sync_sequence=int(data.get("sync_sequence") or 0),
    )
