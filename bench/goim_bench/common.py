"""What every scenario shares: settings, the run context, progress bars, verification."""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence

from goim_bench.accounts import BenchDevice, Registrar, run_all
from goim_bench.driver import LoadgenPool
from goim_bench.server import Server, busy_seconds, cpu_list
from goim_bench.stats import digest


#: the MariaDB server used when --database names none
DEFAULT_MYSQL = "mysql://root@127.0.0.1:3306"


@dataclass
class Settings:
    """What the command line chose."""

    quick: bool = False
    output: Path = Path("bench/results")
    database: str | None = None  # MySQL server URL without a database name, or None for SQLite
    server_cpus: str | None = None
    load_cpus: str | None = None
    loadgens: int | None = None
    target_http: str | None = None
    target_tcp: str | None = None
    target_pid: int | None = None
    keep_work: bool = False
    registration_concurrency: int = 16
    redis: str | None = None
    server_nofile: int | None = None
    tcp_backlog: int = 1024
    #: a goim checkout the servers run from instead of the installed goim (before/after runs)
    server_source: Path | None = None
    sizes: dict[str, Any] = field(default_factory=dict)
    #: where the server scenarios run (goim_bench.topology); empty: chosen at run time
    setups: list[Any] = field(default_factory=list)
    #: --setup was given (a setup that cannot run is then an error, not a note)
    setups_given: bool = False

    @property
    def mysql_server(self) -> str:
        """The MariaDB server (no database name) of the mysql and distributed setups and the limits."""
        return self.database or DEFAULT_MYSQL

    def size(self, name: str, quick: Any, full: Any) -> Any:
        """A size: the command line's override, else the quick or the full default."""
        if name in self.sizes:
            return self.sizes[name]
        return quick if self.quick else full


class ScenarioFailed(RuntimeError):
    """The scenario could not complete (its result says why)."""


@dataclass
class Context:
    """One scenario's run: server, registrar, scratch directory, result being built."""

    reactor: Any
    settings: Settings
    server: Server
    workdir: Path
    name: str
    result: dict[str, Any] = field(default_factory=dict)
    pools: list[LoadgenPool] = field(default_factory=list)
    #: how load generators connect: "tcp" (the client port) or "ws" (/ws of the HTTP port)
    transport: str = "tcp"

    def __post_init__(self) -> None:
        self._registrar: Registrar | None = None
        self.metrics: dict[str, Any] = self.result.setdefault("metrics", {})
        self.params: dict[str, Any] = self.result.setdefault("params", {})
        self.errors: list[str] = self.result.setdefault("errors", [])
        self.notes: list[str] = self.result.setdefault("notes", [])

    @property
    def registrar(self) -> Registrar:
        """HTTP setup calls to the server (its address is known once it started)."""
        if self._registrar is None:
            self._registrar = Registrar(self.server.http, concurrency=self.settings.registration_concurrency)
        return self._registrar

    def ws_url(self) -> str:
        """The server's WebSocket: /ws of its HTTP listener."""
        return self.server.http.replace("https://", "wss://").replace("http://", "ws://").rstrip("/") + "/ws"

    def loadgen_count(self, minimum: int = 1, wanted: int = 2) -> int:
        """How many load generators: the command line's choice, else ``wanted``, at least ``minimum``."""
        return max(minimum, self.settings.loadgens or wanted)

    def pool(self, max_seconds: float = 3600.0, content_size: int = 64) -> LoadgenPool:
        pool = LoadgenPool(
            self.reactor,
            host=self.server.tcp_host,
            port=self.server.tcp_port,
            ports=self.server.tcp_ports,
            workdir=self.workdir,
            cpus=self.settings.load_cpus,
            max_seconds=max_seconds,
            content_size=content_size,
            ack_every=float(self.settings.size("ack_interval", 0.25, 0.25)),
            ws_url=self.ws_url() if self.transport == "ws" else None,
        )
        self.pools.append(pool)
        return pool

    async def start_pool(self, device_lists: Sequence[Sequence[Sequence[Any]]]) -> LoadgenPool:
        """Start one load generator per list of job rows and wait until all answer."""
        pool = self.pool()
        pool.start(device_lists)
        await pool.ready()
        return pool

    def bar(self, desc: str, total: float | None, unit: str = "it") -> Any:
        """A tqdm progress bar for one step of this scenario."""
        tqdm = importlib.import_module("tqdm").tqdm  # no type stubs for tqdm in [test]
        return tqdm(total=total, desc=f"{self.name}: {desc}", unit=unit, mininterval=0.5, leave=True, dynamic_ncols=True)

    async def sleep(self, seconds: float) -> None:
        from goim_bench.driver import _sleep

        await _sleep(self.reactor, seconds)

    async def users(self, count: int, label: str, devices: int = 1) -> list[Any]:
        """Register ``count`` users with ``devices`` devices each, with a progress bar."""
        bar = self.bar(f"register {label}", count * devices, "device")
        try:
            return await run_all(
                [partial(self.registrar.new_user, f"{label}{i}", devices) for i in range(count)],
                lambda: bar.update(devices),
                concurrency=self.settings.registration_concurrency,
            )
        finally:
            bar.close()

    def track(self, pool: LoadgenPool, bar: Any, key: str) -> None:
        """Move ``bar`` with the sum of the load generators' progress value ``key``."""

        last = [0.0]

        def update() -> None:
            now = time.monotonic()
            if now - last[0] >= 0.5:
                last[0] = now
                bar.n = pool.total(key)
                bar.refresh()

        pool.on_progress = update


