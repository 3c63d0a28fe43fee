"""The connect → logic send and ack batches as protobuf bytes (``proto/internal.proto``).

A connect node forwards the sends of one reactor turn to a logic node in one
Perspective Broker call, and its clients' acks of one turn in another. Banana
encodes one bytes object cheaply and nested tuples slowly (its jelly of lists of
tuples was 45 % of a logic node's reactor ticks, issue 12), so a send batch travels
as one ``SendBatch`` and its answer as one ``SendResults``, an ack batch as one
``AckBatch``. Pure functions, tested on their own.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from google.protobuf.message import DecodeError

from goim.pb import goim_pb2, internal_pb2
from goim.protocols.codec import encode_message_send
from goim.types import SendRequest, SendResult


class BatchedSend(NamedTuple):
    """One send of a decoded batch: the connection it came in on and what it said."""

    conn: str
    device_id: int
    user_id: int
    message: goim_pb2.MessageSend


class BatchedAck(NamedTuple):
    """One ack of a decoded batch: the connection it came in on and its seq."""

    conn: str
    device_id: int
    user_id: int
    seq: int


class MalformedBatchError(ValueError):
    """A send or ack batch, or an answer, does not decode."""


def encode_send_batch(sends: Sequence[tuple[str, SendRequest]]) -> bytes:
    """Encode ``(connection id, request)`` pairs as a ``SendBatch``.

    Args:
        sends: the sends in the order their connections read them.

    Returns:
        The bytes of one ``goim.internal.SendBatch``.
    """
    batch = internal_pb2.SendBatch()
    add = batch.sends.add
    for conn, request in sends:
        # the client's own bytes when the connection kept them (they decoded already)
        message = request.frame or encode_message_send(request)
        add(conn=conn, device_id=request.device_id, user_id=request.user_id, message=message)
    return batch.SerializeToString()


def decode_send_batch(data: bytes, *, limit: int) -> list[BatchedSend]:
    """Decode a ``SendBatch`` (the values are checked by the caller).

    Args:
        data: the bytes a connect node sent.
        limit: the most sends a batch may hold.

    Returns:
        The sends, in batch order.

    Raises:
        MalformedBatchError: the bytes, or a MessageSend in them, do not decode, or
            the batch holds more than ``limit`` sends.
    """
    out: list[BatchedSend] = []
    for entry in _bounded(internal_pb2.SendBatch.FromString, data, "sends", limit):
        try:
            message = goim_pb2.MessageSend.FromString(entry.message)
        except DecodeError:
            raise MalformedBatchError("malformed MessageSend") from None
        out.append(BatchedSend(entry.conn, entry.device_id, entry.user_id, message))
    return out


def encode_send_results(results: Sequence[SendResult]) -> bytes:
    """Encode the results of a batch's sends, in batch order, as ``SendResults``."""
    answer = internal_pb2.SendResults()
    add = answer.results.add
    for r in results:
        add(code=int(r.code), message_id=r.message_id, seq=r.seq, retry_after_ms=r.retry_after_ms)
    return answer.SerializeToString()


def decode_send_results(data: bytes) -> list[SendResult]:
    """Decode a ``SendResults`` answer.

    Raises:
        MalformedBatchError: the bytes do not decode.
    """
    try:
        answer = internal_pb2.SendResults.FromString(data)
    except DecodeError:
        raise MalformedBatchError("malformed SendResults") from None
    return [SendResult(r.code, r.message_id, r.seq, r.retry_after_ms) for r in answer.results]


def encode_ack_batch(acks: Sequence[BatchedAck]) -> bytes:
    """Encode acks as an ``AckBatch``; of several acks of one connection and device
    only the highest seq is kept (an ack covers every seq up to its own)."""
    highest: dict[tuple[str, int], BatchedAck] = {}
    for ack in acks:
        key = (ack.conn, ack.device_id)
        kept = highest.get(key)
        if kept is None or ack.seq > kept.seq:
            highest[key] = ack
    batch = internal_pb2.AckBatch()
    add = batch.acks.add
    for ack in highest.values():
        add(conn=ack.conn, device_id=ack.device_id, user_id=ack.user_id, seq=ack.seq)
    return batch.SerializeToString()


def decode_ack_batch(data: bytes, *, limit: int) -> list[BatchedAck]:
    """Decode an ``AckBatch`` (the values are checked by the caller).

    Raises:
        MalformedBatchError: the bytes do not decode, or hold more than ``limit`` acks.
    """
    acks = _bounded(internal_pb2.AckBatch.FromString, data, "acks", limit)
    return [BatchedAck(a.conn, a.device_id, a.user_id, a.seq) for a in acks]


def _bounded(parse: Callable[[bytes], Any], data: bytes, field: str, limit: int) -> Any:
    """The repeated ``field`` of the batch ``parse`` makes of ``data``, at most ``limit`` long."""
    try:
        batch = parse(data)
    except DecodeError:
        raise MalformedBatchError(f"malformed batch of {field}") from None
    entries = getattr(batch, field)
    if len(entries) > limit:
        raise MalformedBatchError(f"a batch holds at most {limit} {field}, not {len(entries)}")
    return entries
