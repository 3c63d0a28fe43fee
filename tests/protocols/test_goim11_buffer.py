"""A model of the goim 1.1 Go client's 4,096-byte read buffer, and the packing that
keeps it from panicking (docs/protocol.md section 1, DESIGN section 9).

The Go client reads into a fixed 4,096-byte slice. Its decoder checks that 2 bytes
are buffered and then slices the 2-byte length field at ``[start+2 : start+4]``;
when a read filled the buffer and only 2 or 3 bytes of the next frame's header
are left at its end, ``start+4`` exceeds 4,096 and Go panics (``slice bounds out
of range [:4097]``). ``Goim11Buffer`` reproduces exactly that; the tests feed it
the bytes goim writes for random backlogs.
"""

from __future__ import annotations

import random
import struct

from twisted.trial.unittest import SynchronousTestCase

from goim.protocols import codec
from goim.types import StoredMessage

SIZE = 4096
SIGN_IN_ACK = struct.pack(">HH", codec.SIGN_IN_ACK, 2) + codec.encode_sign_in_ack(codec.SIGN_IN_OK)
PAGE = 200  # the connection's default sync_page_size


class Panic(Exception):
    """The Go client would panic here (slice bounds out of range)."""


class Goim11Buffer:
    """goim 1.1's ``buffer`` + ``Codec.Decode``: a 4,096-byte slice, ``start``/``end``."""

    def __init__(self) -> None:
        self.buf = bytearray(SIZE)
        self.start = 0
        self.end = 0
        self.frames: list[tuple[int, bytes]] = []

    def space(self) -> int:
        """Bytes the next read may return (after ``grow``)."""
        return SIZE - (self.end - self.start)

    def read(self, data: bytes) -> None:
        """``readFromReader`` of ``data`` (at most ``space()`` bytes), then decode all."""
        # grow: move the unread bytes to the front
        self.buf[: self.end - self.start] = self.buf[self.start : self.end]
        self.end -= self.start
        self.start = 0
        assert len(data) <= SIZE - self.end
        self.buf[self.end : self.end + len(data)] = data
        self.end += len(data)
        while self._decode():
            pass

    def _seek(self, lo: int, hi: int) -> bytes | None:
        if self.end - self.start >= hi - lo:  # the bug: checks hi-lo bytes, not hi
            if self.start + hi > SIZE:
                raise Panic(f"slice bounds out of range [:{self.start + hi}] with capacity {SIZE}")
            return bytes(self.buf[self.start + lo : self.start + hi])
        return None

    def _decode(self) -> bool:
        type_bytes = self._seek(0, 2)
        if type_bytes is None:
            return False
        len_bytes = self._seek(2, 4)
        if len_bytes is None:
            return False
        length = int.from_bytes(len_bytes, "big")
        if self.end - self.start < 4 + length:
            return False
        value = bytes(self.buf[self.start + 4 : self.start + 4 + length])
        self.start += 4 + length
        self.frames.append((int.from_bytes(type_bytes, "big"), value))
        return True


def frame(code: int, value: bytes) -> bytes:
    return struct.pack(">HH", code, len(value)) + value


def sync_stream(messages: list[StoredMessage], *, cap: int, legacy: bool | None = None) -> list[bytes]:
    """The frames a connection writes for a sync of ``messages``, page by page as
    ``ClientConnection._sync`` does (200 per page)."""
    frames = []
    for first in range(0, max(len(messages), 1), PAGE):
        page = messages[first : first + PAGE]
        last = first + PAGE >= len(messages)
        items = [codec.encode_item(m) for m in page]
        values = codec.pack_items(
            items, message_type=codec.MESSAGE_SYNC, cap=cap, more=True, more_on_last=not last, legacy=legacy
        )
        frames.extend(frame(codec.MESSAGE, v) for v in values)
    return frames


