"""``goim-cli chat``: an interactive line-based chat in the terminal.

Incoming messages are printed as they arrive, with sender and group names; status
lines (starting with ``*``) say when the session connects, drops and reconnects.
Commands: ``/to USER`` and ``/group GROUP`` pick where plain lines go (an id, or a
friend's number or nickname, or a group's name), ``/who`` lists friends and groups,
``/status``, ``/help`` and ``/quit``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence, cast

from twisted.internet.defer import Deferred, DeferredList, TimeoutError, succeed
from twisted.internet.protocol import connectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from goim.client.client import GoimClient
from goim.client.directory import Directory
from goim.client.errors import APIError, SendFailed, SessionStopped
from goim.client.history import message_to_json
from goim.client.session import SendAck, SessionObserver
from goim.client.state import OutgoingMessage
from goim.types import RECEIVER_GROUP, RECEIVER_USER, StoredMessage
from goim.util import Clock

log = Logger()

#: the seq a read report of "everything so far" names (the server stores the seq of
#: the conversation's last message at or below it)
READ_EVERYTHING = 2**62

#: seconds /quit waits for the ACKs of messages still in flight
QUIT_GRACE = 5.0

HELP = (
    "commands: /to USER (id, number or nickname of a friend), /group GROUP (id or name), "
    "/read (mark the current conversation read), /unread, /who, /status, /help, /quit; any other line is sent"
)


class Chat(SessionObserver):
    """The chat's logic: input lines in, display lines out; no terminal code.

    Args:
        client: a signed-in client (the chat starts and stops its session).
        directory: names for ids.
        write: prints one line.
        json_mode: print JSON objects (``{"event": ...}``) instead of text.
        address: the server address, for status lines.
        clock: time, for the grace period of ``/quit``.
    """

    def __init__(
        self,
        client: GoimClient,
        directory: Directory,
        write: Callable[[str], None],
        *,
        json_mode: bool = False,
        address: str = "",
        clock: Clock,
    ) -> None:
        self.client = client
        self.clock = clock
        self.directory = directory
        self.write = write
        self.json_mode = json_mode
        self.address = address
        self.target: tuple[int, int] | None = None
        self.done: Deferred[None] = Deferred()
        self._display: Deferred[None] = succeed(None)
        self._quitting = False
        self._sending: set[Deferred[SendAck]] = set()

    # --- output

    def status(self, text: str, **fields: Any) -> None:
        """A status line (``* text``)."""
        if self.json_mode:
            self.write(json.dumps({"event": "status", "text": text, **fields}, ensure_ascii=False))
        else:
            self.write(f"* {text}")

    def _queue_display(self, messages: Sequence[StoredMessage]) -> None:
        # Names may need an HTTP round trip; the chain keeps the display in seq order.
        async def show() -> None:
            await self.directory.ensure_for(messages)
            user_id = self.client.state.user_id
            for m in messages:
                if self.json_mode:
                    data = message_to_json(m)
                    data.update(event="message", **self.directory.describe(m, user_id=user_id))
                    self.write(json.dumps(data, ensure_ascii=False))
                else:
                    self.write(self.directory.format(m, user_id=user_id))

        def run(_: object) -> Deferred[None]:
            return Deferred.fromCoroutine(show())

        def failed(failure: Failure) -> None:
            log.failure("showing messages failed", failure)

        self._display = self._display.addCallback(run).addErrback(failed)

    # --- lifecycle

    async def start(self) -> None:
        """Load names, say hello, start the session."""
        try:
            await self.directory.refresh()
        except APIError as e:
            self.status(f"could not load contacts: {e.message}")
        me = self.directory.me
        who = f"{me.nickname} (user {me.id})" if me else f"user {self.client.state.user_id}"
        self.status(f"chat as {who}, device {self.client.state.device_id}. {HELP}")
        self.client.add_observer(self)
        self.status(f"connecting to {self.address}", status="connecting")
        self.client.start()
        await self._unread()

    async def quit(self) -> None:
        """Stop the session; fire :attr:`done`."""
        if self._quitting:
            return
        self._quitting = True
        if self._sending and self.client.session.connected:
            # Give the server a moment to answer what was just typed.
            waiting: Deferred[Any] = DeferredList(list(self._sending), consumeErrors=True)
            waiting.addTimeout(QUIT_GRACE, cast(Any, self.clock))
            try:
                await waiting
            except TimeoutError:
                pass
        await self.client.stop()
        await self._display
        self.status("bye", status="stopped")
        self.done.callback(None)

    # --- input

    def line(self, text: str) -> None:
        """Handle one input line."""
        text = text.strip()
        if not text:
            return
        if text.startswith("/"):
            command, _, argument = text.partition(" ")
            self.command(command, argument.strip())
            return
        if self.target is None:
            self.status("pick a recipient first: /to USER or /group GROUP")
            return
        receiver_type, receiver_id = self.target
        d = self.client.session.send(receiver_type, receiver_id, text)
        self._sending.add(d)

        def done(result: object) -> object:
            self._sending.discard(d)
            return result

        d.addBoth(done).addErrback(self._send_error)

    def _send_error(self, failure: Failure) -> None:
        if failure.check(SendFailed, SessionStopped) is None:
            log.failure("send failed", failure)
        elif failure.check(SessionStopped):
            self.status("not acknowledged yet; queued for the next session")

    def command(self, command: str, argument: str) -> None:
        """Handle a ``/command``."""
        if command == "/quit":
            Deferred.fromCoroutine(self.quit())
        elif command == "/to":
            user_id = self.directory.find_user(argument)
            if user_id is None:
                self.status(f"unknown user {argument!r}: use a user id, or a friend's number or nickname")
                return
            self.target = (RECEIVER_USER, user_id)
            self.status(f"talking to {self.directory.user_name(user_id)} (user {user_id})")
        elif command == "/group":
            group_id = self.directory.find_group(argument)
            if group_id is None:
                self.status(f"unknown group {argument!r}: use a group id or name")
                return
            self.target = (RECEIVER_GROUP, group_id)
            self.status(f"talking in {self.directory.group_name(group_id)} (group {group_id})")
        elif command == "/read":
            if self.target is None:
                self.status("pick a conversation first: /to USER or /group GROUP")
                return
            Deferred.fromCoroutine(self._read(*self.target))
        elif command == "/unread":
            Deferred.fromCoroutine(self._unread())
        elif command == "/who":
            Deferred.fromCoroutine(self._who())
        elif command == "/status":
            session = self.client.session
            self.status(
                f"{session.status.value}; holding messages up to seq {session.synced_seq}, "
                f"{len(session.pending)} unsent",
                status=session.status.name.lower(),
            )
        elif command == "/help":
            self.status(HELP)
        else:
            self.status(f"unknown command {command}. {HELP}")

    async def _unread(self) -> None:
        """Status lines with the unread count of each conversation that has some."""
        try:
            conversations, _ = await self.client.api.conversations(limit=100)
        except APIError as e:
            self.status(f"could not load unread counts: {e.message}")
            return
        unread = [c for c in conversations if c.unread]
        for c in unread:
            name = self.directory.group_name(c.id) if c.type == RECEIVER_GROUP else self.directory.user_name(c.id)
            self.status(f"{c.unread} unread from {name}", unread=c.unread, conversation_type=c.type, conversation_id=c.id)
        if not unread:
            self.status("no unread messages", unread=0)

    async def _read(self, conversation_type: int, conversation_id: int) -> None:
        """Report the conversation read up to everything held (the server stops at its last message)."""
        try:
            seq = await self.client.api.read(conversation_type, conversation_id, READ_EVERYTHING)
        except APIError as e:
            self.status(f"could not report the read: {e.message}")
            return
        self.status(f"read up to #{seq}", read_seq=seq)

    async def _who(self) -> None:
        try:
            await self.directory.refresh()
        except APIError as e:
            self.status(f"could not load contacts: {e.message}")
            return
        for c in self.directory.friends:
            self.status(f"friend {c.user_id}: {c.nickname} ({c.number})")
        for g in self.directory.groups.values():
            self.status(f"group {g.id}: {g.name} ({len(g.users)} members)")

    # --- SessionObserver

    def messages_received(self, messages: Sequence[StoredMessage]) -> None:
        """Show new messages."""
        self._queue_display(messages)

    def send_failed(self, message: OutgoingMessage, code: int) -> None:
        """Say that a message was refused."""
        failure = SendFailed(code, message)
        self.status(f"not delivered: {failure.reason}: {message.content!r}", code=code)

    def send_acked(self, message: OutgoingMessage, ack: SendAck) -> None:
        """Nothing to show: the message itself appears as the device's own copy."""

    def connected(self) -> None:
        """Status line."""
        self.status(f"connected to {self.address}", status="connected")

    def reconnecting(self, delay: float, reason: str) -> None:
        """Status line."""
        self.status(f"disconnected ({reason}); reconnecting in {delay:.1f} s", status="reconnecting", delay=delay)

    def kicked(self, reason: str) -> None:
        """Status line; the session does not reconnect."""
        self.status(f"kicked: {reason}; not reconnecting (/quit)", status="kicked")

    def sign_in_refused(self, message: str) -> None:
        """Status line; the session does not reconnect."""
        self.status(f"sign-in refused: {message}; run goim-cli login again (/quit)", status="refused")

    def history_trimmed(self) -> None:
        """Status line: older messages were deleted on the server (retention)."""
        self.status("older messages are no longer available on the server (history trimmed)", status="trimmed")


