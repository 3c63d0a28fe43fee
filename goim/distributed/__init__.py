"""Distributed mode: adapters that let connect and logic run as separate processes.

connect → logic travels over Perspective Broker (``pb_client``/``pb_server``);
logic → connect over Redis pub/sub (``bus``), with presence in Redis
(``presence``). Business logic stays in ``goim.logic``; these are ports.
"""
