"""Log format and level options (goim/logs.py)."""

from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from goim import logs


class LoggingServiceTests(SynchronousTestCase):
    def tearDown(self) -> None:
        logs.set_level("info")

    def test_json_format_sets_the_applications_observer(self) -> None:
        """--log-format json gives twistd's application a JSON log observer; text leaves it alone."""
        app = Application("goim-test")
        logs.LoggingService("json").setServiceParent(app)
        self.assertIsNotNone(ILogObserver(app, None))
        plain = Application("goim-test")
        logs.LoggingService("text").setServiceParent(plain)
        self.assertIsNone(ILogObserver(plain, None))

    def test_level_filters_goim_events(self) -> None:
        """Events below the level never reach the global publisher; debug_enabled follows the level."""
        seen: list[dict[str, object]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        log = Logger(observer=logs.goim_observer, namespace="goim.test")
        logs.LoggingService("text", "warn")
        self.assertFalse(logs.debug_enabled())
        log.info("dropped")
        log.warn("kept")
        logs.set_level("debug")
        self.assertTrue(logs.debug_enabled())
        log.debug("kept too")
        self.assertEqual([e["log_format"] for e in seen], ["kept", "kept too"])
        self.assertEqual([e["log_level"] for e in seen], [LogLevel.warn, LogLevel.debug])
