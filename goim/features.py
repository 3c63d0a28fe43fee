"""Opt-in protocol features (``SignIn.features``, docs/protocol.md "Features").

A goim 1.1 client sends no ``features`` and sees exactly what goim 1.1 sent: every
addition to what the server sends a connection is behind one of these bits.
"""

from __future__ import annotations

from enum import IntFlag


class Feature(IntFlag):
    """Bits of ``SignIn.features``."""

    NONE = 0
    #: events in the stream: read reports, recalls and edits (codes and item fields
    #: of docs/protocol.md "Events"); without it such stream entries are skipped
    EVENTS = 1
    #: ``Message.trimmed`` on the first sync page when retention deleted history
    TRIMMED = 2


def features_of(value: int) -> Feature:
    """The known bits of a client's ``features`` field (unknown bits are ignored,
    so that a newer client works with an older server)."""
    return Feature(value & (Feature.EVENTS | Feature.TRIMMED))


def wants(features: int, feature: Feature) -> bool:
    """Whether a connection that signed in with ``features`` opted in to ``feature``."""
    # int's own &: IntFlag's builds a Feature for its result (0.9 µs against 0.3),
    # and delivery asks once or twice per push
    return int.__and__(features, feature) != 0
