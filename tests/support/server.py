"""Real goim processes for end-to-end tests, on the shared harness
(goim/testing/harness.py): ``twistd -n goim`` with its listeners on port 0, the
bound ports read back, stopped (SIGTERM, then SIGKILL after a deadline) or
restarted on the same ports.

Every process started here is stopped by the test's cleanup, whatever happens.
"""

import os
import socket
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from goim.testing import harness
from goim.testing.harness import LOOPBACK, pause, wait_until

__all__ = ["LOOPBACK", "GoimProcess", "StandaloneServer", "free_port", "pause", "run_to_exit", "server_database", "wait_until"]

ROOT = str(Path(__file__).resolve().parents[2])


def test_env() -> dict[str, str]:
    """The environment of server processes: this one, with the checkout importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = ROOT
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for processes that
    cannot report a port they bound themselves: redis-server, mariadbd)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class GoimProcess(harness.GoimProcess):
    """One ``twistd -n <plugin>`` child process of a test, killed at its cleanup.

    Args:
        endpoints: listener option -> endpoint string (port 0 by default: ``LOOPBACK``).
    """

    def __init__(
        self, testcase: SynchronousTestCase, plugin: str, endpoints: dict[str, str], args: list[str]
    ) -> None:
        super().__init__(plugin, endpoints, args, workdir=Path(testcase.mktemp()), env=test_env())
        testcase.addCleanup(self.kill)

    @property
    def http_port(self) -> int:
        return self.port("--http")

    @property
    def tcp_port(self) -> int:
        return self.port("--tcp")


async def run_to_exit(
    testcase: SynchronousTestCase, plugin: str, args: list[str], *, timeout: float = 20.0
) -> tuple[int, str]:
    """Run ``twistd -n PLUGIN ARGS`` until it exits by itself.

    Returns:
        ``(exit status, everything it printed)``.
    """
    return await harness.run_to_exit(plugin, args, workdir=Path(testcase.mktemp()), env=test_env(), timeout=timeout)


class StandaloneServer(GoimProcess):
    """``twistd -n goim`` on loopback ports the kernel picks, with the given database.

    Args:
        ws: also a WebSocket listener (``--ws``; its port is ``port("--ws")``).
    """

    def __init__(self, testcase: SynchronousTestCase, database: str, *extra: str, ws: bool = False) -> None:
        endpoints = {"--tcp": LOOPBACK, "--http": LOOPBACK, **({"--ws": LOOPBACK} if ws else {})}
        super().__init__(testcase, "goim", endpoints, ["--database", database, *extra])


def server_database(testcase: Any) -> str:
    """A database URL for a server process: the test backend's fresh database,
    removed when the test ends.

    For SQLite an absolute path (the process runs in its own directory).
    """
    url: str = testcase.database_url()
    testcase.addCleanup(testcase._drop, url)
    if url.startswith("sqlite:"):
        return "sqlite:" + os.path.abspath(url[len("sqlite:") :])
    return url
