"""Log format and level options (goim/logs.py)."""

from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from goim import logs


class LoggingServiceTests(SynchronousTestCase):
    def test_json_format_sets_the_applications_observer(self) -> None:
        """--log-format json gives twistd's application a JSON log observer; text leaves it alone."""
        app = Application("goim-test")
        logs.LoggingService("json").setServiceParent(app)
        self.assertIsNotNone(ILogObserver(app, None))
        plain = Application("goim-test")
        logs.LoggingService("text").setServiceParent(plain)
        self.assertIsNone(ILogObserver(plain, None))

    def seen(self) -> list[dict[str, object]]:
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def test_level_belongs_to_the_running_service(self) -> None:
        """Building a service changes nothing; its level applies while it runs and
        ends when it stops; debug_enabled follows the level in force."""
        seen = self.seen()
        log = Logger(observer=logs.goim_observer, namespace="goim.test")
        warn = logs.LoggingService("text", "warn")
        debug = logs.LoggingService("text", "debug")
        self.assertFalse(logs.debug_enabled())
        log.debug("dropped: info by default")
        warn.startService()
        self.addCleanup(logs.goim_observer.remove, warn.level_filter)
        log.info("dropped: below warn")
        log.warn("kept")
        self.assertFalse(logs.debug_enabled())
        debug.startService()
        self.addCleanup(logs.goim_observer.remove, debug.level_filter)
        self.assertTrue(logs.debug_enabled())
        log.debug("kept too")
        self.successResultOf(debug.stopService())
        self.assertFalse(logs.debug_enabled())
        self.successResultOf(warn.stopService())
        log.info("kept: info again")
        self.assertEqual([e["log_format"] for e in seen], ["kept", "kept too", "kept: info again"])
        self.assertEqual([e["log_level"] for e in seen], [LogLevel.warn, LogLevel.debug, LogLevel.info])

    def test_server_service_keeps_its_level_until_stopped(self) -> None:
        """A server's level stays in force through its drain and is released after it."""
        from twisted.internet.testing import MemoryReactorClock

        from goim.server import ServerService

        drained: list[bool] = []

        class Server(ServerService):
            async def shutdown(self) -> None:
                drained.append(logs.debug_enabled())

        server = Server(MemoryReactorClock(), "text", "debug")
        server.startService()
        self.assertTrue(logs.debug_enabled())
        self.successResultOf(server.stopService())
        self.assertEqual(drained, [True])
        self.assertFalse(logs.debug_enabled())
