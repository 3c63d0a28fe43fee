"""The noisy-neighbour scenario: normal users chatting while one user attacks the server.

P pairs of users chat one-to-one at a fixed, moderate rate (one send a second per
user by default) for a quiet phase, then for an equal phase while, at the same
time:

* a flooder sends to a group of the largest default size (500) from several
  devices, as fast as the frame rate limit lets it, dropping sends refused with
  code 5 and sending new ones (it never waits for ``retry_after_ms``);
* a password guesser signs in over HTTP with wrong passwords, four at a time;
* a slow HTTP client holds many connections that send one header byte every few
  seconds and never finish a request;
* a never-reader signs in as a member of the flooded group, sends heartbeats and
  never reads a byte.

The attackers connect from their own loopback addresses (per-address defences see
them apart from the normal users on 127.0.0.1). Reported, quiet vs under attack:
the normal users' send -> push latency (p50/p99), failed sends, a probe of normal
HTTP requests (friend lists and sign-ins of users nobody attacks) with its
failures and latency, and the server's RSS; and what each attacker achieved.
Targets: p99 under attack <= 2x quiet, no failed normal request, RSS flat.
"""

from __future__ import annotations

import json
import random
import time
from functools import partial
from typing import Any

from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from goim_bench.accounts import PASSWORD, run_all
from goim_bench.common import Context, MemorySampler, device_row, verify_pool
from goim_bench.driver import gather
from goim_bench.stats import summarize
from goim.protocols import codec

#: the scenario's server keeps the default send budget; a short write grace lets the
#: never-reader's disconnection show within a short phase
SERVER_ARGS = ("--write-grace", "5")

#: loopback source addresses of the attackers (the normal users use 127.0.0.1 and 127.0.0.2+)
GUESSER_ADDRESS = "127.0.1.1"
SLOW_HTTP_ADDRESS = "127.0.1.2"
NEVER_READER_ADDRESS = "127.0.1.3"


def _tr(proto: Any) -> Any:
    """A protocol's transport, untyped (ITransport's stubs do not type ``write``)."""
    return proto.transport


class _Collect(Protocol):
    """Writes a request, collects the answer until the server closes."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        _tr(self).write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.data)


def http_request(method: str, path: str, body: Any, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 request with ``Connection: close``."""
    payload = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", "Connection: close", f"Content-Length: {len(payload)}",
             "Content-Type: application/json", *[f"{k}: {v}" for k, v in headers.items()]]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response (0 when there was none)."""
    try:
        return int(response.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


async def raw_http(reactor: Any, host: str, port: int, source: str, request: bytes, timeout: float = 30.0) -> bytes:
    """Send one raw request from ``source`` and return the whole response."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout, bindAddress=(source, 0))
    proto = _Collect(request)
    await endpoints.connectProtocol(endpoint, proto)
    call = reactor.callLater(timeout, lambda: proto.transport.abortConnection() if proto.transport else None)
    try:
        return await proto.done
    finally:
        if call.active():
            call.cancel()


class Guesser:
    """Signs in with wrong passwords as fast as ``concurrency`` requests in flight allow."""

    def __init__(self, ctx: Context, number: str, device: tuple[int, str], concurrency: int = 4) -> None:
        self.ctx = ctx
        self.number = number
        self.device = device
        self.concurrency = concurrency
        self.active = False
        self.statuses: dict[str, int] = {}
        self.sent = 0

    async def run(self) -> None:
        self.active = True
        host, port = _host_port(self.ctx.server.http)
        headers = {"device_id": str(self.device[0]), "token": self.device[1]}

        async def worker() -> None:
            while self.active:
                request = http_request("POST", "/user/signin", {"number": self.number,
                                       "password": f"wrong-{random.randrange(10**9)}"}, headers)  # fmt: skip
                self.sent += 1
                try:
                    status = str(status_of(await raw_http(self.ctx.reactor, host, port, GUESSER_ADDRESS, request)))
                except Exception as e:
                    status = type(e).__name__
                    await self.ctx.sleep(0.05)
                self.statuses[status] = self.statuses.get(status, 0) + 1

        await gather([worker() for _ in range(self.concurrency)])


class _Slow(Protocol):
    def __init__(self, owner: SlowHTTP) -> None:
        self.owner = owner
        self.closed_by_server = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        _tr(self).write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.owner.stopping:
            self.owner.closed_by_server += 1
        self.owner.open.discard(self)


