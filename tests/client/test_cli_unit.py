"""goim-cli pieces without processes: argument parsing, output, and the chat's logic on fakes."""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Coroutine, TypeVar

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from goim.client.chat import Chat
from goim.client.cli import Output, Profile, build_parser, parse_tcp, profile_name
from goim.client.client import GoimClient
from goim.client.directory import Directory
from goim.client.state import MemoryStateStore
from goim.protocols import codec
from goim.resources.api import GoimAPI
from goim.types import RECEIVER_GROUP, SENDER_USER, StoredMessage
from tests.client.fakes import FakeConnector, FakeServer
from tests.support.db import SQLiteBackend
from tests.support.services import Services

T = TypeVar("T")


class ArgumentTests(SynchronousTestCase):
    def test_tcp_address_forms(self) -> None:
        """HOST:PORT, [v6]:PORT; no port, a bad port or no host are refused."""
        self.assertEqual(parse_tcp("127.0.0.1:50000"), ("127.0.0.1", 50000))
        self.assertEqual(parse_tcp("[::1]:5"), ("::1", 5))
        self.assertEqual(parse_tcp("chat.example:443"), ("chat.example", 443))
        for bad in ("localhost", ":80", "h:0", "h:x", "h:70000"):
            self.assertRaises(argparse.ArgumentTypeError, parse_tcp, bad)

    def test_profile_names_cannot_escape_the_directory(self) -> None:
        """Names with a slash, a leading dot or '..' are refused."""
        self.assertEqual(profile_name("work-2.laptop"), "work-2.laptop")
        for bad in ("../x", "a/b", ".hidden", "..", ""):
            self.assertRaises(argparse.ArgumentTypeError, profile_name, bad)

    def test_profile_lives_under_xdg_config_home_or_dot_config(self) -> None:
        """$XDG_CONFIG_HOME/goim/NAME, else ~/.config/goim/NAME."""
        self.assertEqual(Profile.locate("p", {"XDG_CONFIG_HOME": "/x"}).state_path, Path("/x/goim/p/state.json"))
        self.assertEqual(Profile.locate("p", {}).directory, Path.home() / ".config" / "goim" / "p")

    def test_defaults_and_global_options_after_the_command(self) -> None:
        """Defaults match a local twistd -n goim; --json/--profile work before or after the command."""
        parser = build_parser()
        args = parser.parse_args(["whoami"])
        self.assertEqual((args.http, args.tcp, args.profile, args.json), ("http://127.0.0.1:8080", [("127.0.0.1", 50000)], "default", False))
        args = parser.parse_args(["--profile", "a", "send", "user", "7", "hello", "there", "--json"])
        self.assertEqual((args.profile, args.json, args.kind, args.receiver_id, args.text), ("a", True, "user", 7, ["hello", "there"]))
        args = parser.parse_args(["group", "create", "devs", "2", "3"])
        self.assertEqual((args.name, args.user_ids), ("devs", [2, 3]))
        args = parser.parse_args(["history", "--since", "5"])
        self.assertEqual(args.since, 5)
        args = parser.parse_args(["--tcp", "10.0.0.1:50000,[::1]:50001", "whoami"])
        self.assertEqual(args.tcp, [("10.0.0.1", 50000), ("::1", 50001)])

    def test_every_argument_has_help(self) -> None:
        """Every option and positional argument of every (sub)command has a help text."""
        missing = []

        def walk(parser: argparse.ArgumentParser, path: str) -> None:
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        walk(sub, f"{path} {name}")
                    if not action.help:
                        missing.append(f"{path} {action.metavar}")
                elif not isinstance(action, argparse._HelpAction) and not action.help:
                    missing.append(f"{path} {action.dest}")

        walk(build_parser(), "goim-cli")
        self.assertEqual(missing, [])

    def test_version(self) -> None:
        """--version prints goim's version and exits 0."""
        from goim import __version__

        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as exit:
            build_parser().parse_args(["--version"])
        self.assertEqual((exit.exception.code, out.getvalue().strip()), (0, f"goim-cli {__version__}"))

    def test_output_text_and_json(self) -> None:
        """Results: text or one JSON object per line; errors go to stderr in the same style."""
        out, err = io.StringIO(), io.StringIO()
        Output(json_mode=True, stdout=out, stderr=err).result({"a": "ü"}, "ignored")
        Output(json_mode=True, stdout=out, stderr=err).error("nope", 1003)
        Output(json_mode=False, stdout=out, stderr=err).error("nope", 1003)
        self.assertEqual(out.getvalue(), '{"a": "ü"}\n')
        lines = err.getvalue().splitlines()
        self.assertEqual(json.loads(lines[0]), {"error": "nope", "code": 1003, "kind": "http"})
        self.assertEqual(lines[1], "goim-cli: nope (code 1003)")


