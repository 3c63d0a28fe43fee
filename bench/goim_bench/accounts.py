"""Setting up users, devices, friendships and groups through the HTTP API.

Registration runs the server's real password hashing (scrypt, tens of ms each), so
many users take a while; requests run concurrently with a bound on how many are in
flight at once.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import treq
from twisted.internet.defer import Deferred, DeferredSemaphore

T = TypeVar("T")

DEVICE_INFO = {"type": 1, "brand": "bench", "model": "loadgen", "system_version": "1", "app_version": "1"}
PASSWORD = "bench-password"


class SetupError(RuntimeError):
    """An HTTP setup call failed."""


@dataclass
class BenchDevice:
    device_id: int
    token: str
    user_id: int


@dataclass
class BenchUser:
    user_id: int
    number: str
    devices: list[BenchDevice] = field(default_factory=list)

    @property
    def auth(self) -> tuple[int, str]:
        return self.devices[0].device_id, self.devices[0].token


class Registrar:
    """HTTP API calls with at most ``concurrency`` requests in flight."""

    def __init__(self, base: str, *, concurrency: int = 16, run_id: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.semaphore = DeferredSemaphore(concurrency)
        #: makes numbers unique per run, so a long-running target server can be reused
        self.run_id = run_id or secrets.token_hex(3)

    async def call(self, method: str, path: str, body: Any = None, *, auth: tuple[int, str] | None = None) -> Any:
        """One request that must succeed; returns the envelope's ``data``."""
        headers: dict[bytes | str, list[bytes | str]] = {}
        if auth is not None:
            headers = {b"device_id": [str(auth[0]).encode()], b"token": [auth[1].encode()]}
        data = json.dumps(body).encode() if body is not None else None

        async def request() -> Any:
            last: Exception | None = None
            for _ in range(5):  # a 429 or a refused connection under load: try again
                try:
                    response = await treq.request(
                        method, self.base + path, headers=headers, data=data, persistent=False, timeout=60
                    )
                    content = await response.content()
                except Exception as e:  # connection errors: retried a few times
                    last = e
                    continue
                envelope = json.loads(content)
                if response.code == 200 and envelope.get("code") == 0:
                    return envelope.get("data")
                last = SetupError(f"{method} {path} answered {response.code} {envelope}")
                if response.code != 429:
                    break
            raise last if last is not None else SetupError(f"{method} {path} failed")

        return await self.semaphore.run(lambda: Deferred.fromCoroutine(request()))

    async def new_device(self) -> tuple[int, str]:
        data = await self.call("POST", "/device", DEVICE_INFO)
        return int(data["id"]), str(data["token"])

    async def new_user(self, label: str, devices: int = 1) -> BenchUser:
        """A new user registered on a new device, plus ``devices - 1`` more devices signed in."""
        number = f"b{self.run_id}{label}"
        device_id, token = await self.new_device()
        data = await self.call(
            "POST", "/user", {"number": number, "nickname": label, "password": PASSWORD}, auth=(device_id, token)
        )
        user = BenchUser(int(data["user_id"]), number, [BenchDevice(device_id, token, int(data["user_id"]))])
        for _ in range(devices - 1):
            other_id, other_token = await self.new_device()
            await self.call("POST", "/user/signin", {"number": number, "password": PASSWORD}, auth=(other_id, other_token))
            user.devices.append(BenchDevice(other_id, other_token, user.user_id))
        return user

    async def befriend(self, a: BenchUser, b: BenchUser) -> None:
        await self.call("POST", "/friend", {"friend_id": b.user_id, "label": b.number}, auth=a.auth)

    async def create_group(self, owner: BenchUser, name: str, members: Sequence[BenchUser]) -> int:
        """A group of ``owner`` and ``members`` (added 200 at a time); returns its id."""
        others = [m.user_id for m in members if m.user_id != owner.user_id]
        data = await self.call("POST", "/group", {"name": name, "user_ids": others[:200]}, auth=owner.auth)
        group_id = int(data["id"])
        for start in range(200, len(others), 200):
            await self.call(
                "POST", "/group/user", {"group_id": group_id, "user_ids": others[start : start + 200]}, auth=owner.auth
            )
        return group_id


async def run_all(
    tasks: Sequence[Callable[[], Awaitable[T]]],
    on_done: Callable[[], None] | None = None,
    *,
    concurrency: int = 16,
) -> list[T]:
    """Run the tasks, at most ``concurrency`` at a time, in order; results in order.

    Bounding whole tasks (not only requests) makes each task finish soon after it
    starts: a user's two requests do not queue behind every other user's first one.
    """
    from goim_bench.driver import gather

    results: list[T | None] = [None] * len(tasks)
    queue = list(enumerate(tasks))
    queue.reverse()

    async def worker() -> None:
        while queue:
            index, task = queue.pop()
            results[index] = await task()
            if on_done is not None:
                on_done()

    await gather([worker() for _ in range(max(1, min(concurrency, len(tasks))))])
    return results  # type: ignore[return-value]
