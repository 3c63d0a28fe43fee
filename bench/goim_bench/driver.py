"""The driver's side of the load-generator processes: spawn, command, collect, stop."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

ProgressCallback = Callable[[int, dict[str, Any]], None]


class LoadgenError(RuntimeError):
    """A load generator failed, answered with an error, or did not answer in time."""


def source_address(index: int) -> str:
    """The loopback source address of load generator ``index``: 127.0.0.2, 127.0.0.3, ...

    Spreading the connections of each process over its own address keeps every
    (source, destination) pair far from the ephemeral-port range's size.
    """
    if not 0 <= index < 250:
        raise ValueError("at most 250 load generators")
    return f"127.0.0.{index + 2}"


def child_env(source: Path | None = None) -> dict[str, str]:
    """The environment of child Python processes: this one, unbuffered (goim and
    goim_bench are installed packages, so no search path is added).

    Args:
        source: a goim checkout whose ``goim`` package (and twistd plugins) a goim
            server process imports instead of the installed one (``--server-source``).
    """
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH", "")) if p)
    return env


def die_with_parent() -> None:
    """``preexec_fn`` of child processes: SIGTERM them when the driver dies (Linux).

    A driver killed with SIGKILL (a CI timeout) then leaves no server behind.
    """
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """``argv`` under ``taskset -c cpus`` when ``cpus`` is given."""
    return ["taskset", "-c", cpus, *argv] if cpus else argv


class LoadgenProcess(ProcessProtocol):
    """One ``python -m goim_bench.loadgen`` child speaking JSON lines."""

    def __init__(self, index: int, log_path: Path, on_progress: ProgressCallback | None) -> None:
        self.index = index
        self.log_path = log_path
        self.on_progress = on_progress
        self._log = open(log_path, "ab")
        self._buffer = b""
        self._next_id = 0
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self.ended: Deferred[None] = Deferred()
        self.exit_reason: Failure | None = None

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._handle(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self._log.write(data)
        self._log.flush()

    def _handle(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "progress":
            if self.on_progress is not None:
                self.on_progress(self.index, message["data"])
            return
        waiter = self._pending.pop(message.get("id", -1), None)
        if waiter is None:
            return
        if event == "reply":
            waiter.callback(message["data"])
        else:
            waiter.errback(LoadgenError(f"load generator {self.index}: {message.get('message')}"))

    def processEnded(self, reason: Failure) -> None:
        self.exit_reason = reason
        self._log.close()
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.errback(LoadgenError(f"load generator {self.index} exited: {self.log_tail()}"))
        self.ended.callback(None)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def command(self, cmd: str, timeout: float, reactor: Any, **args: Any) -> Deferred[dict[str, Any]]:
        """Send one command; the Deferred fires with its reply (or fails after ``timeout`` s)."""
        if self.transport is None or self.ended.called:
            raise LoadgenError(f"load generator {self.index} is not running")
        self._next_id += 1
        ident = self._next_id
        waiter: Deferred[dict[str, Any]] = Deferred()
        self._pending[ident] = waiter

        def timed_out() -> None:
            if self._pending.pop(ident, None) is waiter:
                waiter.errback(LoadgenError(f"load generator {self.index}: {cmd} got no reply in {timeout:.0f} s"))

        timer = reactor.callLater(timeout, timed_out)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        waiter.addBoth(done)
        request = dict(args, id=ident, cmd=cmd)
        transport: Any = self.transport
        transport.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        return waiter

    def kill(self) -> None:
        try:
            transport: Any = self.transport
            if transport is not None:
                transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass


class LoadgenPool:
    """Several load generators of one scenario; each plays its own devices.

    Use as ``async with`` through :meth:`start`/:meth:`stop`; :meth:`stop` always
    ends every process (``exit`` command, then SIGKILL after a deadline).
    """

    def __init__(
        self,
        reactor: Any,
        *,
        host: str,
        port: int,
        workdir: Path,
        cpus: str | None = None,
        max_seconds: float = 3600.0,
        content_size: int = 64,
        ack_every: float = 0.25,
        ws_url: str | None = None,
        ports: Sequence[int] | None = None,
    ) -> None:
        self.reactor = reactor
        #: the client TCP ports (on ``host``) the devices are spread over, when there
        #: are several (connect nodes); else every device connects to ``port``
        self.ports: list[int] | None = list(ports) if ports and len(ports) > 1 else None
        self.ws_url = ws_url
        self.host = host
        self.port = port
        self.workdir = workdir
        self.cpus = cpus
        self.max_seconds = max_seconds
        self.content_size = content_size
        self.ack_every = ack_every
        self.procs: list[LoadgenProcess] = []
        #: client port -> devices dealt to it (the spread over connect nodes)
        self.devices_per_port: dict[int, int] = {}
        self.progress: dict[int, dict[str, Any]] = {}
        self.on_progress: Callable[[], None] | None = None

    def _progress(self, index: int, data: dict[str, Any]) -> None:
        self.progress[index] = data
        if self.on_progress is not None:
            self.on_progress()

    def total(self, key: str) -> int:
        """The sum of the latest progress value ``key`` over the processes."""
        return sum(int(p.get(key, 0)) for p in self.progress.values())

    def start(self, device_lists: Sequence[Sequence[Sequence[Any]]]) -> None:
        """Spawn one process per device list (``[device_id, user_id, token, rtype, rid]`` rows)."""
        for index, devices in enumerate(device_lists):
            for i in range(len(devices)):
                port = port_for(i, self.ports or [self.port])
                self.devices_per_port[port] = self.devices_per_port.get(port, 0) + 1
            job = {
                "host": self.host,
                "port": self.port,
                "ports": self.ports,
                "ws_url": self.ws_url,
                "source": source_address(index),
                "content_size": self.content_size,
                "ack_every": self.ack_every,
                "devices": [list(d) for d in devices],
            }
            fd, job_path = tempfile.mkstemp(prefix=f"loadgen{index}-", suffix=".json", dir=self.workdir)
            with os.fdopen(fd, "w") as f:
                json.dump(job, f)
            proc = LoadgenProcess(index, self.workdir / f"loadgen{index}.log", self._progress)
            argv = pinned(
                [sys.executable, "-m", "goim_bench.loadgen", "--job", job_path, "--max-seconds", str(self.max_seconds)],
                self.cpus,
            )
            self.reactor.spawnProcess(
                proc,
                shutil.which(argv[0]) or argv[0],
                argv,
                env=child_env(),
                path=str(self.workdir),
                childFDs={0: "w", 1: "r", 2: "r"},
            )
            self.procs.append(proc)

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until every process has started and answers (Python start-up takes a while)."""
        await self.all("stats", timeout=timeout)

    async def all(
        self, cmd: str, *, timeout: float, per_process: Callable[[int], dict[str, Any]] | None = None, **args: Any
    ) -> list[dict[str, Any]]:
        """Run ``cmd`` on every process at once; returns the replies in process order."""
        self.progress = {}
        calls = []
        for proc in self.procs:
            extra = per_process(proc.index) if per_process is not None else {}
            calls.append(proc.command(cmd, timeout, self.reactor, **{**args, **extra}))
        return await gather(calls)

    async def one(self, index: int, cmd: str, *, timeout: float, **args: Any) -> dict[str, Any]:
        """Run ``cmd`` on process ``index`` only."""
        self.progress = {}
        return await self.procs[index].command(cmd, timeout, self.reactor, **args)

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask every process to exit; SIGKILL whatever is still running after ``timeout`` s."""
        for proc in self.procs:
            if not proc.ended.called:
                try:
                    proc.command("exit", timeout, self.reactor).addErrback(lambda _: None)
                except LoadgenError:
                    pass
        deadline = self.reactor.seconds() + timeout
        while any(not p.ended.called for p in self.procs) and self.reactor.seconds() < deadline:
            await _sleep(self.reactor, 0.05)
        for proc in self.procs:
            if not proc.ended.called:
                proc.kill()
        for proc in self.procs:
            await proc.ended

    def failures(self) -> list[str]:
        """Processes that did not exit cleanly, with their log tails."""
        bad = []
        for proc in self.procs:
            reason = proc.exit_reason
            if reason is not None and not reason.check(ProcessDone):
                bad.append(f"load generator {proc.index}: {reason.value}\n{proc.log_tail()}")
        return bad


async def gather(calls: Sequence[Any]) -> list[Any]:
    """Await Deferreds or coroutines together; the first failure is raised as itself
    (not wrapped in ``FirstError``), after all have finished."""
    deferreds = [Deferred.fromCoroutine(c) if not isinstance(c, Deferred) else c for c in calls]
    try:
        results: list[Any] = await gatherResults(deferreds, consumeErrors=True)
    except FirstError as e:
        error: Any = e.subFailure.value
        raise error from None
    return results


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def port_for(index: int, ports: Sequence[int]) -> int:
    """The client port of a load generator's device ``index``: its devices take the
    ports in turn (the load generator's ``port_for`` does the same)."""
    return ports[index % len(ports)]


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """Deal ``items`` round-robin into ``parts`` lists (some may be empty)."""
    out: list[list[Any]] = [[] for _ in range(max(1, parts))]
    for i, item in enumerate(items):
        out[i % len(out)].append(item)
    return out
