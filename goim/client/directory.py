"""Names for ids: who a user id is and what a group id is called, for display."""

from __future__ import annotations

import datetime
from typing import Any, Iterable

from twisted.logger import Logger

from goim.client.api import HTTPAPI, Contact, Group, UserInfo
from goim.client.errors import APIError
from goim.types import KIND_EDIT, KIND_READ, KIND_RECALL, RECEIVER_GROUP, SENDER_SYSTEM, StoredMessage
from goim.util import Clock

log = Logger()


class Directory:
    """Nicknames of friends and group members and names of groups, fetched over HTTP.

    Args:
        api: the HTTP API, authenticated as the device.
        clock: time, to refresh at most every ``refresh_interval`` seconds.
        refresh_interval: the shortest time between two refreshes for unknown ids.
    """

    def __init__(self, api: HTTPAPI, clock: Clock, *, refresh_interval: float = 10.0) -> None:
        self.api = api
        self.clock = clock
        self.refresh_interval = refresh_interval
        self.me: UserInfo | None = None
        self.users: dict[int, str] = {}
        self.numbers: dict[int, str] = {}
        self.friends: list[Contact] = []
        self.groups: dict[int, Group] = {}
        self._refreshed_at: float | None = None

    async def refresh(self) -> None:
        """Fetch the user, the friends and the groups (with their members).

        Raises:
            APIError: a request failed.
        """
        self._refreshed_at = self.clock.seconds()
        me = await self.api.user_info()
        friends = await self.api.friends()
        groups = await self.api.groups()
        self.me = me
        self.friends = friends
        self.groups = {g.id: g for g in groups}
        self.users[me.id] = me.nickname
        self.numbers[me.id] = me.number
        for contact in [*friends, *(u for g in groups for u in g.users)]:
            self.users[contact.user_id] = contact.nickname
            self.numbers[contact.user_id] = contact.number

    async def ensure(self, *, user_ids: Iterable[int] = (), group_ids: Iterable[int] = ()) -> None:
        """Refresh when an id is unknown, unless a refresh happened very recently. Never raises."""
        unknown = any(u not in self.users for u in user_ids) or any(g not in self.groups for g in group_ids)
        if not unknown:
            return
        if self._refreshed_at is not None and self.clock.seconds() - self._refreshed_at < self.refresh_interval:
            return
        try:
            await self.refresh()
        except APIError as e:
            log.info("could not refresh names: {error}", error=str(e))

    async def ensure_for(self, messages: Iterable[StoredMessage]) -> None:
        """:meth:`ensure` for everything the messages mention."""
        users: set[int] = set()
        groups: set[int] = set()
        for m in messages:
            users.add(m.sender_id)
            if m.receiver_type == RECEIVER_GROUP:
                groups.add(m.receiver_id)
            else:
                users.add(m.receiver_id)
        await self.ensure(user_ids=users, group_ids=groups)

    @property
    def my_id(self) -> int:
        """The signed-in user's id (0 before the first refresh)."""
        return self.me.id if self.me else 0

    def user_name(self, user_id: int) -> str:
        """A user's nickname, or ``user N``."""
        return self.users.get(user_id) or f"user {user_id}"

    def group_name(self, group_id: int) -> str:
        """A group's name, or ``group N``."""
        group = self.groups.get(group_id)
        return group.name if group and group.name else f"group {group_id}"

    def find_user(self, text: str) -> int | None:
        """A user id from an id, or a friend's number or nickname."""
        if text.isdigit():
            return int(text)
        for contact in self.friends:
            if text in (contact.number, contact.nickname):
                return contact.user_id
        return None

    def find_group(self, text: str) -> int | None:
        """A group id from an id or a group's name."""
        if text.isdigit():
            return int(text)
        for group in self.groups.values():
            if group.name == text:
                return group.id
        return None

    def describe(self, message: StoredMessage, *, user_id: int) -> dict[str, Any]:
        """Display fields of a message for ``user_id``: time, sender, conversation, text."""
        when = datetime.datetime.fromtimestamp(message.send_time / 1000).strftime("%H:%M:%S")
        mine = message.sender_id == user_id and message.sender_type != SENDER_SYSTEM
        if message.sender_type == SENDER_SYSTEM:
            sender = "system"
        else:
            sender = "me" if mine else self.user_name(message.sender_id)
        text = message.content
        if message.kind == KIND_READ:
            text = f"(read up to #{message.ref_seq})"
        elif message.kind == KIND_RECALL or message.recalled:
            text = f"(recalled message {message.message_id})"
        elif message.kind == KIND_EDIT:
            text = f"(edited message {message.message_id}) {message.content}"
        elif message.edited_at:
            text = f"{message.content} (edited)"
        if message.receiver_type == RECEIVER_GROUP:
            conversation = f"[{self.group_name(message.receiver_id)}]"
            line = f"{when} {conversation} {sender}: {text}"
        else:
            receiver = "me" if message.receiver_id == user_id else self.user_name(message.receiver_id)
            line = f"{when} {sender} → {receiver}: {text}"
        return {"time": when, "sender": sender, "line": line}

    def format(self, message: StoredMessage, *, user_id: int) -> str:
        """One display line for a message."""
        return str(self.describe(message, user_id=user_id)["line"])
