"""The business push routes over a real HTTP listener on SQLite: key auth, disabled
push, job creation, idempotent retries and progress."""

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from goim.clock import Clock
from goim.logic.push import PushService
from goim.resources.api import GoimAPI
from goim.resources.push import PushAPI
from goim.storage.push import PushStore
from tests.support.db import SQLiteBackend
from tests.support.services import ServiceTests

KEY = b"push-key-0123456789abcdef"


class PushRouteTests(ServiceTests, SQLiteBackend, TestCase):
    async def serve(self, key: bytes | None) -> None:
        self.s = await self.services()
        self.push = PushService(PushStore(self.s.db), self.s.messages, self.s.ids, Clock(reactor), node_id="test")
        self.addCleanup(self.push.stop)
        api = GoimAPI(self.s.accounts, self.s.social, push=PushAPI(self.push, key))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(api.app.resource()))
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def call(self, method: str, path: str, body: Any = None, *, key: bytes | None = KEY) -> tuple[int, dict[str, Any]]:
        headers = {b"Authorization": [b"Bearer " + key]} if key is not None else {}
        data = json.dumps(body).encode() if body is not None else None
        response = await self.http.request(method, self.base + path, headers=headers, data=data)
        return response.code, json.loads(await response.content())

    async def test_disabled_without_key(self) -> None:
        """Without a configured key the push routes answer 1101 (HTTP 403)."""
        await self.serve(None)
        status, env = await self.call("POST", "/push/messages", {"idempotency_key": "k", "target": "all", "content": "x"})
        self.assertEqual((status, env["code"]), (403, 1101))

    async def test_wrong_key_and_user_token_refused(self) -> None:
        """A wrong key, a missing one, or a user's token are refused with 1102 (HTTP 401)."""
        await self.serve(KEY)
        body = {"idempotency_key": "k", "target": "all", "content": "x"}
        for key in (b"wrong-key", None):
            status, env = await self.call("POST", "/push/messages", body, key=key)
            self.assertEqual((status, env["code"]), (401, 1102))
        _, device, token = await self.s.new_user("a")
        response = await self.http.post(
            self.base + "/push/messages", json.dumps(body).encode(), headers={b"device_id": [str(device).encode()], b"token": [token.encode()]}
        )
        self.assertEqual(response.code, 401)
        await response.content()

    async def test_create_retry_and_progress(self) -> None:
        """POST creates a job; a retry with the same key answers the same job with
        created false; GET /push/jobs/{id} shows it done; bad input is code 2."""
        await self.serve(KEY)
        users = [(await self.s.new_user(f"u{i}"))[0] for i in range(3)]
        body = {"idempotency_key": "sale-1", "target": "users", "user_ids": users, "type": 2, "content": "sale"}
        status, env = await self.call("POST", "/push/messages", body)
        self.assertEqual((status, env["code"], env["data"]["created"], env["data"]["target"]), (200, 0, True, "users"))
        job_id = env["data"]["id"]
        status, again = await self.call("POST", "/push/messages", body)
        self.assertEqual((status, again["data"]["id"], again["data"]["created"]), (200, job_id, False))

        async def state() -> dict[str, Any]:
            return (await self.call("GET", f"/push/jobs/{job_id}"))[1]["data"]

        await self.push.wait(job_id)
        data = await state()
        self.assertEqual((data["state"], data["recipients"]), ("done", 3))
        for user in users:
            self.assertEqual(len((await self.s.messages.sync_page(user, 0, 10)).messages), 1)
        status, env = await self.call("POST", "/push/messages", {**body, "content": "other"})
        self.assertEqual((status, env["code"]), (409, 1104))
        status, env = await self.call("POST", "/push/messages", {"idempotency_key": "x", "target": "nobody", "content": "x"})
        self.assertEqual((status, env["code"]), (400, 2))
        status, env = await self.call("GET", "/push/jobs/12345")
        self.assertEqual((status, env["code"]), (404, 1103))
