"""The plugins' configs are derived from their option declarations."""

from dataclasses import fields
from typing import Any

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from goim import tap
from goim.config import ServerOptions, Setting, text
from goim.connect import tap as connect_tap
from goim.distributed import logic_tap

#: config fields no option fills (they keep their defaults)
UNSET = {
    tap.Options: {"node_id"},
    logic_tap.Options: {"sqlite_synchronous"},
    connect_tap.Options: {"write_grace"},
}

CONFIG_CLASSES: dict[Any, Any] = {
    tap.Options: tap.StandaloneConfig,
    logic_tap.Options: logic_tap.LogicNodeConfig,
    connect_tap.Options: connect_tap.ConnectNodeConfig,
}


class DerivedConfigTests(SynchronousTestCase):
    def test_every_field_has_an_option(self) -> None:
        """Each config field is filled by one declared option (or the derived limits),
        apart from the few listed defaults; no option names a missing field."""
        for options, config_class in CONFIG_CLASSES.items():
            filled = {s.field_name for s in options.settings if s.field_name}
            names = {f.name for f in fields(config_class)}
            self.assertEqual(filled - names, set(), options)
            self.assertEqual(names - filled - {"limits"}, UNSET[options], options)

    def test_shared_declarations_are_one(self) -> None:
        """The options the plugins share are the same declarations, not copies."""
        by_name = [{s.name: s for s in options.settings} for options in CONFIG_CLASSES]
        for name in ("log-format", "log-level", "listen-backlog", "http-header-timeout"):
            self.assertEqual(len({id(settings[name]) for settings in by_name}), 1, name)
        self.assertIs(by_name[0]["idle-timeout"], by_name[2]["idle-timeout"])
        self.assertIs(by_name[0]["max-content"], by_name[1]["max-content"])

    def test_build_config_refuses_unknown_fields(self) -> None:
        """A setting that names a field the config lacks is a programming error, said so."""

        class Bad(ServerOptions):
            settings = [Setting("colour", "red", text, "a colour")]

        options = Bad()
        options.parseOptions([])
        with self.assertRaises(TypeError) as caught:
            options.build_config(tap.StandaloneConfig)
        self.assertIn("colour", str(caught.exception))

    def test_standalone_config_from_flags(self) -> None:
        """Flags land in their fields, limits included."""
        options = tap.Options()
        options.parseOptions(["--idle-timeout", "700", "--log-level", "debug", "--max-group-size", "7"])
        config = options.config()
        self.assertEqual((config.idle_timeout, config.log_level, config.limits.social.group_size), (700.0, "debug", 7))
        self.assertRaises(usage.UsageError, tap.Options().parseOptions, ["--log-level", "loud"])
