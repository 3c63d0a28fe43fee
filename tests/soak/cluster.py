"""The soak's cluster: the distributed test harness, usable outside trial.

``tests.distributed.harness.Cluster`` takes a trial test case for ``mktemp``,
``addCleanup`` and the scratch database; :class:`Scope` offers the same few
methods to a command-line run, and runs the cleanups when the run ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import treq

from tests.distributed.harness import Cluster, MariaDBServer, kill_database_connections
from tests.support.db import _mysql_admin


class Scope:
    """What the harness needs from a test case: temporary paths, cleanups, a database.

    Args:
        mysql_server: a server URL without a database part (``mysql://root@127.0.0.1:3306``).
        workdir: where logs and secrets go; a fresh temporary directory by default.
    """

    def __init__(self, mysql_server: str, workdir: Path | None = None) -> None:
        self.mysql_server = mysql_server.rstrip("/")
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="goim-soak-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cleanups: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._serial = 0

    def mktemp(self) -> str:
        self._serial += 1
        return str(self.workdir / f"p{self._serial}")

    def addCleanup(self, function: Callable[..., Any], *args: Any) -> None:  # noqa: N802 (trial's name)
        self._cleanups.append((function, args))

    def database_url(self) -> str:
        """A uniquely named scratch database on the MySQL server (dropped by ``_drop``)."""
        name = f"goim_soak_{os.getpid()}_{secrets.token_hex(4)}"
        _mysql_admin(self.mysql_server, f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return f"{self.mysql_server}/{name}"

    def _drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        _mysql_admin(self.mysql_server, f"DROP DATABASE IF EXISTS {name}")

    def cleanup(self) -> None:
        """Run every cleanup, last registered first; one failing does not stop the rest."""
        while self._cleanups:
            function, args = self._cleanups.pop()
            try:
                function(*args)
            except Exception as e:  # cleanup must go on
                print(f"soak: cleanup {getattr(function, '__name__', function)} failed: {e!r}")

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def signal_process(process: Any, signum: int) -> bool:
    """Send ``signum`` to a running ``subprocess.Popen`` (False when it is not running)."""
    if process is None or process.poll() is not None:
        return False
    process.send_signal(signum)
    return True


class SoakCluster:
    """2 logic + 2 connect nodes and a private Redis, with the faults the soak injects.

    Node names: ``l1``, ``l2`` (logic), ``c1``, ``c2`` (connect), ``redis``.
    """

    def __init__(self, scope: Any, *, private_mariadb: bool = False) -> None:
        self.scope = scope
        self.mariadb = MariaDBServer(scope) if private_mariadb else None
        database = self.mariadb.url if self.mariadb is not None else None
        self.cluster = Cluster(scope, logic_nodes=2, connect_nodes=2, database=database)
        self.database = self.cluster.database
        self.stopped: set[str] = set()  # SIGSTOPped right now
        self.down: set[str] = set()  # SIGKILLed and not restarted yet

    async def start(self) -> None:
        if self.mariadb is not None:
            await self.mariadb.start()
        await self.cluster.start()

    def names(self) -> list[str]:
        return ["l1", "l2", "c1", "c2", "redis", *(["mariadb"] if self.mariadb is not None else [])]

    def _process(self, name: str) -> Any:
        if name == "mariadb":
            assert self.mariadb is not None
            return self.mariadb.process
        if name == "redis":
            return self.cluster.redis.process
        if name.startswith("l"):
            return self.cluster.logic[int(name[1:]) - 1].process
        return self.cluster.connect[int(name[1:]) - 1].process

    def _node(self, name: str) -> Any:
        if name == "mariadb":
            return self.mariadb
        if name == "redis":
            return self.cluster.redis
        if name.startswith("l"):
            return self.cluster.logic[int(name[1:]) - 1]
        return self.cluster.connect[int(name[1:]) - 1]

    def tcp_port(self, i: int) -> int:
        return self.cluster.tcp_port(i)

    def http(self, i: int = 0) -> str:
        return self.cluster.http(i)

    def kill(self, name: str) -> None:
        """SIGKILL (resuming it first if it was paused)."""
        self.resume(name)
        self._node(name).kill()
        self.down.add(name)

    async def restart(self, name: str) -> None:
        """Start a killed node again on the same ports."""
        await self._node(name).start()
        self.down.discard(name)

    def pause(self, name: str) -> None:
        if signal_process(self._process(name), signal.SIGSTOP):
            self.stopped.add(name)

    def resume(self, name: str) -> None:
        if name in self.stopped:
            signal_process(self._process(name), signal.SIGCONT)
            self.stopped.discard(name)

    def resume_all(self) -> None:
        for name in list(self.stopped):
            self.resume(name)

    async def heal(self) -> None:
        """Resume every paused process and restart every dead one (Redis first)."""
        self.resume_all()
        for name in [*(["mariadb"] if self.mariadb is not None else []), "redis", "l1", "l2", "c1", "c2"]:
            if name in self.down or self._process(name) is None or self._process(name).poll() is not None:
                try:
                    self._node(name).kill()  # reap
                except Exception:
                    pass
                await self.restart(name)

    def kill_database_connections(self) -> int:
        """KILL every MySQL connection to the scratch database (as a MySQL restart would)."""
        return kill_database_connections(self.database)

    async def health(self) -> dict[str, tuple[int, Any]]:
        """``/healthz`` of every node with an HTTP listener: name -> (status, data or error)."""
        out: dict[str, tuple[int, Any]] = {}
        for name in ["l1", "l2", "c1", "c2"]:
            node = self._node(name)
            try:
                response = await treq.get(node.http + "/healthz", timeout=5, persistent=False)
                body = await response.json()
                out[name] = (response.code, body.get("data"))
            except Exception as e:
                out[name] = (0, repr(e))
        return out

    def connect_log(self, i: int) -> str:
        return str(self.cluster.connect[i].log_text())

    def log_paths(self) -> dict[str, str]:
        return {name: str(self._node(name).logfile) for name in ["l1", "l2", "c1", "c2"]}

    def is_down(self, name: str) -> bool:
        return name in self.down