class ChatLogicTests(SQLiteBackend, SynchronousTestCase):
    """The Chat object on a GoimClient whose HTTP is StubTreq and whose TCP is a FakeServer."""

    def setUp(self) -> None:
        self.clock = Clock()
        services = Services(self.make_sync_database(), self.clock, synchronous=True)
        self.stub = StubTreq(GoimAPI(services.accounts, services.social).app.resource())
        self.connector = FakeConnector()
        self.bob = self.client()
        self.run_(self.bob.register("bob", "Bob", "secret-pw"))
        self.alice = self.client()
        self.run_(self.alice.register("alice", "Alice", "secret-pw"))
        self.run_(self.alice.api.add_friend(self.bob.state.user_id))
        self.group_id = self.run_(self.alice.api.create_group("devs", [self.bob.state.user_id]))
        self.lines: list[str] = []
        self.chat = Chat(self.alice, Directory(self.alice.api, self.clock), self.lines.append, address="here:1", clock=self.clock)
        self.run_(self.chat.start())
        self.server: FakeServer = self.connector.accept()
        self.server.sign_in_ok()
        self.server.sync([])

    def client(self) -> GoimClient:
        return GoimClient(reactor=self.clock, http_url="http://goim.test", store=MemoryStateStore(), connect=self.connector, http=self.stub)

    def run_(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def incoming(self, seq: int, receiver_type: int, receiver_id: int, content: str) -> StoredMessage:
        return StoredMessage(
            user_id=self.alice.state.user_id, seq=seq, message_id=100 + seq, sender_type=SENDER_USER,
            sender_id=self.bob.state.user_id, sender_device_id=self.bob.state.device_id,
            receiver_type=receiver_type, receiver_id=receiver_id, type=1, content=content, send_time=0,
        )

    def test_status_lines_and_incoming_messages_with_names(self) -> None:
        """'connected' is shown; 1:1 and group messages show the sender's nickname and the group name."""
        self.assertIn("* connected to here:1", self.lines)
        self.server.push(self.incoming(1, 1, self.alice.state.user_id, "hi alice"))
        self.server.push(self.incoming(2, RECEIVER_GROUP, self.group_id, "hi devs"))
        self.assertTrue(self.lines[-2].endswith("Bob → me: hi alice"), self.lines)
        self.assertTrue(self.lines[-1].endswith("[devs] Bob: hi devs"), self.lines)

    def test_plain_lines_go_to_the_chosen_recipient(self) -> None:
        """Without /to a line is not sent; after '/to bob' (a friend's number) it is."""
        self.server.frames()
        self.chat.line("lost words")
        self.assertIn("pick a recipient", self.lines[-1])
        self.chat.line("/to bob")
        self.chat.line("hello bob")
        self.chat.line(f"/group {self.group_id}")
        self.chat.line("hello group")
        sends = [(s.receiver_type, s.receiver_id, s.content) for s in self.server.of(codec.MESSAGE_SEND)]
        self.assertEqual(sends, [(1, self.bob.state.user_id, "hello bob"), (2, self.group_id, "hello group")])

    def test_refused_send_and_unknown_names_are_reported(self) -> None:
        """A refused send and an unknown /to name produce a status line."""
        self.chat.line("/to nobody")
        self.assertIn("unknown user 'nobody'", self.lines[-1])
        self.chat.line("/to 999")
        self.chat.line("hi stranger")
        self.server.send_ack(1, code=2)
        self.assertEqual(self.lines[-1], "* not delivered: not a friend: 'hi stranger'")

    def test_reconnecting_and_kicked_status_lines(self) -> None:
        """A drop shows 'reconnecting in'; a kick says it will not reconnect; /quit stops and says bye."""
        self.server.drop()
        self.assertIn("reconnecting in", self.lines[-1])
        self.clock.advance(60)
        server = self.connector.accept()
        server.sign_in_ok()
        server.kick("signed in elsewhere")
        self.assertEqual(self.lines[-1], "* kicked: signed in elsewhere; not reconnecting (/quit)")
        self.chat.line("/quit")
        self.successResultOf(self.chat.done)
        self.assertEqual(self.lines[-1], "* bye")
