"""What the soak records: every send and its attempts, every connection and what
it received, every fault. The checker judges this history at the end.

Time in the history is an event counter (:meth:`History.tick`), not the clock:
it orders writes and ACK receipts of all clients in this one process exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Attempt:
    """One write of a MessageSend on one connection."""

    conn: int  # Conn.serial
    index: int  # position among the sends written on that connection
    written_at: int  # History.tick()
    code: int | None = None  # the MessageSendACK code; None: never answered
    message_id: int = 0
    seq: int = 0
    answered_at: int = 0  # History.tick() of the ACK


@dataclass
class Send:
    """One logical send: a device's (epoch, send_sequence), retried as needed."""

    device_id: int
    user_id: int
    epoch: int  # the client's epoch counter (HTTP sign-ins of the device)
    send_sequence: int
    receiver_type: int
    receiver_id: int
    content: str  # unique in the whole run: identifies the send in the database
    recipients: frozenset[int]
    attempts: list[Attempt] = field(default_factory=list)
    abandoned: bool = False  # unanswered when its epoch ended (HTTP sign-in)

    @property
    def acked(self) -> Attempt | None:
        """The first attempt answered with code 0, if any."""
        for attempt in self.attempts:
            if attempt.code == 0:
                return attempt
        return None

    @property
    def clean(self) -> bool:
        """Written once and answered 0 on that connection."""
        return len(self.attempts) == 1 and self.attempts[0].code == 0

    def describe(self) -> str:
        tries = ", ".join(
            f"conn {a.conn}#{a.index}:{'-' if a.code is None else a.code}" for a in self.attempts
        )
        return f"send {self.content!r} (device {self.device_id} to {self.receiver_type}:{self.receiver_id}; attempts {tries})"


@dataclass
class Conn:
    """One client TCP connection."""

    serial: int
    device_id: int
    user_id: int
    node: str  # c1 / c2
    opened_at: float  # wall clock (for matching faults and logs)
    local_port: int = 0
    signin_at: int = 0  # tick of the SignIn write
    signin_code: int | None = None
    signed_in_at: int = 0
    base: int | None = None  # sync_sequence of its first SyncTrigger
    received: dict[int, int] = field(default_factory=dict)  # seq -> message_id (push, sync or catch-up)
    pushes: int = 0
    kicked: list[str] = field(default_factory=list)
    closed_at: float | None = None
    closed_tick: int = 0
    closed_by_client: str = ""  # why the client closed it (empty: the server or the network did)
    superseded: bool = False  # the device signed in again elsewhere (a kick is expected)

    @property
    def signed_in(self) -> bool:
        return self.signin_code == 1


@dataclass
class Fault:
    """One injected fault, as printed."""

    at: float  # seconds since the faults started
    wall: float  # time.time() when it began
    action: str  # kill / pause / mysql-kill
    target: str
    duration: float
    end_wall: float = 0.0


class History:
    """Everything the clients and the fault schedule saw."""

    def __init__(self) -> None:
        self._tick = 0
        self.sends: list[Send] = []
        self.conns: list[Conn] = []
        self.faults: list[Fault] = []
        # violations seen live (e.g. one seq carrying two different messages)
        self.live_violations: list[tuple[str, str]] = []
        self.notes: list[str] = []
        # devices' HTTP sign-ins: device -> ticks while one was in flight (start, retries, end)
        self.http_signins: dict[int, list[int]] = {}
        # devices' TCP sign-in writes: device -> ticks
        self.tcp_signins: dict[int, list[int]] = {}

    def tick(self) -> int:
        self._tick += 1
        return self._tick

    def new_conn(self, device_id: int, user_id: int, node: str) -> Conn:
        conn = Conn(len(self.conns), device_id, user_id, node, time.time())
        self.conns.append(conn)
        return conn

    def violation(self, prop: str, evidence: str) -> None:
        self.live_violations.append((prop, evidence))
