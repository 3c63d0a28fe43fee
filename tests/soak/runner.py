"""One soak run: set up, drive, inject faults, heal, drain, check, print a verdict."""

from __future__ import annotations

import random
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet import reactor

_reactor: Any = reactor  # the global reactor, untyped (its stubs do not type the module)
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall

from goim.types import RECEIVER_GROUP, RECEIVER_USER
from tests.soak import checker
from tests.soak.checker import Row, Verdict
from tests.soak.client import HttpClient, SoakDevice, sleep
from tests.soak.cluster import Scope, SoakCluster
from tests.soak.faults import plan, run_faults
from tests.soak.history import Conn, History
from tests.e2e.httpapi import DEVICE, PASSWORD


@dataclass
class Options:
    duration: float = 90.0  # seconds of faults and traffic
    seed: int = 1
    users: int = 8
    devices_per_user: int = 2
    send_rate: float = 12.0  # new sends per second, all devices together
    churn_every: float = 10.0  # mean seconds between churn actions of one device
    mysql: str = "mysql://root@127.0.0.1:3306"
    keep: bool = False  # keep the logs' directory
    faults: bool = True  # False: traffic and churn only (a baseline)
    private_mariadb: bool = False  # a private mariadbd that the faults may SIGKILL and SIGSTOP too

    def replay_command(self) -> str:
        args = [
            "scripts/soak", "--duration", f"{self.duration:g}s", "--seed", str(self.seed),
            "--users", str(self.users), "--devices-per-user", str(self.devices_per_user),
            "--send-rate", f"{self.send_rate:g}", "--churn-every", f"{self.churn_every:g}",
        ]
        if not self.faults:
            args.append("--no-faults")
        if self.private_mariadb:
            args.append("--private-mariadb")
        if self.mysql != Options.mysql:
            args += ["--mysql", self.mysql]
        return " ".join(shlex.quote(a) for a in args)


@dataclass
class Result:
    verdict: Verdict
    options: Options
    logs: dict[str, str]
    workdir: Path

    @property
    def passed(self) -> bool:
        return self.verdict.passed