def full_reads(stream: bytes, *, first: int = 0) -> Goim11Buffer:
    """Feed ``stream`` with every read as full as the buffer allows (the client is
    slower than the server, the usual case in a large sync); ``first`` > 0 makes
    the first read that short (the SignInACK arriving alone)."""
    buffer = Goim11Buffer()
    position = 0
    if first:
        buffer.read(stream[:first])
        position = first
    while position < len(stream):
        n = min(buffer.space(), len(stream) - position)
        assert n > 0, "a frame longer than the buffer"
        buffer.read(stream[position : position + n])
        position += n
    return buffer


def bad_spans(frames: list[bytes]) -> int:
    """Pairs of frame starts 4,093 or 4,094 bytes apart with a frame at the later
    one: the spots where some schedule of reads (a short read ending at the earlier
    start, then full reads) makes the buffer panic."""
    starts = []
    position = 0
    for f in frames:
        starts.append(position)
        position += len(f)
    found = 0
    seen = set(starts)
    for s in starts:
        found += sum(1 for span in codec.LEGACY_BAD_SPANS if s + span in seen)
    return found


_ASCII = "".join(chr(33 + (i * 7919) % 90) for i in range(4000))
_WIDE = "é中ü" * 1400  # 2- and 3-byte UTF-8 characters


def random_backlog(rng: random.Random, count: int) -> list[StoredMessage]:
    """``count`` stored messages of a mixed chat: mostly short texts, some long."""
    user = rng.randrange(1, 10**6)
    seq = rng.randrange(0, 10**5)
    base_id = rng.randrange(10**15, 10**17)
    messages = []
    for i in range(count):
        kind = rng.random()
        if kind < 0.5:
            length = rng.randint(1, 100)
        elif kind < 0.85:
            length = rng.randint(100, 1000)
        else:
            length = rng.randint(1000, 3900)
        text = _ASCII if rng.random() < 0.8 else _WIDE
        offset = rng.randrange(0, 64)
        messages.append(
            StoredMessage(
                user_id=user,
                seq=seq + i + 1,
                message_id=base_id + rng.randrange(0, 10**9),
                sender_type=1,
                sender_id=rng.randrange(1, 10**6),
                sender_device_id=rng.randrange(1, 10**7),
                receiver_type=rng.choice((1, 2)),
                receiver_id=rng.randrange(1, 10**6),
                type=1,
                content=text[offset : offset + length].encode()[:length].decode(errors="ignore"),
                send_time=1_700_000_000_000 + rng.randrange(0, 10**10),
            )
        )
    return messages


def crashes(frames: list[bytes]) -> bool:
    """Whether full reads panic, with the SignInACK read alone or with the sync."""
    stream = SIGN_IN_ACK + b"".join(frames)
    for first in (0, len(SIGN_IN_ACK)):
        try:
            buffer = full_reads(stream, first=first)
        except Panic:
            return True
        assert len(buffer.frames) == len(frames) + 1
    return False


class ModelTests(SynchronousTestCase):
    def test_model_reproduces_the_reported_crashes(self) -> None:
        """A 4,089- or 4,090-byte frame followed by another panics the model, and so
        does SignInACK followed by a 4,083-byte frame; a 4,088-byte frame does not."""
        follower = frame(codec.HEARTBEAT_ACK, b"")
        for size in (4089, 4090):
            with self.assertRaises(Panic):
                full_reads(frame(codec.MESSAGE, b"x" * size) + follower * 10)
        with self.assertRaises(Panic):
            full_reads(SIGN_IN_ACK + frame(codec.MESSAGE, b"x" * 4083) + follower * 10)
        buffer = full_reads(frame(codec.MESSAGE, b"x" * 4088) + follower * 10)
        self.assertEqual(len(buffer.frames), 11)

    def test_model_decodes_what_it_is_fed(self) -> None:
        """Without a panic the model returns every frame, whatever the read sizes."""
        rng = random.Random(1)
        frames = sync_stream(random_backlog(rng, 120), cap=4092)
        stream = b"".join(frames)
        buffer = Goim11Buffer()
        position = 0
        while position < len(stream):
            n = min(rng.randint(1, 700), buffer.space(), len(stream) - position)
            buffer.read(stream[position : position + n])
            position += n
        self.assertEqual([f for f in buffer.frames], [(codec.MESSAGE, f[4:]) for f in frames])


