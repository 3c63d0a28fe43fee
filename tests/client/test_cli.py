"""goim-cli as a user runs it: subprocesses against a real server, ``chat`` in a pseudo-terminal."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.client.live import LiveTestCase, wait_until
from tests.support.db import SQLiteBackend
from tests.support.server import pause

ROOT = Path(__file__).resolve().parents[2]


class CLITestCase(SQLiteBackend, LiveTestCase):
    """Runs ``python -m goim.client.cli`` with a temporary XDG_CONFIG_HOME."""

    def setUp(self) -> None:
        self.config_home = Path(self.mktemp()).resolve()
        self.config_home.mkdir(parents=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(self.config_home))
        return env

    def argv(self, profile: str, *args: str) -> list[str]:
        return [
            "-m", "goim.client.cli",
            "--http", self.server.http,
            "--tcp", f"127.0.0.1:{self.server.tcp_port}",
            "--profile", profile,
            *args,
        ]

    async def cli(self, profile: str, *args: str, ok: bool = True) -> tuple[int, str, str]:
        """Run one command; returns ``(exit code, stdout, stderr)`` (asserts success when ``ok``)."""
        out, err, code = await getProcessOutputAndValue(
            sys.executable, self.argv(profile, *args), env=self.env(), path=str(self.config_home)
        )
        result = code, out.decode(), err.decode()
        if ok:
            self.assertEqual(code, 0, f"goim-cli {' '.join(args)} failed: {result}")
        return result

    async def cli_json(self, profile: str, *args: str) -> list[dict[str, Any]]:
        """Run one command with --json; returns the JSON objects it printed."""
        _, out, _ = await self.cli(profile, "--json", *args)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    async def two_friends(self) -> tuple[int, int]:
        """Profiles a (alice) and b (bob) registered and befriended; returns their user ids."""
        (alice,) = await self.cli_json("a", "register", "alice", "Alice", "--password", "secret-pw")
        (bob,) = await self.cli_json("b", "register", "bob", "Bob", "--password", "secret-pw")
        await self.cli("a", "friend", "add", str(bob["user_id"]), "--label", "buddy")
        return alice["user_id"], bob["user_id"]


class CommandTests(CLITestCase):
    async def test_two_profiles_chat_one_to_one_and_in_a_group(self) -> None:
        """Register, befriend, exchange 1:1 and group messages; history --json shows each exactly once."""
        await self.serve()
        a_id, b_id = await self.two_friends()
        friends = await self.cli_json("b", "friends")
        self.assertEqual([(f["user_id"], f["nickname"]) for f in friends], [(a_id, "Alice")])
        _, out, _ = await self.cli("a", "send", "user", str(b_id), "hello", "bob")
        self.assertIn("sent: message", out)
        (sent,) = await self.cli_json("b", "send", "user", str(a_id), "hi alice")
        self.assertGreater(sent["message_id"], 0)
        (group,) = await self.cli_json("a", "group", "create", "devs", str(b_id))
        gid = group["group_id"]
        (shown,) = await self.cli_json("b", "group", "show", str(gid))
        self.assertEqual((shown["name"], sorted(u["user_id"] for u in shown["users"])), ("devs", sorted([a_id, b_id])))
        await self.cli("b", "send", "group", str(gid), "group hello")
        await self.cli("a", "send", "group", str(gid), "group reply")

        expected = [
            (a_id, 1, b_id, "hello bob"),
            (b_id, 1, a_id, "hi alice"),
            (b_id, 2, gid, "group hello"),
            (a_id, 2, gid, "group reply"),
        ]
        for profile in ("a", "b"):
            for _ in range(2):  # a second history shows the same, nothing twice
                history = await self.cli_json(profile, "history")
                got = [(m["sender_id"], m["receiver_type"], m["receiver_id"], m["content"]) for m in history]
                self.assertEqual(got, expected, profile)
                self.assertEqual([m["seq"] for m in history], [1, 2, 3, 4])
        since = await self.cli_json("a", "history", "--since", "2")
        self.assertEqual([m["content"] for m in since], ["group hello", "group reply"])

        _, text, _ = await self.cli("a", "history")
        self.assertIn("me → Bob: hello bob", text)
        self.assertIn("[devs] Bob: group hello", text)
        (groups,) = await self.cli_json("b", "groups")
        self.assertEqual(groups["id"], gid)
        (me,) = await self.cli_json("a", "whoami")
        self.assertEqual((me["user_id"], me["number"], me["pending"], me["synced_seq"]), (a_id, "alice", 0, 4))

    async def test_membership_and_friend_removal(self) -> None:
        """group add/rm change who may send; friend rm ends 1:1 sending with the server's error."""
        await self.serve()
        a_id, b_id = await self.two_friends()
        (group,) = await self.cli_json("a", "group", "create", "solo")
        gid = str(group["group_id"])
        await self.cli("a", "group", "add", gid, str(b_id))
        await self.cli("b", "send", "group", gid, "in")
        await self.cli("a", "group", "rm", gid, str(b_id))
        code, _, err = await self.cli("b", "send", "group", gid, "out", ok=False)
        self.assertEqual(code, 1)
        self.assertIn("not in the group", err)
        await self.cli("b", "friend", "rm", str(a_id))
        code, _, err = await self.cli("b", "--json", "send", "user", str(a_id), "x", ok=False)
        self.assertEqual(code, 1)
        error = json.loads(err.strip().splitlines()[-1])
        self.assertIn("not a friend", error["error"])
        self.assertEqual((error["code"], error["kind"]), (2, "send"))

    async def test_errors_print_the_server_message_and_exit_non_zero(self) -> None:
        """A wrong password, a taken number, an unknown group and a missing login exit 1 with the reason."""
        await self.serve()
        await self.cli("a", "register", "alice", "Alice", "--password", "secret-pw")
        code, _, err = await self.cli("c", "login", "alice", "--password", "wrong-pw", ok=False)
        self.assertEqual((code, err.strip()), (1, "goim-cli: wrong number or password (code 1003)"))
        code, _, err = await self.cli("c", "register", "alice", "Again", "--password", "secret-pw", ok=False)
        self.assertIn("number already used (code 1002)", err)
        code, _, err = await self.cli("a", "--json", "group", "show", "999", ok=False)
        self.assertEqual(json.loads(err)["code"], 1005)
        code, _, err = await self.cli("nobody", "friends", ok=False)
        self.assertEqual(code, 1)
        self.assertIn("not signed in", err)
        code, _, err = await self.cli("c", "login", "alice", "--password", "secret-pw")
        self.assertEqual(code, 0)

    async def test_send_times_out_when_the_server_is_down_and_is_delivered_later(self) -> None:
        """With the server stopped, send exits 1 after --timeout; the next run delivers it exactly once."""
        await self.serve()
        _, b_id = await self.two_friends()
        await self.server.stop()
        code, _, err = await self.cli("a", "--timeout", "1", "send", "user", str(b_id), "late", ok=False)
        self.assertEqual(code, 1)
        self.assertIn("timed out", err)
        await self.server.start()
        await self.cli("a", "send", "user", str(b_id), "on time")
        history = await self.cli_json("b", "history")
        self.assertEqual([m["content"] for m in history], ["late", "on time"])

    async def test_tcp_list_fails_over_to_the_next_connect_node(self) -> None:
        """--tcp DEAD,LIVE: the first attempt is refused, the next one goes to the live
        node and the send is ACKed; a send to a user id that names no user says so."""
        from tests.support.server import free_port

        await self.serve()
        _, b_id = await self.two_friends()
        dead = free_port()
        tcp = f"127.0.0.1:{dead},127.0.0.1:{self.server.tcp_port}"
        _, out, _ = await self.cli("a", "send", "user", str(b_id), "via", "failover", "--tcp", tcp)
        self.assertIn("sent: message", out)
        history = await self.cli_json("b", "history")
        self.assertEqual([m["content"] for m in history], ["via failover"])
        code, _, err = await self.cli("a", "--json", "send", "user", str(b_id + 1000), "anyone?", ok=False)
        self.assertEqual(code, 1)
        self.assertEqual(json.loads(err.strip().splitlines()[-1])["code"], 6)


