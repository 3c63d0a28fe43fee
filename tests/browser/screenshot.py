"""Make docs/web-chat.png: the web page with two users chatting, in headless Chromium.

    .venv/bin/python -m tests.browser.screenshot [OUTPUT.png]

Starts ``twistd -n goim`` on free ports with a scratch SQLite file, registers two
users in two windows, befriends them, exchanges a few messages, makes a group and
saves a screenshot of the first window. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.browser.browser import find_browser, start_chromium
from tests.browser.pages import Tab
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    output = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "web-chat.png")
    found = find_browser()
    if found is None:
        raise SystemExit("chromium or chromedriver missing: run scripts/browser")
    work = Path(tempfile.mkdtemp(prefix="goim-screenshot-"))
    http = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    server = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "goim",
         "--tcp", f"tcp:{free_port()}:interface=127.0.0.1", "--http", f"tcp:{http}:interface=127.0.0.1",
         "--database", f"sqlite:{work / 'goim.db'}"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    web = None
    profile = None
    try:
        base = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)
        web, profile = start_chromium(*found)
        alice = Tab.open(web, base, "alice", first=True)
        alice.register("alice", "Alice")
        bob = Tab.open(web, base, "bob")
        bob_id = bob.register("bob", "Bob")
        carol = Tab.open(web, base, "carol")
        carol_id = carol.register("carol", "Carol")
        alice.add_friend(carol_id)
        alice.add_friend(bob_id)
        alice.create_group("weekend trip", [bob_id, carol_id])
        alice.send("Who is in for Saturday?")
        alice.open_conversation(f"u{bob_id}")
        alice.send("Hi Bob! Did you get the tickets?")
        bob.open_conversation(f"u{alice.user_id}")
        bob.wait_texts(["Hi Bob! Did you get the tickets?"])
        bob.send("Yes, two for the 9:40 train.")
        alice.wait_texts(["Hi Bob! Did you get the tickets?", "Yes, two for the 9:40 train."])
        alice.send("Great, see you at the station")
        bob.wait_texts(["Hi Bob! Did you get the tickets?", "Yes, two for the 9:40 train.",
                        "Great, see you at the station"])  # fmt: skip
        bob.send("See you there.")
        alice.wait(lambda w: len(alice.texts()) == 4 and "pending" not in str(alice.messages()), "four messages")
        alice.use()
        web.save_screenshot(str(output))
        print(f"wrote {output}")
    finally:
        if web is not None:
            web.quit()
        if profile is not None:
            shutil.rmtree(profile, ignore_errors=True)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