def device_row(device: BenchDevice, receiver_type: int = 0, receiver_id: int = 0) -> list[Any]:
    """A load generator's job row for one device."""
    return [device.device_id, device.user_id, device.token, receiver_type, receiver_id]


class MemorySampler:
    """Samples the server's VmRSS every ``interval`` s while running."""

    def __init__(self, reactor: Any, server: Server, interval: float, extra: Callable[[], Any] | None = None) -> None:
        self.reactor = reactor
        self.server = server
        self.interval = interval
        self.extra = extra
        self.samples: list[list[Any]] = []
        self.start = time.time()
        self._call: Any = None

    def begin(self) -> MemorySampler:
        self.start = time.time()
        self._tick()
        return self

    def _tick(self) -> None:
        rss = self.server.rss_kib()
        if rss is not None:
            row: list[Any] = [round(time.time() - self.start, 3), rss]
            if self.extra is not None:
                row.append(self.extra())
            self.samples.append(row)
        self._call = self.reactor.callLater(self.interval, self._tick)

    def end(self) -> list[list[Any]]:
        if self._call is not None and self._call.active():
            self._call.cancel()
        return self.samples


class CoreSampler:
    """Every quarter second, the CPU time that other processes than goim's took on the
    server's cores (``--cpus``): a stall of the server that it did not cause.

    The figure is the cores' busy time (``/proc/stat``) less the goim processes'
    own (``/proc/PID/stat``), both counted in clock ticks (10 ms) and read a moment
    apart, so a quarter's value is good to a tick or two; the kernel's own threads
    and MariaDB and Redis count as other processes.
    """

    INTERVAL = 0.25

    def __init__(self, reactor: Any, server: Server, cpus: str, stat: str = "/proc/stat") -> None:
        self.reactor = reactor
        self.server = server
        self.cpus = cpu_list(cpus)
        self.stat = stat
        #: ``[epoch s the quarter began, ms of other processes' CPU in it]``
        self.samples: list[list[float]] = []
        self.total = 0.0
        self._last: tuple[float, float, float] | None = None
        self._call: Any = None

    def _read(self) -> tuple[float, float, float] | None:
        busy, own = busy_seconds(self.cpus, self.stat), self.server.cpu_seconds()
        return None if busy is None or own is None else (self.reactor.seconds(), busy, own)

    def begin(self) -> CoreSampler:
        self._last = self._read()
        self._call = self.reactor.callLater(self.INTERVAL, self._tick)
        return self

    def _tick(self) -> None:
        now, last = self._read(), self._last
        if now is not None and last is not None:
            other = max(0.0, (now[1] - last[1]) - (now[2] - last[2]))
            self.total += other
            self.samples.append([last[0], round(other * 1000.0, 1)])
        self._last = now
        self._call = self.reactor.callLater(self.INTERVAL, self._tick)

    def end(self, origin: float) -> list[list[float]]:
        """Stop; the samples as ``[s since origin, ms]``."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        return [[round(t - origin, 2), ms] for t, ms in self.samples]


def merge_buckets(replies: Iterable[dict[str, Any]]) -> dict[int, int]:
    """Add up per-quarter-second counters (keys ``int(time * 4)``) of several processes."""
    total: dict[int, int] = {}
    for buckets in replies:
        for key, count in buckets.items():
            total[int(key)] = total.get(int(key), 0) + int(count)
    return total


def worst_series(replies: Iterable[dict[str, Any]], origin: float) -> list[list[float]]:
    """``[seconds since origin, longest latency ms]`` per quarter second of send time,
    over several processes' ``worst_ms`` (keys ``int(time * 4)``)."""
    worst: dict[int, float] = {}
    for buckets in replies:
        for key, value in buckets.items():
            worst[int(key)] = max(worst.get(int(key), 0.0), float(value))
    return [[round(k / 4.0 - origin, 2), round(worst[k], 1)] for k in sorted(worst)]


def steady_rate(buckets: dict[int, int], start: float, end: float, trim: float = 0.2) -> float:
    """Events per second between ``start`` and ``end`` (epoch s), leaving out ``trim`` of
    the span at each end (ramp-up and the tail)."""
    span = end - start
    if span <= 0:
        return 0.0
    lo = math.ceil((start + span * trim) * 4)
    hi = math.floor((end - span * trim) * 4)
    if hi <= lo:
        lo, hi = math.floor(start * 4), math.ceil(end * 4)
    count = sum(c for k, c in buckets.items() if lo <= k < hi)
    return count / ((hi - lo) / 4.0)