class ChatTests(CLITestCase):
    async def test_chat_in_a_terminal_shows_an_incoming_message(self) -> None:
        """chat in a pty: status 'connected', a message from the other profile appears with its sender's name."""
        await self.serve()
        a_id, b_id = await self.two_friends()
        await self.cli("a", "group", "create", "devs", str(b_id))
        terminal = Terminal(self, [sys.executable, *self.argv("b", "chat")], self.env(), self.config_home)
        await terminal.expect("connected to")
        await self.cli("a", "send", "user", str(b_id), "ping from alice")
        await terminal.expect("Alice → me: ping from alice")
        groups = await self.cli_json("a", "groups")
        await self.cli("a", "send", "group", str(groups[0]["id"]), "hello devs")
        await terminal.expect("[devs] Alice: hello devs")
        terminal.type("/to alice\n")
        await terminal.expect("talking to Alice")
        terminal.type("pong\n")
        await terminal.expect("me → Alice: pong")
        terminal.type("/quit\n")
        await terminal.expect("bye")
        self.assertEqual(await terminal.exit_code(), 0)
        history = await self.cli_json("a", "history")
        self.assertEqual([m["content"] for m in history], ["ping from alice", "hello devs", "pong"])

    async def test_chat_shows_reconnecting_and_connected_again(self) -> None:
        """When the server restarts, the chat's status lines say so and the session comes back."""
        await self.serve()
        await self.two_friends()
        terminal = Terminal(self, [sys.executable, *self.argv("a", "chat")], self.env(), self.config_home)
        await terminal.expect("connected to")
        await self.server.restart()
        await terminal.expect("reconnecting in")
        await terminal.expect("connected to", after=terminal.output.index("reconnecting in"))
        terminal.close_input()
        self.assertEqual(await terminal.exit_code(), 0)


class Terminal:
    """A subprocess on a pseudo-terminal; output is polled with a deadline."""

    def __init__(self, testcase: CLITestCase, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.output = ""
        self._raw = b""
        testcase.addCleanup(self.cleanup)

    def _read(self) -> None:
        while select.select([self.master], [], [], 0)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            self._raw += data
            self.output = self._raw.decode("utf-8", "replace").replace("\r\n", "\n")

    async def expect(self, text: str, *, after: int = 0, timeout: float = 30.0) -> None:
        """Wait until ``text`` appears in the output (at or after offset ``after``)."""

        def seen() -> bool:
            self._read()
            return text in self.output[after:]

        try:
            await wait_until(seen, repr(text), timeout=timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}; terminal output:\n{self.output}") from None

    def type(self, text: str) -> None:
        """Type into the terminal."""
        os.write(self.master, text.encode("utf-8"))

    def close_input(self) -> None:
        """End of input (Ctrl-D on an empty line)."""
        os.write(self.master, b"\x04")

    async def exit_code(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit."""
        deadline = reactor.seconds() + timeout
        while self.process.poll() is None:
            self._read()
            if reactor.seconds() > deadline:
                raise AssertionError(f"chat did not exit; output:\n{self.output}")
            await pause(0.02)
        return self.process.returncode

    def cleanup(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        os.close(self.master)
