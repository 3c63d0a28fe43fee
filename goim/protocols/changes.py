"""Which stored rows a connection is sent, by the features it signed in with.

Event rows (read reports, recalls, edits: ``StoredMessage.kind`` non-zero) and the
state fields of changed copies (``edited_at``, ``recalled``) are sent only to
connections with ``Feature.EVENTS``; a goim 1.1 client sees exactly what it saw
before: messages only, without the new MessageItem fields.
"""

from dataclasses import replace
from typing import Sequence

from goim.features import Feature, wants
from goim.pb import goim_pb2
from goim.types import KIND_MESSAGE, StoredMessage

#: Who a serialised item may be written to as it is (``Delivery.audiences`` in
#: proto/internal.proto), so that pushed items are forwarded without decoding them:
#: every connection ...
AUDIENCE_ALL = 0
#: ... only connections with ``Feature.EVENTS`` (an event row) ...
AUDIENCE_EVENTS = 1
#: ... connections with ``Feature.EVENTS``; the others get it without its state
#: fields (a copy that was edited or recalled)
AUDIENCE_STATE = 2


def for_connection(messages: Sequence[StoredMessage], features: int) -> list[StoredMessage]:
    """The rows of ``messages`` a connection with ``features`` is sent, in order."""
    if wants(features, Feature.EVENTS):
        return list(messages)
    return [
        replace(m, edited_at=0, recalled=False) if m.edited_at or m.recalled else m
        for m in messages
        if m.kind == KIND_MESSAGE
    ]


def audience(message: StoredMessage) -> int:
    """Which connections ``encode_item(message)`` may be written to as it is."""
    if message.kind != KIND_MESSAGE:
        return AUDIENCE_EVENTS
    if message.edited_at or message.recalled:
        return AUDIENCE_STATE
    return AUDIENCE_ALL


def items_for_connection(items: Sequence[bytes], audiences: Sequence[int], features: int) -> list[bytes]:
    """The serialised items a connection with ``features`` is sent, in order: the
    bytes of :func:`for_connection` applied to the decoded items (only a changed
    copy sent to a connection without ``Feature.EVENTS`` is decoded, to drop its
    state fields)."""
    if wants(features, Feature.EVENTS) or not any(audiences):
        return list(items)
    shown = []
    for data, to in zip(items, audiences):
        if to == AUDIENCE_ALL:
            shown.append(data)
        elif to == AUDIENCE_STATE:
            item = goim_pb2.MessageItem.FromString(data)
            item.edited_at = 0
            item.recalled = False
            shown.append(item.SerializeToString())
    return shown
