"""``goim-cli``: a terminal client for goim.

Every command works on a *profile*: one device, its state and its local message log,
under ``$XDG_CONFIG_HOME/goim/PROFILE/`` (``~/.config/goim/default/`` by default).
Commands that talk over TCP (``send``, ``history``, ``chat``) and the ones that
change the state lock the profile, so two processes never run one device at once.
See docs/client.md for a walkthrough.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, NoReturn, Sequence, TextIO, TypeVar

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeoutError
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from goim import __version__
from goim.features import Feature
from goim.client.api import Contact, Group
from goim.client.client import GoimClient
from goim.client.directory import Directory
from goim.client.errors import APIError, GoimClientError, SendFailed
from goim.client.history import MessageLog, message_to_json
from goim.client.session import SendAck, SessionConfig, failover_connector
from goim.client.state import JSONStateStore, ProfileLock
from goim.types import RECEIVER_GROUP, RECEIVER_USER

T = TypeVar("T")

DEFAULT_HTTP = "http://127.0.0.1:8080"
DEFAULT_TCP = "127.0.0.1:50000"
DEFAULT_PROFILE = "default"
DEFAULT_TIMEOUT = 30.0

_PROFILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class CommandError(Exception):
    """A command cannot be carried out; the text is shown to the user."""


def parse_tcp(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port)``.

    Raises:
        argparse.ArgumentTypeError: not of that form.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def parse_tcp_list(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]``: one or more connect nodes, in the order to try.

    Raises:
        argparse.ArgumentTypeError: an item is not ``HOST:PORT``.
    """
    return [parse_tcp(item.strip()) for item in text.split(",")]


def format_tcp(addresses: Sequence[tuple[str, int]]) -> str:
    """The addresses as ``--tcp`` takes them."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)


def profile_name(text: str) -> str:
    """Check a profile name (it becomes a directory name).

    Raises:
        argparse.ArgumentTypeError: a name with a path separator or a leading dot.
    """
    if not _PROFILE_NAME.match(text):
        raise argparse.ArgumentTypeError(f"invalid profile name {text!r}: use letters, digits, '_', '-' and '.'")
    return text


@dataclass(frozen=True)
class Profile:
    """Where a profile's files live."""

    name: str
    directory: Path

    @classmethod
    def locate(cls, name: str, environ: dict[str, str] | None = None) -> Profile:
        """The profile ``name`` under ``$XDG_CONFIG_HOME/goim`` (default ``~/.config/goim``)."""
        env = os.environ if environ is None else environ
        base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return cls(name, Path(base) / "goim" / name)

    @property
    def state_path(self) -> Path:
        """The device state (JSON)."""
        return self.directory / "state.json"

    @property
    def log_path(self) -> Path:
        """The message log (JSON lines)."""
        return self.directory / "messages.jsonl"

    @property
    def lock_path(self) -> Path:
        """The lock file."""
        return self.directory / "lock"


