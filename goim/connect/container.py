"""The connect side of a container: the connection table and the factory of client
connections. Used by the standalone server and by connect nodes; they differ in
the ``LogicPort`` they plug in (``get_logic``)."""

from typing import Protocol

from goim.connect.table import ConnectionTable
from goim.container import Container, component
from goim.ports import LogicPort
from goim.protocols.connection import ClientConnectionFactory


class ConnectSettings(Protocol):
    """What the connect side reads of a process's configuration."""

    @property
    def node_id(self) -> str: ...

    @property
    def signin_timeout(self) -> float: ...

    @property
    def idle_timeout(self) -> float: ...

    @property
    def write_grace(self) -> float: ...


class ConnectContainer(Container):
    """The client connections of one process, each component built once.

    ``get_logic`` has no default: the topology provides it.
    """

    config: ConnectSettings

    @component
    def get_logic(self) -> LogicPort:
        raise NotImplementedError(f"{type(self).__name__} needs a logic port")

    @component
    def get_connection_table(self) -> ConnectionTable:
        table = ConnectionTable()
        self.get_metrics().track_connections(lambda: len(table))
        return table

    @component
    def get_client_factory(self) -> ClientConnectionFactory:
        config = self.config
        return ClientConnectionFactory(
            logic=self.get_logic(),
            clock=self.get_clock(),
            table=self.get_connection_table(),
            signin_timeout=config.signin_timeout,
            idle_timeout=config.idle_timeout,
            write_grace=config.write_grace,
            node_id=config.node_id,
        )
