"""The server under test: a ``twistd -n goim`` child process, or one given by address.

:class:`BenchServer` starts the standalone server on loopback ports the kernel picks
(the shared harness, goim.testing.harness, reads them back) with its own
database (a SQLite file in a scratch directory, or a scratch MariaDB database that
is dropped again), reads its memory from ``/proc``, and always stops it.
:class:`TargetServer` is a server someone else runs (``--target-http`` and
``--target-tcp``); its memory is known only when ``--target-pid`` names it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.threads import deferToThread

from goim.testing.harness import LOOPBACK, GoimProcess
from goim_bench.driver import child_env, die_with_parent, pinned


def read_status(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` and the other ``kB`` lines of ``/proc/PID/status``, in KiB."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    """CPU time the process used so far, user and system (``/proc/PID/stat``); None
    when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cpu_list(text: str) -> set[int]:
    """The CPUs of a list in taskset's form (``0``, ``0-3``, ``0,2-3``)."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def busy_seconds(cpus: set[int], stat: str = "/proc/stat") -> float | None:
    """CPU time any task spent on ``cpus`` so far, user and system (the ``user``,
    ``nice`` and ``system`` columns of ``/proc/stat``: the time in interrupts is left
    out, as it is of a process's own); None when it cannot be read."""
    try:
        with open(stat) as f:
            ticks = 0
            for line in f:
                name, _, rest = line.partition(" ")
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    user, nice, system = rest.split()[:3]
                    ticks += int(user) + int(nice) + int(system)
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def cpus_allowed(pid: int) -> str | None:
    """The CPUs the process may run on (``Cpus_allowed_list`` of ``/proc/PID/status``, e.g. ``0``)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (``echo 5 > /proc/PID/clear_refs``)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def open_files_limit(pid: int) -> int | None:
    """The process's soft open-files limit, from ``/proc/PID/limits``."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def open_files(pid: int) -> int | None:
    """How many file descriptors the process holds."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Server:
    """What scenarios need of a server: addresses, and memory when the pid is known."""

    http: str = ""
    tcp_host: str = "127.0.0.1"
    tcp_port: int = 0
    pid: int | None = None
    database_kind = "unknown"

    @property
    def tcp_ports(self) -> list[int]:
        """Every client TCP port the load is spread over (one for a standalone server)."""
        return [self.tcp_port]

    def status(self) -> dict[str, int]:
        """``/proc`` memory lines in KiB (empty when the pid is unknown)."""
        return read_status(self.pid) if self.pid else {}

    def rss_kib(self) -> int | None:
        return self.status().get("VmRSS")

    def cpu_seconds(self) -> float | None:
        """CPU time the goim process(es) used so far (None when the pid is unknown)."""
        return cpu_seconds(self.pid) if self.pid else None

    def metrics_urls(self) -> list[str]:
        """HTTP base URLs whose ``/metrics`` count the message writer's work (goim_bench.writer)."""
        return [self.http] if self.http else []

    def reset_peak(self) -> bool:
        return reset_peak(self.pid) if self.pid else False

    def describe(self) -> dict[str, Any]:
        return {
            "http": self.http,
            "tcp": f"{self.tcp_host}:{self.tcp_port}",
            "pid": self.pid,
            "database": self.database_kind,
            "open_files_limit": open_files_limit(self.pid) if self.pid else None,
            "cpus_allowed": cpus_allowed(self.pid) if self.pid else None,
            "tcp_backlog": getattr(self, "backlog", None),
        }

    def log_text(self) -> str:
        return ""

    async def start(self) -> None:
        """Make the server ready (nothing to do for a target)."""

    async def stop(self) -> None:
        """Stop it (nothing to do for a target)."""


class TargetServer(Server):
    """A server started by someone else."""

    def __init__(self, http: str, tcp: str, pid: int | None = None) -> None:
        host, _, port = tcp.rpartition(":")
        self.http = http.rstrip("/")
        self.tcp_host = host or "127.0.0.1"
        self.tcp_port = int(port)
        self.pid = pid
        self.database_kind = "target"


#: The bench registers thousands of devices and holds many HTTP connections, all
#: from 127.0.0.1: lift the per-address throttles sized for real clients (issue 11).
#: ``extra_args`` come after these, so a scenario can set its own.
BENCH_LIMIT_ARGS = (
    "--device-registrations-per-minute",
    "10000000",
    "--http-max-connections-per-address",
    "100000",
)


class BenchServer(Server):
    """``twistd -n goim`` on loopback ports the kernel picks (goim.testing.harness),
    with a scratch database, in ``workdir``."""

    def __init__(
        self,
        reactor: Any,
        workdir: Path,
        *,
        database: str | None = None,
        cpus: str | None = None,
        backlog: int = 1024,
        nofile: int | None = None,
        extra_args: tuple[str, ...] = (),
        source: Path | None = None,
    ) -> None:
        """
        Args:
            database: None for SQLite; ``mysql://user:pw@host:port`` (no database
                name) for a scratch database created there and dropped on stop.
            cpus: a ``taskset -c`` CPU list to pin the server to.
            backlog: the client listener's listen(2) backlog.
            nofile: run the server with this lower open-files limit (``prlimit``),
                to reach the limit with few connections.
            source: a goim checkout the server runs from instead of the installed goim.
        """
        self.reactor = reactor
        self.workdir = workdir
        self.mysql = database.rstrip("/") if database else None
        self.cpus = cpus
        self.backlog = backlog
        self.nofile = nofile
        self.extra_args = extra_args
        self.tcp_host = "127.0.0.1"
        self.process = GoimProcess(
            "goim",
            {"--tcp": f"{LOOPBACK}:backlog={backlog}", "--http": LOOPBACK},
            workdir=workdir,
            env=child_env(source),
            wrap=self._wrap,
            preexec_fn=die_with_parent,
            reactor=reactor,
        )
        self.logfile = self.process.logfile
        self.database_name: str | None = None
        self.database_kind = "mysql" if self.mysql else "sqlite"

    def _wrap(self, argv: list[str]) -> list[str]:
        argv = pinned(argv, self.cpus)
        if self.nofile:
            argv = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--", *argv]
        return argv

    def database_url(self) -> str:
        if self.mysql:
            self.database_name = f"goim_bench_{secrets.token_hex(4)}"
            return f"{self.mysql}/{self.database_name}"
        return "sqlite:" + str((self.workdir / "goim.db").resolve())

    async def start(self, timeout: float = 60.0) -> None:
        url = self.database_url()
        if self.mysql:
            await deferToThread(mysql_admin, self.mysql, f"CREATE DATABASE {self.database_name} "
                                "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")  # fmt: skip
        self.process.args = ["--database", url, *BENCH_LIMIT_ARGS, *self.extra_args]
        try:
            await self.process.start(timeout=timeout)
        except AssertionError as e:
            raise RuntimeError(str(e)) from None
        self.pid = self.process.pid
        self.tcp_port = self.process.port("--tcp")
        self.http = f"http://127.0.0.1:{self.process.port('--http')}"

    async def stop(self, timeout: float = 20.0) -> None:
        await self.process.stop(timeout=timeout)
        if self.mysql and self.database_name:
            name, self.database_name = self.database_name, None
            await deferToThread(mysql_admin, self.mysql, f"DROP DATABASE IF EXISTS {name}")

    def kill(self) -> None:
        """SIGKILL at once (last-resort cleanup)."""
        self.process.kill()

    def log_text(self) -> str:
        return self.process.log_text()

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines)


def mysql_admin(server: str, statement: str) -> None:
    """Run one administrative statement on a MySQL server URL without a database (blocking)."""
    import pymysql

    parts = urlsplit(server)
    conn = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        autocommit=True,
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


def mysql_reachable(server: str) -> bool:
    """Whether a MySQL server URL accepts a connection (blocking)."""
    try:
        mysql_admin(server, "SELECT 1")
        return True
    except Exception:
        return False
