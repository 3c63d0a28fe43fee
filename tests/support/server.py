"""Real goim processes for end-to-end tests: start ``twistd -n goim`` on free ports,
wait until it answers, stop it (SIGTERM, then SIGKILL after a deadline), restart it.

Every process started here is stopped by the test's cleanup, whatever happens.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def pause(seconds: float) -> None:
    """Let the reactor run for a while (polling real processes, never in unit tests)."""
    await deferLater(reactor, seconds, lambda: None)


class GoimProcess:
    """One ``twistd -n <plugin>`` child process."""

    def __init__(
        self,
        testcase: SynchronousTestCase,
        plugin: str,
        args: list[str],
        *,
        http_port: int | None,
        tcp_port: int | None = None,
    ) -> None:
        """
        Args:
            http_port: readiness is /healthz answering on it, when given;
            tcp_port: else readiness is this port accepting connections.
        """
        self.testcase = testcase
        self.plugin = plugin
        self.args = args
        self.http_port = http_port
        self.tcp_port = tcp_port
        self.workdir = Path(testcase.mktemp())
        self.workdir.mkdir(parents=True)
        self.logfile = self.workdir / f"{plugin}.log"
        self.process: subprocess.Popen[bytes] | None = None
        testcase.addCleanup(self.kill)

    @property
    def http(self) -> str:
        """The base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self, *, timeout: float = 30.0) -> None:
        """Start the process and wait until /healthz answers (or the process is up a moment)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from twisted.scripts.twistd import run; run()",
                    "-n",
                    "--pidfile=",
                    self.plugin,
                    *self.args,
                ],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.plugin} exited with {self.process.returncode}:\n{self.log_text()}")
            if self.http_port is None:
                if self.tcp_port is not None and _accepts(self.tcp_port):
                    return
            else:
                try:
                    response = await treq.get(self.http + "/healthz", timeout=2, persistent=False)
                    await response.content()
                    if response.code == 200:
                        return
                except Exception:
                    pass
            await pause(0.1)
        raise AssertionError(f"{self.plugin} did not come up within {timeout}s:\n{self.log_text()}")

    async def stop(self, *, timeout: float = 20.0) -> bool:
        """SIGTERM, wait for the exit (SIGKILL after ``timeout``).

        Returns:
            True when the process shut down by itself. twistd ends a SIGTERM
            shutdown by re-raising the signal, so that exit status counts as clean.
        """
        process = self.process
        if process is None:
            return True
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = reactor.seconds() + timeout
            while process.poll() is None and reactor.seconds() < deadline:
                await pause(0.05)
            if process.poll() is None:
                process.kill()
                process.wait()
        self.process = None
        return process.returncode in (0, -signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, at once (cleanup, or a crash test)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def log_text(self) -> str:
        """What the process logged so far."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""


async def run_to_exit(
    testcase: SynchronousTestCase, plugin: str, args: list[str], *, timeout: float = 20.0
) -> tuple[int, str]:
    """Run ``twistd -n PLUGIN ARGS`` until it exits by itself (killed at cleanup otherwise).

    Returns:
        ``(exit status, everything it printed)``.
    """
    workdir = Path(testcase.mktemp())
    workdir.mkdir(parents=True)
    output = workdir / "output.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", plugin, *args],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def kill() -> None:
        if process.poll() is None:
            process.kill()
            process.wait()

    testcase.addCleanup(kill)
    deadline = reactor.seconds() + timeout
    while process.poll() is None:
        if reactor.seconds() > deadline:
            raise AssertionError(f"twistd {plugin} did not exit within {timeout} s:\n{output.read_text(errors='replace')}")
        await pause(0.05)
    return process.returncode, output.read_text(errors="replace")


class StandaloneServer(GoimProcess):
    """``twistd -n goim`` on free ports with the given database."""

    def __init__(self, testcase: SynchronousTestCase, database: str, *extra: str) -> None:
        tcp_port = free_port()
        http_port = free_port()
        super().__init__(
            testcase,
            "goim",
            [
                "--tcp",
                f"tcp:{tcp_port}:interface=127.0.0.1",
                "--http",
                f"tcp:{http_port}:interface=127.0.0.1",
                "--database",
                database,
                *extra,
            ],
            http_port=http_port,
            tcp_port=tcp_port,
        )

    async def restart(self) -> None:
        """Stop gracefully and start again on the same ports and database."""
        await self.stop()
        await self.start()


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
