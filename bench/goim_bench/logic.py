"""Send throughput at a fixed number of sends in flight (scenario ``logic``).

What ``bench/logic.py`` measured through ``MessageService.send`` in-process, now
from outside, as every other scenario: through the wire against a server this run
starts (SQLite, or a scratch MariaDB database with ``--database``), with 1, 10 and
100 sends in flight in total:

* 1:1 sends/s between friends (each stores 2 copies), the receivers offline;
* group-of-100 sends/s (each stores 100 copies), the members offline.

Each level is its own closed-loop phase (a window of sends per sending device);
verification: every send was ACKed with code 0. The raw storage limit of the same
machine (100-row ``executemany`` transactions) is the ``limits`` scenario.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from goim_bench.accounts import run_all
from goim_bench.common import Context, device_row

#: total sends in flight per level
LEVELS = (1, 10, 100)
#: senders at most (the rest of a level's sends in flight are each sender's window)
MAX_SENDERS = 10


def _split(in_flight: int) -> tuple[int, int]:
    """(senders, window per sender) for ``in_flight`` sends in flight in total."""
    senders = min(in_flight, MAX_SENDERS)
    return senders, max(1, in_flight // senders)


async def _level(ctx: Context, rows: list[list[Any]], in_flight: int, seconds: float, label: str) -> dict[str, Any]:
    """One closed-loop phase of the given sender rows; the merged send figures."""
    from goim_bench.scenarios import _connect, _send

    senders, window = _split(in_flight)
    pool = await ctx.start_pool([rows[:senders]])
    try:
        await _connect(ctx, pool, senders, desc=f"{label} x{in_flight} connect")
        return await _send(ctx, pool, f"{label} x{in_flight}", duration=seconds, mode="window", window=window,
                           phase=f"{label}{in_flight}")  # fmt: skip
    finally:
        await pool.stop()
        ctx.pools.remove(pool)


async def logic(ctx: Context) -> None:
    """1:1 and group-of-100 sends/s with 1, 10 and 100 sends in flight."""
    s = ctx.settings
    seconds = float(s.size("logic_s", 1.0, 3.0))
    members = int(s.size("logic_group", 20, 100))
    ctx.params.update(seconds_per_level=seconds, levels=list(LEVELS), max_senders=MAX_SENDERS, group_members=members)
    # 1:1: MAX_SENDERS pairs of friends, the first of each pair sends
    users = await ctx.users(2 * MAX_SENDERS, "lp")
    await run_all([partial(ctx.registrar.befriend, users[2 * i], users[2 * i + 1]) for i in range(MAX_SENDERS)])
    pair_rows = [device_row(users[2 * i].devices[0], 1, users[2 * i + 1].user_id) for i in range(MAX_SENDERS)]
    # group: MAX_SENDERS of its members send to it
    group = await ctx.users(members, "lg")
    group_id = await ctx.registrar.create_group(group[0], "logic", group)
    group_rows = [device_row(member.devices[0], 2, group_id) for member in group[:MAX_SENDERS]]
    levels = []
    for case, rows, copies in (("1:1", pair_rows, 2), (f"group of {members}", group_rows, members)):
        for in_flight in LEVELS:
            phase = await _level(ctx, rows, in_flight, seconds, "p" if case == "1:1" else "g")
            levels.append({
                "case": case,
                "in_flight": in_flight,
                "senders": _split(in_flight)[0],
                "sends_per_s": phase["steady_sends_per_s"],
                "copies_per_s": round(phase["steady_sends_per_s"] * copies, 1),
                "acked": phase["acked"],
                "failed": phase["failed"] + phase["unacked"],
                "ack_latency_ms": phase["ack_latency_ms"],
            })  # fmt: skip
    ctx.metrics["levels"] = levels
    failed = sum(level["failed"] for level in levels)
    acked = all(level["acked"] > 0 for level in levels)
    ctx.result["verification"] = {"verified": failed == 0 and acked, "failed_sends": failed,
                                  "problems": [] if acked else ["a level ACKed no send"]}  # fmt: skip
