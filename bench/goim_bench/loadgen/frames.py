"""The load generator's frames and message stamps.

The frame encoders here are hand-written on goim's framing and protobuf classes;
they are to be replaced by the symmetric codec (issue 13 step 4) once it exists.
"""

from __future__ import annotations

import time

from goim.pb import goim_pb2 as pb
from goim.protocols.codec import HEARTBEAT, SIGN_IN, SYNC_TRIGGER
from goim.protocols.framing import encode_frame

#: the server closes a connection past 2,000 frames/s (burst 4,000): stay below
CLIENT_FRAME_RATE = 1500.0
CLIENT_FRAME_BURST = 1500.0
#: the server stops reading past 256 sends in flight; a sender stays below
MAX_IN_FLIGHT = 200
#: latency samples kept per phase (a uniform sample beyond this)
LATENCY_SAMPLES = 200_000
#: retryable ACK codes: internal error, rate limited
RETRY_CODES = (1, 5)
MAX_SEND_TRIES = 20
ACK_EVERY = 0.25

HEARTBEAT_FRAME = encode_frame(HEARTBEAT, b"")

_encode_frame = encode_frame
_now = time.time


def sign_in_frame(device_id: int, user_id: int, token: str) -> bytes:
    """An encoded SignIn frame."""
    value = pb.SignIn(device_id=device_id, user_id=user_id, token=token).SerializeToString()
    return encode_frame(SIGN_IN, value)


def sync_frame(after: int) -> bytes:
    """An encoded SyncTrigger frame."""
    return encode_frame(SYNC_TRIGGER, pb.SyncTrigger(sync_sequence=after).SerializeToString())


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
