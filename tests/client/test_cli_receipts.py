"""goim-cli read, recall, edit, reads and conversations against a real server
(issue 14): the profiles sign in with Feature.EVENTS, so history holds the events."""

from __future__ import annotations

from goim.types import KIND_EDIT, KIND_MESSAGE, KIND_READ, KIND_RECALL
from tests.client.test_cli import CLITestCase


class ReceiptCommandTests(CLITestCase):
    async def test_read_edit_recall_and_conversations(self) -> None:
        """Unread counts clear after ``read``; ``edit`` and ``recall`` reach the other
        profile's history as events after the message; errors exit non-zero."""
        await self.serve()
        a_id, b_id = await self.two_friends()
        (first,) = await self.cli_json("a", "send", "user", str(b_id), "helo")
        (second,) = await self.cli_json("a", "send", "user", str(b_id), "oops")
        (conv,) = await self.cli_json("b", "conversations")
        self.assertEqual((conv["conversation_id"], conv["unread"], conv["last_content"]), (a_id, 2, "oops"))
        _, text, _ = await self.cli("b", "conversations")
        self.assertIn("Alice: 2 unread; last: oops", text)

        (read,) = await self.cli_json("b", "read", "user", str(a_id))
        self.assertEqual(read["read_seq"], 2)
        (conv,) = await self.cli_json("b", "conversations")
        self.assertEqual((conv["unread"], conv["read_seq"]), (0, 2))

        await self.cli("a", "edit", str(first["message_id"]), "hello")
        await self.cli("a", "recall", str(second["message_id"]))
        code, _, err = await self.cli("b", "recall", str(first["message_id"]), ok=False)
        self.assertNotEqual(code, 0)
        self.assertIn("1017", err)

        history = await self.cli_json("b", "history")
        self.assertEqual(
            [(m["kind"], m["message_id"]) for m in history],
            [
                (KIND_MESSAGE, first["message_id"]),
                (KIND_MESSAGE, second["message_id"]),
                (KIND_READ, second["message_id"]),
                (KIND_EDIT, first["message_id"]),
                (KIND_RECALL, second["message_id"]),
            ],
        )
        self.assertEqual(history[3]["content"], "hello")
        _, text, _ = await self.cli("b", "history")
        self.assertIn("(edited message", text)
        self.assertIn("(recalled message", text)
        # alice's profile got the read tick in her own seq space
        alice = await self.cli_json("a", "history")
        tick = [m for m in alice if m["kind"] == KIND_READ]
        self.assertEqual([(t["sender_id"], t["ref_seq"]) for t in tick], [(b_id, 2)])

        (group,) = await self.cli_json("a", "group", "create", "devs", str(b_id))
        (sent,) = await self.cli_json("a", "send", "group", str(group["group_id"]), "hi all")
        (count,) = await self.cli_json("a", "reads", str(sent["message_id"]))
        self.assertEqual(count["read_count"], 0)
        await self.cli("b", "read", "group", str(group["group_id"]))
        (count,) = await self.cli_json("a", "reads", str(sent["message_id"]))
        self.assertEqual(count["read_count"], 1)