class Run:
    def __init__(self, options: Options, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.history = History()
        self.rng = random.Random(f"workload-{options.seed}")
        self.devices: list[SoakDevice] = []
        self.sentinel: SoakDevice | None = None
        self.t0 = time.monotonic()

    def stamp(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.t0:6.1f}s] {text}")

    async def setup(self, cluster: SoakCluster) -> None:
        o = self.options
        http = HttpClient([cluster.http(0), cluster.http(1)], random.Random(f"http-{o.seed}"))
        self.http = http
        users: list[dict[str, Any]] = []
        for u in range(o.users + 1):  # the last one is the sentinel
            number = f"soak{o.seed}u{u}"
            device = await http.ok("POST", "/device", DEVICE)
            data = await http.ok("POST", "/user", {"number": number, "nickname": number, "password": PASSWORD},
                                 auth=(device["id"], device["token"]))
            devices = [(device["id"], device["token"])]
            if u < o.users:
                for _ in range(o.devices_per_user - 1):
                    extra = await http.ok("POST", "/device", DEVICE)
                    await http.ok("POST", "/user/signin", {"number": number, "password": PASSWORD},
                                  auth=(extra["id"], extra["token"]))
                    devices.append((extra["id"], extra["token"]))
            users.append({"id": data["user_id"], "number": number, "devices": devices})
        people, sentinel = users[:-1], users[-1]
        for i, a in enumerate(people):
            for b in people[i + 1:]:
                await http.ok("POST", "/friend", {"friend_id": b["id"], "label": ""},
                              auth=tuple(a["devices"][0]))
        ids = [u["id"] for u in people]
        half = max(2, len(ids) // 2 + 1)
        groups = {"first": ids[:half], "second": ids[-half:]}
        directory_groups: dict[int, frozenset[int]] = {}
        for name, members in groups.items():
            owner = next(u for u in people if u["id"] == members[0])
            data = await http.ok("POST", "/group", {"name": name, "user_ids": members[1:]},
                                 auth=tuple(owner["devices"][0]))
            directory_groups[data["id"]] = frozenset(members)
        everyone = await http.ok("POST", "/group", {"name": "everyone", "user_ids": ids},
                                 auth=tuple(sentinel["devices"][0]))
        self.everyone = (RECEIVER_GROUP, everyone["id"])
        ports = [cluster.tcp_port(0), cluster.tcp_port(1)]
        for user in people:
            directory: dict[tuple[int, int], frozenset[int]] = {}
            for other in ids:
                if other != user["id"]:
                    directory[(RECEIVER_USER, other)] = frozenset({user["id"], other})
            for group_id, group_members in directory_groups.items():
                if user["id"] in group_members:
                    directory[(RECEIVER_GROUP, group_id)] = group_members
            for device_id, token in user["devices"]:
                self.devices.append(SoakDevice(
                    self.history, device_id=device_id, token=token, user_id=user["id"], number=user["number"],
                    ports=ports, http=http, rng=random.Random(f"device-{o.seed}-{device_id}"),
                    directory=directory, log=self.stamp))
        sid, stoken = sentinel["devices"][0]
        self.sentinel = SoakDevice(
            self.history, device_id=sid, token=stoken, user_id=sentinel["id"], number=sentinel["number"],
            ports=ports, http=http, rng=random.Random(f"sentinel-{o.seed}"),
            directory={self.everyone: frozenset([*ids, sentinel["id"]])}, log=self.stamp)
        self.sentinel.running = False
        self.stamp(f"set up {len(people)} users with {len(self.devices)} devices, 2 groups and a sentinel user")

    async def workload(self, until: float) -> None:
        """New sends at ``send_rate`` and churn, until ``until`` (monotonic)."""
        o = self.options
        churn_p = 1.0 / max(o.churn_every, 1.0)
        tick = 0.25
        debt = 0
        while time.monotonic() < until:
            await sleep(tick)
            budget = o.send_rate * tick
            sends = int(budget) + (1 if self.rng.random() < budget - int(budget) else 0)
            paid = min(debt, sends)
            debt -= paid
            sends -= paid
            ready = [d for d in self.devices if d.current is not None and d.current.open and not d.http_busy
                     and not d.quiet]
            while sends > 0 and ready:
                device = self.rng.choice(ready)
                burst = min(sends, self.rng.choice([1, 1, 2, 3, 4]))
                if self.rng.random() < 0.05:
                    burst = self.rng.randint(10, 40)  # a long pipelined run, paid for by later ticks
                device.new_sends(burst)
                debt += max(0, burst - sends)
                sends -= burst
            for device in self.devices:
                if self.rng.random() >= churn_p * tick:
                    continue
                roll = self.rng.random()
                if roll < 0.3:
                    device.reconnect(same_node=True)
                elif roll < 0.6:
                    device.reconnect(same_node=False)
                elif roll < 0.85:
                    device.takeover()
                else:
                    device.spawn(device.http_sign_in())

    async def drain(self, timeout: float) -> bool:
        """Until every device is connected with nothing pending (or ``timeout``)."""
        for device in self.devices:
            device.quiet = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [d for d in self.devices if d.pending or d.http_busy or d.current is None or not d.current.open]
            if not busy:
                return True
            await sleep(0.5)
        for d in self.devices:
            if d.pending or d.current is None:
                self.history.notes.append(
                    f"device {d.device_id}: still {len(d.pending)} pending sends / "
                    f"{'connected' if d.current else 'not connected'} after the drain")
        return False

    async def send_sentinel(self, cluster: SoakCluster, verdict: Verdict) -> None:
        """The sentinel signs in on each connect node (the health probe) and sends one
        group message that every user receives, so a device that lost a push sees a gap."""
        device = self.sentinel
        assert device is not None
        device.running = True
        for node in range(2):
            proto = await device._connect(node)
            if proto is None:
                verdict.add("health", f"connect node c{node + 1} refused or did not answer a sign-in after the faults")
        device.quiet = False
        if device.current is None:
            device.ensure_connected()
        device.new_sends(1)
        deadline = time.monotonic() + 30
        while device.pending and time.monotonic() < deadline:
            await sleep(0.2)
            device.watchdog()
        if device.pending:
            verdict.add("health", "the sentinel's group send was not ACKed within 30 s after the faults")

    async def wait_online_complete(self, db: Any, timeout: float) -> tuple[list[tuple[Conn, set[int]]], dict[int, int]]:
        """Wait (up to ``timeout``) until every device's open connection got the sentinel
        message and the device holds all its user's seqs.

        Returns:
            ``(connection, seqs its device holds)`` of every device signed in at the
            end, and the sentinel's seq per user.
        """
        assert self.sentinel is not None
        content = self.sentinel.sends[-1].content if self.sentinel.sends else ""
        deadline = time.monotonic() + timeout
        while True:
            tops = db.user_tops()
            marks = db.seqs_of(content)
            current = [
                (d.current.conn, d) for d in self.devices
                if d.current is not None and d.current.open and d.current.conn.signed_in
            ]
            behind = [c for c, d in current
                      if marks.get(c.user_id) not in c.received or d.contiguous < tops.get(c.user_id, 0)]
            if not behind or time.monotonic() > deadline:
                for d in self.devices:
                    if d.current is None or not d.current.open:
                        self.history.notes.append(f"device {d.device_id} was not connected at the end")
                return [(c, set(d.store)) for c, d in current], marks
            await sleep(0.5)


class ScratchDB:
    """Direct reads of the scratch database (the final check)."""

    def __init__(self, url: str) -> None:
        import pymysql

        parts = urlsplit(url)
        self.connection = pymysql.connect(
            host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
            password=parts.password or "", database=parts.path.lstrip("/"), autocommit=True, charset="utf8mb4")

    def user_tops(self) -> dict[int, int]:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT user_id, MAX(seq) FROM messages GROUP BY user_id")
            return {int(u): int(s) for u, s in cursor.fetchall()}

    def rows(self) -> list[Row]:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT user_id, seq, message_id, sender_device_id, content FROM messages")
            return [Row(int(a), int(b), int(c), int(d), str(e)) for a, b, c, d, e in cursor.fetchall()]

    def seqs_of(self, content: str) -> dict[int, int]:
        """user -> seq of the copies of one message (by content)."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT user_id, seq FROM messages WHERE content = %s", (content,))
            return {int(u): int(s) for u, s in cursor.fetchall()}

    def user_seqs(self) -> dict[int, int]:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT user_id, seq FROM user_seqs")
            return {int(u): int(s) for u, s in cursor.fetchall()}

    def close(self) -> None:
        self.connection.close()


async def run_soak(options: Options, say: Callable[[str], None] = print) -> Result:
    """Run one soak and return its verdict (every process is stopped, the database dropped)."""
    scope = Scope(options.mysql)
    run = Run(options, say)
    verdict = Verdict()
    logs: dict[str, str] = {}
    watchdog: LoopingCall | None = None
    # Interrupted (Ctrl-C, SIGTERM): the reactor stops without finishing this
    # coroutine, so kill the processes and drop the database on the way out.
    trigger = _reactor.addSystemEventTrigger("before", "shutdown", scope.cleanup)
    try:
        say(f"goim fault soak: seed {options.seed}, {options.duration:g} s of faults, "
            f"{options.users} users x {options.devices_per_user} devices, ~{options.send_rate:g} sends/s")
        say(f"replay: {options.replay_command()}")
        cluster = SoakCluster(scope, private_mariadb=options.private_mariadb)
        await cluster.start()
        run.stamp(f"cluster up: logic {cluster.http(0)} {cluster.http(1)}, connect tcp "
                  f"{cluster.tcp_port(0)} {cluster.tcp_port(1)}, database {urlsplit(cluster.database).path[1:]}, "
                  f"logs in {scope.workdir}")
        await run.setup(cluster)

        def dog() -> None:
            for device in [*run.devices, run.sentinel]:
                if device is not None:
                    device.watchdog()

        watchdog = LoopingCall(dog)
        watchdog.start(1.0, now=False)
        for device in run.devices:
            device.ensure_connected(run.rng.random())
        await sleep(2.0)
        run.stamp("traffic and faults start")
        schedule = plan(options.seed, options.duration, cluster.names()) if options.faults else []
        end = time.monotonic() + options.duration
        faults = Deferred.fromCoroutine(run_faults(cluster, run.history, schedule, options.duration, run.stamp,
                                                   sleep))
        await gatherResults([Deferred.fromCoroutine(run.workload(end)), faults])
        run.stamp("faults stop: resuming and restarting whatever is down")
        await cluster.heal()
        # health: every node answers, connect nodes reach both logic nodes and Redis
        deadline = time.monotonic() + 60
        while True:
            health = await cluster.health()
            bad = {n: h for n, h in health.items() if h[0] != 200 or (
                n.startswith("c") and isinstance(h[1], dict)
                and (h[1].get("logic_nodes_connected") != 2 or not h[1].get("redis_subscribed")))}
            if not bad or time.monotonic() > deadline:
                break
            await sleep(1.0)
        for name, (status, data) in bad.items():
            verdict.add("health", f"{name} /healthz 60 s after the faults: {status} {data}")
        run.stamp(f"health: {'ok' if not bad else bad}")
        drained = await run.drain(90)
        run.stamp("drained: every device connected, every send answered" if drained else "drain timed out")
        await run.send_sentinel(cluster, verdict)
        db = ScratchDB(cluster.database)
        try:
            open_conns, marks = await run.wait_online_complete(db, 60)
            if watchdog.running:
                watchdog.stop()
            run.stamp(f"checking {len(run.history.sends)} sends, {len(run.history.conns)} connections, "
                      f"{len(open_conns)} open at the end")
            rows = db.rows()
            placed = checker.check_storage(run.history, rows, db.user_seqs(), verdict)
            checker.check_order(run.history, placed, verdict)
            checker.check_online(open_conns, marks, rows, verdict, run.history.conns)
        finally:
            db.close()
        for prop, evidence in run.history.live_violations:
            verdict.add(prop, evidence)
        logs = {name: Path(path).read_text(errors="replace") for name, path in cluster.log_paths().items()}
        checker.check_sessions(run.history, logs, verdict)
        verdict.stats["connections"] = len(run.history.conns)
        verdict.stats["signed_in"] = sum(1 for c in run.history.conns if c.signed_in)
        verdict.stats["kicked"] = sum(1 for c in run.history.conns if c.kicked)
        verdict.stats["faults"] = len(run.history.faults)
        closes: dict[str, int] = {}
        for c in run.history.conns:
            why = (f"kicked {c.kicked[0]!r}" if c.kicked else c.closed_by_client.split(":")[0] or
                   ("closed by the server or network" if c.closed_at else "open"))
            if c.signin_code != 1:
                why = f"not signed in ({why})"
            closes[why] = closes.get(why, 0) + 1
        run.history.notes.insert(0, "connections: " + ", ".join(f"{k} {v}" for k, v in sorted(closes.items())))
    except Exception as e:
        import traceback

        verdict.add("harness", f"the soak itself failed: {e!r}\n{traceback.format_exc()}")
    finally:
        if watchdog is not None and watchdog.running:
            watchdog.stop()
        waiters = []
        for each in [*run.devices, run.sentinel]:
            if each is not None:
                waiters += each.stop()
        if waiters:
            await gatherResults(waiters)
        _reactor.removeSystemEventTrigger(trigger)
        scope.cleanup()
    if not verdict.passed or options.keep:
        try:
            dump_history(run.history, scope.workdir / "history.json")
        except Exception as e:
            say(f"could not write history.json: {e!r}")
    print_verdict(options, verdict, run.history, scope.workdir, say)
    if verdict.passed and not options.keep:
        scope.remove_workdir()
    return Result(verdict, options, logs, scope.workdir)


def dump_history(history: History, path: Path) -> None:
    """Every send, connection and fault as JSON (evidence for a failed run)."""
    import dataclasses
    import json

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    path.write_text(json.dumps({
        "faults": plain(history.faults), "conns": plain(history.conns), "sends": plain(history.sends),
        "notes": history.notes, "live_violations": history.live_violations,
        "tcp_signins": plain(history.tcp_signins), "http_signins": plain(history.http_signins),
    }))


def print_verdict(options: Options, verdict: Verdict, history: History, workdir: Path,
                  say: Callable[[str], None]) -> None:
    say("")
    say("stats: " + ", ".join(f"{k} {v}" for k, v in verdict.stats.items()))
    for note in history.notes[:10]:
        say(f"note: {note}")
    if len(history.notes) > 10:
        say(f"note: ... {len(history.notes) - 10} more")
    if verdict.passed:
        say(f"VERDICT: PASS (seed {options.seed})")
        return
    say(f"VERDICT: FAIL: first violated property: {verdict.first} (seed {options.seed})")
    say(verdict.report())
    say(f"logs and history.json: {workdir}")
    say(f"replay: {options.replay_command()}")
