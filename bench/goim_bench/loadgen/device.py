"""One device a load generator plays, and what its devices received of a phase."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from goim_bench.loadgen.frames import CLIENT_FRAME_BURST, CLIENT_FRAME_RATE, LATENCY_SAMPLES
from goim_bench.stats import Reservoir

if TYPE_CHECKING:
    from goim_bench.loadgen.connection import Connection



class PhaseStats:
    """What the devices of this process received of one phase's messages."""

    def __init__(self, track_messages: bool) -> None:
        self.deliveries = 0
        self.own_copies = 0
        self.peer_deliveries = 0
        self.first = 0.0
        self.last = 0.0
        self.latency = Reservoir(LATENCY_SAMPLES)
        #: message_id -> [send time, latest arrival, devices reached] (group fan-out)
        self.messages: dict[int, list[float]] | None = {} if track_messages else None
        self.buckets: dict[int, int] = {}
        #: the longest send→push latency (ms) of the messages sent in each quarter
        #: second (keys ``int(send time * 4)``): shows whether a tail is one stall
        self.worst: dict[int, float] = {}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "deliveries": self.deliveries,
            "own_copies": self.own_copies,
            "peer_deliveries": self.peer_deliveries,
            "first": self.first,
            "last": self.last,
            "latency_ms": [round(v, 3) for v in self.latency.values],
            "latency_seen": self.latency.seen,
            "buckets": self.buckets,
            "worst_ms": {k: round(v, 3) for k, v in self.worst.items()},
        }
        if self.messages is not None:
            data["messages"] = {str(k): v for k, v in self.messages.items()}
        return data


class Device:
    """One device this process plays, across its connections."""

    __slots__ = (
        "index", "device_id", "user_id", "token", "receiver_type", "receiver_id", "conn", "signed_in",
        "held", "top", "acked_top", "send_seq", "pending", "sync_waiter", "sync_items", "tokens",
        "tokens_at", "pump_scheduled", "sent_count", "heartbeats", "heartbeat_acks", "kicked",
    )  # fmt: skip

    def __init__(self, index: int, device_id: int, user_id: int, token: str, receiver_type: int, receiver_id: int):
        self.index = index
        self.device_id = device_id
        self.user_id = user_id
        self.token = token
        self.receiver_type = receiver_type
        self.receiver_id = receiver_id
        self.conn: Connection | None = None
        self.signed_in = False
        self.held: dict[int, int] = {}  # seq -> message_id, from pushes and syncs
        self.top = 0  # highest contiguous seq held
        self.acked_top = 0  # highest seq acknowledged to the server
        self.send_seq = 0
        self.pending: dict[int, list[Any]] = {}  # send_sequence -> [sent_at, value, tries]
        self.sync_waiter: Deferred[list[tuple[int, int]]] | None = None
        self.sync_items: list[tuple[int, int]] | None = None
        self.tokens = CLIENT_FRAME_BURST
        self.tokens_at = 0.0
        self.pump_scheduled = False
        self.sent_count = 0
        self.heartbeats = 0
        self.heartbeat_acks = 0
        self.kicked = ""

    def take_token(self, now: float) -> bool:
        """Client-side frame budget, so the server's rate limit never closes us."""
        tokens = min(CLIENT_FRAME_BURST, self.tokens + (now - self.tokens_at) * CLIENT_FRAME_RATE)
        self.tokens_at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True

    def hold(self, seq: int, message_id: int) -> bool:
        """Keep one received copy; returns False when it conflicts with a held one."""
        known = self.held.get(seq)
        if known is not None:
            return known == message_id
        self.held[seq] = message_id
        top = self.top
        held = self.held
        while top + 1 in held:
            top += 1
        self.top = top
        return True
