"""The devices of one load-generator process and the commands that drive them
(``connect``, ``hold``, ``send``, ``quiesce``, ``sync``, ``verify``, ``acked``,
``disconnect``, ``stats``)."""

from __future__ import annotations

import gc
import random
import time
from typing import Any, Callable

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from goim.pb import goim_pb2 as pb
from goim.protocols import codec
from goim.protocols.codec import MESSAGE_PUSH, SIGN_IN_OK
from goim_bench.loadgen.connecting import ConnectRun
from goim_bench.loadgen.connection import Connection
from goim_bench.driver import port_for
from goim_bench.loadgen.device import Device, PhaseStats
from goim_bench.loadgen.probe import LagProbe
from goim_bench.loadgen.frames import (
    ACK_EVERY,
    HEARTBEAT_FRAME,
    LATENCY_SAMPLES,
    MAX_IN_FLIGHT,
    MAX_SEND_TRIES,
    RETRY_CODES,
    _now,
    parse_stamp,
    sign_in_frame,
    stamp_content,
    sync_frame,
)
from goim_bench.stats import Reservoir, digest

reactor: Any = _reactor



class LoadGenerator:
    """The devices of this process and the commands that drive them."""

    def __init__(self, job: dict[str, Any], emit: Callable[[dict[str, Any]], None], clock: Any = None) -> None:
        self.host = job["host"]
        self.port = int(job["port"])
        #: several client ports (connect nodes of a distributed goim): device i uses
        #: ports[i % len(ports)], so consecutive devices of a job land on different nodes
        self.ports = [int(p) for p in job.get("ports") or [self.port]]
        #: connect over WebSocket to this ws:// URL instead of TCP to host:port
        self.ws_url: str | None = job.get("ws_url") or None
        self.source = job.get("source") or None
        self.content_size = int(job.get("content_size", 64))
        self.ack_every = float(job.get("ack_every", ACK_EVERY))
        self.devices = [Device(i, *entry) for i, entry in enumerate(job["devices"])]
        self.by_id = {d.device_id: d for d in self.devices}
        self.senders = [d for d in self.devices if d.receiver_type]
        self.emit = emit
        self.clock = clock or reactor
        self.last_frame_at = _now()
        self.phases: dict[str, PhaseStats] = {}
        self.track_messages = False
        # tuples of ints: the garbage collector stops tracking them, so a long run's
        # records do not make its collections (pauses that would count as latency) slower
        self.acked: list[tuple[int, int, int, int, int]] = []
        self.gc_pauses = Reservoir(10_000)
        self._gc_started = 0.0
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        self.send_failures: dict[str, int] = {}
        self.retries = 0
        self.lost_after_sign_in = 0
        self.conflicts = 0
        self._connect: ConnectRun | None = None
        self._sending: dict[str, Any] | None = None
        self._dirty: set[Device] = set()
        self._ack_loop = None
        self._schedule_acks()
        self.lag = LagProbe(self.clock)
        self.lag.start()

    # --- plumbing -----------------------------------------------------------------

    def port_for(self, device: Device) -> int:
        """The client TCP port ``device`` connects to."""
        return port_for(device.index, self.ports)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_pauses.add((time.perf_counter() - self._gc_started) * 1000.0)
            self._gc_started = 0.0

    def gc_summary(self) -> dict[str, Any]:
        """This process's garbage-collection pauses (ms) since the last call."""
        values = self.gc_pauses.values
        summary = {"count": self.gc_pauses.seen, "max_ms": round(max(values), 3) if values else 0.0,
                   "total_ms": round(sum(values), 1)}  # fmt: skip
        self.gc_pauses = Reservoir(10_000)
        return summary

    def _schedule_acks(self) -> None:
        self._ack_loop = self.clock.callLater(self.ack_every, self._send_acks)

    def _send_acks(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for device in dirty:
            conn = device.conn
            if conn is not None and device.signed_in and device.top > device.acked_top:
                device.acked_top = device.top
                conn.write(codec.MessageAck(sync_sequence=device.top).to_frame())
        self._schedule_acks()

    def progress(self, **data: Any) -> None:
        self.emit({"event": "progress", "data": data})

    # --- connection events ------------------------------------------------------------

    def on_connected(self, conn: Connection) -> None:
        device = conn.device
        data = sign_in_frame(device.device_id, device.user_id, device.token)
        run = self._connect
        if run is not None and run.sync and device.index in run.active:
            # like goim 1.1: SyncTrigger right behind SignIn, without waiting
            data += sync_frame(device.top)
            self._begin_sync(device)
        conn.write(data)

    def on_sign_in_ack(self, conn: Connection, ack: pb.SignInACK) -> None:
        device = conn.device
        run = self._connect
        if ack.code != SIGN_IN_OK:
            if run is not None and device.index in run.active:
                run.attempt_failed(device, f"sign-in refused: {ack.message}"[:80])
            return
        device.signed_in = True
        if run is not None and device.index in run.active:
            run.signed_in.append(_now() - run.t0)
            if not run.sync:
                run.attempt_succeeded(device)

    def on_connect_failed(self, device: Device, reason: Failure) -> None:
        run = self._connect
        if run is not None and device.index in run.active:
            run.attempt_failed(device, type(reason.value).__name__)

    def on_lost(self, conn: Connection, was_signed_in: bool) -> None:
        device = conn.device
        run = self._connect
        if run is not None and device.index in run.active:
            run.attempt_failed(device, "connection lost" + (f" ({device.kicked})" if device.kicked else ""))
        elif was_signed_in:
            self.lost_after_sign_in += 1
        waiter = device.sync_waiter
        if waiter is not None:
            device.sync_waiter = None
            device.sync_items = None
            waiter.errback(Failure(ConnectionError("connection lost during a sync")))

    # --- messages ---------------------------------------------------------------------

    def on_message(self, device: Device, message: pb.Message) -> None:
        now = _now()
        items = message.messages
        if message.type == MESSAGE_PUSH:
            own_device = device.device_id
            own_user = device.user_id
            for item in items:
                if not device.hold(item.sync_sequence, item.message_id):
                    self.conflicts += 1
                stamp = parse_stamp(item.content)
                if stamp is None:
                    continue
                sent_at, phase = stamp
                stats = self.phases.get(phase)
                if stats is None:
                    stats = self.phases[phase] = PhaseStats(self.track_messages)
                if item.sender_device_id == own_device:
                    stats.own_copies += 1  # the sending device's own copy: not a delivery
                    continue
                stats.deliveries += 1
                if not stats.first:
                    stats.first = now
                stats.last = now
                bucket = int(now * 4)  # quarter seconds
                stats.buckets[bucket] = stats.buckets.get(bucket, 0) + 1
                if item.sender_id != own_user:
                    stats.peer_deliveries += 1
                    latency = (now - sent_at) * 1000.0
                    stats.latency.add(latency)
                    sent_bucket = int(sent_at * 4)
                    if latency > stats.worst.get(sent_bucket, 0.0):
                        stats.worst[sent_bucket] = latency
                if stats.messages is not None:
                    entry = stats.messages.get(item.message_id)
                    if entry is None:
                        stats.messages[item.message_id] = [sent_at, now, 1]
                    else:
                        entry[1] = now
                        entry[2] += 1
        else:
            collecting = device.sync_items
            for item in items:
                if not device.hold(item.sync_sequence, item.message_id):
                    self.conflicts += 1
                if collecting is not None:
                    collecting.append((item.sync_sequence, item.message_id))
            if not message.more and device.sync_waiter is not None:
                waiter, collected = device.sync_waiter, device.sync_items or []
                device.sync_waiter = None
                device.sync_items = None
                waiter.callback(collected)
        if device.top > device.acked_top:
            self._dirty.add(device)

    def _begin_sync(self, device: Device) -> Deferred[list[tuple[int, int]]]:
        waiter: Deferred[list[tuple[int, int]]] = Deferred()
        device.sync_waiter = waiter
        device.sync_items = []
        run = self._connect
        if run is not None and device.index in run.active:
            waiter.addCallbacks(lambda _: self._initial_sync_done(device), lambda _: None)
        return waiter

    def _initial_sync_done(self, device: Device) -> None:
        run = self._connect
        if run is None or device.index not in run.active or device.conn is None:
            return
        expected = run.expect.get(device.user_id, 0)
        if device.top < expected:
            # the sync ended below what is known to be stored: ask again from the top
            self._begin_sync(device)
            device.conn.write(sync_frame(device.top))
            return
        run.up_to_date.append(_now() - run.t0)
        run.attempt_succeeded(device)

    # --- connect ------------------------------------------------------------------------

    async def cmd_connect(self, args: dict[str, Any]) -> dict[str, Any]:
        """Connect (and sign in, and optionally sync) every device not connected."""
        queue = [d for d in self.devices if d.conn is None]
        if args.get("shuffle"):
            random.shuffle(queue)
        run = self._connect = ConnectRun(self, args, queue)
        attempted = len(queue)
        deadline = self.clock.callLater(float(args.get("within", 600.0)), run.deadline)
        ticker = self.clock.callLater(0.25, run.report_progress)
        run.fill()
        if not run.queue and not run.active:
            run.done.callback(None)
        try:
            await run.done
        finally:
            self._connect = None
            for timer in (deadline, ticker):
                if timer.active():
                    timer.cancel()
        return {
            "attempted": attempted,
            "signed_in": len(run.signed_in),
            "up_to_date": len(run.up_to_date),
            "connected": sum(1 for d in self.devices if d.signed_in),
            "not_attempted": len(run.queue),
            "failed": run.failed,
            "final_failures": run.final_failures,
            "t0": run.t0,
            "signed_in_at": [round(t, 4) for t in run.signed_in],
            "up_to_date_at": [round(t, 4) for t in run.up_to_date],
        }

    # --- holding idle connections -----------------------------------------------------------

    async def cmd_hold(self, args: dict[str, Any]) -> dict[str, Any]:
        """Keep the connections open for ``duration`` s, each beating every ``interval`` s."""
        duration = float(args["duration"])
        interval = float(args.get("interval", 30.0))
        tick = 0.1
        slots = max(1, int(interval / tick))
        start = _now()
        before = sum(d.heartbeats for d in self.devices)
        step = 0
        while _now() - start < duration:
            for device in self.devices[step % slots :: slots]:
                if device.conn is not None and device.signed_in:
                    device.heartbeats += 1
                    device.conn.write(HEARTBEAT_FRAME)
            step += 1
            await self._sleep(tick)
            if step % 10 == 0:
                self.progress(held_for=round(_now() - start, 1), connected=self.connected())
        await self._sleep(min(2.0, interval))  # let the last beats be answered
        return {
            "heartbeats": sum(d.heartbeats for d in self.devices) - before,
            "heartbeat_acks": sum(d.heartbeat_acks for d in self.devices),
            "heartbeats_total": sum(d.heartbeats for d in self.devices),
            "connected": self.connected(),
            "lost_after_sign_in": self.lost_after_sign_in,
        }

    def connected(self) -> int:
        return sum(1 for d in self.devices if d.signed_in)

    def _sleep(self, seconds: float) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.clock.callLater(seconds, d.callback, None)
        return d

    # --- sending -----------------------------------------------------------------------------

    async def cmd_send(self, args: dict[str, Any]) -> dict[str, Any]:
        """Send from every sender device: a window in flight each, or a paced total rate.

        Args (in ``args``): ``mode`` ("window" or "paced"), ``phase`` (a word),
        ``duration`` (s), ``window`` (per device), ``rate`` (sends/s of this
        process), ``count`` (sends per device, instead of or besides a duration),
        ``track_messages`` (record per-message fan-out for this phase),
        ``drain_timeout`` (s to wait for the last ACKs), ``hostile`` (a send
        answered code 5 is dropped at once instead of retried after its
        ``retry_after_ms``, so a window keeps the server busy: a flooder).
        """
        mode = args.get("mode", "window")
        phase = str(args["phase"])
        duration = float(args.get("duration", 3600.0))
        count = int(args.get("count", 0))
        self.track_messages = bool(args.get("track_messages", False))
        self.phases.setdefault(phase, PhaseStats(self.track_messages))
        state: dict[str, Any] = {
            "phase": phase,
            "window": max(1, min(MAX_IN_FLIGHT, int(args.get("window", 8)))),
            "count": count,
            "active": True,
            "acked": 0,
            "sent": 0,
            "ack_latency": Reservoir(LATENCY_SAMPLES),
            "ack_buckets": {},
            "failed": 0,
            "rate_limited": 0,
            "hostile": bool(args.get("hostile", False)),
        }
        self._sending = state
        only = args.get("only_receiver")
        counts = {int(k): int(v) for k, v in (args.get("counts") or {}).items()}
        senders = [
            d
            for d in self.senders
            if d.conn is not None
            and d.signed_in
            and (not only or (d.receiver_type, d.receiver_id) == tuple(only))
            and (not counts or counts.get(d.device_id, 0) > 0)
        ]
        state["counts"] = counts
        cpu_start = time.process_time()
        start = _now()
        state["start"] = start
        if mode == "window":
            for device in senders:
                self._pump(device)
        else:
            self.clock.callLater(0, self._paced, state, senders, float(args["rate"]), start)
        reported = start
        while state["active"] and _now() - start < duration:
            if (count or counts) and all(d.sent_count >= counts.get(d.device_id, count) for d in senders):
                break
            if not senders:
                break
            await self._sleep(0.05)
            if _now() - reported >= 0.25:
                reported = _now()
                self.progress(sent=state["sent"], acked=state["acked"])
        state["active"] = False
        end_sending = _now()
        drain_deadline = end_sending + float(args.get("drain_timeout", 60.0))
        while any(d.pending for d in self.senders) and _now() < drain_deadline:
            await self._sleep(0.02)
        unacked = sum(len(d.pending) for d in self.senders)
        end = _now()
        cpu = time.process_time() - cpu_start
        self._sending = None
        for device in self.senders:
            device.sent_count = 0
        return {
            "phase": phase,
            "senders": len(senders),
            "sent": state["sent"],
            "acked": state["acked"],
            "unacked": unacked,
            "failed": state["failed"],
            "rate_limited": state["rate_limited"],
            "failures": dict(self.send_failures),
            "retries": self.retries,
            "start": start,
            "end_sending": end_sending,
            "end": end,
            "ack_latency_ms": [round(v, 3) for v in state["ack_latency"].values],
            "ack_buckets": state["ack_buckets"],
            # this process's CPU seconds from the first send to the last ACK
            "cpu_s": round(cpu, 4),
        }

    def _pump(self, device: Device) -> None:
        """Window mode: top the device's in-flight sends up to the window."""
        state = self._sending
        device.pump_scheduled = False
        if state is None or not state["active"] or state.get("paced"):
            return
        window = state["window"]
        count = state["counts"].get(device.device_id, state["count"])
        now = _now()
        while len(device.pending) < window and (not count or device.sent_count < count):
            if device.conn is None or not device.signed_in:
                return
            if not device.take_token(now):
                if not device.pump_scheduled:
                    device.pump_scheduled = True
                    self.clock.callLater(0.005, self._pump, device)
                return
            self._send_one(device, state["phase"], now)
            state["sent"] += 1

    def _paced(self, state: dict[str, Any], senders: list[Device], rate: float, start: float) -> None:
        """Paced mode: issue sends at ``rate`` per second in total, round-robin over senders."""
        state["paced"] = True
        if not state["active"] or not senders:
            return
        now = _now()
        due = int((now - start) * rate) - state["sent"]
        index = state.get("next", 0)
        blocked = 0
        while due > 0 and blocked < len(senders):
            device = senders[index % len(senders)]
            index += 1
            if (
                device.conn is None
                or len(device.pending) >= MAX_IN_FLIGHT
                or (state["count"] and device.sent_count >= state["counts"].get(device.device_id, state["count"]))
                or not device.take_token(now)
            ):
                blocked += 1
                continue
            blocked = 0
            self._send_one(device, state["phase"], now)
            state["sent"] += 1
            due -= 1
        state["next"] = index
        self.clock.callLater(0.005, self._paced, state, senders, rate, start)

    def _send_one(self, device: Device, phase: str, now: float) -> None:
        seq = device.send_seq = device.send_seq + 1
        device.sent_count += 1
        frame = codec.MessageSend(
            receiver_type=device.receiver_type,
            receiver_id=device.receiver_id,
            type=1,
            content=stamp_content(now, phase, self.content_size),
            send_sequence=seq,
            send_time=int(now * 1000),
        ).to_frame()
        device.pending[seq] = [now, frame, 1]
        assert device.conn is not None
        device.conn.write(frame)

    def on_send_ack(self, device: Device, ack: pb.MessageSendACK) -> None:
        entry = device.pending.get(ack.send_sequence)
        if entry is None:
            return
        state = self._sending
        if ack.code == 5 and state is not None:
            state["rate_limited"] += 1
        hostile = state is not None and state["hostile"]
        if ack.code in RETRY_CODES and entry[2] < MAX_SEND_TRIES and not (hostile and ack.code == 5):
            entry[2] += 1
            self.retries += 1
            # the server's hint (code 5) when it gave one, else a growing back-off
            delay = max(0.05 * entry[2], ack.retry_after_ms / 1000.0 if ack.code == 5 else 0.0)
            self.clock.callLater(delay, self._resend, device, ack.send_sequence)
            return
        del device.pending[ack.send_sequence]
        now = _now()
        if ack.code == 0:
            self.acked.append((ack.message_id, device.user_id, device.receiver_type, device.receiver_id,
                               device.device_id))  # fmt: skip
            if ack.sync_sequence > 0 and not device.hold(ack.sync_sequence, ack.message_id):
                self.conflicts += 1
            if state is not None:
                state["acked"] += 1
                state["ack_latency"].add((now - entry[0]) * 1000.0)
                bucket = int(now * 4)
                state["ack_buckets"][bucket] = state["ack_buckets"].get(bucket, 0) + 1
        else:
            reason = f"code {ack.code}"
            self.send_failures[reason] = self.send_failures.get(reason, 0) + 1
            if state is not None:
                state["failed"] += 1
        if state is not None and state["active"] and not state.get("paced"):
            self._pump(device)

    def _resend(self, device: Device, send_sequence: int) -> None:
        entry = device.pending.get(send_sequence)
        if entry is not None and device.conn is not None:
            device.conn.write(entry[1])

    # --- quiescence, syncs, verification ------------------------------------------------------

    async def cmd_quiesce(self, args: dict[str, Any]) -> dict[str, Any]:
        """Wait until no frame arrived for ``quiet`` s (at most ``timeout`` s); return and
        clear what was received per phase."""
        quiet = float(args.get("quiet", 0.5))
        deadline = _now() + float(args.get("within", 30.0))
        while _now() < deadline and (
            _now() - self.last_frame_at < quiet or any(d.pending for d in self.senders)
        ):
            await self._sleep(0.05)
        phases = {name: stats.to_json() for name, stats in self.phases.items()}
        self.phases = {}
        return {
            "phases": phases,
            "quiet": _now() - self.last_frame_at >= quiet,
            "conflicts": self.conflicts,
            "gc": self.gc_summary(),
            "late_ms": {k: round(v, 3) for k, v in self.lag.take().items()},
        }

    async def _sync_device(self, device: Device, after: int, timeout: float) -> list[tuple[int, int]]:
        conn = device.conn
        if conn is None or not device.signed_in:
            raise ConnectionError("device not connected")
        if device.sync_waiter is not None:
            await device.sync_waiter  # one sync at a time per connection
        waiter = self._begin_sync(device)
        def expire() -> None:
            if not waiter.called:
                waiter.cancel()

        timer = self.clock.callLater(timeout, expire)
        conn.write(sync_frame(after))
        try:
            return await waiter
        finally:
            if timer.active():
                timer.cancel()
            if device.sync_waiter is waiter:
                device.sync_waiter = None
                device.sync_items = None

    async def cmd_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        """Time a sync from ``after`` on the listed devices (indices; default all connected)."""
        after = int(args.get("after", 0))
        indices = args.get("devices")
        devices = [self.devices[i] for i in indices] if indices else [d for d in self.devices if d.signed_in]
        results = []
        for device in devices:
            frames: list[tuple[float, int]] = []
            start = _now()

            def progress_tick() -> None:
                if device.sync_items is not None:
                    frames.append((round(_now() - start, 4), len(device.sync_items)))
                    self.progress(synced=len(device.sync_items))
                    ticks.append(self.clock.callLater(0.02, progress_tick))

            ticks: list[Any] = [self.clock.callLater(0.02, progress_tick)]
            items = await self._sync_device(device, after, float(args.get("within", 120.0)))
            end = _now()
            for tick in ticks:
                if tick.active():
                    tick.cancel()
            results.append(
                {
                    "device_id": device.device_id,
                    "count": len(items),
                    "seconds": end - start,
                    "start": start,
                    "series": frames + [(round(end - start, 4), len(items))],
                }
            )
        return {"syncs": results}

    async def cmd_verify(self, args: dict[str, Any]) -> dict[str, Any]:
        """Sync every signed-in device from 0 and report what it holds and what is stored."""
        concurrency = int(args.get("concurrency", 200))
        timeout = float(args.get("within", 120.0))
        devices = [d for d in self.devices if d.signed_in]
        reports: list[list[Any]] = []
        errors: dict[str, int] = {}
        queue = list(devices)

        async def worker() -> None:
            while queue:
                device = queue.pop()
                held_before = dict(device.held)
                try:
                    items = await self._sync_device(device, 0, timeout)
                except Exception as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    continue
                seqs = [s for s, _ in items]
                ids = [m for _, m in items]
                seq_ok = seqs == list(range(1, len(seqs) + 1))
                conflicts = sum(1 for s, m in items if held_before.get(s, m) != m)
                extra_held = sum(1 for s in held_before if s > len(seqs))
                reports.append(
                    [
                        device.device_id,
                        device.user_id,
                        len(held_before),
                        len(ids),
                        digest(ids),
                        seq_ok and len(set(ids)) == len(ids),
                        conflicts + extra_held,
                    ]
                )
                self.progress(verified=len(reports))

        workers = [Deferred.fromCoroutine(worker()) for _ in range(max(1, concurrency))]
        for w in workers:
            await w
        return {
            "reports": reports,
            "errors": errors,
            "not_connected": len(self.devices) - len(devices),
            "conflicts": self.conflicts,
        }

    async def cmd_acked(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every send acknowledged with code 0 so far:
        ``[message_id, sender user, receiver_type, receiver_id, sender device]``."""
        return {
            "acked": self.acked,
            "failures": self.send_failures,
            "unacked": sum(len(d.pending) for d in self.devices),
        }

    async def cmd_disconnect(self, args: dict[str, Any]) -> dict[str, Any]:
        """Close every connection and wait until they are closed."""
        conns = [d.conn for d in self.devices if d.conn is not None]
        for conn in conns:
            transport: Any = conn.transport
            if transport is not None:
                transport.loseConnection()
        deadline = _now() + float(args.get("within", 15.0))
        while any(not c.lost for c in conns) and _now() < deadline:
            await self._sleep(0.05)
        for conn in conns:
            if not conn.lost and conn.transport is not None:
                conn.transport.abortConnection()
        for device in self.devices:
            device.conn = None
            device.signed_in = False
        return {"closed": len(conns)}

    async def cmd_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        """Counters of this process."""
        return {
            "connected": self.connected(),
            "lost_after_sign_in": self.lost_after_sign_in,
            "conflicts": self.conflicts,
            "retries": self.retries,
            "kicked": sum(1 for d in self.devices if d.kicked),
        }