class Output:
    """Prints results as text, or as one JSON object per line with ``--json``."""

    def __init__(self, *, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def result(self, data: dict[str, Any], text: str) -> None:
        """One result: ``data`` as JSON, or ``text``."""
        self.stdout.write((json.dumps(data, ensure_ascii=False) if self.json_mode else text) + "\n")
        self.stdout.flush()

    def error(self, message: str, code: int | None = None, *, kind: str | None = None) -> None:
        """An error on stderr.

        With ``--json`` it is one object ``{"error": TEXT, "code": N, "kind": K}``:
        ``kind`` ``"http"`` for an HTTP API envelope code (docs/http-api.md), ``"send"``
        for a MessageSendACK code (docs/protocol.md); errors goim-cli finds itself
        (no server answer, a timeout, a profile problem) have ``"code": null`` and
        ``"kind": "client"``.
        """
        if kind is None:
            kind = "client" if code is None else "http"
        if self.json_mode:
            data: dict[str, Any] = {"error": message, "code": code, "kind": kind}
            self.stderr.write(json.dumps(data, ensure_ascii=False) + "\n")
        else:
            self.stderr.write(f"goim-cli: {message}" + (f" (code {code})" if code is not None else "") + "\n")
        self.stderr.flush()


class Context:
    """What a command needs: options, reactor, output, profile and (lazily) a client."""

    def __init__(self, args: argparse.Namespace, reactor: Any, out: Output) -> None:
        self.args = args
        self.reactor = reactor
        self.out = out
        self.profile = Profile.locate(args.profile)
        self.lock = ProfileLock(self.profile.lock_path)
        self.log = MessageLog(self.profile.log_path)
        self._client: GoimClient | None = None

    @property
    def client(self) -> GoimClient:
        """The profile's client (state loaded on first use)."""
        if self._client is None:
            self._client = GoimClient(
                reactor=self.reactor,
                http_url=self.args.http,
                store=JSONStateStore(self.profile.state_path),
                connect=failover_connector(self.reactor, self.args.tcp),
                config=SessionConfig(features=int(Feature.EVENTS)),
            )
            self._client.add_observer(self.log)
        return self._client

    def require_user(self) -> GoimClient:
        """The client, which must be signed in."""
        client = self.client
        if not client.state.signed_in:
            raise CommandError(
                f"profile {self.profile.name!r} is not signed in: run 'goim-cli --profile {self.profile.name} "
                "register' or 'login' first"
            )
        return client

    def directory(self) -> Directory:
        """Names for ids, fetched over HTTP."""
        return Directory(self.client.api, self.reactor)

    async def close(self) -> None:
        """Stop the session, close HTTP connections, release the profile."""
        if self._client is not None:
            await self._client.close()
        self.lock.release()

    async def within_timeout(self, work: Awaitable[T], what: str) -> T:
        """Wait for ``work`` at most ``--timeout`` seconds.

        Raises:
            CommandError: it took longer.
        """
        d: Deferred[T] = Deferred.fromCoroutine(_await(work))
        d.addTimeout(self.args.timeout, self.reactor)
        try:
            return await d
        except DeferredTimeoutError:
            last = self.client.session.last_error
            raise CommandError(
                f"timed out after {self.args.timeout:g} s {what}" + (f" (last error: {last})" if last else "")
            ) from None


async def _await(work: Awaitable[T]) -> T:
    return await work


# --- output helpers -------------------------------------------------------------------


def contact_json(c: Contact) -> dict[str, Any]:
    """A friend or member as JSON."""
    return {
        "user_id": c.user_id,
        "label": c.label,
        "number": c.number,
        "nickname": c.nickname,
        "sex": c.sex,
        "avatar": c.avatar,
    }


def group_json(g: Group) -> dict[str, Any]:
    """A group as JSON."""
    return {"id": g.id, "name": g.name, "owner_id": g.owner_id, "users": [contact_json(u) for u in g.users]}


def _ack_json(ack: SendAck) -> dict[str, Any]:
    return {"message_id": ack.message_id, "send_sequence": ack.send_sequence, "sync_sequence": ack.sync_sequence}


# --- commands ------------------------------------------------------------------------------


async def cmd_register(ctx: Context) -> None:
    """``register NUMBER NICKNAME --password P``."""
    ctx.lock.acquire()
    a = ctx.args
    session = await ctx.client.register(a.number, a.nickname, a.password)
    device_id = ctx.client.state.device_id
    ctx.out.result(
        {"user_id": session.user_id, "device_id": device_id, "number": a.number, "nickname": a.nickname},
        f"registered {a.nickname} ({a.number}) as user {session.user_id} on device {device_id}",
    )


async def cmd_login(ctx: Context) -> None:
    """``login NUMBER --password P``."""
    ctx.lock.acquire()
    a = ctx.args
    session = await ctx.client.login(a.number, a.password)
    device_id = ctx.client.state.device_id
    ctx.out.result(
        {"user_id": session.user_id, "device_id": device_id, "number": a.number},
        f"signed in as user {session.user_id} ({a.number}) on device {device_id}",
    )


async def cmd_whoami(ctx: Context) -> None:
    """``whoami``: the user, device and sequences of the profile."""
    client = ctx.require_user()
    info = await client.api.user_info()
    state = client.state
    ctx.out.result(
        {
            "profile": ctx.profile.name,
            "user_id": info.id,
            "number": info.number,
            "nickname": info.nickname,
            "sex": info.sex,
            "avatar": info.avatar,
            "device_id": state.device_id,
            "synced_seq": state.synced_seq,
            "send_sequence": state.send_sequence,
            "pending": len(state.pending),
        },
        f"{info.nickname} ({info.number}), user {info.id}, device {state.device_id}, profile {ctx.profile.name}; "
        f"holds messages up to seq {state.synced_seq}, {len(state.pending)} unsent",
    )


async def cmd_friends(ctx: Context) -> None:
    """``friends``."""
    friends = await ctx.require_user().api.friends()
    if not friends and not ctx.out.json_mode:
        ctx.out.result({}, "no friends yet")
    for c in friends:
        label = f"  [{c.label}]" if c.label else ""
        ctx.out.result(contact_json(c), f"{c.user_id:>6}  {c.nickname} ({c.number}){label}")


async def cmd_friend_add(ctx: Context) -> None:
    """``friend add USER_ID [--label L]``."""
    await ctx.require_user().api.add_friend(ctx.args.user_id, ctx.args.label)
    ctx.out.result({"ok": True, "friend_id": ctx.args.user_id}, f"user {ctx.args.user_id} is now a friend")


async def cmd_friend_rm(ctx: Context) -> None:
    """``friend rm USER_ID``."""
    await ctx.require_user().api.delete_friend(ctx.args.user_id)
    ctx.out.result({"ok": True, "friend_id": ctx.args.user_id}, f"user {ctx.args.user_id} is no longer a friend")


def _group_line(g: Group) -> str:
    members = ", ".join(u.nickname for u in g.users)
    return f"{g.id:>6}  {g.name}  ({len(g.users)} members: {members})"


async def cmd_groups(ctx: Context) -> None:
    """``groups``."""
    groups = await ctx.require_user().api.groups()
    if not groups and not ctx.out.json_mode:
        ctx.out.result({}, "no groups yet")
    for g in groups:
        ctx.out.result(group_json(g), _group_line(g))


async def cmd_group_create(ctx: Context) -> None:
    """``group create NAME [USER_ID...]``."""
    group_id = await ctx.require_user().api.create_group(ctx.args.name, ctx.args.user_ids)
    ctx.out.result({"group_id": group_id, "name": ctx.args.name}, f"created group {ctx.args.name} with id {group_id}")


async def cmd_group_add(ctx: Context) -> None:
    """``group add GID USER_ID...``."""
    await ctx.require_user().api.add_members(ctx.args.group_id, ctx.args.user_ids)
    ids = " ".join(str(u) for u in ctx.args.user_ids)
    ctx.out.result({"ok": True, "group_id": ctx.args.group_id, "user_ids": ctx.args.user_ids}, f"added {ids} to group {ctx.args.group_id}")


async def cmd_group_rm(ctx: Context) -> None:
    """``group rm GID USER_ID...``."""
    await ctx.require_user().api.remove_members(ctx.args.group_id, ctx.args.user_ids)
    ids = " ".join(str(u) for u in ctx.args.user_ids)
    ctx.out.result(
        {"ok": True, "group_id": ctx.args.group_id, "user_ids": ctx.args.user_ids},
        f"removed {ids} from group {ctx.args.group_id}",
    )


async def cmd_group_show(ctx: Context) -> None:
    """``group show GID``."""
    g = await ctx.require_user().api.group(ctx.args.group_id)
    if ctx.out.json_mode:
        ctx.out.result(group_json(g), "")
        return
    lines = [f"group {g.id}: {g.name} (owner: user {g.owner_id})"]
    for u in g.users:
        owner = "  (owner)" if u.user_id == g.owner_id else ""
        label = f"  [{u.label}]" if u.label else ""
        lines.append(f"{u.user_id:>6}  {u.nickname} ({u.number}){label}{owner}")
    ctx.out.result({}, "\n".join(lines))


async def cmd_send(ctx: Context) -> None:
    """``send user USER_ID TEXT`` / ``send group GID TEXT``: returns after the server's ACK."""
    client = ctx.require_user()
    ctx.lock.acquire()
    receiver_type = RECEIVER_USER if ctx.args.kind == "user" else RECEIVER_GROUP
    text = " ".join(ctx.args.text)
    client.start()
    ack = await ctx.within_timeout(
        client.session.send(receiver_type, ctx.args.receiver_id, text),
        "waiting for the server's ACK (the message stays queued: the next session of this profile sends it)",
    )
    ctx.out.result(
        _ack_json(ack),
        f"sent: message {ack.message_id} (send_sequence {ack.send_sequence}, seq {ack.sync_sequence})",
    )


async def cmd_history(ctx: Context) -> None:
    """``history [--since SEQ]``: sync, then print the messages held, each once."""
    client = ctx.require_user()
    ctx.lock.acquire()
    client.start()
    synced = client.session.wait_synced()
    await ctx.within_timeout(synced, "waiting for the sync")
    await client.stop()
    messages = ctx.log.messages(user_id=client.state.user_id, since=ctx.args.since)
    if ctx.out.json_mode:
        for m in messages:
            ctx.out.result(message_to_json(m), "")
        return
    directory = ctx.directory()
    await directory.ensure_for(messages)
    if not messages:
        ctx.out.result({}, "no messages")
    for m in messages:
        ctx.out.result({}, f"#{m.seq:<5} " + directory.format(m, user_id=client.state.user_id))


async def cmd_read(ctx: Context) -> None:
    """``read user|group ID [--seq SEQ]``: report the conversation read (default: all of it)."""
    from goim.client.chat import READ_EVERYTHING

    client = ctx.require_user()
    conversation_type = RECEIVER_USER if ctx.args.kind == "user" else RECEIVER_GROUP
    seq = ctx.args.seq if ctx.args.seq is not None else READ_EVERYTHING
    read_seq = await ctx.within_timeout(
        client.api.read(conversation_type, ctx.args.conversation_id, seq), "waiting for the server"
    )
    ctx.out.result({"read_seq": read_seq}, f"read up to #{read_seq}")


async def cmd_recall(ctx: Context) -> None:
    """``recall MESSAGE_ID``."""
    client = ctx.require_user()
    await ctx.within_timeout(client.api.recall(ctx.args.message_id), "waiting for the server")
    ctx.out.result({"message_id": ctx.args.message_id}, f"recalled message {ctx.args.message_id}")


async def cmd_edit(ctx: Context) -> None:
    """``edit MESSAGE_ID TEXT``."""
    client = ctx.require_user()
    text = " ".join(ctx.args.text)
    await ctx.within_timeout(client.api.edit(ctx.args.message_id, text), "waiting for the server")
    ctx.out.result({"message_id": ctx.args.message_id, "content": text}, f"edited message {ctx.args.message_id}")


async def cmd_reads(ctx: Context) -> None:
    """``reads MESSAGE_ID``: the read count of a group message."""
    client = ctx.require_user()
    count = await ctx.within_timeout(client.api.read_count(ctx.args.message_id), "waiting for the server")
    ctx.out.result({"message_id": ctx.args.message_id, "read_count": count}, f"read by {count}")


async def cmd_conversations(ctx: Context) -> None:
    """``conversations [--limit N] [--cursor C]``: the chat list with unread counts."""
    client = ctx.require_user()
    page, next_cursor = await ctx.within_timeout(
        client.api.conversations(cursor=ctx.args.cursor, limit=ctx.args.limit), "waiting for the server"
    )
    directory = ctx.directory()
    if not ctx.out.json_mode:
        await directory.refresh()
    for c in page:
        data = {
            "conversation_type": c.type,
            "conversation_id": c.id,
            "unread": c.unread,
            "read_seq": c.read_seq,
            "last_message_id": c.last_message_id,
            "last_content": c.last_content,
            "last_recalled": c.last_recalled,
        }
        if ctx.out.json_mode:
            ctx.out.result(data, "")
            continue
        name = f"[{directory.group_name(c.id)}]" if c.type == RECEIVER_GROUP else directory.user_name(c.id)
        last = "(recalled)" if c.last_recalled else c.last_content
        ctx.out.result({}, f"{name}: {c.unread} unread; last: {last}")
    if not page and not ctx.out.json_mode:
        ctx.out.result({}, "no conversations")
    if next_cursor is not None and not ctx.out.json_mode:
        ctx.out.result({}, f"more: --cursor {next_cursor}")


async def cmd_chat(ctx: Context) -> None:
    """``chat``: the interactive terminal chat."""
    from goim.client.chat import run_chat

    client = ctx.require_user()
    ctx.lock.acquire()
    await run_chat(ctx.reactor, client, ctx.directory(), json_mode=ctx.out.json_mode, address=format_tcp(ctx.args.tcp))


# --- parsing ---------------------------------------------------------------------------------


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--http", metavar="URL", default=default(DEFAULT_HTTP), help=f"HTTP API base URL (default {DEFAULT_HTTP})")
    parser.add_argument(
        "--tcp", metavar="HOST:PORT[,HOST:PORT...]", type=parse_tcp_list, default=default(parse_tcp_list(DEFAULT_TCP)),
        help=f"connect node address(es); with several, reconnects go round them in turn (default {DEFAULT_TCP})",
    )
    parser.add_argument(
        "--profile", metavar="NAME", type=profile_name, default=default(DEFAULT_PROFILE),
        help="profile (device) to use; state under $XDG_CONFIG_HOME/goim/NAME (default: default)",
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="machine-readable output: one JSON object per line")
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=default(DEFAULT_TIMEOUT),
        help=f"how long send and history wait for the server (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("-v", "--verbose", action="count", default=default(0), help="log to stderr (twice: debug)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of goim-cli (global options are accepted after the command too)."""
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)
    parser = argparse.ArgumentParser(prog="goim-cli", description="A terminal client for goim.")
    parser.add_argument("--version", action="version", version=f"goim-cli {__version__}", help="print the version and exit")
    _common_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, help="what to do")

    def command(parent: Any, name: str, handler: Callable[[Context], Awaitable[None]], help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = command(commands, "register", cmd_register, "register a user (and this profile's device)")
    p.add_argument("number", help="the new user's sign-in name (phone number, e-mail, handle), unique")
    p.add_argument("nickname", help="the name others see")
    p.add_argument("--password", required=True, help="6 to 128 characters")
    p = command(commands, "login", cmd_login, "sign in an existing user on this profile's device")
    p.add_argument("number", help="the user's sign-in name")
    p.add_argument("--password", required=True, help="the user's password")
    command(commands, "whoami", cmd_whoami, "show the signed-in user")
    command(commands, "friends", cmd_friends, "list friends")

    friend = commands.add_parser("friend", help="add or remove a friend").add_subparsers(
        dest="friend_command", metavar="ACTION", required=True, help="add or rm"
    )
    p = command(friend, "add", cmd_friend_add, "befriend a user (both ways)")
    p.add_argument("user_id", type=int, metavar="USER_ID", help="the other user's id")
    p.add_argument("--label", default="", help="your own name for the friend (default: none)")
    p = command(friend, "rm", cmd_friend_rm, "remove a friend (both ways)")
    p.add_argument("user_id", type=int, metavar="USER_ID", help="the friend's user id")

    command(commands, "groups", cmd_groups, "list your groups")
    group = commands.add_parser("group", help="create, change or show a group").add_subparsers(
        dest="group_command", metavar="ACTION", required=True, help="create, add, rm or show"
    )
    p = command(group, "create", cmd_group_create, "create a group (you own it and are a member)")
    p.add_argument("name", help="the group's name")
    p.add_argument("user_ids", type=int, nargs="*", metavar="USER_ID", help="members to add besides you")
    p = command(group, "add", cmd_group_add, "add members to a group")
    p.add_argument("group_id", type=int, metavar="GID", help="the group's id")
    p.add_argument("user_ids", type=int, nargs="+", metavar="USER_ID", help="users to add")
    p = command(group, "rm", cmd_group_rm, "remove members from a group")
    p.add_argument("group_id", type=int, metavar="GID", help="the group's id")
    p.add_argument("user_ids", type=int, nargs="+", metavar="USER_ID", help="members to remove (only the owner removes others)")
    p = command(group, "show", cmd_group_show, "show a group and its members")
    p.add_argument("group_id", type=int, metavar="GID", help="the group's id")

    send = commands.add_parser("send", help="send a message and wait for the server's ACK").add_subparsers(
        dest="kind", metavar="user|group", required=True, help="to a user or to a group"
    )
    p = command(send, "user", cmd_send, "send a message to a user (a friend)")
    p.add_argument("receiver_id", type=int, metavar="USER_ID", help="the friend's user id")
    p.add_argument("text", nargs="+", metavar="TEXT", help="the message (several words are joined by spaces)")
    p = command(send, "group", cmd_send, "send a message to a group")
    p.add_argument("receiver_id", type=int, metavar="GID", help="the group's id")
    p.add_argument("text", nargs="+", metavar="TEXT", help="the message (several words are joined by spaces)")

    p = command(commands, "history", cmd_history, "sync and print the messages held, each once")
    p.add_argument("--since", type=int, default=0, metavar="SEQ", help="only messages after this seq")
    command(commands, "chat", cmd_chat, "interactive chat: /to USER_ID, /group GID, /read, /unread, /quit")

    read = commands.add_parser("read", help="report a conversation read").add_subparsers(
        dest="kind", metavar="user|group", required=True, help="a conversation with a user or a group"
    )
    for kind, metavar in (("user", "USER_ID"), ("group", "GID")):
        p = command(read, kind, cmd_read, f"report the conversation with a {kind} read")
        p.add_argument("conversation_id", type=int, metavar=metavar, help=f"the {kind}'s id")
        p.add_argument("--seq", type=int, default=None, metavar="SEQ", help="read up to this seq of yours (default: everything)")
    p = command(commands, "recall", cmd_recall, "recall a message you sent (within the server's recall window)")
    p.add_argument("message_id", type=int, metavar="MESSAGE_ID", help="the message's id")
    p = command(commands, "edit", cmd_edit, "edit a message you sent (within the server's edit window)")
    p.add_argument("message_id", type=int, metavar="MESSAGE_ID", help="the message's id")
    p.add_argument("text", nargs="+", metavar="TEXT", help="the new content (several words are joined by spaces)")
    p = command(commands, "reads", cmd_reads, "how many members read a group message")
    p.add_argument("message_id", type=int, metavar="MESSAGE_ID", help="the message's id")
    p = command(commands, "conversations", cmd_conversations, "the chat list: unread counts and last messages")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="conversations per page (1-100, default 20)")
    p.add_argument("--cursor", default="", metavar="C", help="the next page's cursor, as printed")
    return parser


def _start_logging(verbosity: int) -> None:
    level = {0: LogLevel.critical, 1: LogLevel.info}.get(verbosity, LogLevel.debug)
    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=level)
    text: Any = textFileLogObserver(sys.stderr)
    observer: Any = FilteringLogObserver(text, [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


async def run(reactor: Any, argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and run the command; failures end in ``SystemExit`` with a non-zero code."""
    args = build_parser().parse_args(argv)
    _start_logging(args.verbose)
    out = Output(json_mode=args.json)
    ctx = Context(args, reactor, out)
    code = 0
    try:
        await args.handler(ctx)
    except APIError as e:
        out.error(e.message, e.code, kind="http")
        code = 1
    except SendFailed as e:
        out.error(str(e), e.code, kind="send")
        code = 1
    except (CommandError, GoimClientError) as e:
        out.error(str(e))
        code = 1
    finally:
        await ctx.close()
    if code:
        raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``goim-cli`` console script."""
    react(run, (argv,))


if __name__ == "__main__":
    main()
