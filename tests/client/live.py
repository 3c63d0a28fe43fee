"""Helpers for tests against real ``twistd -n goim`` processes: clients with short
timings, polling with a deadline (never a fixed sleep), befriended pairs of users."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from goim.client.client import GoimClient
from goim.client.session import Connector, SessionConfig
from goim.client.state import JSONStateStore
from goim.types import StoredMessage
from tests.client.fakes import Recorder
from tests.support.server import StandaloneServer, server_database

PASSWORD = "secret-pw"

#: reconnect fast: the tests restart servers and cut connections
FAST = SessionConfig(reconnect_initial=0.05, reconnect_max=0.5, close_timeout=2.0, gap_retry=0.2)

DEFAULT_TIMEOUT = 30.0


# one wait_until for every test (re-exported here for the client tests)
from goim.testing.harness import wait_until  # noqa: E402,F401


def contents(messages: list[StoredMessage]) -> list[str]:
    """The texts of messages, in order."""
    return [m.content for m in messages]


class LiveTestCase(TestCase):
    """Starts a standalone server; builds clients whose cleanup closes everything."""

    timeout = 120

    async def serve(self, *extra: str) -> StandaloneServer:
        server = StandaloneServer(self, server_database(self), *extra)
        await server.start()
        self.server = server
        return server

    def client(self, *, state_path: Path | None = None, connect: Connector | None = None) -> tuple[GoimClient, Recorder]:
        """A client of ``self.server`` with its own state file (or the given one) and a recorder."""
        path = state_path or Path(self.mktemp()) / "state.json"
        client = GoimClient(
            reactor=reactor,
            http_url=self.server.http,
            store=JSONStateStore(path),
            tcp=("127.0.0.1", self.server.tcp_port or 0),
            connect=connect,
            config=FAST,
            persistent_http=False,
        )
        recorder = Recorder()
        client.add_observer(recorder)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client, recorder

    async def user(self, number: str, nickname: str = "") -> tuple[GoimClient, Recorder]:
        """A client with a newly registered user (not started)."""
        client, recorder = self.client()
        await client.register(number, nickname or number.title(), PASSWORD)
        return client, recorder

    async def connected(self, client: GoimClient) -> None:
        """Start the session and wait for the first complete sync."""
        client.start()
        await wait_until(lambda: client.session.connected, "sign-in")
        synced = client.session.wait_synced()
        client.session.resync()
        await synced

    async def friends(self) -> tuple[tuple[GoimClient, Recorder], tuple[GoimClient, Recorder]]:
        """Alice and Bob, befriended, both connected and synced."""
        alice = await self.user("alice")
        bob = await self.user("bob")
        await alice[0].api.add_friend(bob[0].state.user_id)
        await self.connected(alice[0])
        await self.connected(bob[0])
        return alice, bob

    async def history_of(self, number: str) -> list[StoredMessage]:
        """Every message stored for a user, read by a new device syncing from seq 0."""
        client, recorder = self.client()
        await client.login(number, PASSWORD)
        client.state.synced_seq = 0
        await self.connected(client)
        await client.close()
        return recorder.messages
