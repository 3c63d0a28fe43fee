"""Markdown tables from a results directory: ``python -m goim_bench.report [DIR]``.

Used to write the results section of docs/benchmarks.md from a full run, and to
compare a run with the targets and with the raw limits measured beside it:

* the standalone table (SQLite, or the standalone setup the run has) with targets;
* every setup of the run side by side (standalone SQLite and MariaDB, ``L+C``
  distributed), each column beside the raw limits of its store measured in the
  same run, and the distributed figures as ratios to the standalone on MariaDB;
* ``--compare BEFORE AFTER``: two results directories figure by figure, with
  after ÷ before, the raw limits included (they show how much the machine moved).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, NamedTuple

from goim_bench.topology import TARGET, parse_setup, setup_of

TARGETS = {
    "one_to_one_sends": 5000.0,  # sustained sends/s
    "one_to_one_p99_ms": 50.0,  # at 50 % of max
    "idle_connections": 100_000,
    "idle_kib": 8.0,  # per connection
    "group500_deliveries": 50_000.0,  # per second
    "sync_messages": 50_000.0,  # per second
}


#: the order of setup columns; others (larger clusters) follow by name
SETUP_ORDER = ("sqlite", "mysql", "target", "1+1", "2+2")


def _load(directory: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """setup name -> scenario -> result; scenarios without a server under ``""``.

    Raises:
        SystemExit: the directory does not exist or holds no result.
    """
    if not directory.is_dir():
        raise SystemExit(f"goim_bench.report: {directory} is not a directory")
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"goim_bench.report: {path}: {e}") from None
        if isinstance(data, dict) and "scenario" in data:
            server_less = "server" not in data and "setup" not in data
            setup = "" if server_less else setup_of(data)
            runs.setdefault(setup, {})[data["scenario"]] = data
    if not runs:
        raise SystemExit(f"goim_bench.report: no goim-bench result (*.json) in {directory}")
    return runs


def _setup_key(name: str) -> tuple[int, str]:
    return (SETUP_ORDER.index(name), "") if name in SETUP_ORDER else (len(SETUP_ORDER), name)


def _setups(runs: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    return sorted((name for name in runs if name), key=_setup_key)


def _label(name: str) -> str:
    try:
        return parse_setup(name).label if name != "target" else TARGET.label
    except ValueError:
        return name


def standalone(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The results of the standalone table: the first standalone setup's, with the
    scenarios that need no server."""
    first = next((name for name in _setups(runs) if name in ("sqlite", "mysql", "target")), None)
    return {**runs.get("", {}), **(runs.get(first, {}) if first else {})}


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


# --- figures: one flat list per run, for the side-by-side and before/after tables -------------


class Figure(NamedTuple):
    """One number of a run: where it was measured, what it is, which way is better."""

    setup: str  # a setup name, or "" for the raw limits and the scenarios without a server
    measure: str
    value: float | None
    higher_is_better: bool = True
    scenario: str = ""


def _level(metrics: dict[str, Any], fraction: float) -> dict[str, Any]:
    return next((lv for lv in metrics.get("levels", []) if lv.get("fraction") == fraction), {})


