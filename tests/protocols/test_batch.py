"""The connect -> logic send batch as protobuf bytes (goim.protocols.batch)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from goim.pb import goim_pb2
from goim.protocols.batch import (
    MalformedBatchError,
    decode_send_batch,
    decode_send_results,
    encode_send_batch,
    encode_send_results,
)
from goim.protocols.codec import send_request
from goim.types import SendRequest, SendResult


def request(seq: int, content: str = "héllo") -> SendRequest:
    return SendRequest(7, 3, 2, 99, 4, content, seq, 1_700_000_000_000 + seq)


class SendBatchTests(SynchronousTestCase):
    def test_round_trip_keeps_order_and_every_field(self) -> None:
        """Each send comes back with its connection, identity and every MessageSend field, in order."""
        sends = [("c1/boot/1", request(1)), ("c1/boot/2", request(2, "")), ("c1/boot/1", request(3))]
        decoded = decode_send_batch(encode_send_batch(sends), limit=10)
        self.assertEqual([(d.conn, d.device_id, d.user_id) for d in decoded], [(c, 7, 3) for c, _ in sends])
        self.assertEqual(
            [send_request(d.message, device_id=7, user_id=3, epoch=0) for d in decoded], [r for _, r in sends]
        )

    def test_empty_batch(self) -> None:
        """No sends encode to no bytes and decode to no sends."""
        self.assertEqual(decode_send_batch(encode_send_batch([]), limit=1), [])

    def test_malformed_bytes_refused(self) -> None:
        """Bytes that are no SendBatch, or hold a MessageSend that does not decode, are refused."""
        good = encode_send_batch([("c1/boot/1", request(1))])
        for bad in [b"\xff\xff\xff", good[:-1]]:
            with self.assertRaises(MalformedBatchError):
                decode_send_batch(bad, limit=10)

    def test_limit(self) -> None:
        """A batch over the limit is refused."""
        data = encode_send_batch([("c1/boot/1", request(s)) for s in range(1, 4)])
        self.assertEqual(len(decode_send_batch(data, limit=3)), 3)
        with self.assertRaises(MalformedBatchError):
            decode_send_batch(data, limit=2)

    def test_message_is_the_client_frame_value(self) -> None:
        """The message field holds a goim.MessageSend exactly as the codec encodes it."""
        from goim.pb import internal_pb2

        [entry] = internal_pb2.SendBatch.FromString(encode_send_batch([("c1/boot/1", request(5))])).sends
        self.assertEqual(goim_pb2.MessageSend.FromString(entry.message).send_sequence, 5)


    def test_the_client_bytes_travel_as_they_came(self) -> None:
        """A request that kept the frame value it was decoded from forwards those bytes, not a re-encoding
        (a field the server does not know stays in them; the logic node's decode ignores it)."""
        from goim.pb import internal_pb2

        value = goim_pb2.MessageSend(receiver_type=1, receiver_id=99, type=1, content="hi", send_sequence=4).SerializeToString()
        value += b"\xf8\x3e\x01"  # field 999, a varint: unknown to this protocol
        kept = send_request(goim_pb2.MessageSend.FromString(value), device_id=7, user_id=3, epoch=0, frame=value)
        [entry] = internal_pb2.SendBatch.FromString(encode_send_batch([("c1/boot/1", kept)])).sends
        self.assertEqual(entry.message, value)
        [decoded] = decode_send_batch(encode_send_batch([("c1/boot/1", kept)]), limit=1)
        self.assertEqual(send_request(decoded.message, device_id=7, user_id=3, epoch=0), kept)

class SendResultsTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """Results, the rate-limit hint and large ids survive, in order."""
        results = [SendResult(0, 2**62, 10**9), SendResult(5, 0, 0, 250), SendResult(1)]
        self.assertEqual(decode_send_results(encode_send_results(results)), results)

    def test_malformed_refused(self) -> None:
        """Bytes that are no SendResults are refused."""
        with self.assertRaises(MalformedBatchError):
            decode_send_results(b"\xff\xff")
