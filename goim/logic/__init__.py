"""Business logic: accounts, friends, groups and the message pipeline.

Services here take stores and ports in their constructors; they hold no SQL,
no HTTP and no bytes of the wire protocol.
"""
