"""The container: each component built once, on first use; any can be given instead."""

from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from goim.clock import Clock
from goim.connect.node import ConnectNodeConfig, ConnectNodeContainer
from goim.connect.table import ConnectionTable
from goim.container import Container, component
from goim.logic.local import InProcessLogic
from goim.standalone import StandaloneConfig, StandaloneContainer
from goim.storage.database import Database, DatabaseURL
from tests.support.db import SQLiteBackend, SynchronousPool


class Counting(Container):
    built: list[str]

    @component
    def get_a(self) -> object:
        self.built.append("a")
        return object()

    @component
    def get_b(self) -> tuple[object, object]:
        self.built.append("b")
        return (self.get_a(), object())

    @component
    def get_loop(self) -> object:
        return self.get_loop()


class ContainerTests(SynchronousTestCase):
    def make(self, **components: object) -> Counting:
        c = Counting(None, task.Clock(), **components)
        c.built = []
        return c

    def test_built_once_on_first_use(self) -> None:
        """Nothing is built up front; each component is built once and shared."""
        c = self.make()
        self.assertEqual(c.built, [])
        self.assertIs(c.get_b()[0], c.get_a())
        self.assertIs(c.get_b(), c.get_b())
        self.assertEqual(c.built, ["b", "a"])

    def test_given_components_are_not_built(self) -> None:
        """A component given to the constructor or to ``override`` is used as is."""
        given = object()
        c = self.make(a=given)
        self.assertIs(c.get_b()[0], given)
        self.assertEqual(c.built, ["b"])

    def test_override_refuses_unknown_and_built(self) -> None:
        """Unknown names and components already built cannot be overridden."""
        c = self.make()
        self.assertRaises(KeyError, c.override, "nope", 1)
        c.get_a()
        self.assertRaises(RuntimeError, c.override, "a", 1)

    def test_cycle_is_an_error(self) -> None:
        """A component that needs itself raises instead of recursing forever."""
        self.assertRaises(RuntimeError, self.make().get_loop)

    def test_clock_over_the_reactor(self) -> None:
        """The default clock keeps the reactor's time; a given one is used instead."""
        reactor = task.Clock()
        reactor.advance(12)
        self.assertEqual(Counting(None, reactor).get_clock().seconds(), 12)
        clock = Clock(task.Clock())
        self.assertIs(Counting(None, reactor, clock=clock).get_clock(), clock)


class StandaloneContainerTests(SQLiteBackend, SynchronousTestCase):
    def test_standalone_wiring(self) -> None:
        """The table is delivery and session port; in-process logic feeds the connections;
        the services share one database, one clock and one metrics registry."""
        reactor = task.Clock()
        url = self.database_url()
        db = Database(url, reactor, pool=SynchronousPool(DatabaseURL.parse(url)))
        self.addCleanup(db.close)
        c = StandaloneContainer(StandaloneConfig(database=url), reactor, database=db, run_in_thread=defer.maybeDeferred)
        table = c.get_connection_table()
        self.assertIsInstance(table, ConnectionTable)
        self.assertIs(c.get_delivery(), table)
        self.assertIs(c.get_sessions(), table)
        self.assertIsInstance(c.get_logic(), InProcessLogic)
        self.assertIs(c.get_client_factory().logic, c.get_logic())
        self.assertIs(c.get_client_factory().table, table)
        self.assertIs(c.get_messages().delivery, table)
        self.assertIs(c.get_account_store().db, db)
        self.assertIn(b"goim_connections 0.0", c.get_metrics().render())


class ConnectNodeContainerTests(SynchronousTestCase):
    def test_connect_wiring(self) -> None:
        """A connect node's connections talk to the PB logic client; its subscriber feeds its table."""
        config = ConnectNodeConfig(node_id="c1", secret=b"x" * 32)
        # a stand-in Redis: the real pool would connect on the global reactor at once
        c = ConnectNodeContainer(config, MemoryReactorClock(), redis=object())
        self.assertIs(c.get_client_factory().logic, c.get_logic_client())
        self.assertIs(c.get_subscriber().table, c.get_connection_table())
        self.assertIs(c.get_subscriber().presence, c.get_presence())
        self.assertEqual(c.get_client_factory().node_id, "c1")
        self.assertEqual(c.get_metrics().role, "connect")