def scenario_figures(setup: str, scenario: str, metrics: dict[str, Any]) -> list[Figure]:
    """The headline figures of one scenario's metrics."""
    out: list[Figure] = []

    def add(measure: str, value: Any, higher: bool = True) -> None:
        out.append(Figure(setup, measure, float(value) if isinstance(value, (int, float)) else None, higher, scenario))

    if scenario in ("one-to-one", "one-to-one-ws"):
        name = "one-to-one" if scenario == "one-to-one" else "one-to-one over WebSocket"
        add(f"{name}: closed-loop sends/s", metrics.get("closed_loop", {}).get("sends_per_s"))
        add(f"{name}: max sustained sends/s", metrics.get("max_sustained", {}).get("sends_per_s"))
        for fraction in (0.25, 0.5, 0.75):
            lat = _level(metrics, fraction).get("latency_ms", {})
            add(f"{name}: send→push p50 ms at {fraction * 100:.0f} %", lat.get("p50"), False)
            add(f"{name}: send→push p99 ms at {fraction * 100:.0f} %", lat.get("p99"), False)
    elif scenario == "group":
        for entry in metrics.get("groups", []):
            n = entry.get("members")
            sat, half = entry.get("saturate", {}), entry.get("paced_50", {})
            add(f"group of {n}: saturated sends/s", sat.get("sends_per_s"))
            add(f"group of {n}: saturated deliveries/s", sat.get("deliveries_per_s"))
            add(f"group of {n}: saturated send→last member p99 ms", sat.get("last_member_latency_ms", {}).get("p99"), False)
            add(f"group of {n}: send→last member p99 ms at 50 %", half.get("last_member_latency_ms", {}).get("p99"), False)
    elif scenario == "sync":
        for row in metrics.get("syncs", []):
            add(f"sync of {row['backlog']:,}: messages/s", row.get("messages_per_s"))
    elif scenario == "storm":
        add(f"storm of {metrics.get('up_to_date', 0):,}: s until all up to date",
            metrics.get("seconds_until_last_up_to_date"), False)  # fmt: skip
    elif scenario == "idle":
        add("idle: connections held", metrics.get("connected_after_hold"))
        add("idle: server RSS KiB per connection", metrics.get("kib_per_connection"), False)
        add("idle: sign-ins/s", metrics.get("sign_ins_per_s"))
    elif scenario == "logic":
        for lv in metrics.get("levels", []):
            add(f"logic {lv['case']} ×{lv['in_flight']} in flight: sends/s", lv.get("sends_per_s"))
    elif scenario == "durability":
        add("durability: SQLite FULL sends/s", metrics.get("full_sends_per_s"))
        add("durability: SQLite NORMAL sends/s", metrics.get("normal_sends_per_s"))
    elif scenario == "framing":
        for row in metrics.get("frames", []):
            add(f"framing {row['value']}: decode frames/s", row.get("decode_per_s"))
    elif scenario == "limits":
        add(LIMIT_ECHO, metrics.get("tlv_echo", {}).get("frames_per_s"))
        add(LIMIT_SQLITE, metrics.get("sqlite_rows", {}).get("rows_per_s"))
        add(LIMIT_MYSQL, metrics.get("mysql_rows", {}).get("rows_per_s"))
        add(LIMIT_REDIS, metrics.get("redis_pubsub", {}).get("messages_per_s"))
    return out


LIMIT_ECHO = "raw limit: bare Twisted TLV echo frames/s"
LIMIT_SQLITE = "raw limit: SQLite rows/s (100-row executemany)"
LIMIT_MYSQL = "raw limit: MariaDB rows/s (100-row executemany)"
LIMIT_REDIS = "raw limit: Redis pub/sub messages/s"


def figures(runs: dict[str, dict[str, dict[str, Any]]]) -> list[Figure]:
    """Every headline figure of a run, setups in column order, server-less scenarios first."""
    out: list[Figure] = []
    for setup in ["", *_setups(runs)]:
        for scenario, result in sorted(runs.get(setup, {}).items(), key=lambda item: _scenario_key(item[0])):
            out.extend(scenario_figures(setup, scenario, result.get("metrics", {})))
    return out


#: the order of a run's scenarios in the tables (goim-bench's default order)
SCENARIO_ORDER = ("framing", "limits", "sync", "logic", "one-to-one", "one-to-one-ws", "group", "storm", "idle",
                  "noisy", "durability")  # fmt: skip


def _scenario_key(name: str) -> tuple[int, str]:
    return (SCENARIO_ORDER.index(name), "") if name in SCENARIO_ORDER else (len(SCENARIO_ORDER), name)


