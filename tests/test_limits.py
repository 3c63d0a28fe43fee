"""The limit options of the plugins and the listen backlog."""

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from goim.limits import Limits, default_max_connections, with_backlog
from goim.tap import Options


class LimitOptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Without flags the standalone server gets the documented defaults."""
        options = Options()
        options.parseOptions([])
        limits = options.config().limits
        self.assertEqual(limits.social, Limits().social)
        self.assertEqual(limits.accounts, Limits().accounts)
        self.assertEqual(
            (limits.social.group_size, limits.social.groups_per_user, limits.social.friends_per_user),
            (500, 200, 1000),
        )
        self.assertEqual((limits.accounts.devices_per_user, limits.accounts.token_lifetime, limits.backlog), (10, 0.0, 1024))
        self.assertEqual(limits.http.max_connections, default_max_connections())

    def test_default_connection_cap_leaves_half_the_descriptors(self) -> None:
        """With a low descriptor limit the default HTTP connection cap is half of it."""
        import resource

        self.patch(resource, "getrlimit", lambda which: (1024, 1024))
        self.assertEqual(default_max_connections(), 512)
        self.patch(resource, "getrlimit", lambda which: (1_000_000, 1_000_000))
        self.assertEqual(default_max_connections(), 4096)

    def test_flags_set_every_limit(self) -> None:
        """Each limit option reaches the Limits value."""
        options = Options()
        options.parseOptions(
            [
                "--max-group-size", "3", "--max-groups-per-user", "4", "--max-friends-per-user", "5",
                "--max-devices-per-user", "6", "--signin-backoff-max", "7", "--device-registrations-per-minute", "8",
                "--token-lifetime", "9", "--http-header-timeout", "1.5", "--http-body-timeout", "2.5",
                "--http-max-connections", "11", "--http-max-connections-per-address", "12", "--listen-backlog", "13",
            ]
        )  # fmt: skip
        limits = options.config().limits
        self.assertEqual((limits.social.group_size, limits.social.groups_per_user, limits.social.friends_per_user), (3, 4, 5))
        a = limits.accounts
        self.assertEqual(
            (a.devices_per_user, a.sign_in_backoff_max, a.registrations_per_minute, a.registration_burst, a.token_lifetime),
            (6, 7.0, 8.0, 16, 9.0),
        )
        h = limits.http
        self.assertEqual((h.header_timeout, h.body_timeout, h.max_connections, h.max_connections_per_address), (1.5, 2.5, 11, 12))
        self.assertEqual(limits.backlog, 13)

    def test_bad_values_are_usage_errors(self) -> None:
        """Zero or negative limits are refused naming the option."""
        for flags in (["--max-group-size", "0"], ["--token-lifetime", "-1"], ["--listen-backlog", "x"]):
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(flags)
            self.assertIn(flags[0], str(caught.exception))

    def test_with_backlog(self) -> None:
        """backlog= is added to tcp/tcp6/ssl/unix endpoint strings that do not name one."""
        self.assertEqual(with_backlog("tcp:8080", 1024), "tcp:8080:backlog=1024")
        self.assertEqual(with_backlog("tcp:8080:interface=127.0.0.1", 5), "tcp:8080:interface=127.0.0.1:backlog=5")
        self.assertEqual(with_backlog("tcp:8080:backlog=7", 1024), "tcp:8080:backlog=7")
        self.assertEqual(with_backlog("unix:/tmp/s", 9), "unix:/tmp/s:backlog=9")
        self.assertEqual(with_backlog("systemd:domain=INET:index=0", 9), "systemd:domain=INET:index=0")

    def test_distributed_plugins_take_their_limit_options(self) -> None:
        """goim-logic takes the API and HTTP limits; goim-connect the HTTP guards and the backlog only."""
        from goim.connect.tap import Options as ConnectOptions
        from goim.distributed.logic_tap import Options as LogicOptions

        secret = self.mktemp()
        with open(secret, "w") as f:
            f.write("0123456789abcdefghij")
        logic = LogicOptions()
        logic.parseOptions(
            ["--database", "mysql://u@h/db", "--secret-file", secret, "--max-friends-per-user", "7", "--listen-backlog", "99"]
        )
        self.assertEqual((logic.config().limits.social.friends_per_user, logic.config().limits.backlog), (7, 99))
        connect = ConnectOptions()
        connect.parseOptions(["--node-id", "n1", "--secret-file", secret, "--http-max-connections-per-address", "3"])
        self.assertEqual(connect.config().limits.http.max_connections_per_address, 3)
        with self.assertRaises(usage.UsageError):
            ConnectOptions().parseOptions(["--node-id", "n1", "--secret-file", secret, "--max-group-size", "3"])
