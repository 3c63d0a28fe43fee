"""One PNG per scenario, drawn from its result (so plots can be redrawn from the JSON)."""

from __future__ import annotations

from typing import Any, Callable


def _ok(result: dict[str, Any]) -> str:
    return "verified" if result.get("verified") else "NOT verified"


def _title(figure: Any, result: dict[str, Any], text: str) -> None:
    quick = " (quick)" if result.get("quick") else ""
    setup = result.get("setup", {}).get("name")
    where = f" on {result['setup'].get('label', setup)}" if setup and setup != "sqlite" else ""
    figure.suptitle(f"{text}{where}{quick} - {_ok(result)}", fontsize=11)


def _empty(ax: Any, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def plot_idle(figure: Any, result: dict[str, Any]) -> None:
    m = result.get("metrics", {})
    samples = result.get("series", {}).get("memory", [])
    left, right = figure.subplots(1, 2)
    if samples:
        t = [row[0] for row in samples]
        conns = [row[2] if len(row) > 2 else 0 for row in samples]
        rss = [row[1] / 1024.0 for row in samples]
        left.plot(t, conns, color="tab:blue")
        left.set_xlabel("seconds")
        left.set_ylabel("signed-in connections", color="tab:blue")
        twin = left.twinx()
        twin.plot(t, rss, color="tab:red")
        twin.set_ylabel("server VmRSS (MiB)", color="tab:red")
        right.plot(conns, rss, ".", markersize=3)
        right.set_xlabel("signed-in connections")
        right.set_ylabel("server VmRSS (MiB)")
    else:
        _empty(left)
        _empty(right)
    left.set_title(f"ramp: {m.get('sign_ins_per_s') or 0:,.0f} sign-ins/s")
    right.set_title(f"{m.get('kib_per_connection') or 0:.2f} KiB per connection at {m.get('connected_after_hold', 0):,}")
    _title(figure, result, "idle connections")


def plot_one_to_one(figure: Any, result: dict[str, Any]) -> None:
    m = result.get("metrics", {})
    left, right = figure.subplots(1, 2)
    search = m.get("search", [])
    if search:
        offered = [st["offered_per_s"] for st in search]
        left.plot(offered, offered, ":", color="gray", label="offered")
        left.plot(offered, [st["acked_per_s"] for st in search], "o-", label="ACKed")
        for st in search:
            if not st.get("sustained"):
                left.plot([st["offered_per_s"]], [st["acked_per_s"]], "rx", markersize=10)
        closed = m.get("closed_loop", {}).get("sends_per_s")
        if closed:
            left.axhline(closed, color="tab:orange", linestyle="--", label="closed loop")
        left.set_xlabel("offered sends/s")
        left.set_ylabel("ACKed sends/s")
        left.legend(fontsize=8)
    else:
        _empty(left)
    left.set_title(f"max sustained: {m.get('max_sustained', {}).get('sends_per_s', 0):,.0f} sends/s")
    levels = m.get("levels", [])
    if levels:
        x = [lv["offered_per_s"] for lv in levels]
        for key, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-"), ("max", "x--")):
            right.plot(x, [lv["latency_ms"].get(key, 0) for lv in levels], style, label=key)
        right.set_xlabel("offered sends/s (25, 50, 75 % of max sustained)")
        right.set_ylabel("send -> push at receiver (ms)")
        right.set_yscale("log")
        right.legend()
    else:
        _empty(right)
    right.set_title("latency at fixed fractions of the max")
    _title(figure, result, "one-to-one over WebSocket" if result.get("params", {}).get("transport") == "ws" else "one-to-one")


def plot_group(figure: Any, result: dict[str, Any]) -> None:
    groups = result.get("metrics", {}).get("groups", [])
    left, right = figure.subplots(1, 2)
    if groups:
        labels = [str(g["members"]) for g in groups]
        x = range(len(groups))
        left.bar([i - 0.2 for i in x], [g["saturate"]["deliveries_per_s"] for g in groups], 0.4, label="deliveries/s")
        left.set_xticks(list(x), labels)
        left.set_xlabel("members")
        left.set_ylabel("deliveries/s (saturated)")
        twin = left.twinx()
        twin.bar([i + 0.2 for i in x], [g["saturate"]["sends_per_s"] for g in groups], 0.4, color="tab:orange",
                 label="sends/s")  # fmt: skip
        twin.set_ylabel("sends/s", color="tab:orange")
        for phase, style in (("saturate", "o"), ("paced_50", "s")):
            for key, color in (("p50", "tab:blue"), ("p99", "tab:red"), ("max", "gray")):
                right.plot(labels, [g[phase]["last_member_latency_ms"].get(key, 0) for g in groups], style + "-",
                           color=color, label=f"{phase} {key}", alpha=1.0 if phase == "paced_50" else 0.5)  # fmt: skip
        right.set_yscale("log")
        right.set_xlabel("members")
        right.set_ylabel("send -> last member (ms)")
        right.legend(fontsize=7)
    else:
        _empty(left)
        _empty(right)
    left.set_title("fan-out throughput")
    right.set_title("latency to the last member")
    _title(figure, result, "group")


def plot_sync(figure: Any, result: dict[str, Any]) -> None:
    series = result.get("series", [])
    rows = result.get("metrics", {}).get("syncs", [])
    left, right = figure.subplots(1, 2)
    for entry in series:
        points = entry.get("progress", [])
        if points:
            left.plot([p[0] for p in points], [p[1] for p in points], label=f"{entry['backlog']:,}")
    left.set_xlabel("seconds since SyncTrigger")
    left.set_ylabel("messages received")
    if series:
        left.legend(title="backlog", fontsize=8)
    else:
        _empty(left)
    if rows:
        backlog = [r["backlog"] for r in rows]
        right.plot(backlog, [(r["peak_growth_kib"] or 0) / 1024.0 for r in rows], "o-", color="tab:red",
                   label="peak RSS growth (MiB)")  # fmt: skip
        right.set_xlabel("backlog (messages)")
        right.set_ylabel("server peak RSS growth during sync (MiB)", color="tab:red")
        # a fixed floor for the scale: a few KiB of noise must not look like growth
        right.set_ylim(0, max(16.0, 1.5 * max((r["peak_growth_kib"] or 0) / 1024.0 for r in rows)))
        twin = right.twinx()
        twin.plot(backlog, [r["messages_per_s"] or 0 for r in rows], "s--", color="tab:blue")
        twin.set_ylabel("messages/s", color="tab:blue")
    else:
        _empty(right)
    left.set_title("sync progress")
    right.set_title("throughput and server memory vs backlog")
    _title(figure, result, "sync from 0")


def plot_storm(figure: Any, result: dict[str, Any]) -> None:
    series = result.get("series", {})
    m = result.get("metrics", {})
    ax = figure.subplots(1, 1)
    for key, label in (("signed_in_s", "signed in"), ("up_to_date_s", "up to date")):
        values = series.get(key, [])
        if values:
            n = len(values)
            ax.plot(values, [(i + 1) / n * 100 for i in range(n)], label=label)
    ax.set_xlabel("seconds since the reconnect began")
    ax.set_ylabel("% of devices")
    if series.get("up_to_date_s") or series.get("signed_in_s"):
        ax.legend()
    else:
        _empty(ax)
    ax.set_title(
        f"{m.get('up_to_date', 0):,} devices up to date after {m.get('seconds_until_last_up_to_date') or 0:.2f} s"
    )
    _title(figure, result, "reconnect storm")


def plot_limits(figure: Any, result: dict[str, Any]) -> None:
    m = result.get("metrics", {})
    ax = figure.subplots(1, 1)
    bars = []
    for label, key, field in (
        ("TLV echo frames/s", "tlv_echo", "frames_per_s"),
        ("SQLite rows/s", "sqlite_rows", "rows_per_s"),
        ("MariaDB rows/s", "mysql_rows", "rows_per_s"),
        ("Redis pub/sub msgs/s", "redis_pubsub", "messages_per_s"),
    ):
        value = m.get(key, {}).get(field)
        if value:
            bars.append((label, value))
    if bars:
        ax.barh([b[0] for b in bars], [b[1] for b in bars])
        ax.set_xscale("log")
        for i, (_, value) in enumerate(bars):
            ax.text(value, i, f" {value:,.0f}", va="center")
    else:
        _empty(ax)
    ax.set_title("raw limits of this machine")
    _title(figure, result, "limits")


def plot_noisy(figure: Any, result: dict[str, Any]) -> None:
    m = result.get("metrics", {})
    left, right = figure.subplots(1, 2)
    by_phase = m.get("phases", {})
    phases = list(by_phase)
    if phases:
        for i, key in enumerate(("p50", "p99")):
            values = [by_phase[p]["latency_ms"].get(key) or 0 for p in phases]
            left.bar([x + 0.4 * i for x in range(len(phases))], values, width=0.4, label=key)
        left.set_xticks([x + 0.2 for x in range(len(phases))], phases)
        left.set_ylabel("normal users' send -> push (ms)")
        left.legend()
    else:
        _empty(left)
    series = result.get("series", {})
    rss = series.get("rss") or []
    if rss:
        right.plot([r[0] for r in rss], [r[1] / 1024 for r in rss])
        for i, (begin, end) in enumerate(series.get("attacks", [])):
            right.axvspan(begin, end, alpha=0.15, color="red", label="under attack" if i == 0 else None)
        right.set_xlabel("s")
        right.set_ylabel("server RSS (MiB)")
        right.set_ylim(bottom=0)
    else:
        _empty(right)
    _title(figure, result, "noisy neighbour")


def plot_durability(figure: Any, result: dict[str, Any]) -> None:
    m = result.get("metrics", {})
    ax = figure.subplots()
    runs = m.get("runs", {})
    if runs:
        for mode, entries in runs.items():
            ax.plot(range(1, len(entries) + 1), [r["sends_per_s"] for r in entries], marker="o", label=f"synchronous={mode}")
        ax.set_xlabel("round")
        ax.set_ylabel("closed-loop one-to-one sends/s")
        ax.legend()
    else:
        _empty(ax)
    _title(figure, result, "SQLite durability cost")


def plot_framing(figure: Any, result: dict[str, Any]) -> None:
    rows = result.get("metrics", {}).get("frames", [])
    ax = figure.subplots(1, 1)
    if rows:
        kinds = [("encode_per_s", "encode"), ("decode_per_s", "decode"), ("receiver_per_s", "receiver")]
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            ax.bar([k + i * width for k in range(len(kinds))], [row[key] / 1e6 for key, _ in kinds], width,
                   label=row["value"])  # fmt: skip
        ax.set_xticks([k + width * (len(rows) - 1) / 2 for k in range(len(kinds))], [label for _, label in kinds])
        ax.set_ylabel("million frames/s (one core)")
        ax.legend()
    else:
        _empty(ax)
    _title(figure, result, "TLV framing")


def plot_logic(figure: Any, result: dict[str, Any]) -> None:
    levels = result.get("metrics", {}).get("levels", [])
    ax = figure.subplots(1, 1)
    if levels:
        for case in dict.fromkeys(lv["case"] for lv in levels):
            rows = [lv for lv in levels if lv["case"] == case]
            ax.plot([lv["in_flight"] for lv in rows], [lv["sends_per_s"] for lv in rows], "o-", label=case)
        ax.set_xscale("log")
        ax.set_xlabel("sends in flight")
        ax.set_ylabel("ACKed sends/s")
        ax.legend()
    else:
        _empty(ax)
    _title(figure, result, "sends/s by sends in flight")


PLOTS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "framing": plot_framing,
    "logic": plot_logic,
    "noisy": plot_noisy,
    "durability": plot_durability,
    "idle": plot_idle,
    "one-to-one": plot_one_to_one,
    "one-to-one-ws": plot_one_to_one,
    "group": plot_group,
    "sync": plot_sync,
    "storm": plot_storm,
    "limits": plot_limits,
}
