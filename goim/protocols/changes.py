"""Which stored rows a connection is sent, by the features it signed in with.

Event rows (read reports, recalls, edits: ``StoredMessage.kind`` non-zero) and the
state fields of changed copies (``edited_at``, ``recalled``) are sent only to
connections with ``Feature.EVENTS``; a goim 1.1 client sees exactly what it saw
before: messages only, without the new MessageItem fields.
"""

from dataclasses import replace
from typing import Container, Sequence

from goim.features import Feature, wants
from goim.pb import goim_pb2
from goim.protocols.codec import PUSH_ITEMS
from goim.types import KIND_MESSAGE, StoredCopies, StoredMessage

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


#: one user's pushed copies: each one's seq, serialised item and audience, in order
PushItems = tuple[list[int], list[bytes], list[int]]


def items_by_user(batch: Sequence[StoredCopies], online: Container[int]) -> dict[int, PushItems]:
    """The copies of ``batch`` whose user is ``online``, serialised (each message
    once, its copies' seqs spliced in) and grouped by user, in batch order; the
    copies of other users cost nothing."""
    by_user: dict[int, PushItems] = {}
    for copies in batch:
        users = copies.users
        indexes = [i for i, user_id in enumerate(users) if user_id in online]
        if not indexes:
            continue
        to = audience(copies.message)
        seqs = copies.seqs
        for i, item in zip(indexes, PUSH_ITEMS.encode_copies(copies, indexes)):
            entry = by_user.get(users[i])
            if entry is None:
                entry = by_user[users[i]] = ([], [], [])
            entry[0].append(seqs[i])
            entry[1].append(item)
            entry[2].append(to)
    return by_user
