"""Options of twistd goim-logic and goim-connect: flags, a TOML --config file, and errors
that are UsageErrors naming the option."""

import os
from pathlib import Path
from typing import Any

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from goim.connect import tap as connect_tap
from goim.distributed import logic_tap
from goim.connect.node import ConnectNodeConfig
from goim.distributed.nodes import LogicNodeConfig

SECRET = "a-shared-secret-of-32-characters"
MYSQL = "mysql://goim:pw@127.0.0.1:3306/goim"


class Files:
    """Writes small files under the test's temporary directory."""

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.root = Path(testcase.mktemp())
        self.root.mkdir(parents=True)

    def write(self, name: str, text: str) -> str:
        path = self.root / name
        path.write_text(text)
        return str(path)


class OptionsTestMixin:
    options_class: Any

    def parse(self: Any, *args: str) -> Any:
        options = self.options_class()
        options.parseOptions(list(args))
        return options

    def refused(self: Any, *args: str) -> str:
        """The UsageError message parsing ``args`` gives."""
        with self.assertRaises(usage.UsageError, msg=repr(args)) as caught:
            self.parse(*args)
        return str(caught.exception)

    def secret_file(self: Any, text: str = SECRET + "\n") -> str:
        return Files(self).write("secret", text)


class LogicOptionsTests(OptionsTestMixin, SynchronousTestCase):
    options_class = logic_tap.Options

    def required(self) -> list[str]:
        return ["--database", MYSQL, "--secret-file", self.secret_file()]

    def test_defaults(self) -> None:
        """With only the required options, every other option has its documented default."""
        config = self.parse(*self.required()).config()
        self.assertIsInstance(config, LogicNodeConfig)
        self.assertEqual(
            (config.database, config.secret, config.http, config.pb, config.redis, config.redis_prefix, config.log_format),
            (MYSQL, SECRET.encode(), "tcp:8080", "tcp:50100", "redis://127.0.0.1:6379/0", "goim:", "text"),
        )
        self.assertTrue(config.node_id.startswith("logic-"))

    def test_flags(self) -> None:
        """Every flag is parsed into the config."""
        config = self.parse(
            *self.required(),
            "--http", "tcp:9080:interface=127.0.0.1",
            "--pb", "tcp:9100",
            "--redis", "redis://:pw@10.0.0.5:6380/2",
            "--redis-prefix", "staging:",
            "--node-id", "logic-2",
            "--max-content", "1000",
            "--log-format", "json",
        ).config()
        self.assertEqual(
            (config.http, config.pb, config.redis, config.redis_prefix, config.node_id, config.max_content, config.log_format),
            ("tcp:9080:interface=127.0.0.1", "tcp:9100", "redis://:pw@10.0.0.5:6380/2", "staging:", "logic-2", 1000, "json"),
        )

    def test_secret_is_stripped(self) -> None:
        """Surrounding white space (a trailing newline) is not part of the secret."""
        config = self.parse("--database", MYSQL, "--secret-file", self.secret_file(f"  {SECRET}\n\n")).config()
        self.assertEqual(config.secret, SECRET.encode())

    def test_config_file_and_flags_win(self) -> None:
        """Keys of the --config file apply (underscores or dashes), and a flag given wins over the file."""
        files = Files(self)
        secret = files.write("secret", SECRET)
        path = files.write(
            "logic.toml",
            f'database = "{MYSQL}"\nsecret_file = "{secret}"\nhttp = "tcp:7000"\npb = "tcp:7100"\n'
            f'"node-id" = "from-file"\nmax_content = 2000\n',
        )
        config = self.parse("--config", path, "--pb", "tcp:7200").config()
        self.assertEqual(
            (config.database, config.secret, config.http, config.pb, config.node_id, config.max_content),
            (MYSQL, SECRET.encode(), "tcp:7000", "tcp:7200", "from-file", 2000),
        )

    def test_sqlite_refused_with_the_reason(self) -> None:
        """A SQLite database is refused, saying that several processes share the storage."""
        message = self.refused("--database", "sqlite:goim.db", "--secret-file", self.secret_file())
        self.assertIn("--database", message)
        self.assertIn("SQLite", message)
        self.assertIn("several processes", message)
        self.assertIn("twistd goim", message)

    def test_sqlite_in_the_config_file_refused(self) -> None:
        """SQLite named in the config file is refused just the same."""
        path = Files(self).write("logic.toml", 'database = "sqlite:/var/lib/goim.db"\n')
        self.assertIn("SQLite", self.refused("--config", path, "--secret-file", self.secret_file()))

    def test_database_required_and_checked(self) -> None:
        """--database is required and must be a database URL."""
        self.assertIn("--database", self.refused("--secret-file", self.secret_file()))
        for url in ("postgres://h/db", "mysql://h", "mysql://h:port/db"):
            self.assertIn("--database", self.refused("--database", url, "--secret-file", self.secret_file()))

    def test_secret_file_required(self) -> None:
        """--secret-file is required, must be readable, and must hold 16 characters or more."""
        self.assertIn("--secret-file", self.refused("--database", MYSQL))
        missing = os.path.join(self.mktemp(), "nope")
        message = self.refused("--database", MYSQL, "--secret-file", missing)
        self.assertIn("--secret-file", message)
        self.assertIn("cannot read", message)
        message = self.refused("--database", MYSQL, "--secret-file", self.secret_file("short-secret\n"))
        self.assertIn("--secret-file", message)
        self.assertIn("16", message)
        self.assertIn("--secret-file", self.refused("--database", MYSQL, "--secret-file", self.secret_file(" \n")))

    def test_bad_values_name_their_option(self) -> None:
        """A bad endpoint, Redis URL, node id, size or format is refused naming its flag."""
        for flag, value in [
            ("--http", "nonsense:1"),
            ("--pb", "tcp:notaport"),
            ("--redis", "http://127.0.0.1:6379"),
            ("--redis", "redis://h:port"),
            ("--node-id", "logic 1"),
            ("--node-id", "x" * 65),
            ("--node-id", "node/1"),
            ("--max-content", "0"),
            ("--max-content", "lots"),
            ("--max-content", "1000000"),
            ("--log-format", "xml"),
        ]:
            self.assertIn(flag, self.refused(*self.required(), flag, value))

    def test_config_file_errors(self) -> None:
        """A missing, invalid or unknown-key config file is refused naming --config; a bad value names its key."""
        files = Files(self)
        self.assertIn("--config", self.refused(*self.required(), "--config", os.path.join(self.mktemp(), "none.toml")))
        self.assertIn("--config", self.refused(*self.required(), "--config", files.write("bad.toml", "http = \n")))
        message = self.refused(*self.required(), "--config", files.write("unknown.toml", 'htpp = "tcp:1"\n'))
        self.assertIn("htpp", message)
        path = files.write("value.toml", "max_content = -5\n")
        message = self.refused(*self.required(), "--config", path)
        self.assertIn("max-content", message)
        self.assertIn(path, message)


