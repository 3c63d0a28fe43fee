"""The cost of durable commits: one-to-one throughput with SQLite synchronous=FULL vs NORMAL.

Starts two standalone servers side by side, one per mode, each on its own SQLite
file in the scratch directory (on disk, where fsync costs what it costs), registers
P pairs on each, then runs short closed-loop one-to-one rounds (a window of sends
in flight per sending device) alternating between them: FULL, NORMAL, NORMAL, FULL,
... The figures are the median round's steady ACKed sends/s per mode and the ratio
NORMAL / FULL within the same run.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from goim_bench.accounts import Registrar, run_all
from goim_bench.common import Context, device_row
from goim_bench.server import BenchServer

#: capacity scenarios lift the per-user send budget: they measure the server, not the budget
NO_BUDGET = ("--send-rate", "1e9", "--send-burst", "1e9")


async def durability(ctx: Context) -> None:
    """Closed-loop one-to-one sends/s with ``--sqlite-synchronous full`` and ``normal``."""
    from goim_bench.scenarios import _connect, _send

    s = ctx.settings
    if s.target_http or (s.setups and all(setup.name != "sqlite" for setup in s.setups)):
        ctx.notes.append("durability compares SQLite modes of a server it starts: skipped without the sqlite "
                         "setup and for targets")  # fmt: skip
        ctx.result["verification"] = {"verified": True, "skipped": True}
        return
    pairs = int(s.size("pairs", 4, 20))
    seconds = float(s.size("saturate_s", 2.0, 3.0))
    rounds = int(s.size("durability_rounds", 3, 10))
    window = int(s.size("window", 8, 16))
    ctx.params.update(pairs=pairs, seconds_per_round=seconds, rounds=rounds, window_per_sender=window)
    runs: dict[str, list[dict[str, Any]]] = {"full": [], "normal": []}
    servers: dict[str, BenchServer] = {}
    pools: dict[str, Any] = {}
    try:
        # both servers run side by side; short rounds alternate between them, so a
        # change in the machine's load hits both modes alike
        for mode in runs:
            workdir = ctx.workdir / mode
            workdir.mkdir()
            server = servers[mode] = BenchServer(ctx.reactor, workdir, cpus=s.server_cpus, backlog=s.tcp_backlog,
                                                 extra_args=("--sqlite-synchronous", mode, *NO_BUDGET))  # fmt: skip
            await server.start()
            registrar = Registrar(server.http, concurrency=s.registration_concurrency)
            users = await run_all([partial(registrar.new_user, f"d{mode}{i}") for i in range(2 * pairs)],
                                  concurrency=s.registration_concurrency)  # fmt: skip
            await run_all([partial(registrar.befriend, users[2 * i], users[2 * i + 1]) for i in range(pairs)])
            rows = []
            for i in range(pairs):
                a, b = users[2 * i], users[2 * i + 1]
                rows += [device_row(a.devices[0], 1, b.user_id), device_row(b.devices[0], 1, a.user_id)]
            pool = pools[mode] = ctx.pool()
            pool.host, pool.port = server.tcp_host, server.tcp_port
            pool.start([rows[: len(rows) // 2], rows[len(rows) // 2 :]])
            await pool.ready()
            await _connect(ctx, pool, len(rows), desc=f"{mode} connect", sync=True, concurrency=100)
        for round_number in range(rounds):
            order = ("full", "normal") if round_number % 2 == 0 else ("normal", "full")
            for mode in order:
                phase = await _send(ctx, pools[mode], f"{mode} round {round_number + 1}", duration=seconds,
                                    mode="window", window=window, phase=f"{mode}{round_number}")  # fmt: skip
                runs[mode].append({
                    "sends_per_s": phase["steady_sends_per_s"],
                    "acked": phase["acked"],
                    "failed": phase["failed"] + phase["unacked"],
                    "ack_latency_ms": phase["ack_latency_ms"],
                })  # fmt: skip
    finally:
        for mode, server in servers.items():
            if mode in pools:
                await pools[mode].stop()
                ctx.pools.remove(pools[mode])
            await server.stop()
            server.kill()

    def median(mode: str) -> float:
        """The median round (robust against a round disturbed by other load)."""
        values = sorted(r["sends_per_s"] for r in runs[mode])
        return values[len(values) // 2] if values else 0.0

    full, normal = median("full"), median("normal")
    ctx.metrics["runs"] = runs
    ctx.metrics["full_sends_per_s"] = round(full, 1)
    ctx.metrics["normal_sends_per_s"] = round(normal, 1)
    ctx.metrics["normal_over_full"] = round(normal / full, 2) if full else None
    # the same ratio round by round (the two modes of a round ran back to back)
    paired = sorted(n["sends_per_s"] / f["sends_per_s"] for f, n in zip(runs["full"], runs["normal"]) if f["sends_per_s"])
    ctx.metrics["normal_over_full_by_round"] = [round(r, 2) for r in paired]
    ctx.metrics["normal_over_full_median_round"] = round(paired[len(paired) // 2], 2) if paired else None
    ctx.metrics["ack_p50_ms"] = {mode: [r["ack_latency_ms"].get("p50") for r in runs[mode]] for mode in runs}
    failed = sum(r["failed"] for mode in runs for r in runs[mode])
    ctx.result["verification"] = {"verified": failed == 0 and full > 0 and normal > 0, "failed_sends": failed}
