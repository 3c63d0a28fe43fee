"""The deployment files under examples/: TOML configs parse with the real option
parsers, and the systemd units are sound (``systemd-analyze verify`` when present)."""

from __future__ import annotations

import configparser
import sys
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from goim import tap
from goim.connect import tap as connect_tap
from goim.distributed import logic_tap

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ROLES: dict[str, tuple[type[Any], str]] = {
    "standalone": (tap.Options, "goim"),
    "logic": (logic_tap.Options, "goim-logic"),
    "connect": (connect_tap.Options, "goim-connect"),
}


def unit(role: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(EXAMPLES / "systemd" / f"goim-{role}.service")
    return parser


class ExampleConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        # the configs name /etc/goim/secret: give the parser a real secret file instead
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        self.secret = directory / "secret"
        self.secret.write_text("s" * 32)

    def parse(self, role: str) -> Any:
        options_class, _ = ROLES[role]
        options = options_class()
        args = ["--config", str(EXAMPLES / "config" / f"{role}.toml")]
        if role != "standalone":
            args += ["--secret-file", str(self.secret)]
        options.parseOptions(args)
        return options.config()

    def test_standalone_config(self) -> None:
        """examples/config/standalone.toml parses with twistd goim's options."""
        config = self.parse("standalone")
        self.assertEqual((config.tcp, config.database, config.log_format), ("tcp:50000", "sqlite:/var/lib/goim/goim.db", "json"))
        self.assertGreater(config.idle_timeout, 270)

    def test_logic_config(self) -> None:
        """examples/config/logic.toml parses with twistd goim-logic's options."""
        config = self.parse("logic")
        self.assertEqual((config.node_id, config.pb), ("logic-1", "tcp:50100:interface=10.0.0.11"))
        self.assertTrue(config.database.startswith("mysql://"))

    def test_connect_config(self) -> None:
        """examples/config/connect.toml parses with twistd goim-connect's options."""
        config = self.parse("connect")
        self.assertEqual((config.node_id, config.logic), ("connect-1", ("10.0.0.11:50100", "10.0.0.12:50100")))
        self.assertGreater(config.idle_timeout, 270)


class SystemdUnitTests(SynchronousTestCase):
    def test_units_run_the_right_plugin_with_limits(self) -> None:
        """Each unit runs its plugin in the foreground without a pid file, as a dedicated
        user, restarts on failure and raises the open-files limit."""
        for role, (_, plugin) in ROLES.items():
            service = unit(role)["Service"]
            command = service["ExecStart"].split()
            self.assertEqual(command[:3], ["/opt/goim/bin/twistd", "-n", "--pidfile="], role)
            self.assertEqual(command[3:], [plugin, "--config", f"/etc/goim/{role}.toml"], role)
            self.assertEqual((service["User"], service["Restart"]), ("goim", "on-failure"), role)
            self.assertGreaterEqual(int(service["LimitNOFILE"]), 65536, role)

    def test_systemd_analyze_verify(self) -> None:
        """systemd-analyze verify finds nothing to say about the units (skipped without it)."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise self.skipTest("systemd-analyze is not installed")
        twistd = shutil.which("twistd") or str(Path(sys.executable).parent / "twistd")
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        paths = []
        for role in ROLES:
            text = (EXAMPLES / "systemd" / f"goim-{role}.service").read_text()
            # verify checks that the command exists: point it at this environment's twistd
            path = directory / f"goim-{role}.service"
            path.write_text(text.replace("/opt/goim/bin/twistd", twistd))
            paths.append(str(path))
        result = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, timeout=120)
        self.assertEqual((result.returncode, result.stderr.strip(), result.stdout.strip()), (0, "", ""))


class StartupCheckTests(SynchronousTestCase):
    def test_short_idle_timeout_warns_at_start(self) -> None:
        """An idle timeout at or below goim 1.1's 240 s heartbeat + 30 s margin adds a
        start-up warning that names the fix; 271 s and the default add none."""
        from twisted.logger import LogLevel, globalLogPublisher

        from goim.config import idle_timeout_warning
        from goim.logs import StartupWarning

        self.assertIsNone(idle_timeout_warning(600))
        self.assertIsNone(idle_timeout_warning(271))
        warning = idle_timeout_warning(200)
        assert warning is not None
        self.assertIn("above 270", warning)
        for role in ("standalone", "connect"):
            options_class, _ = ROLES[role]
            options = options_class()
            args = ["--idle-timeout", "200", "--database", "sqlite::memory:"] if role == "standalone" else [
                "--idle-timeout", "200", "--node-id", "c1", "--secret-file", __file__
            ]
            options.parseOptions(args)
            module = tap if role == "standalone" else connect_tap
            service = module.makeService(options)
            warnings = [s for s in service if isinstance(s, StartupWarning)]
            self.assertEqual(len(warnings), 1, role)
            events: list[dict[str, Any]] = []
            globalLogPublisher.addObserver(events.append)
            self.addCleanup(globalLogPublisher.removeObserver, events.append)
            warnings[0].startService()
            self.assertTrue(any(e.get("log_level") == LogLevel.warn and "200 s" in e.get("text", "") for e in events))
            options = options_class()
            options.parseOptions(args[2:])
            self.assertEqual([s for s in module.makeService(options) if isinstance(s, StartupWarning)], [], role)

    def test_plugins_print_their_version(self) -> None:
        """--version on each twistd plugin prints goim's version and exits 0."""
        import io
        from contextlib import redirect_stdout

        from goim import __version__

        for role, (options_class, _) in ROLES.items():
            out = io.StringIO()
            with redirect_stdout(out), self.assertRaises(SystemExit) as exit:
                options_class().parseOptions(["--version"])
            self.assertEqual(exit.exception.code, 0, role)
            self.assertTrue(out.getvalue().startswith(f"goim {__version__} (Twisted "), role)
