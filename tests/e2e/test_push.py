"""End to end over ``twistd -n goim``: business push through the HTTP API with the
push key, the offline webhook to a real local receiver, on SQLite and MariaDB."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from goim.types import RECEIVER_USER, SENDER_SYSTEM
from tests.e2e.httpapi import HttpApi
from tests.e2e.wire import connect, items, wait_until
from tests.logic.test_webhook import SECRET, Receiver
from tests.support.db import BackendMixin, MySQLBackend, SQLiteBackend
from tests.support.server import StandaloneServer, server_database

if TYPE_CHECKING:

    class _Base(BackendMixin, TestCase):
        pass

else:
    _Base = object

KEY = "e2e-push-key-0123456789"


class PushEndToEnd(_Base):
    async def push(self, server: StandaloneServer, body: dict[str, Any], *, key: str = KEY) -> tuple[int, dict[str, Any]]:
        response = await treq.post(
            server.http + "/push/messages",
            json.dumps(body).encode(),
            headers={b"Authorization": [f"Bearer {key}".encode()]},
            persistent=False,
            timeout=15,
        )
        return response.code, json.loads(await response.content())

    async def test_business_push_and_offline_webhook(self) -> None:
        """A push to two users reaches the online one live and the offline one by
        sync, each once, as sender_type 2; a retry with the same key stores nothing
        more; the webhook gets exactly the offline user's event, signed."""
        receiver = Receiver()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(receiver))
        self.addCleanup(port.stopListening)
        key_file = Path(self.mktemp())
        key_file.write_text(KEY)
        secret_file = Path(self.mktemp())
        secret_file.write_bytes(SECRET)
        server = StandaloneServer(
            self,
            server_database(self),
            "--push-key-file", str(key_file.resolve()),
            "--webhook-url", f"http://127.0.0.1:{port.getHost().port}/hook",
            "--webhook-secret-file", str(secret_file.resolve()),
        )  # fmt: skip
        await server.start()
        api = HttpApi(server.http)
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        client = await connect(self, server.tcp_port)
        await client.sign_in(alice.device_id, alice.user_id, alice.token)

        status, env = await self.push(server, {"idempotency_key": "x", "target": "all", "content": "x"}, key="wrong")
        self.assertEqual((status, env["code"]), (401, 1102))
        body = {"idempotency_key": "promo-1", "target": "users", "user_ids": [alice.user_id, bob.user_id], "type": 5, "content": "promo"}
        status, env = await self.push(server, body)
        self.assertEqual((status, env["code"], env["data"]["created"]), (200, 0, True))
        job_id = env["data"]["id"]
        await wait_until(lambda: len(client.pushed()) == 1, "the push to alice")
        [item] = client.pushed()
        self.assertEqual(
            (item.sender_type, item.sender_id, item.receiver_type, item.receiver_id, item.type, item.content),
            (SENDER_SYSTEM, 0, RECEIVER_USER, alice.user_id, 5, "promo"),
        )
        status, again = await self.push(server, body)
        self.assertEqual((again["data"]["id"], again["data"]["created"]), (job_id, False))
        await wait_until(lambda: "%d-%d" % (item.message_id, bob.user_id) in receiver.events, "bob's webhook event")
        self.assertEqual(sorted(receiver.events), [f"{item.message_id}-{bob.user_id}"])
        self.assertEqual(receiver.bad_signatures, 0)

        status, job = await api.call("GET", f"/push/jobs/{job_id}")
        self.assertEqual(status, 401, "no key: refused")
        async def done() -> dict[str, Any] | None:
            response = await treq.get(
                server.http + f"/push/jobs/{job_id}", headers={b"Authorization": [f"Bearer {KEY}".encode()]}, persistent=False
            )
            job: dict[str, Any] = json.loads(await response.content())["data"]
            return job if job["state"] == "done" else None

        # the job moves its cursor after its last chunk is stored, so the
        # webhook's POST may come before the job reads done
        job = await wait_until(done, "the job done", interval=0.05)
        self.assertEqual((job["state"], job["recipients"]), ("done", 2))

        bob_client = await connect(self, server.tcp_port)
        await bob_client.sign_in(bob.device_id, bob.user_id, bob.token)
        synced = items(await bob_client.sync(0))
        self.assertEqual([(i.message_id, i.sender_type, i.content) for i in synced], [(item.message_id, SENDER_SYSTEM, "promo")])
        self.assertEqual(len(client.pushed()), 1, "the retry pushed nothing")


class PushSQLiteEndToEnd(PushEndToEnd, SQLiteBackend, TestCase):
    pass


class PushMySQLEndToEnd(PushEndToEnd, MySQLBackend, TestCase):
    pass


class PushCrashEndToEnd(SQLiteBackend, TestCase):
    timeout = 180

    async def test_killed_mid_job_resumes_exactly_once(self) -> None:
        """A push to every one of 30,000 users, with the server killed (SIGKILL) in
        the middle of it, is finished by the restarted server: every user holds
        exactly one copy."""
        key_file = Path(self.mktemp())
        key_file.write_text(KEY)
        database = server_database(self)
        server = StandaloneServer(self, database, "--push-key-file", str(key_file.resolve()))
        await server.start()  # migrates
        await server.stop()
        path = database[len("sqlite:") :]
        users = 30_000
        connection = sqlite3.connect(path)
        with connection:
            connection.executemany(
                "INSERT INTO users (number, nickname, password_hash, created_at) VALUES (?, ?, 'x', 0)",
                [(f"n{i}", f"n{i}") for i in range(users)],
            )
        connection.close()
        await server.start()
        status, env = await self.push(server, {"idempotency_key": "everyone", "target": "all", "content": "hello all"})
        self.assertEqual(status, 200, env)
        job_id = env["data"]["id"]

        async def job() -> dict[str, Any]:
            response = await treq.get(
                server.http + f"/push/jobs/{job_id}", headers={b"Authorization": [f"Bearer {KEY}".encode()]}, persistent=False
            )
            return dict(json.loads(await response.content())["data"])

        while (progress := await job())["recipients"] < 2000:
            pass
        server.kill()
        self.assertEqual(progress["state"], "running", "the job ended before the kill: make it bigger")
        await server.start()
        deadline = reactor.seconds() + 120
        while (progress := await job())["state"] != "done":
            self.assertLess(reactor.seconds(), deadline, progress)
        self.assertIn("resumes after user", server.log_text())
        connection = sqlite3.connect(path)
        try:
            copies = connection.execute(
                "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM messages WHERE message_id = ?", (progress["message_id"],)
            ).fetchone()
        finally:
            connection.close()
        self.assertEqual(copies, (users, users))

    push = PushEndToEnd.push
