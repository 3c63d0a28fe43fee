"""The shared process harness (goim/testing/harness.py) and the ports file the
server writes for it (goim/server.py ``write_ports_file``)."""

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from goim.server import write_ports_file
from goim.testing.harness import LOOPBACK, GoimProcess, distinct_endpoints, wait_until, with_port


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.port)


class PortsFileTests(SynchronousTestCase):
    def test_lists_every_listener_in_order_with_its_bound_port(self) -> None:
        """The file names each listener by its endpoint string, with the port it bound."""
        path = Path(self.mktemp())
        listeners: list[tuple[str, Any]] = [("tcp:0:interface=127.0.0.1", None), ("tcp:port=0:interface=127.0.0.1", None)]
        write_ports_file(str(path), listeners, [_Port(41001), _Port(41002)])
        data = json.loads(path.read_text())
        self.assertEqual(data["pid"], os.getpid())
        self.assertEqual(
            data["listeners"],
            [
                {"endpoint": "tcp:0:interface=127.0.0.1", "host": "127.0.0.1", "port": 41001},
                {"endpoint": "tcp:port=0:interface=127.0.0.1", "host": "127.0.0.1", "port": 41002},
            ],
        )
        self.assertFalse(Path(str(path) + ".tmp").exists())

    def test_no_path_writes_nothing(self) -> None:
        """Without GOIM_PORTS_FILE nothing is written."""
        write_ports_file(None, [("tcp:0", None)], [_Port(1)])
        write_ports_file("", [("tcp:0", None)], [_Port(1)])

    def test_unwritable_path_is_logged_not_raised(self) -> None:
        """A ports file that cannot be written does not stop the server."""
        write_ports_file(str(Path(self.mktemp()) / "missing" / "ports.json"), [("tcp:0", None)], [_Port(1)])
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class EndpointTests(SynchronousTestCase):
    def test_equal_endpoints_are_respelled(self) -> None:
        """Equal endpoint strings get distinct spellings Twisted reads alike."""
        out = distinct_endpoints({"--tcp": LOOPBACK, "--http": LOOPBACK, "--ws": LOOPBACK, "--pb": LOOPBACK})
        self.assertEqual(
            out,
            {
                "--tcp": "tcp:0:interface=127.0.0.1",
                "--http": "tcp:port=0:interface=127.0.0.1",
                "--ws": "tcp:interface=127.0.0.1:port=0",
                "--pb": "tcp:interface=127.0.0.1:0",
            },
        )
        self.assertEqual(len(set(out.values())), 4)

    def test_spellings_parse_to_the_same_listener(self) -> None:
        """Every spelling is a valid Twisted endpoint for port 0 on the interface."""
        from twisted.internet.endpoints import _parseServer

        for description in distinct_endpoints({"a": LOOPBACK, "b": LOOPBACK, "c": LOOPBACK, "d": LOOPBACK}).values():
            _, args, kwargs = _parseServer(description, None)
            parsed = dict(kwargs)
            parsed.update(zip(["port"], args))
            self.assertEqual((int(parsed["port"]), parsed["interface"]), (0, "127.0.0.1"), description)

    def test_distinct_endpoints_are_kept(self) -> None:
        self.assertEqual(distinct_endpoints({"--tcp": LOOPBACK, "--http": "tcp:0"}), {"--tcp": LOOPBACK, "--http": "tcp:0"})

    def test_five_equal_endpoints_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            distinct_endpoints({str(i): LOOPBACK for i in range(5)})

    def test_with_port_pins_every_spelling(self) -> None:
        """A restart binds the port of the first start, whatever the spelling."""
        spelled = distinct_endpoints({"a": LOOPBACK, "b": LOOPBACK, "c": LOOPBACK, "d": LOOPBACK})
        self.assertEqual(
            [with_port(d, 5000) for d in spelled.values()],
            [
                "tcp:5000:interface=127.0.0.1",
                "tcp:port=5000:interface=127.0.0.1",
                "tcp:interface=127.0.0.1:port=5000",
                "tcp:interface=127.0.0.1:5000",
            ],
        )
        self.assertEqual(with_port("tcp:0:interface=127.0.0.1:backlog=1024", 7), "tcp:7:interface=127.0.0.1:backlog=1024")

    def test_reads_bound_ports_back(self) -> None:
        """After a start, each option maps to the port its listener reported."""
        process = GoimProcess("goim", {"--tcp": LOOPBACK, "--http": LOOPBACK}, workdir=Path(self.mktemp()))
        process.ports_file.write_text(json.dumps({"pid": 1, "listeners": [
            {"endpoint": "tcp:port=0:interface=127.0.0.1", "host": "127.0.0.1", "port": 8081},
            {"endpoint": "tcp:0:interface=127.0.0.1", "host": "127.0.0.1", "port": 50001},
        ]}))  # fmt: skip
        process._read_ports()
        self.assertEqual(process.ports, {"--tcp": 50001, "--http": 8081})
        self.assertEqual(process.http, "http://127.0.0.1:8081")
        self.assertIn("tcp:50001:interface=127.0.0.1", process.argv())
        self.assertIn("tcp:port=8081:interface=127.0.0.1", process.argv())


class WaitUntilTests(SynchronousTestCase):
    def test_returns_the_first_true_value(self) -> None:
        clock = task.Clock()
        values = iter([0, None, "done"])
        d = Deferred.fromCoroutine(wait_until(lambda: next(values), "x", reactor=clock))
        clock.advance(0.01)
        clock.advance(0.01)
        self.assertEqual(self.successResultOf(d), "done")

    def test_awaits_a_condition_that_answers_later(self) -> None:
        """An ``async`` condition (a question to a server) is awaited each time."""
        clock = task.Clock()
        answers: list[Deferred[str]] = []

        def ask() -> Deferred[str]:
            answers.append(Deferred())
            return answers[-1]

        d = Deferred.fromCoroutine(wait_until(ask, "x", reactor=clock))
        answers[0].callback("")
        self.assertNoResult(d)
        clock.advance(0.01)
        self.assertEqual(len(answers), 2, "asked again after the interval")
        answers[1].callback("done")
        self.assertEqual(self.successResultOf(d), "done")

    def test_fails_after_the_timeout(self) -> None:
        clock = task.Clock()
        d = Deferred.fromCoroutine(wait_until(lambda: False, "never", timeout=1, reactor=clock))
        clock.pump([0.01] * 150)
        failure = self.failureResultOf(d, AssertionError)
        self.assertIn("waiting for never", str(failure.value))
