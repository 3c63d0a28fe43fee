#!/usr/bin/env python3
"""A tiny goim TCP client: sign in, sync, print what arrives, optionally send one message.

It speaks the client protocol of docs/protocol.md with goim's own framing and codec
(so it runs wherever goim is installed). Credentials come from the HTTP API: a
device's id and token (POST /device) and the user the device is bound to (POST /user
or POST /user/signin); examples/two_users.sh shows the whole sequence.

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
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall, react
from twisted.python.failure import Failure

from goim.pb import goim_pb2 as pb
from goim.protocols.codec import (
    HEARTBEAT,
    KICKED,
    MESSAGE,
    MESSAGE_ACK,
    MESSAGE_SEND,
    MESSAGE_SEND_ACK,
    MESSAGE_SYNC,
    SIGN_IN,
    SIGN_IN_ACK,
    SYNC_TRIGGER,
    decode,
)
from goim.protocols.framing import decode_frames, encode_frame

SEND_CODES = {0: "ok", 1: "internal error", 2: "not a friend", 3: "not in the group", 4: "invalid message", 5: "rate limited"}
HEARTBEAT_SECONDS = 240  # what goim 1.1 clients do


class ChatClient(Protocol):
    """Prints every frame the server sends; ``done`` fires with the exit status."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.buffer = b""
        self.done: Deferred[int] = Deferred()
        self.held = args.sync_from  # highest seq printed, acknowledged with MessageACK
        self.send_sequence = args.send_sequence or int(time.time() * 1000)
        self.heartbeat = LoopingCall(self.write, HEARTBEAT, b"")
        self.sent = False

    def write(self, code: int, value: bytes) -> None:
        transport: Any = self.transport
        transport.write(encode_frame(code, value))

    def connectionMade(self) -> None:
        a = self.args
        # Like a goim 1.1 client: SignIn and SyncTrigger together, without waiting.
        self.write(SIGN_IN, pb.SignIn(device_id=a.device_id, user_id=a.user_id, token=a.token).SerializeToString())
        self.write(SYNC_TRIGGER, pb.SyncTrigger(sync_sequence=a.sync_from).SerializeToString())

    def dataReceived(self, data: bytes) -> None:
        frames, self.buffer = decode_frames(self.buffer + data)
        for code, value in frames:
            self.frameReceived(code, value)

    def frameReceived(self, code: int, value: bytes) -> None:
        if code == SIGN_IN_ACK:
            signed_in = decode(pb.SignInACK, code, value)
            if signed_in.code != 1:
                print(f"sign-in refused: {signed_in.message}", file=sys.stderr)
                self.finish(1)
                return
            print(f"signed in as user {self.args.user_id} on device {self.args.device_id}")
            self.heartbeat.start(HEARTBEAT_SECONDS, now=False)
        elif code == MESSAGE:
            message = decode(pb.Message, code, value)
            kind = "sync" if message.type == MESSAGE_SYNC else "push"
            for item in message.messages:
                self.show(kind, item)
            if message.messages:
                self.held = max(self.held, max(i.sync_sequence for i in message.messages))
                self.write(MESSAGE_ACK, pb.MessageACK(sync_sequence=self.held).SerializeToString())
            if message.type == MESSAGE_SYNC and not message.more:
                print(f"-- synced up to seq {self.held}")
                if self.args.to is not None and self.args.text is not None:
                    self.send_once()
                elif self.args.exit:
                    self.finish(0)
        elif code == MESSAGE_SEND_ACK:
            ack = decode(pb.MessageSendACK, code, value)
            outcome = SEND_CODES.get(ack.code, f"code {ack.code}")
            print(f"send {ack.send_sequence}: {outcome}" + (f", message {ack.message_id}, seq {ack.sync_sequence}" if ack.code == 0 else ""))
            if self.args.exit:
                self.finish(0 if ack.code == 0 else 2)
        elif code == KICKED:
            print(f"kicked: {decode(pb.Kicked, code, value).reason}", file=sys.stderr)

    def show(self, kind: str, item: pb.MessageItem) -> None:
        to = f"group {item.receiver_id}" if item.receiver_type == 2 else f"user {item.receiver_id}"
        mine = " (this device)" if item.sender_device_id == self.args.device_id else ""
        print(f"[{kind}] seq {item.sync_sequence} id {item.message_id} from user {item.sender_id}{mine} to {to}: {item.content}")

    def send_once(self) -> None:
        a = self.args
        if self.sent:
            return  # a later sync (there is none here) must not send again
        self.sent = True
        message = pb.MessageSend(
            receiver_type=2 if a.group else 1,
            receiver_id=a.to,
            type=1,
            content=a.text,
            send_sequence=self.send_sequence,
            send_time=int(time.time() * 1000),
        )
        self.write(MESSAGE_SEND, message.SerializeToString())

    def finish(self, status: int) -> None:
        if not self.done.called:
            self.done.callback(status)
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.heartbeat.running:
            self.heartbeat.stop()
        if not self.done.called:
            print("connection closed by the server", file=sys.stderr)
            self.done.callback(3)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A tiny goim TCP client (docs/protocol.md).")
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
    client = ChatClient(args)
    await connectProtocol(TCP4ClientEndpoint(reactor, args.host, args.port, timeout=10), client)
    status = await client.done
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
