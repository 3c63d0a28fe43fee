"""Markdown tables from a results directory: ``python -m goim_bench.report [DIR]``.

Used to write the results section of docs/benchmarks.md from a full run, and to
compare a run with the targets and with the raw limits measured beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

TARGETS = {
    "one_to_one_sends": 5000.0,  # sustained sends/s
    "one_to_one_p99_ms": 50.0,  # at 50 % of max
    "idle_connections": 100_000,
    "idle_kib": 8.0,  # per connection
    "group500_deliveries": 50_000.0,  # per second
    "sync_messages": 50_000.0,  # per second
}


def _load(directory: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "scenario" in data:
            results[data["scenario"]] = data
    return results


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _vs(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "-"
    ratio = value / target
    met = ratio >= 1.0 if higher_is_better else ratio <= 1.0
    return f"{'met' if met else 'missed'} ({ratio:.0%} of target)"


def websocket_rows(tcp: dict[str, Any], ws: dict[str, Any]) -> list[str]:
    """one-to-one over WebSocket beside TCP: sends/s and p99 at 50 %, as ratios to TCP."""

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f} × TCP" if a and b else ""

    def p99_at_half(m: dict[str, Any]) -> float | None:
        level = next((lv for lv in m.get("levels", []) if lv["fraction"] == 0.5), None)
        return level["latency_ms"].get("p99") if level else None

    closed = ws.get("closed_loop", {}).get("sends_per_s")
    sustained = ws.get("max_sustained", {}).get("sends_per_s")
    p99 = p99_at_half(ws)
    return [
        f"| one-to-one over WebSocket | closed-loop sends/s | {_n(closed)} | "
        f"{ratio(closed, tcp.get('closed_loop', {}).get('sends_per_s'))} |",
        f"| one-to-one over WebSocket | max sustained sends/s | {_n(sustained)} | "
        f"{ratio(sustained, tcp.get('max_sustained', {}).get('sends_per_s'))} |",
        f"| one-to-one over WebSocket | send→push p99 ms at 50 % | {_n(p99, 1)} | {ratio(p99, p99_at_half(tcp))} |",
    ]


def render(results: dict[str, dict[str, Any]]) -> str:
    """The markdown for one results directory."""
    lines = ["| scenario | measure | result | target |", "|---|---|---|---|"]
    limits = results.get("limits", {}).get("metrics", {})
    one = results.get("one-to-one", {}).get("metrics", {})
    if one:
        sustained = one.get("max_sustained", {}).get("sends_per_s")
        lines.append(f"| one-to-one | closed-loop sends/s ({one.get('closed_loop', {}).get('in_flight', '?')} in flight) | "
                     f"{_n(one.get('closed_loop', {}).get('sends_per_s'))} | |")  # fmt: skip
        lines.append(f"| one-to-one | max sustained sends/s (pushed to 4 devices) | {_n(sustained)} | "
                     f"≥ 5,000: {_vs(sustained, TARGETS['one_to_one_sends'])} |")  # fmt: skip
        for level in one.get("levels", []):
            lat = level["latency_ms"]
            target = ""
            if level["fraction"] == 0.5:
                target = f"p99 ≤ 50 ms: {_vs(lat.get('p99'), TARGETS['one_to_one_p99_ms'], False)}"
            lines.append(
                f"| one-to-one | send→push ms at {level['fraction']:.0%} ({_n(level['offered_per_s'])}/s offered, "
                f"{_n(level['acked_per_s'])}/s ACKed) | p50 {_n(lat.get('p50'), 1)} / p90 {_n(lat.get('p90'), 1)} / "
                f"p99 {_n(lat.get('p99'), 1)} / max {_n(lat.get('max'), 1)} | {target} |"
            )
    ws = results.get("one-to-one-ws", {}).get("metrics", {})
    if ws:
        lines.extend(websocket_rows(one, ws))
    for entry in results.get("group", {}).get("metrics", {}).get("groups", []):
        for phase, label in (("saturate", "saturated"), ("paced_50", "at 50 %")):
            g = entry[phase]
            lat = g["last_member_latency_ms"]
            target = ""
            if entry["members"] == 500 and phase == "saturate":
                target = f"≥ 50,000 deliveries/s: {_vs(g['deliveries_per_s'], TARGETS['group500_deliveries'])}"
            lines.append(
                f"| group of {entry['members']} | {label}: sends/s, deliveries/s, send→last member ms p50/p99/max | "
                f"{_n(g['sends_per_s'], 1)}, {_n(g['deliveries_per_s'])}, {_n(lat.get('p50'), 1)} / "
                f"{_n(lat.get('p99'), 1)} / {_n(lat.get('max'), 1)} | {target} |"
            )
    for row in results.get("sync", {}).get("metrics", {}).get("syncs", []):
        lines.append(
            f"| sync | backlog {_n(row['backlog'])}: messages/s, server peak RSS growth | "
            f"{_n(row['messages_per_s'])}, {_n((row['peak_growth_kib'] or 0) / 1024, 1)} MiB | "
            f"≥ 50,000/s: {_vs(row['messages_per_s'], TARGETS['sync_messages'])} |"
        )
    storm = results.get("storm", {}).get("metrics", {})
    if storm:
        lines.append(
            f"| storm | {_n(storm.get('up_to_date'))} devices reconnect and sync: s until all up to date "
            f"(p50 / p99 per device) | {_n(storm.get('seconds_until_last_up_to_date'), 2)} "
            f"({_n(storm.get('up_to_date_s', {}).get('p50'), 2)} / {_n(storm.get('up_to_date_s', {}).get('p99'), 2)}) | |"
        )
    idle = results.get("idle", {}).get("metrics", {})
    if idle:
        lines.append(f"| idle | connections held (signed in, heartbeating) | {_n(idle.get('connected_after_hold'))} | "
                     f"100,000: {_vs(idle.get('connected_after_hold'), TARGETS['idle_connections'])} |")  # fmt: skip
        lines.append(f"| idle | server RSS per connection | {_n(idle.get('kib_per_connection'), 2)} KiB | "
                     f"≤ 8 KiB: {_vs(idle.get('kib_per_connection'), TARGETS['idle_kib'], False)} |")  # fmt: skip
        lines.append(f"| idle | sign-ins/s while ramping | {_n(idle.get('sign_ins_per_s'))} | |")
    if limits:
        lines.append(f"| limits | bare Twisted TLV echo: frames echoed/s (each one in, one out) | {_n(limits.get('tlv_echo', {}).get('frames_per_s'))} | |")
        for key, label in (("sqlite_rows", "SQLite"), ("mysql_rows", "MariaDB")):
            value = limits.get(key, {}).get("rows_per_s")
            lines.append(f"| limits | {label} rows/s (100-row executemany) | {_n(value) if value else limits.get(key, {}).get('skipped', '-')} | |")
        lines.append(f"| limits | Redis pub/sub messages/s (txredisapi) | "
                     f"{_n(limits.get('redis_pubsub', {}).get('messages_per_s'))} | |")  # fmt: skip
    verified = ", ".join(f"{name}: {'verified' if r.get('verified') else 'NOT verified'}" for name, r in results.items())
    loads = sorted({tuple(r.get("machine", {}).get("load_average", [])) for r in results.values()})
    lines += ["", f"Verification: {verified}.", f"Load averages at scenario starts: {loads}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="markdown tables of goim-bench results")
    parser.add_argument("directory", nargs="?", type=Path, default=Path("bench/results"))
    parser.add_argument("--replot", action="store_true", help="also redraw every PNG from its JSON")
    args = parser.parse_args(argv)
    results = _load(args.directory)
    if args.replot:
        from goim_bench.plots import PLOTS
        from goim_bench.results import write_plot

        def drawer(name: str, result: dict[str, Any]) -> Callable[[Any], None]:
            return lambda figure: PLOTS[name](figure, result)

        for name, result in results.items():
            if name in PLOTS:
                write_plot(args.directory, name, drawer(name, result))
    print(render(results))


if __name__ == "__main__":
    main()
