"""The web chat page in a real browser against a real ``twistd -n goim``.

Headless Chromium (Debian's chromium and chromium-driver) driven by selenium; the
server is a real process with SQLite, its page at ``/`` and its WebSocket at
``/ws``. Each browser window is a device of its own. Waits poll with a deadline.

Skipped when Chromium or its driver is missing, except under CI (``CI`` set), where
scripts/browser has installed them and a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from tests.browser.browser import find_browser, start_chromium
from tests.e2e.wire import connect
from tests.support.server import StandaloneServer

try:
    from tests.browser.pages import Tab
except ImportError as e:  # selenium missing
    Tab = None  # type: ignore[assignment,misc]
    _IMPORT_ERROR: str | None = str(e)
else:
    _IMPORT_ERROR = None


class WebChatTests(TestCase):
    """Two, three and four windows chatting through one standalone server."""

    timeout = 240

    def setUp(self) -> None:
        found = find_browser()
        if found is None or _IMPORT_ERROR is not None:
            why = _IMPORT_ERROR or "chromium or chromedriver is not installed (scripts/browser installs them)"
            if os.environ.get("CI"):
                self.fail(why)
            raise SkipTest(why)
        database = Path(self.mktemp()).resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
        self.server = StandaloneServer(self, f"sqlite:{database}.db")
        self.web, profile = start_chromium(*found)
        self.addCleanup(shutil.rmtree, profile, True)
        self.addCleanup(self.web.quit)

    def tab(self, name: str, *, first: bool = False) -> Tab:
        return Tab.open(self.web, self.server.http, name, first=first)

    async def test_two_users_chat_live_and_a_third_tab_gets_the_copies(self) -> None:
        """Register, befriend, chat both ways live; a second tab of alice syncs history
        and gets every copy; a send to a removed friend is shown as refused."""
        await self.server.start()
        alice = self.tab("alice", first=True)
        alice_id = alice.register("alice", "Alice")
        bob = self.tab("bob")
        bob_id = bob.register("bob", "Bob")

        alice.use()
        alice.add_friend(bob_id)
        alice.open_conversation(f"u{bob_id}")
        alice.send("hello bob")
        alice.wait_texts(["hello bob"])

        # bob learns of the new friend from the live message itself
        bob.open_conversation(f"u{alice_id}")
        bob.wait_texts(["hello bob"])
        bob.send("hi alice")
        bob.wait_texts(["hello bob", "hi alice"])
        alice.wait_texts(["hello bob", "hi alice"])

        # a second tab of alice is a second device: history from sync, then live copies
        alice2 = self.tab("alice's second tab")
        self.assertEqual(alice2.sign_in("alice"), alice_id)
        alice2.open_conversation(f"u{bob_id}")
        alice2.wait_texts(["hello bob", "hi alice"])
        bob.send("to both tabs")
        alice.wait_texts(["hello bob", "hi alice", "to both tabs"])
        alice2.wait_texts(["hello bob", "hi alice", "to both tabs"])
        alice2.send("from the second tab")
        everything = ["hello bob", "hi alice", "to both tabs", "from the second tab"]
        bob.wait_texts(everything)
        alice.wait_texts(everything)  # the sibling device's message, as alice's own
        self.assertTrue(all("mine" in cls for cls, text in alice.messages() if text != "hi alice" and text != "to both tabs"))

        # bob removes alice: her next send is refused, and the page says so
        bob.remove_current_friend()
        bob.wait(lambda w: f"u{alice_id}" not in bob.conversation_keys(), "alice removed")
        alice.send("are we still friends?")
        alice.wait(lambda w: any("refused" in cls for cls, _ in alice.messages()), "a refused message")
        self.assertIn("not a friend", alice.error_text())

    async def test_offline_tab_reconnects_and_catches_up(self) -> None:
        """A tab without network catches up by sync when it is back. A server restart takes
        both tabs offline; they reconnect with backoff; a message written while the server
        was down is sent on reconnect and arrives once. A tab
        kicked by a sign-in of its device elsewhere says so and does not reconnect."""
        await self.server.start()
        alice = self.tab("alice", first=True)
        alice_id = alice.register("alice", "Alice")
        bob = self.tab("bob")
        bob_id = bob.register("bob", "Bob")
        alice.add_friend(bob_id)
        alice.open_conversation(f"u{bob_id}")
        alice.send("before the restart")
        bob.open_conversation(f"u{alice_id}")
        bob.wait_texts(["before the restart"])

        # alice's tab loses its network: bob's messages meanwhile come by sync when it is back
        alice.set_network(False)
        alice.wait(lambda w: alice.status() == "offline", "status offline")
        bob.send("while you were away")
        bob.send("and another one")
        bob.wait_texts(["before the restart", "while you were away", "and another one"])
        self.assertEqual(alice.texts(), ["before the restart"])
        alice.set_network(True)
        alice.wait_online()
        alice.wait_texts(["before the restart", "while you were away", "and another one"])

        self.assertTrue(await self.server.stop())
        alice.wait(lambda w: alice.status() in ("offline", "connecting"), "status offline")
        bob.wait(lambda w: bob.status() in ("offline", "connecting"), "status offline")
        bob.send("written while offline")
        self.assertEqual([cls for cls, text in bob.messages() if text == "written while offline"], ["mine pending"])

        await self.server.start()
        bob.wait_online(timeout=40)
        alice.wait_online(timeout=40)
        away = ["before the restart", "while you were away", "and another one"]
        bob.wait_texts(away + ["written while offline"])
        alice.wait_texts(away + ["written while offline"])
        # and live again both ways
        alice.send("after the restart")
        bob.wait_texts(away + ["written while offline", "after the restart"])

        # the same device signing in elsewhere kicks the tab: it says so and stays off
        device = json.loads(alice.use().execute_script("return sessionStorage.getItem('goim.device')"))
        other = await connect(self, self.server.tcp_port)
        await other.sign_in(device["id"], alice_id, device["token"])
        alice.wait(lambda w: alice.status() == "kicked", "status kicked")
        self.assertIn("signed in elsewhere", alice.error_text())
        self.assertFalse(alice.el("compose-input").is_enabled())

    async def test_group_of_three(self) -> None:
        """A group of three: everyone sees everyone's messages; after one leaves, the others
        go on without them."""
        await self.server.start()
        ann = self.tab("ann", first=True)
        ann.register("ann", "Ann")
        ben = self.tab("ben")
        ben_id = ben.register("ben", "Ben")
        cat = self.tab("cat")
        cat.register("cat", "Cat")

        group_id = ann.create_group("trio", [ben_id])
        ann.fill("member-id", str(cat.user_id))
        ann.el("member-add").click()
        ann.wait(lambda w: "3 members" in w.find_element("css selector", f'button[data-conv="g{group_id}"]').text, "three members")
        ann.send("hello group")
        for tab in (ann, ben, cat):
            tab.open_conversation(f"g{group_id}")
            tab.wait_texts(["hello group"])
        ben.send("ben here")
        cat.send("cat here")
        for tab in (ann, ben, cat):
            tab.wait(lambda w, tab=tab: len(tab.texts()) == 3 and "pending" not in str(tab.messages()), "three messages")
            self.assertEqual(sorted(tab.texts()), sorted(["hello group", "ben here", "cat here"]))

        cat.leave_current_group()
        cat.wait(lambda w: f"g{group_id}" not in cat.conversation_keys(), "the group gone from cat's list")
        ann.send("two of us now")
        ben.wait(lambda w: "two of us now" in ben.texts(), "the message after cat left")
