"""goim: an instant-messaging server on Twisted, wire-compatible with goim 1.1."""

__version__ = "0.1.0"
