"""A distributed goim for one scenario: L ``goim-logic`` and C ``goim-connect`` processes,
a scratch MariaDB database and a private ``redis-server``, all on this machine.

Every listener binds port 0 and is read back through the shared harness
(goim.testing.harness), as the tests' cluster does (tests/distributed/harness.py).
The logic nodes serve HTTP (the bench registers through the first) and PB; the
connect nodes hold the clients' TCP connections, and the load generators spread
their devices over all of them (:attr:`BenchCluster.tcp_ports`). With ``--cpus``
every process of the cluster, Redis included, runs on the server's CPUs; the
MariaDB server is the machine's own and is not pinned (as for the standalone
server on MariaDB).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread

from goim.testing.harness import LOOPBACK, GoimProcess, pause
from goim_bench.driver import child_env, die_with_parent, gather, pinned
from goim_bench.server import BENCH_LIMIT_ARGS, Server, cpu_seconds, cpus_allowed, mysql_admin, read_status, reset_peak


class RedisProcess:
    """A throw-away ``redis-server`` on a free loopback port: no persistence, its own
    directory, ended with the driver (parent-death signal)."""

    def __init__(self, reactor: Any, workdir: Path, cpus: str | None = None) -> None:
        self.reactor = reactor
        self.workdir = workdir
        self.cpus = cpus
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self, timeout: float = 15.0) -> None:
        """Start it and wait until it accepts connections.

        Raises:
            RuntimeError: no ``redis-server`` binary, or it exited or did not answer in time.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no redis-server binary on PATH (a distributed setup needs one)")
        # redis-server cannot report a port the kernel picked: take a free one just before
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir)]  # fmt: skip
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                pinned(argv, self.cpus), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        deadline = self.reactor.seconds() + timeout
        while not self._accepts():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} (port {self.port})")
            if self.reactor.seconds() > deadline:
                raise RuntimeError(f"redis-server did not listen on port {self.port} within {timeout} s")
            await pause(0.05, reactor=self.reactor)

    def _accepts(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    async def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        deadline = self.reactor.seconds() + timeout
        while process.poll() is None and self.reactor.seconds() < deadline:
            await pause(0.05, reactor=self.reactor)
        if process.poll() is None:
            process.kill()
            process.wait()

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


class BenchCluster(Server):
    """L logic nodes and C connect nodes sharing a scratch MariaDB database and a private Redis.

    Args:
        mysql: the MariaDB server's URL without a database name; a scratch
            database is created there and dropped on stop.
        cpus: a ``taskset -c`` CPU list for every process of the cluster.
        backlog: the listen(2) backlog of the connect nodes' client listeners.
        nofile: a lower open-files limit for the connect nodes (``prlimit``).
        extra_args: more arguments of the logic nodes (e.g. the lifted send budget).
        source: a goim checkout the nodes run from instead of the installed goim.
    """

    def __init__(
        self,
        reactor: Any,
        workdir: Path,
        *,
        mysql: str,
        logic_nodes: int,
        connect_nodes: int,
        cpus: str | None = None,
        backlog: int = 1024,
        nofile: int | None = None,
        extra_args: tuple[str, ...] = (),
        source: Path | None = None,
    ) -> None:
        if logic_nodes < 1 or connect_nodes < 1:
            raise ValueError("a cluster needs at least one logic and one connect node")
        self.reactor = reactor
        self.workdir = workdir
        self.mysql = mysql.rstrip("/")
        self.cpus = cpus
        self.backlog = backlog
        self.nofile = nofile
        self.extra_args = extra_args
        self.source = source
        self.database_kind = "mysql"
        self.database_name: str | None = None
        self.prefix = f"goimbench{secrets.token_hex(4)}:"
        self.redis = RedisProcess(reactor, workdir, cpus)
        self.secret_file = workdir / "secret"
        self.logic = [self._process("goim-logic", f"l{i + 1}", {"--http": LOOPBACK, "--pb": LOOPBACK})
                      for i in range(logic_nodes)]  # fmt: skip
        self.connect = [
            self._process("goim-connect", f"c{i + 1}", {"--tcp": f"{LOOPBACK}:backlog={backlog}", "--http": LOOPBACK})
            for i in range(connect_nodes)
        ]
        self.tcp_host = "127.0.0.1"
        self._tcp_ports: list[int] = []

    def _process(self, plugin: str, node_id: str, endpoints: dict[str, str]) -> GoimProcess:
        return GoimProcess(
            plugin, endpoints, workdir=self.workdir / node_id, env=child_env(self.source),
            wrap=self._wrap_connect if plugin == "goim-connect" else self._wrap,
            preexec_fn=die_with_parent, reactor=self.reactor,
        )  # fmt: skip

    def _wrap(self, argv: list[str]) -> list[str]:
        return pinned(argv, self.cpus)

    def _wrap_connect(self, argv: list[str]) -> list[str]:
        argv = pinned(argv, self.cpus)
        if self.nofile:
            argv = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--", *argv]
        return argv

    @property
    def nodes(self) -> list[GoimProcess]:
        return [*self.logic, *self.connect]

    @property
    def tcp_ports(self) -> list[int]:
        """Every connect node's client TCP port (known once started)."""
        return list(self._tcp_ports)

    def _shared(self, redis_url: str) -> list[str]:
        return ["--redis", redis_url, "--redis-prefix", self.prefix, "--secret-file", str(self.secret_file)]

    def configure_logic(self, database_url: str, redis_url: str) -> None:
        """The logic nodes' arguments: the database, Redis, the shared secret, node ids
        ``l1``.., the bench's lifted HTTP throttles and the scenario's extra arguments."""
        for i, node in enumerate(self.logic):
            node.args = ["--database", database_url, *self._shared(redis_url), "--node-id", f"l{i + 1}",
                         *BENCH_LIMIT_ARGS, *self.extra_args]  # fmt: skip

    def configure_connect(self, pb_ports: list[int], redis_url: str) -> None:
        """The connect nodes' arguments: every logic node's PB address, Redis, the
        shared secret, node ids ``c1``.."""
        logic = ",".join(f"127.0.0.1:{port}" for port in pb_ports)
        for i, node in enumerate(self.connect):
            node.args = ["--logic", logic, *self._shared(redis_url), "--node-id", f"c{i + 1}"]

    async def start(self, timeout: float = 60.0) -> None:
        """The database, Redis, the first logic node (it migrates the schema), the other
        logic nodes together, then the connect nodes together (told every PB port).

        Raises:
            RuntimeError: a part did not come up (with the process's log tail).
        """
        self.database_name = f"goim_bench_{secrets.token_hex(4)}"
        await deferToThread(mysql_admin, self.mysql, f"CREATE DATABASE {self.database_name} "
                            "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")  # fmt: skip
        await self.redis.start()
        self.secret_file.write_text(secrets.token_hex(16))
        self.configure_logic(f"{self.mysql}/{self.database_name}", self.redis.url)
        try:
            await self.logic[0].start(timeout=timeout)
            await gather([node.start(timeout=timeout) for node in self.logic[1:]])
            self.configure_connect([node.port("--pb") for node in self.logic], self.redis.url)
            await gather([node.start(timeout=timeout) for node in self.connect])
        except AssertionError as e:  # the harness's way of saying a process did not come up
            raise RuntimeError(str(e)) from None
        self.http = self.logic[0].http
        self._tcp_ports = [node.port("--tcp") for node in self.connect]
        self.tcp_port = self._tcp_ports[0]

    async def stop(self, timeout: float = 20.0) -> None:
        """Connect nodes, then logic nodes (each group together), Redis; drop the database."""
        try:
            await gather([node.stop(timeout=timeout) for node in self.connect])
            await gather([node.stop(timeout=timeout) for node in self.logic])
            await self.redis.stop()
        finally:
            if self.database_name:
                name, self.database_name = self.database_name, None
                await deferToThread(mysql_admin, self.mysql, f"DROP DATABASE IF EXISTS {name}")

    def kill(self) -> None:
        """SIGKILL every process at once (last-resort cleanup)."""
        for node in self.nodes:
            node.kill()
        self.redis.kill()

    # --- what scenarios read

    def pids(self) -> dict[str, int]:
        """Node id -> pid of every running goim process (Redis not included)."""
        out = {}
        for node in self.nodes:
            if node.pid is not None:
                out[node.workdir.name] = node.pid
        return out

    def status(self) -> dict[str, int]:
        """The ``kB`` lines of ``/proc/PID/status`` summed over the goim processes:
        ``VmRSS`` is the cluster's resident memory (a peak sum is an upper bound)."""
        total: dict[str, int] = {}
        for pid in self.pids().values():
            for key, value in read_status(pid).items():
                total[key] = total.get(key, 0) + value
        return total

    def reset_peak(self) -> bool:
        return all([reset_peak(pid) for pid in self.pids().values()])

    def metrics_urls(self) -> list[str]:
        """Every logic node's HTTP base URL: the writers are theirs."""
        return [node.http for node in self.logic if node.pid is not None]

    def cpu_seconds(self) -> float | None:
        """CPU time the goim nodes used so far (not Redis nor MariaDB)."""
        times = [cpu_seconds(pid) for pid in self.pids().values()]
        return None if not times or None in times else sum(t for t in times if t is not None)

    def describe(self) -> dict[str, Any]:
        return {
            "http": self.http,
            "tcp": [f"{self.tcp_host}:{port}" for port in self._tcp_ports],
            "pid": None,
            "pids": self.pids(),
            "redis_pid": self.redis.pid,
            "database": self.database_kind,
            "database_name": self.database_name,  # dropped when the scenario ends
            "logic_nodes": len(self.logic),
            "connect_nodes": len(self.connect),
            "tcp_backlog": self.backlog,
            "cpus": self.cpus,
            # what the kernel enforces, read back: node id (and "redis") -> CPU list
            "cpus_allowed": {name: cpus_allowed(pid) for name, pid in
                             [*self.pids().items(), ("redis", self.redis.pid)] if pid},  # fmt: skip
        }

    def log_text(self) -> str:
        return "\n".join(f"===== {node.workdir.name} ({node.plugin})\n{node.log_text()}" for node in self.nodes)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"===== {node.workdir.name}\n{node.log_tail(lines)}" for node in self.nodes)
