"""Which stored rows a connection is sent, by the features it signed in with.

Event rows (read reports, recalls, edits: ``StoredMessage.kind`` non-zero) and the
state fields of changed copies (``edited_at``, ``recalled``) are sent only to
connections with ``Feature.EVENTS``; a goim 1.1 client sees exactly what it saw
before: messages only, without the new MessageItem fields.
"""

from dataclasses import replace
from typing import Sequence

from goim.features import Feature, wants
from goim.types import KIND_MESSAGE, StoredMessage


def for_connection(messages: Sequence[StoredMessage], features: int) -> list[StoredMessage]:
    """The rows of ``messages`` a connection with ``features`` is sent, in order."""
    if wants(features, Feature.EVENTS):
        return list(messages)
    return [
        replace(m, edited_at=0, recalled=False) if m.edited_at or m.recalled else m
        for m in messages
        if m.kind == KIND_MESSAGE
    ]