class SlowHTTP:
    """Holds ``count`` HTTP connections that each send one header byte every ``every`` seconds."""

    def __init__(self, ctx: Context, count: int, every: float = 5.0) -> None:
        self.ctx = ctx
        self.count = count
        self.every = every
        self.open: set[_Slow] = set()
        self.opened = 0
        self.refused = 0
        self.closed_by_server = 0
        self.stopping = False
        self._call: Any = None

    async def start(self) -> None:
        host, port = _host_port(self.ctx.server.http)
        endpoint = endpoints.TCP4ClientEndpoint(self.ctx.reactor, host, port, timeout=5, bindAddress=(SLOW_HTTP_ADDRESS, 0))
        for _ in range(self.count):
            try:
                proto = await endpoints.connectProtocol(endpoint, _Slow(self))
            except Exception:
                self.refused += 1
                continue
            self.opened += 1
            self.open.add(proto)
        self._call = self.ctx.reactor.callLater(self.every, self._drip)

    def _drip(self) -> None:
        for proto in list(self.open):
            if proto.transport is not None:
                _tr(proto).write(b"X")
        self._call = self.ctx.reactor.callLater(self.every, self._drip)

    def stop(self) -> dict[str, int]:
        self.stopping = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        still_open = len(self.open)
        for proto in list(self.open):
            if proto.transport is not None:
                proto.transport.abortConnection()
        return {"connections": self.count, "opened": self.opened, "refused": self.refused,
                "closed_by_server": self.closed_by_server, "still_open_at_end": still_open}  # fmt: skip


_SYNC_FROM_0 = codec.SyncTrigger(sync_sequence=0).to_frame()


class _NeverReads(Protocol):
    def __init__(self, owner: NeverReader) -> None:
        self.owner = owner

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # never read: the kernel's receive buffer fills, then the server's
        self.owner.connected_at = time.time()
        _tr(self).write(self.owner.sign_in + _SYNC_FROM_0)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.owner.lost_at = time.time()


class NeverReader:
    """Signs in, then sends heartbeats and never reads."""

    def __init__(self, ctx: Context, device_id: int, user_id: int, token: str, heartbeats_per_s: float = 1000.0) -> None:
        self.ctx = ctx
        self.sign_in = codec.SignIn(device_id=device_id, user_id=user_id, token=token).to_frame()
        self.heartbeats_per_s = heartbeats_per_s
        self.proto: _NeverReads | None = None
        self.connected_at = 0.0
        self.lost_at = 0.0
        self.heartbeats = 0
        self.stopping = False
        self._call: Any = None

    async def start(self) -> None:
        endpoint = endpoints.TCP4ClientEndpoint(self.ctx.reactor, self.ctx.server.tcp_host, self.ctx.server.tcp_port,
                                                timeout=5, bindAddress=(NEVER_READER_ADDRESS, 0))  # fmt: skip
        self.proto = await endpoints.connectProtocol(endpoint, _NeverReads(self))
        self._call = self.ctx.reactor.callLater(0.1, self._beat)

    def _beat(self) -> None:
        if self.proto is not None and self.proto.transport is not None and not self.lost_at:
            batch = max(1, int(self.heartbeats_per_s / 10))
            # heartbeats, and a sync of the whole history once a second: replies to pile up
            sync = _SYNC_FROM_0 if self.heartbeats % (10 * batch) == 0 else b""
            _tr(self.proto).write(codec.Heartbeat().to_frame() * batch + sync)
            self.heartbeats += batch
            self._call = self.ctx.reactor.callLater(0.1, self._beat)

    def stop(self) -> dict[str, Any]:
        if self._call is not None and self._call.active():
            self._call.cancel()
        closed_by_server = bool(self.lost_at)
        if self.proto is not None and self.proto.transport is not None and not self.lost_at:
            self.proto.transport.abortConnection()
        return {
            "heartbeats_sent": self.heartbeats,
            "closed_by_server": closed_by_server,
            "closed_after_s": round(self.lost_at - self.connected_at, 1) if closed_by_server else None,
        }