def _raw(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float | None]:
    return {f.measure: f.value for f in figures({"": runs.get("", {})}) if f.measure.startswith("raw limit")}


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def side_by_side(runs: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Every setup of the run in its own column, next to the raw limits of its store.

    Rows: the raw limits each column is read against (its store's rows/s, Redis for
    the distributed ones), then every figure measured on more than one setup, or on
    a distributed one; then the distributed setups' figures as ratios to the
    standalone on MariaDB (the issue's measure), and stored copies/s as a share of
    the store's raw rows/s.
    """
    setups = _setups(runs)
    if not setups:
        return []
    by_setup: dict[str, dict[str, float | None]] = {name: {} for name in setups}
    order: list[str] = []
    for fig in figures({name: runs[name] for name in setups}):
        by_setup[fig.setup][fig.measure] = fig.value
        if fig.measure not in order:
            order.append(fig.measure)
    if len(setups) < 2 and not any(_is_distributed(name) for name in setups):
        return []
    raw = _raw(runs)
    lines = [
        "| measure | " + " | ".join(_label(name) for name in setups) + " |",
        "|---|" + "---|" * len(setups),
    ]

    def store_limit(name: str) -> float | None:
        return raw.get(LIMIT_SQLITE) if name == "sqlite" else raw.get(LIMIT_MYSQL) if name != "target" else None

    lines.append("| raw limit of the store, rows/s (this run's `limits`) | "
                 + " | ".join(_n(store_limit(name)) for name in setups) + " |")  # fmt: skip
    lines.append("| raw limit of Redis pub/sub, messages/s (this run's `limits`) | "
                 + " | ".join(_n(raw.get(LIMIT_REDIS)) if _is_distributed(name) else "" for name in setups) + " |")  # fmt: skip
    pins = []
    for name in setups:
        pinned = {r.get("pinned", {}).get("server") for r in runs[name].values()} - {None}
        pins.append(f"server on CPU {', '.join(sorted(pinned))}" if pinned else "unpinned")
    lines.append("| pinning (`--cpus`) | " + " | ".join(pins) + " |")
    for measure in order:
        values = [by_setup[name].get(measure) for name in setups]
        if sum(v is not None for v in values) == 0:
            continue
        digits = _digits(measure)
        lines.append(f"| {measure} | " + " | ".join(_n(v, digits) for v in values) + " |")
    base = "mysql" if "mysql" in setups else None
    for measure in ("one-to-one: max sustained sends/s", "one-to-one: closed-loop sends/s"):
        if base and any(_is_distributed(name) for name in setups) and by_setup[base].get(measure):
            lines.append(f"| {measure} ÷ standalone MariaDB | " + " | ".join(
                _ratio(by_setup[name].get(measure), by_setup[base].get(measure)) for name in setups) + " |")  # fmt: skip
    copies = []
    for name in setups:
        sends = by_setup[name].get("one-to-one: max sustained sends/s")
        limit = store_limit(name)
        copies.append(f"{2 * sends / limit:.0%}" if sends and limit else "-")
    if any(c != "-" for c in copies):
        lines.append("| one-to-one: stored copies/s at max sustained (2 a send) ÷ store's raw rows/s | "
                     + " | ".join(copies) + " |")  # fmt: skip
    sizes = sorted({g.get("members") for name in setups for g in runs[name].get("group", {}).get("metrics", {}).get("groups", [])})
    for size in sizes:
        shares = []
        for name in setups:
            deliveries = by_setup[name].get(f"group of {size}: saturated deliveries/s")
            limit = store_limit(name)
            shares.append(f"{deliveries / limit:.0%}" if deliveries and limit else "-")
        if any(c != "-" for c in shares):
            lines.append(f"| group of {size}: saturated deliveries/s ÷ store's raw rows/s | " + " | ".join(shares) + " |")
    if not raw:
        lines += ["", "No `limits` result in this directory: run the `limits` scenario in the same run to read "
                  "these figures against the machine's ceilings."]  # fmt: skip
    return lines


def _digits(measure: str) -> int:
    """Decimals of a figure: milliseconds to 0.1, seconds to 0.01, rates whole."""
    return 1 if " ms" in measure else 2 if "s until" in measure or "KiB" in measure else 0


def _is_distributed(name: str) -> bool:
    try:
        return parse_setup(name).distributed
    except ValueError:
        return False


def _verification(runs: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    parts = []
    loads = set()
    for setup in ["", *_setups(runs)]:
        for scenario, result in sorted(runs.get(setup, {}).items(), key=lambda item: _scenario_key(item[0])):
            stem = scenario + (f"@{setup}" if setup not in ("", "sqlite", "target") else "")
            parts.append(f"{stem}: {'verified' if result.get('verified') else 'NOT verified'}")
            loads.add(tuple(result.get("machine", {}).get("load_average", [])))
    return [f"Verification: {', '.join(parts)}.", f"Load averages at scenario starts: {sorted(loads)}."]


def report(runs: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The whole report of one results directory."""
    table = render(standalone(runs)).split("\n\nVerification:")[0]
    out = [table] if table.count("\n") > 1 else []  # more than the header
    rows = side_by_side(runs)
    if rows:
        out += ["", "Setups side by side, same run:", "", *rows]
    out += ["", *_verification(runs)]
    return "\n".join(out).lstrip("\n")


def compare(before: dict[str, dict[str, dict[str, Any]]], after: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Before / after: every figure both runs have, with after ÷ before.

    A ratio above 1 is better for throughputs, below 1 for latencies (the last
    column says which way is better). The raw limits are figures too: when they
    moved, the machine did, and the other ratios are to be read against theirs.
    """
    old = {(f.setup, f.measure): f for f in figures(before)}
    new = {(f.setup, f.measure): f for f in figures(after)}
    lines = ["| setup | measure | before | after | after ÷ before | better |", "|---|---|---|---|---|---|"]
    for key in [k for k in new if k in old]:
        a, b = old[key], new[key]
        if a.value is None and b.value is None:
            continue
        digits = _digits(key[1])
        better = "higher" if b.higher_is_better else "lower"
        lines.append(f"| {_label(key[0]) if key[0] else '-'} | {key[1]} | {_n(a.value, digits)} | "
                     f"{_n(b.value, digits)} | {_ratio(b.value, a.value)} | {better} |")  # fmt: skip
    for which, only in (("before", [f for k, f in old.items() if k not in new]),
                        ("after", [f for k, f in new.items() if k not in old])):  # fmt: skip
        if only:
            lines += ["", f"Only {which}: {_unmatched(only)}."]
    pins = [_pinning(before), _pinning(after)]
    lines += ["", f"Pinning: before {pins[0]}; after {pins[1]}" + ("" if pins[0] == pins[1] else
              " (they differ: the ratios mix the change with the pinning)") + "."]  # fmt: skip
    lines += ["Before: " + " ".join(_verification(before)), "After: " + " ".join(_verification(after))]
    return "\n".join(lines)


def _unmatched(only: list[Figure]) -> str:
    """Figures only one run has, by setup and scenario: ``on 2+2: one-to-one, group``."""
    by_setup: dict[str, list[str]] = {}
    for fig in only:
        topics = by_setup.setdefault(fig.setup or "no server", [])
        if fig.scenario not in topics:
            topics.append(fig.scenario)
    return "; ".join(f"on {setup}: {', '.join(topics)}" for setup, topics in by_setup.items())


def _pinning(runs: dict[str, dict[str, dict[str, Any]]]) -> str:
    pinned = {str(cpus) for results in runs.values() for r in results.values()
              if "setup" in r and (cpus := (r.get("pinned") or {}).get("server"))}  # fmt: skip
    return f"server on CPU {', '.join(sorted(pinned))}" if pinned else "unpinned"


def setup_summary(results: dict[str, dict[str, Any]]) -> list[str]:
    """For the closing summary of ``goim-bench``: the side-by-side table of this run
    (``results``: result-file stem -> result), when it has more than one setup."""
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for stem, result in results.items():
        server_less = "server" not in result and "setup" not in result
        scenario = result.get("scenario") or stem.partition("@")[0]
        runs.setdefault("" if server_less else setup_of(result), {})[scenario] = result
    rows = side_by_side(runs)
    return ["Setups side by side, same run:", *(f"  {row}" for row in rows)] if rows else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="markdown tables of goim-bench results")
    parser.add_argument("directory", nargs="?", type=Path, default=Path("bench/results"))
    parser.add_argument("--replot", action="store_true", help="also redraw every PNG from its JSON")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="compare two results directories figure by figure (after ÷ before)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(_load(args.compare[0]), _load(args.compare[1])))
        return
    runs = _load(args.directory)
    if args.replot:
        from goim_bench.plots import PLOTS
        from goim_bench.results import write_plot

        def drawer(name: str, result: dict[str, Any]) -> Callable[[Any], None]:
            return lambda figure: PLOTS[name](figure, result)

        for setup, results in runs.items():
            for name, result in results.items():
                if name in PLOTS:
                    stem = name + (f"@{setup}" if setup not in ("", "sqlite", "target") else "")
                    write_plot(args.directory, stem, drawer(name, result))
    print(report(runs))


if __name__ == "__main__":
    main()
