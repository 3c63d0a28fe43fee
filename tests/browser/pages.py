"""The web chat page as the browser tests use it: one :class:`Tab` per browser window.

Every method switches to its window first, acts as a person would (types, clicks)
and waits, with a deadline, for what the page shows.
"""

from __future__ import annotations

from typing import Any

from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.browser import wait_for

PASSWORD = "correct horse battery"


class Tab:
    """One window of the browser: a device of its own (its own sessionStorage)."""

    def __init__(self, web: Any, handle: str, base_url: str, name: str) -> None:
        self.web = web
        self.handle = handle
        self.base_url = base_url
        self.name = name
        self.user_id = 0

    @classmethod
    def open(cls, web: Any, base_url: str, name: str, *, first: bool = False) -> Tab:
        """A new window (or the browser's first one) showing the page."""
        if not first:
            web.switch_to.new_window("window")
        tab = cls(web, web.current_window_handle, base_url, name)
        web.get(base_url + "/")
        tab.wait(lambda w: w.find_element(By.ID, "status").get_attribute("data-state") != "loading", "the page to load")
        return tab

    # --- helpers -----------------------------------------------------------------------

    def use(self) -> Any:
        if self.web.current_window_handle != self.handle:
            self.web.switch_to.window(self.handle)
        return self.web

    def wait(self, condition: Any, what: str, timeout: float = 20.0) -> Any:
        self.use()
        return wait_for(self.web, condition, f"{what} in {self.name}'s tab", timeout)

    def el(self, element_id: str) -> Any:
        return self.use().find_element(By.ID, element_id)

    def fill(self, element_id: str, text: str) -> None:
        field = self.el(element_id)
        field.clear()
        field.send_keys(text)

    def status(self) -> str:
        return str(self.el("status").get_attribute("data-state"))

    def error_text(self) -> str:
        box = self.el("error")
        return "" if box.get_attribute("hidden") is not None else str(self.el("error-text").text)

    def set_network(self, online: bool) -> None:
        """Take this tab's network away or give it back (DevTools network emulation:
        the page sees navigator.onLine change and the offline/online events)."""
        web = self.use()
        web.execute_cdp_cmd("Network.enable", {})
        web.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": not online, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )

    def wait_online(self, timeout: float = 20.0) -> None:
        self.wait(lambda w: self.status() == "online", "status online", timeout)

    # --- accounts ------------------------------------------------------------------------

    def register(self, number: str, nickname: str) -> int:
        self.fill("register-number", number)
        self.fill("register-nickname", nickname)
        self.fill("register-password", PASSWORD)
        self.el("register-submit").click()
        self.wait_online()
        self.user_id = int(self.el("my-id").text)
        return self.user_id

    def sign_in(self, number: str) -> int:
        self.fill("signin-number", number)
        self.fill("signin-password", PASSWORD)
        self.el("signin-submit").click()
        self.wait_online()
        self.user_id = int(self.el("my-id").text)
        return self.user_id

    # --- friends and groups --------------------------------------------------------------------

    def add_friend(self, user_id: int) -> None:
        self.fill("friend-id", str(user_id))
        self.el("friend-add").click()
        self.wait(lambda w: self._conv_button(f"u{user_id}") is not None, f"friend {user_id} in the list")

    def create_group(self, name: str, member_ids: list[int]) -> int:
        self.fill("group-name", name)
        self.fill("group-members", ", ".join(str(i) for i in member_ids))
        self.el("group-create").click()
        self.wait(lambda w: str(self.el("conv-title").text) == f"Group {name}", f"group {name} opened")

        def listed(_: Any) -> int | None:
            for button in self.use().find_elements(By.CSS_SELECTOR, "#groups button[data-conv]"):
                if button.text.startswith(name + " ") and "member" in button.text:
                    return int(str(button.get_attribute("data-conv"))[1:])
            return None

        return int(self.wait(listed, f"group {name} listed"))

    def leave_current_group(self) -> None:
        self.el("group-leave").click()

    def remove_current_friend(self) -> None:
        self.el("friend-remove").click()

    def _conv_button(self, key: str) -> Any:
        try:
            return self.use().find_element(By.CSS_SELECTOR, f'button[data-conv="{key}"]')
        except NoSuchElementException:
            return None

    def open_conversation(self, key: str) -> None:
        """Open a conversation (``u<user id>`` or ``g<group id>``) once it is listed."""
        def click(_: Any) -> bool:
            button = self._conv_button(key)
            if button is None:
                return False
            if button.get_attribute("aria-current") != "true":
                button.click()
            return self._conv_button(key).get_attribute("aria-current") == "true"

        self.wait(click, f"conversation {key} open")

    def conversation_keys(self) -> list[str]:
        return [str(b.get_attribute("data-conv")) for b in self.use().find_elements(By.CSS_SELECTOR, "button[data-conv]")]

    # --- messages --------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        box = self.el("compose-input")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def messages(self) -> list[tuple[str, str]]:
        """``(class, text)`` of every message shown in the open conversation."""
        # one script call: the list is re-rendered as messages arrive
        shown = self.use().execute_script(
            "return [...document.querySelectorAll('#messages li')].map("
            "li => [li.className, li.querySelector('.text').textContent]);"
        )
        return [(str(cls), str(text)) for cls, text in shown]

    def texts(self) -> list[str]:
        return [text for _, text in self.messages()]

    def wait_texts(self, expected: list[str], timeout: float = 20.0) -> None:
        """Wait until the open conversation shows exactly ``expected`` stored messages, in order."""
        def stored(_: Any) -> bool:
            shown = [(cls, text) for cls, text in self.messages()]
            return [text for cls, text in shown if "pending" not in cls and "refused" not in cls] == expected

        try:
            self.wait(stored, f"messages {expected}", timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}; shown: {self.messages()}") from None