class Probe:
    """Normal HTTP requests during a phase: friend lists, and sign-ins of a user nobody attacks."""

    def __init__(self, ctx: Context, users: list[Any], signer: Any, interval: float = 0.25) -> None:
        self.ctx = ctx
        self.users = users
        self.signer = signer  # a user with a second device to sign in on
        self.interval = interval
        self.active = False
        self.latency: list[float] = []
        self.failures: dict[str, int] = {}
        self.requests = 0

    async def _one(self, method: str, path: str, body: Any, auth: tuple[int, str]) -> None:
        import treq

        headers: dict[bytes | str, list[bytes | str]] = {b"device_id": [str(auth[0]).encode()], b"token": [auth[1].encode()]}
        data = json.dumps(body).encode() if body is not None else None
        started = time.monotonic()
        self.requests += 1
        try:
            response = await treq.request(method, self.ctx.server.http + path, headers=headers, data=data,
                                          persistent=False, timeout=30)  # fmt: skip
            envelope = json.loads(await response.content())
            if response.code != 200 or envelope.get("code") != 0:
                key = f"{path} {response.code} {envelope.get('code')}"
                self.failures[key] = self.failures.get(key, 0) + 1
                return
        except Exception as e:
            key = f"{path} {type(e).__name__}"
            self.failures[key] = self.failures.get(key, 0) + 1
            return
        self.latency.append((time.monotonic() - started) * 1000.0)

    async def run(self) -> None:
        self.active = True
        tick = 0
        pending = []
        while self.active:
            tick += 1
            user = random.choice(self.users)
            pending.append(Deferred.fromCoroutine(self._one("GET", "/friend/all", None, user.auth)))
            if tick % 4 == 0:
                device = self.signer.devices[1]
                pending.append(Deferred.fromCoroutine(self._one(
                    "POST", "/user/signin", {"number": self.signer.number, "password": PASSWORD},
                    (device.device_id, device.token))))  # fmt: skip
            await self.ctx.sleep(self.interval)
        await gather(pending)

    def figures(self) -> dict[str, Any]:
        return {"requests": self.requests, "failed": sum(self.failures.values()), "failures": self.failures,
                "latency_ms": summarize(self.latency)}  # fmt: skip


def _host_port(base: str) -> tuple[str, int]:
    host, _, port = base.removeprefix("http://").rstrip("/").rpartition(":")
    return host, int(port)


def _rss(samples: list[list[Any]], start: float, end: float) -> dict[str, Any]:
    inside = [kib for at, kib, *_ in samples if start <= at <= end]
    if not inside:
        return {}
    return {"start_mib": round(inside[0] / 1024, 1), "end_mib": round(inside[-1] / 1024, 1),
            "max_mib": round(max(inside) / 1024, 1)}  # fmt: skip


