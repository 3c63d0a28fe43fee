#!/usr/bin/env python3
"""A tiny goim TCP client on the client library: sign in, sync, print what arrives,
optionally send one message.

It uses :class:`goim.client.Session` (docs/client.md), which speaks the client
protocol of docs/protocol.md: heartbeats, acks, reconnects and exactly-once sends are
the library's. Credentials come from the HTTP API: a device's id and token
(POST /device) and the user the device is bound to (POST /user or POST /user/signin);
examples/two_users.sh shows the whole sequence. ``goim-cli`` is the full client.

Examples:

    # print alice's history and then every message pushed to her, until Ctrl-C
    python examples/chat_client.py --device-id 1 --token TOKEN --user-id 1

    # send "hello" to user 2 and exit once the server has stored it
    python examples/chat_client.py --device-id 1 --token TOKEN --user-id 1 --to 2 --text hello --exit
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from goim.client import (
    RECEIVER_GROUP,
    ClientState,
    MemoryStateStore,
    SendFailed,
    Session,
    SessionObserver,
    SessionStopped,
    StoredMessage,
    tcp_connector,
)


class Printer(SessionObserver):
    """Prints what the session reports."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def connected(self) -> None:
        print(f"signed in as user {self.args.user_id} on device {self.args.device_id}", flush=True)

    def message_received(self, message: StoredMessage) -> None:
        to = f"group {message.receiver_id}" if message.receiver_type == RECEIVER_GROUP else f"user {message.receiver_id}"
        mine = " (this device)" if message.sender_device_id == self.args.device_id else ""
        print(
            f"seq {message.seq} id {message.message_id} from user {message.sender_id}{mine} to {to}: {message.content}",
            flush=True,
        )

    def synced(self, sync_sequence: int) -> None:
        print(f"-- synced up to seq {sync_sequence}", flush=True)

    def kicked(self, reason: str) -> None:
        print(f"kicked: {reason}", file=sys.stderr)

    def sign_in_refused(self, message: str) -> None:
        print(f"sign-in refused: {message}", file=sys.stderr)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A tiny goim TCP client (docs/protocol.md, docs/client.md).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50000)
    p.add_argument("--device-id", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--user-id", type=int, required=True)
    p.add_argument("--sync-from", type=int, default=0, help="highest seq already held (default 0: whole history)")
    p.add_argument("--to", type=int, help="send one message to this user (or group, with --group)")
    p.add_argument("--group", action="store_true", help="--to is a group id")
    p.add_argument("--text", help="the message to send")
    p.add_argument(
        "--send-sequence", type=int, default=0, help="the send's number (default: the time in ms; reuse it to retry)"
    )
    p.add_argument("--exit", action="store_true", help="exit once the send is ACKed (or after the sync, without --to)")
    args = p.parse_args(argv)
    if (args.to is None) != (args.text is None):
        p.error("--to and --text go together")
    return args


async def main(reactor: Any, argv: list[str]) -> None:
    args = parse_args(argv)
    # No state survives a run: the send is numbered by the clock (or --send-sequence),
    # so that a later run's send is not taken for a retry of this one.
    first = args.send_sequence or int(time.time() * 1000)
    state = ClientState(
        device_id=args.device_id, token=args.token, user_id=args.user_id, send_sequence=first - 1,
        synced_seq=args.sync_from,
    )
    session = Session(
        state=state, store=MemoryStateStore(state), connect=tcp_connector(reactor, args.host, args.port), clock=reactor
    )
    session.add_observer(Printer(args))
    session.start()
    status = 0
    try:
        await session.wait_synced()
        if args.to is not None:
            send = session.send_to_group if args.group else session.send_to_user
            try:
                ack = await send(args.to, args.text)
                print(f"send {ack.send_sequence}: ok, message {ack.message_id}, seq {ack.sync_sequence}", flush=True)
            except SendFailed as e:
                print(f"send {e.outgoing.send_sequence}: {e.reason}", flush=True)
                status = 2
        if not args.exit:
            await Deferred()  # until Ctrl-C
    except SessionStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        status = 1
    finally:
        await session.stop()
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
