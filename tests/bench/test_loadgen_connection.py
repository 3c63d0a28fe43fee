"""The load generator's client connection: TCP options."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from goim_bench.loadgen.connection import Connection
from goim_bench.loadgen.device import Device


class TCPTransport(StringTransport):
    nodelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


class Generator:
    """Records the connections the generator is told about."""

    def __init__(self) -> None:
        self.connected: list[Connection] = []

    def on_connected(self, conn: Connection) -> None:
        self.connected.append(conn)


class NoDelayTests(SynchronousTestCase):
    def test_tcp_nodelay_set_when_connected(self) -> None:
        """A load-generator connection has TCP_NODELAY, as a latency-minded client would."""
        gen = Generator()
        device = Device(0, 1, 2, "t", 0, 0)
        conn = Connection(cast(Any, gen), device)
        transport = TCPTransport()
        conn.makeConnection(transport)
        self.assertTrue(transport.nodelay)
        self.assertEqual(gen.connected, [conn])
        self.assertIs(device.conn, conn)