class TerminalInput(LineReceiver):
    """Standard input and output of the chat."""

    delimiter = b"\n"

    def __init__(self, on_line: Callable[[str], None], on_close: Callable[[], None]) -> None:
        self.on_line = on_line
        self.on_close = on_close

    def lineReceived(self, line: bytes) -> None:
        """One input line."""
        self.on_line(line.decode("utf-8", "replace").rstrip("\r"))

    def write_line(self, text: str) -> None:
        """Print one line."""
        transport: Any = self.transport
        if transport is not None:
            transport.write(text.encode("utf-8") + b"\n")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Standard input closed: quit."""
        self.on_close()


async def run_chat(reactor: Any, client: GoimClient, directory: Directory, *, json_mode: bool, address: str) -> None:
    """Run the chat on standard input and output until ``/quit`` or end of input."""
    lines: list[str] = []
    terminal: TerminalInput | None = None

    def write(text: str) -> None:
        if terminal is not None:
            terminal.write_line(text)
        else:
            lines.append(text)

    chat = Chat(client, directory, write, json_mode=json_mode, address=address, clock=reactor)
    def input_closed() -> None:
        Deferred.fromCoroutine(chat.quit())

    terminal = TerminalInput(chat.line, input_closed)
    StandardIO(terminal, reactor=reactor)
    await chat.start()
    await chat.done
    transport: Any = terminal.transport
    if transport is not None:
        transport.loseConnection()
