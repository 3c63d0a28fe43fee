"""The load generator's frames and message stamps.

Frames are built with goim's wire codec (``goim.protocols.codec``), the same one
the server and the client library use; the load generator plays a goim 1.1
client, so SignIn announces no ``max_frame`` and no features.
"""

from __future__ import annotations

import time

from goim.protocols import codec
from goim.types import SendCode

#: the server closes a connection past 2,000 frames/s (burst 4,000): stay below
CLIENT_FRAME_RATE = 1500.0
CLIENT_FRAME_BURST = 1500.0
#: the server stops reading past 256 sends in flight; a sender stays below
MAX_IN_FLIGHT = 200
#: latency samples kept per phase (a uniform sample beyond this)
LATENCY_SAMPLES = 200_000
#: retryable ACK codes: internal error, rate limited
RETRY_CODES = (SendCode.INTERNAL_ERROR, SendCode.RATE_LIMITED)
MAX_SEND_TRIES = 20
ACK_EVERY = 0.25

HEARTBEAT_FRAME = codec.Heartbeat().to_frame()

_now = time.time


def sign_in_frame(device_id: int, user_id: int, token: str) -> bytes:
    """An encoded SignIn frame."""
    return codec.SignIn(device_id=device_id, user_id=user_id, token=token).to_frame()


def sync_frame(after: int) -> bytes:
    """An encoded SyncTrigger frame."""
    return codec.SyncTrigger(sync_sequence=after).to_frame()


def stamp_content(sent_at: float, phase: str, size: int) -> str:
    """A message content carrying its send time and phase, padded to ``size`` characters."""
    head = f"{sent_at:.6f} {phase} "
    return head + "x" * max(0, size - len(head))


def parse_stamp(content: str) -> tuple[float, str] | None:
    """``(send time, phase)`` from a content made by :func:`stamp_content`, else None."""
    parts = content.split(" ", 2)
    if len(parts) < 2:
        return None
    try:
        return float(parts[0]), parts[1]
    except ValueError:
        return None
