"""The scenarios: idle, one-to-one, group, sync, storm (``limits`` is in goim_bench.limits).

Each is ``async def scenario(ctx)``: it registers what it needs over HTTP, starts
its load generators, measures, and ends by verifying through sync that every
device holds exactly the acknowledged messages. Numbers go to ``ctx.metrics``,
plot data to ``ctx.result["series"]``, problems to the verification.
"""

from __future__ import annotations

import math
from functools import partial
import time
from typing import Any, Sequence

from goim_bench.accounts import BenchUser, run_all
from goim_bench.common import (
    Context,
    CoreSampler,
    MemorySampler,
    device_row,
    merge_buckets,
    rate_series,
    steady_rate,
    verify_pool,
    worst_series,
)
from goim_bench.driver import LoadgenPool, gather, split
from goim_bench.server import open_files, open_files_limit
from goim_bench.stats import summarize
from goim_bench.writer import read_counters, writer_figures


def _sum(replies: Sequence[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in replies)


def _merge_failures(replies: Sequence[dict[str, Any]]) -> dict[str, int]:
    failed: dict[str, int] = {}
    for reply in replies:
        for reason, count in reply.get("failed", {}).items():
            failed[reason] = failed.get(reason, 0) + count
    return failed


async def _connect(
    ctx: Context,
    pool: LoadgenPool,
    total: int,
    *,
    desc: str = "connect",
    key: str = "signed_in",
    within: float = 600.0,
    **args: Any,
) -> list[dict[str, Any]]:
    """``connect`` on every load generator, with a progress bar of ``key``."""
    bar = ctx.bar(desc, total, "conn")
    ctx.track(pool, bar, key)
    try:
        replies = await pool.all("connect", timeout=within + 60.0, within=within, **args)
        bar.n = _sum(replies, key)
    finally:
        pool.on_progress = None
        bar.close()
    return replies


async def _send(
    ctx: Context, pool: LoadgenPool, desc: str, *, duration: float, expected: float | None = None, **args: Any
) -> dict[str, Any]:
    """One sending phase on every load generator; returns the merged figures."""
    bar = ctx.bar(desc, expected, "msg")
    ctx.track(pool, bar, "acked")
    try:
        replies = await pool.all("send", timeout=duration + 180.0, duration=duration, **args)
        bar.n = _sum(replies, "acked")
    finally:
        pool.on_progress = None
        bar.close()
    return _merge_send(replies)


def _merge_send(replies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    buckets = merge_buckets(r["ack_buckets"] for r in replies)
    start = min(r["start"] for r in replies)
    end_sending = max(r["end_sending"] for r in replies)
    return {
        "sent": _sum(replies, "sent"),
        "acked": _sum(replies, "acked"),
        "unacked": _sum(replies, "unacked"),
        "failed": _sum(replies, "failed"),
        "start": start,
        "end_sending": end_sending,
        "end": max(r["end"] for r in replies),
        "buckets": buckets,
        "ack_latency_ms": summarize(v for r in replies for v in r["ack_latency_ms"]),
        "steady_sends_per_s": round(steady_rate(buckets, start, end_sending), 1),
        "loadgen_cpu_s": sum(r.get("cpu_s", 0.0) for r in replies),
    }


async def _quiesce(pool: LoadgenPool, timeout: float = 60.0) -> dict[str, list[dict[str, Any]]]:
    """Wait for the pushes to stop; returns phase -> the processes' receive figures."""
    replies = await pool.all("quiesce", timeout=timeout + 30.0, quiet=0.5, within=timeout)
    phases: dict[str, list[dict[str, Any]]] = {}
    gc_max = max((reply.get("gc", {}).get("max_ms", 0.0) for reply in replies), default=0.0)
    for reply in replies:
        for stats in reply["phases"].values():
            stats["loadgen_gc_max_ms"] = gc_max
            stats["loadgen_late_ms"] = reply.get("late_ms", {})
        for name, stats in reply["phases"].items():
            phases.setdefault(name, []).append(stats)
    return phases


def _receive_figures(stats: list[dict[str, Any]], start: float, end_sending: float) -> dict[str, Any]:
    buckets = merge_buckets(s["buckets"] for s in stats)
    last = max((s["last"] for s in stats if s["last"]), default=0.0)
    return {
        "deliveries": sum(s["deliveries"] for s in stats),
        "own_copies": sum(s.get("own_copies", 0) for s in stats),
        "peer_deliveries": sum(s["peer_deliveries"] for s in stats),
        "steady_deliveries_per_s": round(steady_rate(buckets, start, end_sending), 1),
        "push_lag_after_last_send_s": round(max(0.0, last - end_sending), 3) if last else None,
        "latency_ms": summarize(v for s in stats for v in s["latency_ms"]),
        # the longest garbage-collection pause of a load generator in the phase: a
        # latency tail much longer than this is the server's
        "loadgen_gc_max_ms": max((s.get("loadgen_gc_max_ms", 0.0) for s in stats), default=0.0),
        "buckets": buckets,
        "worst_by_quarter_s": worst_series((s.get("worst_ms", {}) for s in stats), start),
        # how late the load generators' own timers ran in each quarter second of the
        # sending (the longest over the processes): a stall of the receiving side
        "loadgen_late_by_quarter_s": [
            q for q in worst_series((s.get("loadgen_late_ms", {}) for s in stats), start)
            if 0.0 <= q[0] < end_sending - start
        ],
    }


async def _writer_counters(ctx: Context) -> dict[str, float] | None:
    """The message writer's counters now (every logic node's, summed); None when the
    server serves no ``/metrics``."""
    return await read_counters(ctx.server.metrics_urls())


async def _writer_since(ctx: Context, before: dict[str, float] | None, seconds: float) -> dict[str, Any] | None:
    """What the message writer did since ``before`` was read, ``seconds`` of sending ago."""
    return writer_figures(before, await _writer_counters(ctx), seconds)


# --- idle ------------------------------------------------------------------------------------


async def idle(ctx: Context) -> None:
    """N signed-in, heartbeating connections held for a while: RSS per connection, sign-in rate."""
    s = ctx.settings
    target = int(s.size("idle_connections", 100, 100_000))
    hold = float(s.size("idle_hold", 3.0, 60.0))
    interval = float(s.size("idle_heartbeat", 1.0, 30.0))
    pid = ctx.server.pid
    limit = open_files_limit(pid) if pid else None
    in_use = open_files(pid) if pid else None
    # Sockets past the open-files limit are never accepted: plan up to the limit and
    # show the wall with a small probe of extra connections at the very end.
    headroom = limit - in_use - 40 if limit is not None and in_use is not None else None
    planned = min(target, headroom) if headroom is not None else target
    probe = min(50, target - planned) if planned < target else 0
    ctx.params.update(
        target_connections=target,
        planned_connections=planned,
        probe_connections=probe,
        hold_s=hold,
        heartbeat_interval_s=interval,
        server_open_files_limit=limit,
        server_fds_at_start=in_use,
    )
    rss_start = ctx.server.rss_kib()
    users: list[BenchUser] = await ctx.users(planned + probe, "idle")
    rows = [device_row(u.devices[0]) for u in users]
    main_rows, probe_rows = rows[:planned], rows[planned:]
    lgs = max(ctx.loadgen_count(wanted=2), math.ceil(planned / 8000))
    pool = await ctx.start_pool(split(main_rows, lgs))
    rss_before = ctx.server.rss_kib()
    last_count = [0]

    def connections() -> int:
        # progress restarts empty with each command: keep the last count meanwhile
        if pool.progress:
            last_count[0] = max(pool.total("signed_in"), pool.total("connected"))
        return last_count[0]

    sampler = MemorySampler(ctx.reactor, ctx.server, 0.5, connections).begin()
    replies = await _connect(
        ctx,
        pool,
        planned,
        desc="ramp",
        concurrency=100 if not s.quick else 20,
        attempt_timeout=15.0,
        max_fail_streak=200,
        within=max(120.0, planned / 50.0),
    )
    signed = _sum(replies, "signed_in")
    ramp_start = min(r["t0"] for r in replies)  # when the first connection attempt began
    signed_at = sorted(r["t0"] + t for r in replies for t in r["signed_in_at"])
    ramp_s = (signed_at[-1] - ramp_start) if signed_at else 0.0
    rss_ramp = ctx.server.rss_kib()
    bar = ctx.bar("hold", None, "s")
    ctx.track(pool, bar, "held_for")
    try:
        held = await pool.all("hold", timeout=hold + 120.0, duration=hold, interval=interval)
    finally:
        pool.on_progress = None
        bar.close()
    rss_hold = ctx.server.rss_kib()
    status = ctx.server.status()
    samples = sampler.end()
    connected = _sum(held, "connected")
    per_conn = None
    if rss_hold is not None and rss_before is not None and connected:
        per_conn = (rss_hold - rss_before) * 1024.0 / connected
    ctx.metrics.update(
        signed_in=signed,
        connected_after_hold=connected,
        ramp_seconds=round(ramp_s, 2),
        sign_ins_per_s=round(signed / ramp_s, 1) if ramp_s > 0 else None,
        rss_kib_at_start=rss_start,
        rss_kib_before_ramp=rss_before,
        rss_kib_after_ramp=rss_ramp,
        rss_kib_after_hold=rss_hold,
        vm_hwm_kib=status.get("VmHWM"),
        bytes_per_connection=round(per_conn) if per_conn is not None else None,
        kib_per_connection=round(per_conn / 1024.0, 2) if per_conn is not None else None,
        heartbeats=_sum(held, "heartbeats"),
        heartbeat_acks=_sum(held, "heartbeat_acks"),
        lost_after_sign_in=_sum(held, "lost_after_sign_in"),
        connect_failures=_merge_failures(replies),
        server_fds_after_ramp=open_files(pid) if pid else None,
    )
    ctx.result["series"] = {
        "memory": samples,  # [seconds, VmRSS KiB, connections]
        "signed_in_at": [round(t - ramp_start, 3) for t in signed_at[:: max(1, len(signed_at) // 2000)]],
    }
    await verify_pool(ctx, pool, {}, require_connected=False)
    if connected < planned:
        ctx.result["verification"]["problems"].append(
            f"only {connected} of {planned} planned connections stayed signed in"
        )
        ctx.result["verification"]["verified"] = False
    # The wall: connections past the open-files limit.
    if probe:
        probe_pool = await ctx.start_pool([probe_rows])
        probe_replies = await probe_pool.all(
            "connect", timeout=90.0, within=60.0, concurrency=probe, attempt_timeout=5.0, max_fail_streak=probe
        )
        log = ctx.server.log_text()
        emfile = log.count("EMFILE") + log.count("Too many open files")
        ctx.metrics["probe"] = {
            "attempted": probe,
            "signed_in": _sum(probe_replies, "signed_in"),
            "failures": _merge_failures(probe_replies),
            "server_log_emfile_lines": emfile,
            "server_fds": open_files(pid) if pid else None,
        }
        await probe_pool.all("disconnect", timeout=30.0)
    reached = connected + ctx.metrics.get("probe", {}).get("signed_in", 0)
    ctx.metrics["largest_connection_count"] = reached
    if reached >= target:
        reason = f"reached the target of {target:,} connections"
    elif planned < target:
        probe_info = ctx.metrics.get("probe", {})
        reason = (
            f"stopped at {reached:,}: the server process may hold at most {limit:,} file descriptors "
            f"(RLIMIT_NOFILE, whose hard limit cannot be raised here) and used {in_use} at the start; after "
            f"{connected:,} connections (memory measured there), {probe_info.get('attempted', 0)} more got "
            f"{probe_info.get('signed_in', 0)} sign-ins and {probe_info.get('failures', {})}: past the limit "
            f"Twisted accepts and at once closes each connection (it logged "
            f"{probe_info.get('server_log_emfile_lines', 0)} EMFILE lines)"
        )
    else:
        reason = f"stopped at {reached:,}: {ctx.metrics['connect_failures']}"
    ctx.metrics["stop_reason"] = reason
    await pool.all("disconnect", timeout=120.0)


# --- one-to-one ---------------------------------------------------------------------------------


#: a paced step is "sustained" when this share of the offered sends is ACKed ...
SUSTAINED_SHARE = 0.95
#: ... and send -> push at the receiver stays below this at p99 (no growing queue)
SUSTAINED_P99_MS = 500.0


async def one_to_one(ctx: Context) -> None:
    """P pairs, two devices per user: max sustained sends/s, then latency at 25/50/75 % of it.

    A closed-loop phase (a window of sends in flight per sending device) finds the
    ceiling; paced steps at rising fractions of it then find the highest offered rate
    the server keeps up with: at least 95 % ACKed, every copy pushed to all four
    devices, p99 send -> push below 500 ms. That rate is the max sustained one.
    """
    s = ctx.settings
    ctx.params["transport"] = ctx.transport
    pairs = int(s.size("pairs", 2, 50))
    saturate = float(s.size("saturate_s", 2.0, 15.0))
    step_s = float(s.size("step_s", 1.0, 5.0))
    steps = [float(f) for f in s.size("search_fractions", [0.5, 1.0], [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2])]
    paced = float(s.size("paced_s", 1.5, 10.0))
    window = int(s.size("window", 8, 16))
    fractions = (0.25, 0.5, 0.75)
    fixed_rates = [float(r) for r in s.size("fixed_rates", [], [])]
    ctx.params.update(pairs=pairs, devices=pairs * 4, saturate_s=saturate, paced_s=paced, step_s=step_s,
                      search_fractions=steps, window_per_sender=window, sustained_share=SUSTAINED_SHARE,
                      sustained_p99_ms=SUSTAINED_P99_MS, fixed_rates=fixed_rates)  # fmt: skip
    users = await ctx.users(2 * pairs, "p", devices=2)
    await run_all([partial(ctx.registrar.befriend, users[2 * i], users[2 * i + 1]) for i in range(pairs)])
    lgs = ctx.loadgen_count(wanted=2)
    lists: list[list[Any]] = [[] for _ in range(lgs)]
    for i in range(pairs):
        a, b = users[2 * i], users[2 * i + 1]
        rows = lists[i % lgs]
        rows.append(device_row(a.devices[0], 1, b.user_id))
        rows.append(device_row(b.devices[0], 1, a.user_id))
        rows.append(device_row(a.devices[1]))
        rows.append(device_row(b.devices[1]))
    pool = await ctx.start_pool([rows for rows in lists if rows])
    await _connect(ctx, pool, pairs * 4, sync=True, concurrency=200)

    async def paced_phase(name: str, desc: str, offered: float, seconds: float) -> dict[str, Any]:
        # the writer's counters are read outside the CPU figures' span (a read costs the server)
        counters = await _writer_counters(ctx)
        cores = CoreSampler(ctx.reactor, ctx.server, s.server_cpus).begin() if s.server_cpus else None
        cpu_before = ctx.server.cpu_seconds()
        phase = await _send(
            ctx, pool, desc, duration=seconds, expected=offered * seconds, mode="paced", phase=name,
            per_process=lambda i: {"rate": offered / len(pool.procs)},
        )  # fmt: skip
        cpu_after = ctx.server.cpu_seconds()
        other = cores.end(phase["start"]) if cores is not None else None
        writer = await _writer_since(ctx, counters, phase["end"] - phase["start"])
        rx = _receive_figures((await _quiesce(pool)).get(name, []), phase["start"], phase["end_sending"])
        cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        span = max(1e-9, phase["end"] - phase["start"])
        return {
            "offered_per_s": round(offered, 1),
            # epoch s of the first send: lines up the level with the server's logs and traces
            "started_at": round(phase["start"], 3),
            # ACKs over the time from the first send to the last ACK: a server that
            # falls behind stretches the denominator
            "acked_per_s": round(phase["acked"] / span, 1),
            "acked": phase["acked"],
            "deliveries_per_s": rx["steady_deliveries_per_s"],
            "pushes_per_send": round((rx["deliveries"] + rx["own_copies"]) / phase["acked"], 3)
            if phase["acked"] else None,
            "latency_ms": rx["latency_ms"],
            "ack_latency_ms": phase["ack_latency_ms"],
            "push_lag_after_last_send_s": rx["push_lag_after_last_send_s"],
            "loadgen_gc_max_ms": rx["loadgen_gc_max_ms"],
            # the longest latency of each quarter second's sends: one stall or a spread tail
            "worst_by_quarter_s": rx["worst_by_quarter_s"],
            "loadgen_late_max_ms": max((q[1] for q in rx["loadgen_late_by_quarter_s"]), default=0.0),
            "loadgen_late_by_quarter_s": rx["loadgen_late_by_quarter_s"],
            # CPU of the load generators, summed (with --cpus they share one core)
            "loadgen_cpu_share": round(phase["loadgen_cpu_s"] / span, 3),
            # CPU of the goim process(es) from the first send to the last ACK (not
            # MariaDB's nor Redis's): a share of one core, and per ACKed send
            "server_cpu_share": round(cpu / span, 3) if cpu is not None else None,
            "server_cpu_ms_per_send": round(cpu * 1000.0 / phase["acked"], 4) if cpu is not None and phase["acked"] else None,
            # with --cpus: other processes' CPU on the server's cores, per quarter
            # second (ms) and in all (a share of the level's time)
            "other_cpu_on_server_cores_by_quarter_s": other,
            "other_cpu_on_server_cores_share": round(cores.total / span, 4)
            if cores is not None else None,
            # the message writer's transactions in the level (every logic node's, summed)
            "writer": writer,
        }

    counters = await _writer_counters(ctx)
    sat = await _send(ctx, pool, "saturate", duration=saturate, mode="window", window=window, phase="sat")
    sat_writer = await _writer_since(ctx, counters, sat["end"] - sat["start"])
    sat_rx = _receive_figures((await _quiesce(pool)).get("sat", []), sat["start"], sat["end_sending"])
    ceiling = sat["steady_sends_per_s"]
    ctx.metrics["closed_loop"] = {
        "sends_per_s": ceiling,
        "in_flight": window * pairs * 2,
        "deliveries_per_s": sat_rx["steady_deliveries_per_s"],
        "pushes_per_send": round((sat_rx["deliveries"] + sat_rx["own_copies"]) / sat["acked"], 3)
        if sat["acked"] else None,
        "acked": sat["acked"],
        "ack_latency_ms": sat["ack_latency_ms"],
        "receiver_latency_ms": sat_rx["latency_ms"],
        "push_lag_after_last_send_s": sat_rx["push_lag_after_last_send_s"],
        "writer": sat_writer,
    }
    search = []
    sustained: dict[str, Any] | None = None
    for fraction in steps:
        offered = max(1.0, ceiling * fraction)
        step = await paced_phase(f"s{int(fraction * 100)}", f"search {fraction:.0%} = {offered:,.0f}/s", offered, step_s)
        step["fraction_of_closed_loop"] = fraction
        step["sustained"] = (
            step["acked_per_s"] >= SUSTAINED_SHARE * offered
            and step["latency_ms"].get("p99", float("inf")) <= SUSTAINED_P99_MS
            and (step["pushes_per_send"] or 0) >= 3.999
        )
        search.append(step)
        if not step["sustained"]:
            break
        sustained = step
    if sustained is None:
        ctx.notes.append("no paced step was sustained: the latency levels use the lowest step's ACKed rate")
        max_rate = search[0]["acked_per_s"]
    else:
        max_rate = sustained["acked_per_s"]
    ctx.metrics["search"] = search
    ctx.metrics["max_sustained"] = {
        "sends_per_s": max_rate,
        "deliveries_per_s": sustained["deliveries_per_s"] if sustained else None,
        "pushes_per_send": sustained["pushes_per_send"] if sustained else None,
        "receiver_latency_ms": sustained["latency_ms"] if sustained else None,
    }
    levels = []
    for fraction in fractions:
        offered = max(1.0, max_rate * fraction)
        level = await paced_phase(f"p{int(fraction * 100)}", f"{fraction:.0%} = {offered:,.0f}/s", offered, paced)
        level["fraction"] = fraction
        levels.append(level)
    ctx.metrics["levels"] = levels
    # the same offered rates in every run, for before / after comparisons (the
    # levels above move with each run's own maximum)
    fixed = []
    for rate in fixed_rates:
        level = await paced_phase(f"f{int(rate)}", f"fixed {rate:,.0f}/s", rate, paced)
        level["rate"] = rate
        fixed.append(level)
    if fixed:
        ctx.metrics["fixed_rates"] = fixed
    ctx.result["series"] = {"saturate_acks": rate_series(sat["buckets"], sat["start"])}
    await verify_pool(ctx, pool, {})
    await pool.all("disconnect", timeout=60.0)


async def one_to_one_ws(ctx: Context) -> None:
    """``one_to_one`` with every client on WebSocket (``/ws`` of the HTTP port)."""
    ctx.transport = "ws"
    await one_to_one(ctx)


# --- group ---------------------------------------------------------------------------------------


async def group(ctx: Context) -> None:
    """Groups of 100 and 500 members, all online: sends/s, deliveries/s, send->last-member latency."""
    s = ctx.settings
    sizes = [int(x) for x in s.size("group_sizes", [10, 20], [100, 500])]
    senders_per_group = int(s.size("group_senders", 2, 10))
    saturate = float(s.size("saturate_s", 2.0, 10.0))
    paced = float(s.size("paced_s", 1.5, 10.0))
    window = int(s.size("group_window", 4, 4))
    ctx.params.update(group_sizes=sizes, senders_per_group=senders_per_group, saturate_s=saturate,
                      paced_s=paced, window_per_sender=window)  # fmt: skip
    users = await ctx.users(sum(sizes), "g")
    groups: dict[int, list[int]] = {}
    rows: list[list[Any]] = []
    group_ids: list[int] = []
    offset = 0
    for size in sizes:
        members = users[offset : offset + size]
        offset += size
        group_id = await ctx.registrar.create_group(members[0], f"bench{size}", members)
        group_ids.append(group_id)
        groups[group_id] = [m.user_id for m in members]
        for index, member in enumerate(members):
            sender = index < senders_per_group
            rows.append(device_row(member.devices[0], 2 if sender else 0, group_id if sender else 0))
    lgs = ctx.loadgen_count(wanted=2)
    pool = await ctx.start_pool(split(rows, lgs))
    await _connect(ctx, pool, len(rows), sync=True, concurrency=200)
    results = []
    for size, group_id in zip(sizes, group_ids):
        entry: dict[str, Any] = {"members": size, "group_id": group_id}
        counters = await _writer_counters(ctx)
        sat = await _send(
            ctx, pool, f"group of {size}: saturate", duration=saturate, mode="window", window=window,
            phase=f"g{size}s", only_receiver=[2, group_id], track_messages=True,
        )  # fmt: skip
        writer = await _writer_since(ctx, counters, sat["end"] - sat["start"])
        received = (await _quiesce(pool)).get(f"g{size}s", [])
        entry["saturate"] = _group_figures(sat, received, size)
        entry["saturate"]["writer"] = writer
        rate = max(1.0, sat["steady_sends_per_s"] * 0.5)
        counters = await _writer_counters(ctx)
        phase = await _send(
            ctx, pool, f"group of {size}: 50% = {rate:,.0f}/s", duration=paced, expected=rate * paced,
            mode="paced", phase=f"g{size}p", only_receiver=[2, group_id], track_messages=True,
            per_process=lambda i, rate=rate: {"rate": rate / len(pool.procs)},
        )  # fmt: skip
        writer = await _writer_since(ctx, counters, phase["end"] - phase["start"])
        received = (await _quiesce(pool)).get(f"g{size}p", [])
        entry["paced_50"] = _group_figures(phase, received, size)
        entry["paced_50"]["offered_per_s"] = round(rate, 1)
        entry["paced_50"]["writer"] = writer
        results.append(entry)
    ctx.metrics["groups"] = results
    await verify_pool(ctx, pool, groups)
    await pool.all("disconnect", timeout=60.0)


def _group_figures(sent: dict[str, Any], received: list[dict[str, Any]], size: int) -> dict[str, Any]:
    rx = _receive_figures(received, sent["start"], sent["end_sending"])
    messages: dict[str, list[float]] = {}
    for stats in received:
        for mid, (sent_at, last, count) in stats.get("messages", {}).items():
            entry = messages.get(mid)
            if entry is None:
                messages[mid] = [sent_at, last, count]
            else:
                entry[1] = max(entry[1], last)
                entry[2] += count
    complete = [(last - sent_at) * 1000.0 for sent_at, last, count in messages.values() if count >= size - 1]
    return {
        "sends_per_s": sent["steady_sends_per_s"],
        "acked": sent["acked"],
        "deliveries_per_s": rx["steady_deliveries_per_s"],
        "deliveries": rx["deliveries"],
        "last_member_latency_ms": summarize(complete),
        "messages_not_reaching_every_member_by_push": len(messages) - len(complete) + max(0, sent["acked"] - len(messages)),
        "member_latency_ms": rx["latency_ms"],
        "ack_latency_ms": sent["ack_latency_ms"],
    }


# --- sync ----------------------------------------------------------------------------------------


async def sync(ctx: Context) -> None:
    """Devices with 1,000 .. 20,000-message backlogs sync from 0: messages/s and server peak memory."""
    s = ctx.settings
    backlogs = [int(x) for x in s.size("sync_backlogs", [200, 1000], [1000, 5000, 10000, 20000])]
    repeats = int(s.size("sync_repeats", 1, 5))
    ctx.params.update(backlogs=backlogs, repeats=repeats, rate="backlog / median seconds from SyncTrigger to the last frame")
    receivers = await ctx.users(len(backlogs), "sr")
    senders = await ctx.users(len(backlogs), "ss")
    await run_all([partial(ctx.registrar.befriend, senders[i], receivers[i]) for i in range(len(backlogs))])
    sender_rows = [device_row(senders[i].devices[0], 1, receivers[i].user_id) for i in range(len(backlogs))]
    receiver_rows = [device_row(r.devices[0]) for r in receivers]
    pool = await ctx.start_pool([sender_rows, receiver_rows])
    await pool.one(0, "connect", timeout=180.0, within=120.0, sync=True)
    counts = {str(senders[i].devices[0].device_id): b for i, b in enumerate(backlogs)}
    bar = ctx.bar("fill backlogs", sum(backlogs), "msg")
    ctx.track(pool, bar, "acked")
    try:
        fill = await pool.one(0, "send", timeout=sum(backlogs) / 100.0 + 300.0, mode="window", window=64,
                              phase="fill", counts=counts, duration=sum(backlogs) / 100.0 + 120.0)  # fmt: skip
    finally:
        pool.on_progress = None
        bar.close()
    ctx.metrics["fill_sends_per_s"] = round(fill["acked"] / max(1e-9, fill["end"] - fill["start"]), 1)
    await pool.one(0, "quiesce", timeout=120.0, quiet=0.5, within=90.0)
    await pool.one(1, "connect", timeout=180.0, within=120.0, sync=False)
    rows = []
    series = []
    for index, backlog in enumerate(backlogs):
        runs = []
        for attempt in range(repeats):
            ctx.server.reset_peak()
            before = ctx.server.status()
            sampler = MemorySampler(ctx.reactor, ctx.server, 0.02).begin()
            bar = ctx.bar(f"sync {backlog:,} ({attempt + 1}/{repeats})", backlog, "msg")
            ctx.track(pool, bar, "synced")
            try:
                reply = await pool.one(1, "sync", timeout=600.0, devices=[index], after=0, within=300.0)
                bar.n = reply["syncs"][0]["count"]
            finally:
                pool.on_progress = None
                bar.close()
            samples = sampler.end()
            after = ctx.server.status()
            result = reply["syncs"][0]
            peak = max([after.get("VmHWM", 0)] + [row[1] for row in samples])
            runs.append((result, before, after, peak, samples))
            if result["count"] != backlog:
                ctx.errors.append(f"a {backlog}-message backlog synced {result['count']} messages")
        seconds = sorted(r[0]["seconds"] for r in runs)
        median = seconds[len(seconds) // 2]
        result, before, after, peak, samples = runs[0]
        rows.append(
            {
                "backlog": backlog,
                "synced": result["count"],
                "repeats": repeats,
                "seconds": [round(x, 4) for x in seconds],
                "messages_per_s": round(backlog / median, 1) if median else None,
                "best_messages_per_s": round(backlog / seconds[0], 1) if seconds[0] else None,
                "rss_kib_before": before.get("VmRSS"),
                "rss_kib_after": after.get("VmRSS"),
                "peak_kib": max(r[3] for r in runs),
                "peak_growth_kib": max(r[3] - r[1].get("VmRSS", r[3]) for r in runs),
            }
        )
        series.append({"backlog": backlog, "progress": result["series"], "rss": samples})
    ctx.metrics["syncs"] = rows
    ctx.result["series"] = series
    await verify_pool(ctx, pool, {})
    await pool.all("disconnect", timeout=60.0)


# --- storm ---------------------------------------------------------------------------------------


async def storm(ctx: Context) -> None:
    """5,000 devices reconnect at once and sync: time until all are up to date."""
    s = ctx.settings
    n = int(s.size("storm_devices", 50, 5000))
    group_size = int(s.size("storm_group", 10, 100))
    per_group = int(s.size("storm_messages", 3, 20))
    ngroups = math.ceil(n / group_size)
    ctx.params.update(devices=n, group_size=group_size, groups=ngroups, messages_per_group=per_group)
    users = await ctx.users(n, "st")
    owners = await ctx.users(ngroups, "so")
    groups: dict[int, list[int]] = {}
    owner_rows = []
    for g in range(ngroups):
        members = users[g * group_size : (g + 1) * group_size]
        group_id = await ctx.registrar.create_group(owners[g], f"storm{g}", members)
        groups[group_id] = sorted([owners[g].user_id] + [m.user_id for m in members])
        owner_rows.append(device_row(owners[g].devices[0], 2, group_id))
    lgs = ctx.loadgen_count(wanted=2)
    storm_lists = split([device_row(u.devices[0]) for u in users], lgs)
    pool = await ctx.start_pool([owner_rows, *storm_lists])
    storm_indices = list(range(1, len(pool.procs)))
    await _connect(ctx, pool, n + ngroups, desc="first connect", sync=True, concurrency=200)
    await _gather([pool.one(i, "disconnect", timeout=120.0) for i in storm_indices])
    bar = ctx.bar("send while offline", ngroups * per_group, "msg")
    ctx.track(pool, bar, "acked")
    try:
        await pool.one(0, "send", timeout=600.0, mode="window", window=8, count=per_group, phase="storm",
                       duration=300.0)  # fmt: skip
    finally:
        pool.on_progress = None
        bar.close()
    await pool.one(0, "quiesce", timeout=90.0, quiet=0.3, within=60.0)
    acked = (await pool.one(0, "acked", timeout=60.0))["acked"]
    expect: dict[int, int] = {}
    for _mid, _sender, _rtype, group_id, _device in acked:
        for user in groups[group_id]:
            expect[user] = expect.get(user, 0) + 1
    ctx.metrics["stored_copies"] = sum(expect.values())
    pool.progress = {}
    bar = ctx.bar("reconnect storm", n, "device")
    ctx.track(pool, bar, "up_to_date")
    start = time.time()
    try:
        replies = await _gather(
            [
                pool.procs[i].command(
                    "connect", 900.0, ctx.reactor, sync=True, concurrency=1_000_000, retries=6,
                    attempt_timeout=30.0, max_fail_streak=1_000_000, expect=expect, shuffle=True, within=600.0,
                )  # fmt: skip
                for i in storm_indices
            ]
        )
    finally:
        pool.on_progress = None
        bar.close()
    up = sorted(r["t0"] + t - start for r in replies for t in r["up_to_date_at"])
    signed = sorted(r["t0"] + t - start for r in replies for t in r["signed_in_at"])
    ctx.metrics.update(
        up_to_date=len(up),
        seconds_until_all_up_to_date=round(up[-1], 3) if len(up) == n else None,
        seconds_until_last_up_to_date=round(up[-1], 3) if up else None,
        up_to_date_s=summarize(up),
        signed_in_s=summarize(signed),
        sign_ins_per_s=round(len(signed) / signed[-1], 1) if signed and signed[-1] > 0 else None,
        attempt_failures=_merge_failures(replies),
        final_failures=_sum(replies, "final_failures"),
    )
    ctx.result["series"] = {
        "up_to_date_s": up[:: max(1, len(up) // 2000)],
        "signed_in_s": signed[:: max(1, len(signed) // 2000)],
    }
    if len(up) != n:
        ctx.errors.append(f"only {len(up)} of {n} devices got up to date")
    await verify_pool(ctx, pool, groups)
    await pool.all("disconnect", timeout=60.0)


async def _gather(calls: Sequence[Any]) -> list[dict[str, Any]]:
    return await gather(calls)
