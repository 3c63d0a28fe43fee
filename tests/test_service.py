"""Start and stop order of a process's top service, in-process (no twistd): nothing
listens before ``prepare`` (migration) finished; on stop the listeners close first,
then the sends taken are drained, then the clients and the database are closed."""

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from goim.server import ServerService
from goim.standalone import StandaloneConfig, StandaloneContainer, StandaloneService
from goim.storage.database import Database, DatabaseURL
from tests.support.db import SQLiteBackend, SynchronousPool


class RecordingPort:
    def __init__(self, events: list[str], port: int) -> None:
        self.events = events
        self.port = port

    def stopListening(self) -> None:
        self.events.append(f"unlisten {self.port}")


class Reactor(MemoryReactorClock):
    """Records listens and unlistens in ``events``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        self.events.append(f"listen {port}")
        return RecordingPort(self.events, port)


class Gated(ServerService):
    """A service whose ``prepare`` and ``shutdown`` the test controls."""

    def __init__(self, reactor: Reactor) -> None:
        super().__init__(reactor, "text")
        self.events = reactor.events
        self.prepared: Deferred[None] = Deferred()
        self.listeners = [("tcp:5001", Factory.forProtocol(Protocol)), ("tcp:5002", Factory.forProtocol(Protocol))]
        self.exits: list[int] = []
        self.exit_process = self.exits.append

    async def prepare(self) -> None:
        self.events.append("prepare")
        await self.prepared
        self.events.append("prepared")

    async def shutdown(self) -> None:
        self.events.append("shutdown")


class ServerServiceOrderTests(SynchronousTestCase):
    def test_no_listener_before_prepare(self) -> None:
        """The listeners open only once prepare (the migration) finished."""
        reactor = Reactor()
        service = Gated(reactor)
        service.startService()
        self.assertEqual(reactor.events, ["prepare"])
        service.prepared.callback(None)
        self.assertEqual(reactor.events, ["prepare", "prepared", "listen 5001", "listen 5002"])

    def test_failed_prepare_never_listens(self) -> None:
        """A prepare that fails opens no listener, exits non-zero and stops the reactor."""
        reactor = Reactor()
        service = Gated(reactor)
        service.startService()
        service.prepared.errback(RuntimeError("no database"))
        self.assertEqual(reactor.events, ["prepare"])
        self.assertEqual(service.exits, [ServerService.FAILED_START_STATUS])
        self.assertIn("no database", service.start_failure or "")
        self.flushLoggedErrors(RuntimeError)

    def test_stop_closes_listeners_before_shutdown(self) -> None:
        """Stopping closes every listener first, then runs shutdown."""
        reactor = Reactor()
        service = Gated(reactor)
        service.startService()
        service.prepared.callback(None)
        del reactor.events[:]
        self.successResultOf(service.stopService())
        self.assertEqual(reactor.events, ["unlisten 5001", "unlisten 5002", "shutdown"])

    def test_stop_during_prepare_waits_for_it(self) -> None:
        """A stop while prepare runs waits for it, then still closes in order."""
        reactor = Reactor()
        service = Gated(reactor)
        service.startService()
        stopped = service.stopService()
        self.assertNoResult(stopped)
        service.prepared.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(reactor.events[-3:], ["unlisten 5001", "unlisten 5002", "shutdown"])


class StandaloneOrderTests(SQLiteBackend, SynchronousTestCase):
    def test_drain_before_close(self) -> None:
        """The standalone server migrates before listening, and on stop closes its
        listeners, drains the sends taken, says goodbye to clients, then closes the database."""
        reactor = Reactor()
        url = self.database_url()
        db = Database(url, reactor, pool=SynchronousPool(DatabaseURL.parse(url)))
        events = reactor.events
        self.addCleanup(lambda: None if "close database" in events else db.close())
        run = db.run

        def recording_run(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "migrate":
                events.append("migrate")
            return run(name, *args, **kwargs)

        db.run = recording_run  # type: ignore[method-assign]
        config = StandaloneConfig(tcp="tcp:5001", http="tcp:5002", database=url)
        container = StandaloneContainer(config, reactor, database=db, run_in_thread=defer.maybeDeferred)
        service = StandaloneService(config, reactor, container=container)
        messages, table = container.get_messages(), container.get_connection_table()
        drain, close_all, close = messages.drain, table.close_all, db.close

        def record(name: str, f: Any) -> Any:
            def recorded(*args: Any, **kwargs: Any) -> Any:
                events.append(name)
                return f(*args, **kwargs)

            return recorded

        messages.drain = record("drain", drain)  # type: ignore[method-assign]
        table.close_all = record("close clients", close_all)  # type: ignore[method-assign]
        db.close = record("close database", close)  # type: ignore[method-assign]
        service.startService()
        self.assertEqual(events, ["migrate", "listen 5001", "listen 5002"])
        del events[:]
        self.successResultOf(service.stopService())
        self.assertEqual(events, ["unlisten 5001", "unlisten 5002", "drain", "close clients", "close database"])


class ManageGcTests(SynchronousTestCase):
    def test_freeze_and_pace_after_listening(self) -> None:
        """With manage_gc on, start-up's objects are frozen and full collections paced
        once every listener is up, not before; stopping hands them back to CPython."""
        import gc

        from goim.heap import NEVER

        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)
        self.addCleanup(gc.unfreeze)
        reactor = Reactor()
        service = Gated(reactor)
        service.manage_gc = True
        gc.unfreeze()
        service.startService()
        self.assertEqual(gc.get_freeze_count(), 0, "nothing is frozen while preparing")
        self.assertEqual(gc.get_threshold(), threshold)
        service.prepared.callback(None)
        self.assertEqual(reactor.events, ["prepare", "prepared", "listen 5001", "listen 5002"])
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertEqual(gc.get_threshold()[2], NEVER)
        service.stopService()
        self.assertEqual(gc.get_threshold(), threshold)

    def test_off_by_default(self) -> None:
        """A service built in-process leaves the test process's collector alone (the twistd entry points turn it on)."""
        self.assertFalse(Gated(Reactor()).manage_gc)
