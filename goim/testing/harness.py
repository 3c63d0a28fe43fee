"""Real goim processes for tests and benchmarks: ``twistd -n goim|goim-logic|goim-connect``.

One launcher for the test suite (tests/support/server.py, tests/distributed,
tests/soak) and the benchmark suite (bench/, the ``goim-bench`` distribution).
It lives in goim because both depend on goim and neither should depend on the
other; it imports nothing of goim's own, so it drives the server from outside
only: a child process, its log, its HTTP ``/healthz``.

Listeners are asked for on port 0 and the bound ports are read back from the
file the server writes once every listener is up (``GOIM_PORTS_FILE``, see
``goim.server.write_ports_file``): no free port is picked in advance, so no other
process can take it between the pick and the bind. A restart reuses the ports of
the first start, as a restarted real server would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from inspect import isawaitable
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import treq
from twisted.internet.defer import Deferred

#: the twistd command line, without the plugin
TWISTD = (sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=")

#: a loopback listener on a port the kernel picks
LOOPBACK = "tcp:0:interface=127.0.0.1"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def pause(seconds: float, *, reactor: Any = None) -> None:
    """Let the reactor run for a while (polling real processes, never in unit tests)."""
    clock = reactor if reactor is not None else _reactor()
    d: Deferred[None] = Deferred()
    clock.callLater(seconds, d.callback, None)
    await d


async def wait_until(
    condition: Callable[[], Any],
    what: str,
    *,
    timeout: float = 30.0,
    interval: float = 0.01,
    reactor: Any = None,
) -> Any:
    """Poll ``condition`` until it returns something true, and return that.

    Args:
        condition: checked now and then every ``interval`` seconds while the reactor
            runs; it may return an awaitable (an ``async`` function asking a server),
            whose result is the answer.
        what: the awaited state, for the failure message.
        timeout: seconds before giving up.

    Raises:
        AssertionError: ``condition`` stayed false until the deadline.
    """
    clock = reactor if reactor is not None else _reactor()
    deadline = clock.seconds() + timeout
    while True:
        result = condition()
        if isawaitable(result):
            result = await result
        if result:
            return result
        if clock.seconds() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pause(interval, reactor=clock)


def distinct_endpoints(endpoints: Mapping[str, str]) -> dict[str, str]:
    """The endpoint strings with equal ones respelled, so each names one listener.

    The ports file lists listeners by the endpoint string the server was given;
    ``--tcp tcp:0:interface=127.0.0.1 --http tcp:0:interface=127.0.0.1`` would be
    two equal entries. Twisted reads ``tcp:0:X``, ``tcp:port=0:X``, ``tcp:X:port=0``
    and ``tcp:X:0`` alike, so those spellings tell up to four apart.
    """
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for option, description in endpoints.items():
        n = seen.get(description, 0)
        seen[description] = n + 1
        kind, _, rest = description.partition(":")
        port, _, params = rest.partition(":")
        if n == 0:
            out[option] = description
        elif kind != "tcp" or not params or n > 3:
            raise ValueError(f"cannot tell listeners apart: {option} {description} is given {n + 1} times")
        else:
            out[option] = [f"tcp:port={port}:{params}", f"tcp:{params}:port={port}", f"tcp:{params}:{port}"][n - 1]
    return out


def with_port(description: str, port: int) -> str:
    """A ``tcp:0:...`` endpoint string (any spelling above) with ``port`` instead of 0."""
    kind, _, rest = description.partition(":")
    parts = rest.split(":")
    for i, part in enumerate(parts):
        if part in ("0", "port=0"):
            parts[i] = str(port) if part == "0" else f"port={port}"
            return ":".join([kind, *parts])
    return description


class GoimProcess:
    """One ``twistd -n PLUGIN`` child process whose listeners bind port 0.

    Args:
        plugin: ``goim``, ``goim-logic`` or ``goim-connect``.
        endpoints: listener option -> endpoint string, e.g.
            ``{"--tcp": LOOPBACK, "--http": LOOPBACK}``; port 0 is read back into
            :attr:`ports` at start.
        args: the other command-line arguments (may be changed before a start).
        workdir: the process's working directory; its log and ports file go there.
        env: the environment (this process's by default).
        wrap: rewrites the argv (``taskset``, ``prlimit``).
        preexec_fn: run in the child before exec (e.g. a parent-death signal).
        reactor: for polling; the global reactor by default.
    """

    def __init__(
        self,
        plugin: str,
        endpoints: Mapping[str, str],
        args: Sequence[str] = (),
        *,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        reactor: Any = None,
    ) -> None:
        self.plugin = plugin
        self.endpoints = distinct_endpoints(endpoints)
        self.args = list(args)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env) if env is not None else None
        self.wrap = wrap
        self.preexec_fn = preexec_fn
        self.reactor = reactor if reactor is not None else _reactor()
        self.logfile = self.workdir / f"{plugin}.log"
        self.ports_file = self.workdir / f"{plugin}.ports.json"
        #: listener option -> bound port, known once started
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None

    # --- addresses

    def port(self, option: str) -> int:
        """The bound port of the listener given as ``option`` (``--tcp``, ``--http``, ``--pb``, ``--ws``)."""
        if option not in self.ports:
            raise KeyError(f"{self.plugin} has no bound {option} listener (started? {sorted(self.ports)})")
        return self.ports[option]

    @property
    def http(self) -> str:
        """The base URL of the HTTP listener."""
        return f"http://127.0.0.1:{self.port('--http')}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def argv(self) -> list[str]:
        argv = [*TWISTD, self.plugin]
        for option, description in self.endpoints.items():
            argv += [option, description]
        argv += self.args
        return self.wrap(argv) if self.wrap is not None else argv

    # --- life cycle

    async def start(self, *, timeout: float = 30.0, healthy: bool = True) -> None:
        """Start the process; wait until every listener is up (the ports file) and,
        with ``healthy`` and an HTTP listener, until ``/healthz`` answers 200.

        Raises:
            AssertionError: the process exited or did not come up within ``timeout``.
        """
        try:
            self.ports_file.unlink()
        except FileNotFoundError:
            pass
        env = dict(self.env if self.env is not None else os.environ)
        env["GOIM_PORTS_FILE"] = str(self.ports_file.resolve())
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(),
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=self.preexec_fn,
            )
        deadline = self.reactor.seconds() + timeout
        while not self.ports_file.exists():
            self._check_alive(deadline, timeout, "bind its listeners")
            await pause(0.02, reactor=self.reactor)
        self._read_ports()
        if healthy and "--http" in self.ports:
            while not await self._healthy():
                self._check_alive(deadline, timeout, "answer /healthz")
                await pause(0.1, reactor=self.reactor)

    def _check_alive(self, deadline: float, timeout: float, what: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.plugin} exited with {self.process.returncode}:\n{self.log_tail()}")
        if self.reactor.seconds() > deadline:
            raise AssertionError(f"{self.plugin} did not {what} within {timeout} s:\n{self.log_tail()}")

    def _read_ports(self) -> None:
        listeners = json.loads(self.ports_file.read_text())["listeners"]
        bound = {entry["endpoint"]: int(entry["port"]) for entry in listeners}
        for option, description in list(self.endpoints.items()):
            if description not in bound:
                raise AssertionError(f"{self.plugin} did not report a listener for {option} {description}: {listeners}")
            self.ports[option] = bound[description]
            # a restart binds the same port again
            self.endpoints[option] = with_port(description, bound[description])

    async def _healthy(self) -> bool:
        try:
            response = await treq.get(self.http + "/healthz", timeout=2, persistent=False)
            await response.content()
            return bool(response.code == 200)
        except Exception:
            return False

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
            deadline = self.reactor.seconds() + timeout
            while process.poll() is None and self.reactor.seconds() < deadline:
                await pause(0.05, reactor=self.reactor)
            if process.poll() is None:
                process.kill()
                process.wait()
        self.process = None
        return process.returncode in (0, -signal.SIGTERM)

    async def restart(self) -> None:
        """Stop gracefully and start again on the same ports."""
        await self.stop()
        await self.start()

    def kill(self) -> None:
        """SIGKILL, at once (cleanup, or a crash test)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    # --- output

    def log_text(self) -> str:
        """What the process logged so far."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


async def run_to_exit(
    plugin: str, args: Sequence[str], *, workdir: Path, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> tuple[int, str]:
    """Run ``twistd -n PLUGIN ARGS`` until it exits by itself (a start that must fail).

    Returns:
        ``(exit status, everything it printed)``.

    Raises:
        AssertionError: it did not exit within ``timeout`` (it is killed).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "output.txt"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [*TWISTD, plugin, *args],
            cwd=workdir,
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    try:
        while process.poll() is None:
            if reactor.seconds() > deadline:
                raise AssertionError(f"twistd {plugin} did not exit within {timeout} s:\n{output.read_text(errors='replace')}")
            await pause(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, output.read_text(errors="replace")