async def noisy(ctx: Context) -> None:
    """Normal users' latency, failures and the server's memory, quiet vs under attack."""
    from goim_bench.scenarios import _connect, _quiesce, _receive_figures, _send

    s = ctx.settings
    pairs = int(s.size("noisy_pairs", 10, 100))
    rate = float(s.size("noisy_rate", 1.0, 1.0))
    phase_s = float(s.size("noisy_phase_s", 3.0, 30.0))
    group_size = int(s.size("noisy_group", 50, 500))
    flood_devices = int(s.size("noisy_flood_devices", 3, 4))
    slow_connections = int(s.size("noisy_slow_http", 50, 500))
    offered = pairs * 2 * rate
    ctx.params.update(server_args=" ".join(SERVER_ARGS), pairs=pairs, sends_per_user_per_s=rate, offered_per_s=offered, phase_s=phase_s,
                      flood_group=group_size, flood_devices=flood_devices, slow_http_connections=slow_connections,
                      guess_concurrency=4)  # fmt: skip

    users = await ctx.users(2 * pairs, "n")
    await run_all([partial(ctx.registrar.befriend, users[2 * i], users[2 * i + 1]) for i in range(pairs)])
    [signer] = await ctx.users(1, "s", devices=2)
    [flooder] = await ctx.users(1, "f", devices=flood_devices)
    [reader] = await ctx.users(1, "r")
    members = await ctx.users(group_size - 2, "m")
    group_id = await ctx.registrar.create_group(flooder, "flood", [*members, reader])
    guesser_device = await ctx.registrar.new_device()

    rows = []
    for i in range(pairs):
        a, b = users[2 * i], users[2 * i + 1]
        rows.append(device_row(a.devices[0], 1, b.user_id))
        rows.append(device_row(b.devices[0], 1, a.user_id))
    pool = await ctx.start_pool([rows[: len(rows) // 2], rows[len(rows) // 2 :]])
    flood_pool = await ctx.start_pool([[device_row(d, 2, group_id) for d in flooder.devices]])
    await _connect(ctx, pool, len(rows), sync=True, concurrency=100)
    await _connect(ctx, flood_pool, flood_devices, desc="connect flooder", sync=True, concurrency=10)

    memory = MemorySampler(ctx.reactor, ctx.server, 0.5).begin()
    origin = memory.start

    async def normal_phase(name: str) -> dict[str, Any]:
        probe = Probe(ctx, users, signer)
        probe_done = Deferred.fromCoroutine(probe.run())
        phase = await _send(ctx, pool, f"{name}: {offered:,.0f}/s", duration=phase_s, expected=offered * phase_s,
                            mode="paced", phase=name, per_process=lambda i: {"rate": offered / len(pool.procs)})  # fmt: skip
        probe.active = False
        await probe_done
        rx = _receive_figures((await _quiesce(pool)).get(name, []), phase["start"], phase["end_sending"])
        rx.pop("buckets", None)
        return {
            "sent": phase["sent"],
            "acked": phase["acked"],
            "failed_sends": phase["failed"],
            "unacked_sends": phase["unacked"],
            "latency_ms": rx["latency_ms"],
            "ack_latency_ms": phase["ack_latency_ms"],
            "pushes": rx["deliveries"],
            "http": probe.figures(),
            "start": phase["start"],
            "end": phase["end"],
        }

    def flood_figures(flood: dict[str, Any]) -> dict[str, Any]:
        return {
            "sent": flood["sent"],
            "stored": flood["acked"],
            "refused_code_5": flood["failed"],  # a hostile sender drops every code 5 (loadgen "failures")
            "copies_stored": flood["acked"] * group_size,
            "ack_latency_ms": flood["ack_latency_ms"],
        }

    never = NeverReader(ctx, reader.devices[0].device_id, reader.user_id, reader.devices[0].token)
    phases: dict[str, dict[str, Any]] = {}
    attackers: dict[str, Any] = {}
    attack_spans: list[list[float]] = []
    # (phase, attackers): each attacker alone, then all of them at once
    plan = [("quiet", ()), ("flood", ("flood",)), ("guess", ("guess",)), ("slow", ("slow", "never")),
            ("attack", ("flood", "guess", "slow", "never"))]  # fmt: skip
    for name, attacks in plan:
        began = time.time()
        flooding = guessing = None
        guesser = Guesser(ctx, users[0].number, guesser_device)
        slow = SlowHTTP(ctx, slow_connections)
        if "slow" in attacks:
            await slow.start()
        if "never" in attacks and never.proto is None:
            await never.start()  # it stays connected (and never reads) until the end
        if "guess" in attacks:
            guessing = Deferred.fromCoroutine(guesser.run())
        if "flood" in attacks:
            flooding = Deferred.fromCoroutine(_send(ctx, flood_pool, f"{name} flood", duration=phase_s + 1.5,
                                                    mode="window", window=200, phase=f"f{name}", hostile=True))  # fmt: skip
        if attacks:
            await ctx.sleep(1.5)  # let the attack build up first
        phase = await normal_phase(name)
        phase["rss"] = _rss(memory.samples, phase["start"] - origin, phase["end"] - origin)
        phase["attackers"] = list(attacks)
        mine: dict[str, Any] = {}
        if flooding is not None:
            mine["flood"] = flood_figures(await flooding)
        if guessing is not None:
            guesser.active = False
            await guessing
            mine["password_guesses"] = {"sent": guesser.sent, "statuses": guesser.statuses}
        if "slow" in attacks:
            mine["slow_http"] = slow.stop()
        phases[name] = phase
        attackers[name] = mine
        if attacks:
            attack_spans.append([round(began - origin, 2), round(time.time() - origin, 2)])
    # the never-reader: how long until the server gave up on it
    deadline = time.time() + float(s.size("noisy_never_wait_s", 10.0, 30.0))
    while not never.lost_at and time.time() < deadline:
        await ctx.sleep(0.25)
    attackers["never_reader"] = never.stop()
    quiet, attack = phases["quiet"], phases["attack"]
    await ctx.sleep(2.0)
    samples = memory.end()
    ctx.metrics["phases"] = phases
    ctx.metrics["attackers"] = attackers
    ctx.metrics["rss_mib"] = {
        "before": round(samples[0][1] / 1024, 1) if samples else None,
        **{f"{name}_max": phase["rss"].get("max_mib") for name, phase in phases.items()},
        "after": round(samples[-1][1] / 1024, 1) if samples else None,
    }
    q99 = quiet["latency_ms"].get("p99")
    a99 = attack["latency_ms"].get("p99")
    failed = {name: d["failed_sends"] + d["unacked_sends"] + d["http"]["failed"] for name, d in phases.items()}
    ratio = round(a99 / q99, 2) if q99 and a99 is not None else None
    ctx.metrics["targets"] = {
        "p99_attack_over_quiet": ratio,
        "p99_over_quiet": {name: round(d["latency_ms"]["p99"] / q99, 2) if q99 and d["latency_ms"].get("p99") else None
                           for name, d in phases.items()},
        "p99_within_2x": ratio is not None and ratio <= 2.0,
        "failed_normal_requests": failed,
        "zero_failed_normal_requests": not any(failed.values()),
        "rss_growth_mib": round((attack["rss"].get("max_mib") or 0) - (quiet["rss"].get("max_mib") or 0), 1),
    }
    ctx.result["series"] = {"rss": [[round(at, 2), kib] for at, kib, *_ in samples],
                            "attacks": attack_spans}  # fmt: skip
    await verify_pool(ctx, pool, {})
    await pool.all("disconnect", timeout=60.0)
    await flood_pool.all("disconnect", timeout=60.0)