class ConnectOptionsTests(OptionsTestMixin, SynchronousTestCase):
    options_class = connect_tap.Options

    def required(self) -> list[str]:
        return ["--node-id", "c1", "--secret-file", self.secret_file()]

    def test_defaults(self) -> None:
        """With only the required options, every other option has its documented default."""
        config = self.parse(*self.required()).config()
        self.assertIsInstance(config, ConnectNodeConfig)
        self.assertEqual(
            (config.node_id, config.secret, config.logic, config.tcp, config.redis, config.redis_prefix),
            ("c1", SECRET.encode(), ("127.0.0.1:50100",), "tcp:50000", "redis://127.0.0.1:6379/0", "goim:"),
        )
        self.assertEqual((config.signin_timeout, config.idle_timeout, config.log_format), (10.0, 600.0, "text"))

    def test_flags(self) -> None:
        """Every flag is parsed into the config; --logic takes a comma-separated list."""
        config = self.parse(
            *self.required(),
            "--logic", "10.0.0.1:50100, logic-b.internal:50101",
            "--tcp", "tcp:6000",
            "--redis", "redis://10.0.0.9:6379/1",
            "--redis-prefix", "p:",
            "--signin-timeout", "2.5",
            "--idle-timeout", "30",
            "--log-format", "json",
        ).config()
        self.assertEqual(config.logic, ("10.0.0.1:50100", "logic-b.internal:50101"))
        self.assertEqual(
            (config.tcp, config.redis, config.redis_prefix, config.signin_timeout, config.idle_timeout, config.log_format),
            ("tcp:6000", "redis://10.0.0.9:6379/1", "p:", 2.5, 30.0, "json"),
        )

    def test_config_file_and_flags_win(self) -> None:
        """The file may list logic nodes as a TOML array; flags given win over the file."""
        files = Files(self)
        secret = files.write("secret", SECRET)
        path = files.write(
            "connect.toml",
            f'node_id = "c-file"\nsecret_file = "{secret}"\nlogic = ["a:1", "b:2"]\nsignin_timeout = 3\n'
            'tcp = "tcp:6100"\n',
        )
        config = self.parse("--config", path, "--node-id", "c-flag", "--tcp", "tcp:6200").config()
        self.assertEqual(
            (config.node_id, config.secret, config.logic, config.signin_timeout, config.tcp),
            ("c-flag", SECRET.encode(), ("a:1", "b:2"), 3.0, "tcp:6200"),
        )

    def test_node_id_required_and_checked(self) -> None:
        """--node-id is required and limited to 1-64 letters, digits, '.', '-', '_'."""
        self.assertIn("--node-id", self.refused("--secret-file", self.secret_file()))
        for bad in ("", "c 1", "c:1", "c*", "é" + "x" * 64, "x" * 65, "a/b"):
            self.assertIn("--node-id", self.refused("--node-id", bad, "--secret-file", self.secret_file()), bad)
        for good in ("c1", "connect-2.eu_west", "x" * 64):
            self.assertEqual(self.parse("--node-id", good, "--secret-file", self.secret_file())["node-id"], good)

    def test_secret_file_required(self) -> None:
        """--secret-file is required, must exist and must hold 16 characters or more."""
        self.assertIn("--secret-file", self.refused("--node-id", "c1"))
        missing = os.path.join(self.mktemp(), "nope")
        self.assertIn("--secret-file", self.refused("--node-id", "c1", "--secret-file", missing))
        message = self.refused("--node-id", "c1", "--secret-file", self.secret_file("x" * 15))
        self.assertIn("--secret-file", message)
        self.assertIn("at least 16", message)

    def test_logic_addresses_checked(self) -> None:
        """--logic must be HOST:PORT[,HOST:PORT...] with ports 1-65535."""
        for bad in ("", "logic", "logic:", ":50100", "logic:0", "logic:65536", "logic:port", "a:1,", "a:1,b"):
            message = self.refused(*self.required(), "--logic", bad)
            self.assertIn("--logic", message, bad)
        path = Files(self).write("connect.toml", "logic = []\n")
        self.assertIn("logic", self.refused(*self.required(), "--config", path))

    def test_bracketed_ipv6_logic_address(self) -> None:
        """A bracketed IPv6 --logic address is refused or becomes a host HostnameEndpoint can use."""
        try:
            options = self.parse(*self.required(), "--logic", "[::1]:50100")
        except usage.UsageError as e:
            self.assertIn("--logic", str(e))
            return
        for address in options["logic"]:
            host, _, port = address.rpartition(":")
            self.assertFalse(host.startswith("["), address)

    def test_timeouts_positive(self) -> None:
        """Sign-in and idle timeouts must be positive numbers."""
        for flag in ("--signin-timeout", "--idle-timeout"):
            for bad in ("0", "-1", "soon", "nan"):
                self.assertIn(flag, self.refused(*self.required(), flag, bad), (flag, bad))

    def test_bad_endpoint_and_redis(self) -> None:
        """A bad client listener or Redis URL is refused naming its flag."""
        self.assertIn("--tcp", self.refused(*self.required(), "--tcp", "nonsense:1"))
        self.assertIn("--redis", self.refused(*self.required(), "--redis", "redis:///0"))

    def test_unknown_flag(self) -> None:
        """An unknown flag is a UsageError."""
        self.assertIn("database", self.refused(*self.required(), "--database", MYSQL))