def rate_series(buckets: dict[int, int], origin: float) -> tuple[list[float], list[float]]:
    """``(seconds since origin, events/s)`` per quarter second, for plots."""
    if not buckets:
        return [], []
    keys = range(min(buckets), max(buckets) + 1)
    return [k / 4.0 - origin for k in keys], [buckets.get(k, 0) * 4.0 for k in keys]


def expected_by_user(
    acked: Iterable[Sequence[int]], groups: Mapping[int, Sequence[int]]
) -> tuple[dict[int, set[int]], int]:
    """Who must hold each acknowledged message.

    Args:
        acked: ``[message_id, sender user, receiver_type, receiver_id, sender device]`` rows.
        groups: group id -> member user ids.

    Returns:
        ``(user id -> message ids, number of message ids acknowledged more than once)``.
    """
    expected: dict[int, set[int]] = {}
    seen: set[int] = set()
    repeated = 0
    for message_id, sender, receiver_type, receiver_id, _device in acked:
        if message_id in seen:
            repeated += 1
            continue
        seen.add(message_id)
        users: Iterable[int] = (sender, receiver_id) if receiver_type == 1 else groups.get(receiver_id, (sender,))
        for user in users:
            expected.setdefault(user, set()).add(message_id)
    return expected, repeated


def check_reports(
    reports: Iterable[Sequence[Any]], expected: dict[int, set[int]], *, max_problems: int = 20
) -> dict[str, Any]:
    """Compare what each device synced with what it must hold.

    A report is ``[device_id, user_id, held_before, sync_count, sync_digest, sequence_ok,
    conflicts]`` (see ``LoadGenerator.cmd_verify``).

    Returns:
        ``{"devices", "ok", "problems", "held_before", "expected_total", "verified"}``.
    """
    digests = {user: (len(ids), digest(ids)) for user, ids in expected.items()}
    devices = ok = held = total = 0
    problems: list[str] = []
    for device_id, user_id, held_before, count, sync_digest, sequence_ok, conflicts in reports:
        devices += 1
        want_count, want_digest = digests.get(user_id, (0, digest([])))
        total += want_count
        held += min(held_before, want_count)
        issues = []
        if count != want_count:
            issues.append(f"synced {count} messages, {want_count} acknowledged")
        elif sync_digest != want_digest:
            issues.append("synced message ids differ from the acknowledged ones")
        if not sequence_ok:
            issues.append("sequences not 1..n or a message id twice")
        if conflicts:
            issues.append(f"{conflicts} received copies disagree with the stored ones")
        if issues:
            if len(problems) < max_problems:
                problems.append(f"device {device_id} (user {user_id}): " + "; ".join(issues))
        else:
            ok += 1
    return {
        "devices": devices,
        "ok": ok,
        "problems": problems,
        "held_before_sync": held,
        "expected_total": total,
        "push_coverage": round(held / total, 4) if total else 1.0,
        "verified": devices == ok,
    }


async def verify_pool(
    ctx: Context,
    pool: LoadgenPool,
    groups: Mapping[int, Sequence[int]],
    *,
    require_connected: bool = True,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """End of every scenario: sync every device from 0 and compare with the ACKed sends.

    Records ``verification`` in the result and returns it.
    """
    acked_replies = await pool.all("acked", timeout=60)
    acked = [row for reply in acked_replies for row in reply["acked"]]
    unacked = sum(reply["unacked"] for reply in acked_replies)
    failures: dict[str, int] = {}
    for reply in acked_replies:
        for reason, count in reply["failures"].items():
            failures[reason] = failures.get(reason, 0) + count
    expected, repeated = expected_by_user(acked, groups)
    bar = ctx.bar("verify by sync", None, "device")
    ctx.track(pool, bar, "verified")
    try:
        replies = await pool.all("verify", timeout=timeout + 60.0, within=timeout, concurrency=100)
        bar.n = sum(len(reply["reports"]) for reply in replies)
    finally:
        pool.on_progress = None
        bar.close()
    reports = [r for reply in replies for r in reply["reports"]]
    verification = check_reports(reports, expected)
    not_connected = sum(reply["not_connected"] for reply in replies)
    sync_errors: dict[str, int] = {}
    for reply in replies:
        for reason, count in reply["errors"].items():
            sync_errors[reason] = sync_errors.get(reason, 0) + count
    total_devices = verification["devices"] + not_connected
    verification.update(
        acked_sends=len(acked),
        acked_twice=repeated,
        unacked_sends=unacked,
        refused_sends=failures,
        not_connected=not_connected,
        sync_errors=sync_errors,
        total_devices=total_devices,
    )
    problems = verification["problems"]
    if repeated:
        problems.append(f"{repeated} message ids were acknowledged for two different sends")
    if unacked:
        problems.append(f"{unacked} sends never got an ACK")
    if failures:
        problems.append(f"sends refused: {failures}")
    if sync_errors:
        problems.append(f"verification syncs failed: {sync_errors}")
    if require_connected and not_connected:
        problems.append(f"{not_connected} devices were not connected at the end")
    verification["verified"] = not problems and verification["devices"] > 0
    ctx.result["verification"] = verification
    return verification
