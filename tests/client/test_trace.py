"""One message id followed through a real server's JSON log (docs/operations.md)."""

from __future__ import annotations

import json
from typing import Any

from tests.client.live import LiveTestCase, wait_until
from tests.support.db import SQLiteBackend


def events(log_text: str) -> list[dict[str, Any]]:
    """The JSON events of a ``--log-format json`` log (other lines skipped)."""
    found = []
    for line in log_text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


class TraceLiveTests(SQLiteBackend, LiveTestCase):
    async def test_message_id_traceable_from_send_to_every_push(self) -> None:
        """With --log-format json --log-level debug, the message id of a send appears
        in the ACK event, the stored and delivering events, and a pushed event for
        the receiver's device."""
        server = await self.serve("--log-format", "json", "--log-level", "debug")
        (alice, _), (bob, bob_seen) = await self.friends()
        ack = await alice.send_to_user(bob.state.user_id, "trace me")
        await wait_until(lambda: any(m.message_id == ack.message_id for m in bob_seen.messages), "the push to bob")

        def traced() -> list[str]:
            return [
                e["log_format"].split(" ")[0]
                for e in events(server.log_text())
                if e.get("message_id") == ack.message_id
            ]

        await wait_until(lambda: "pushed" in traced(), "the pushed event")
        kinds = traced()
        self.assertIn("send", kinds)
        self.assertIn("stored", kinds)
        self.assertIn("delivering", kinds)
        pushed = [
            e for e in events(server.log_text()) if e.get("message_id") == ack.message_id and e["log_format"].startswith("pushed")
        ]
        self.assertIn(bob.state.device_id, [e["device_id"] for e in pushed])