class LegacyPackingTests(SynchronousTestCase):
    def _rates(self, *, legacy: bool, runs: int) -> tuple[float, float]:
        """Shares of random 300-message backlogs that panic the model with full
        reads, and that hold a bad span at all."""
        rng = random.Random(4092)
        crashed = spans = 0
        for _ in range(runs):
            frames = sync_stream(random_backlog(rng, 300), cap=4092, legacy=legacy)
            crashed += crashes(frames)
            spans += bad_spans([SIGN_IN_ACK, *frames]) > 0
        return crashed / runs, spans / runs

    def test_greedy_packing_crashes_the_model(self) -> None:
        """Greedy 4,092-byte packing (goim before this fix) panics the model on a
        sizeable share of random backlogs (16.5 % of 2,000 when measured): the
        model does catch the bug."""
        crashed, spans = self._rates(legacy=False, runs=300)
        self.assertGreater(crashed, 0.05)
        self.assertGreaterEqual(spans, crashed)

    def test_legacy_packing_is_safe(self) -> None:
        """The packing for clients without max_frame leaves at most 0.1 % of random
        backlogs at risk, by full reads or by any schedule of reads (1 of 2,000
        when measured: a page whose tail frame cannot be topped up, followed by a
        first frame of the next page that makes the bad span)."""
        crashed, spans = self._rates(legacy=True, runs=2000)
        self.assertLessEqual(crashed, 0.001)
        self.assertLessEqual(spans, 0.001)

    def test_legacy_frames_fit_and_keep_order(self) -> None:
        """Legacy frames are at most 4,082 value bytes and carry every message in order."""
        rng = random.Random(7)
        messages = random_backlog(rng, 300)
        frames = sync_stream(messages, cap=4092)
        self.assertTrue(all(len(f) - 4 <= codec.LEGACY_PACK_TARGET for f in frames))
        decoded = []
        for f in frames:
            message = codec.Message.from_bytes(f[4:])
            decoded.extend(i.sync_sequence for i in message.messages)
        self.assertEqual(decoded, [m.seq for m in messages])

    def test_announced_max_frame_packs_greedily(self) -> None:
        """A client that announces max_frame gets greedy frames up to its cap."""
        rng = random.Random(8)
        frames = sync_stream(random_backlog(rng, 300), cap=8000)
        self.assertTrue(any(len(f) - 4 > 4092 for f in frames))


class LegacyPushTests(SynchronousTestCase):
    def test_push_frames_have_no_bad_span(self) -> None:
        """Live pushes (no more field) of many large messages at once are cut on their
        real sizes: no two push frames of a batch make a bad span."""
        rng = random.Random(11)
        at_risk = 0
        for _ in range(300):
            messages = random_backlog(rng, 60)
            values = codec.pack_push([codec.encode_item(m) for m in messages], cap=4092)
            frames = [frame(codec.MESSAGE, v) for v in values]
            at_risk += bad_spans(frames) > 0
        self.assertEqual(at_risk, 0)

    def test_push_frames_are_cut_on_their_real_size(self) -> None:
        """Push frames carry no more field: counting the 2 bytes it would take (as
        sync frames do) would let these four pushes make a 4,093-byte span."""
        items = [b"x" * n for n in (2295, 1781, 1992, 1043)]
        values = codec.pack_items(items, message_type=codec.MESSAGE_PUSH, cap=4092, more=False, more_on_last=False)
        self.assertEqual(bad_spans([frame(codec.MESSAGE, v) for v in values]), 0)
