"""HTTP calls of the end-to-end tests: treq against a real server, envelope in, values out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import treq

DEVICE = {"type": 1, "brand": "acme", "model": "phone", "system_version": "14", "app_version": "1.0"}
PASSWORD = "secret-pw"


@dataclass(frozen=True)
class Device:
    """A registered device bound to a user: what a client needs to sign in over TCP."""

    device_id: int
    token: str
    user_id: int
    number: str

    @property
    def auth(self) -> tuple[int, str]:
        """``(device_id, token)`` for authenticated HTTP calls."""
        return self.device_id, self.token


class HttpApi:
    """The HTTP API of one server (``base`` such as ``http://127.0.0.1:8080``)."""

    def __init__(self, base: str) -> None:
        self.base = base

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: tuple[int, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One request; returns ``(HTTP status, decoded envelope)``."""
        headers: dict[bytes | str, list[bytes | str]] = {}
        if auth is not None:
            headers = {b"device_id": [str(auth[0]).encode()], b"token": [auth[1].encode()]}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = await treq.request(
            method, self.base + path, headers=headers, data=data, persistent=False, timeout=15
        )
        content = await response.content()
        return response.code, json.loads(content)

    async def ok(self, method: str, path: str, body: Any = None, *, auth: tuple[int, str] | None = None) -> Any:
        """One request that must succeed; returns the envelope's ``data``."""
        status, env = await self.call(method, path, body, auth=auth)
        if (status, env.get("code")) != (200, 0):
            raise AssertionError(f"{method} {path} answered {status} {env}")
        return env["data"]

    async def new_device(self) -> tuple[int, str]:
        """``POST /device``: ``(device_id, token)``."""
        data = await self.ok("POST", "/device", DEVICE)
        return data["id"], data["token"]

    async def new_user(self, number: str) -> Device:
        """A new device and a new user registered on it."""
        auth = await self.new_device()
        data = await self.ok(
            "POST", "/user", {"number": number, "nickname": number.title(), "password": PASSWORD}, auth=auth
        )
        return Device(auth[0], auth[1], data["user_id"], number)

    async def another_device(self, user: Device) -> Device:
        """A new device signed in (over HTTP) to an existing user."""
        auth = await self.new_device()
        data = await self.ok("POST", "/user/signin", {"number": user.number, "password": PASSWORD}, auth=auth)
        assert data["user_id"] == user.user_id and data["send_sequence"] == 0, data
        return Device(auth[0], auth[1], user.user_id, user.number)

    async def befriend(self, a: Device, b: Device) -> None:
        """Make two users friends (mutual)."""
        await self.ok("POST", "/friend", {"friend_id": b.user_id, "label": b.number}, auth=a.auth)

    async def create_group(self, owner: Device, name: str, members: list[Device]) -> int:
        """A group of ``owner`` and ``members``; returns its id."""
        data = await self.ok(
            "POST", "/group", {"name": name, "user_ids": [m.user_id for m in members]}, auth=owner.auth
        )
        group_id: int = data["id"]
        return group_id
