"""The connect side: the connection table, the node subscriber, the logic client
and the connect node service (``twistd goim-connect``).

Imports ``goim.protocols`` and the networked ports (``goim.distributed``); never
``goim.logic`` or ``goim.storage``.
"""
