"""``goim-bench``: run benchmark scenarios against a fresh (or a given) goim server.

    goim-bench [--quick] [--output DIR] [--database mysql://root@127.0.0.1:3306]
               [--setup sqlite,mysql,1+1,2+2]
               [--target-http URL --target-tcp HOST:PORT [--target-pid PID]]
               [--cpus SERVER:LOAD] [--loadgens N] [--size KEY=VALUE ...] [SCENARIO ...]

Each scenario starts its own server and its own load-generator processes, once per
setup it runs on: a standalone ``twistd -n goim`` on SQLite or MariaDB, or L logic
+ C connect nodes (``L+C``) on a scratch MariaDB database and a private Redis. It
shows a progress bar and writes ``<output>/<name>.json`` and ``<output>/<name>.png``
(``<name>@<setup>.*`` for every setup but standalone SQLite). Every scenario ends by
checking, through sync, that each device holds exactly the acknowledged messages;
the exit status is 1 when any scenario failed or could not be verified. See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable

from goim_bench import limits as limits_module, scenarios
from goim_bench.cluster import BenchCluster, RedisProcess
from goim_bench.durability import NO_BUDGET, durability
from goim_bench.framing import framing
from goim_bench.logic import logic
from goim_bench.noisy import SERVER_ARGS as NOISY_SERVER_ARGS, noisy
from goim_bench.common import Context, Settings
from goim_bench.results import load_average, machine_info, source_info, write_plot, write_result
from goim_bench.server import BenchServer, Server, TargetServer, mysql_reachable
from goim_bench.topology import MYSQL, SQLITE, TARGET, Setup, parse_setups

Scenario = Callable[[Context], Awaitable[None]]

#: name -> (function, needs a goim server); the default order runs the short ones first
SCENARIOS: dict[str, tuple[Scenario, bool]] = {
    "framing": (framing, False),
    "limits": (limits_module.limits, False),
    "sync": (scenarios.sync, True),
    "logic": (logic, True),
    "one-to-one": (scenarios.one_to_one, True),
    "one-to-one-ws": (scenarios.one_to_one_ws, True),
    "group": (scenarios.group, True),
    "storm": (scenarios.storm, True),
    "idle": (scenarios.idle, True),
    "noisy": (noisy, True),
    "durability": (durability, False),
}

#: the scenarios that run on a distributed setup (L+C); the others need what only a
#: standalone server has (its WebSocket on the HTTP port, one process's memory and
#: open files, the noisy scenario's HTTP attacks on the API it serves)
DISTRIBUTED_SCENARIOS = ("one-to-one", "group", "sync", "logic", "storm")

#: the distributed setups a run covers unless --setup says otherwise
DEFAULT_DISTRIBUTED = ("1+1", "2+2")

#: server options per scenario; the default lifts the per-user send budget
#: (NO_BUDGET): the capacity scenarios measure the server, not the budget
SERVER_ARGS: dict[str, tuple[str, ...]] = {"noisy": NOISY_SERVER_ARGS}

#: ``--size`` keys and what they set
SIZE_KEYS = {
    "idle_connections": "idle: connections to reach (capped by the server's open-files limit)",
    "idle_hold": "idle: seconds to hold them",
    "idle_heartbeat": "idle: heartbeat interval (s)",
    "pairs": "one-to-one: pairs of users (2 devices each)",
    "saturate_s": "one-to-one, group: seconds of the saturation phase",
    "paced_s": "one-to-one, group: seconds of each paced latency phase",
    "step_s": "one-to-one: seconds of each step of the sustained-rate search",
    "search_fractions": "one-to-one: comma-separated fractions of the closed-loop rate to try",
    "fixed_rates": "one-to-one: comma-separated offered sends/s, measured like the levels in every run (before / after)",
    "window": "one-to-one: sends in flight per sending device",
    "group_sizes": "group: comma-separated member counts",
    "group_senders": "group: sending members per group",
    "group_window": "group: sends in flight per sending member",
    "sync_backlogs": "sync: comma-separated backlog sizes",
    "sync_repeats": "sync: syncs from 0 per backlog (the median counts)",
    "storm_devices": "storm: devices",
    "storm_group": "storm: members per group",
    "storm_messages": "storm: messages per group while offline",
    "ack_interval": "all: seconds between a device's cumulative MessageACKs (default 0.25)",
    "limits_seconds": "limits: seconds per throughput measurement",
    "limits_rows": "limits: rows to insert",
    "noisy_pairs": "noisy: pairs of normal users chatting",
    "noisy_rate": "noisy: sends/s per normal user",
    "noisy_phase_s": "noisy: seconds of the quiet and of the attack phase",
    "noisy_group": "noisy: members of the flooded group",
    "noisy_flood_devices": "noisy: devices of the flooder",
    "noisy_slow_http": "noisy: slow HTTP connections held",
    "noisy_never_wait_s": "noisy: seconds to wait at the end for the server to drop the never-reader",
    "durability_rounds": "durability: FULL/NORMAL rounds",
    "framing_seconds": "framing: seconds per run",
    "framing_repeat": "framing: runs per figure (the best counts)",
    "logic_s": "logic: seconds per in-flight level",
    "logic_group": "logic: members of the group",
}


def parse_size(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE a number or a comma-separated list of numbers."""
    key, sep, value = text.partition("=")
    if not sep or key not in SIZE_KEYS:
        raise argparse.ArgumentTypeError(f"use KEY=VALUE with KEY one of {', '.join(SIZE_KEYS)}")

    def number(v: str) -> int | float:
        return float(v) if "." in v else int(v)

    try:
        parsed: Any = [number(v) for v in value.split(",")] if "," in value or key.endswith(("sizes", "backlogs", "fractions", "rates")) \
            else number(value)  # fmt: skip
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: {value!r} is not a number") from None
    return key, parsed


def parse_cpus(text: str) -> tuple[str, str]:
    """``SERVER:LOAD`` CPU lists for ``taskset -c`` (e.g. ``0:1`` or ``0:1-3``)."""
    server, sep, load = text.partition(":")
    allowed = set("0123456789,-")
    if not sep or not server or not load or not set(server + load) <= allowed:
        raise argparse.ArgumentTypeError("use SERVER:LOAD with taskset CPU lists, e.g. 0:1")
    return server, load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goim-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks correctness, not speed "
                        "(~3 min on SQLite, ~2.5 min more on 1+1 and 2+2)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path("bench/results"), help="results directory")
    parser.add_argument("--database", help="MySQL/MariaDB server URL without a database name, for the "
                        "mysql and distributed setups (a scratch database is created and dropped; default "
                        "mysql://root@127.0.0.1:3306); without --setup, the standalone runs on it instead of "
                        "SQLite")  # fmt: skip
    parser.add_argument("--setup", "--topology", dest="setup", action="append", default=[], metavar="LIST",
                        help="where the server scenarios run, comma-separated: sqlite (standalone), mysql "
                        "(standalone on MariaDB), L+C (L logic + C connect nodes on MariaDB and a private "
                        "Redis), e.g. --setup sqlite,1+1,2+2. Default: sqlite (mysql with --database), then "
                        "1+1 and 2+2 for the scenarios that support them when MariaDB answers and "
                        "redis-server is installed")  # fmt: skip
    parser.add_argument("--target-http", help="benchmark a running server: its HTTP API base URL")
    parser.add_argument("--target-tcp", help="... and its client TCP listener, HOST:PORT")
    parser.add_argument("--target-pid", type=int, help="... and its pid, to read its memory from /proc")
    parser.add_argument("--cpus", type=parse_cpus, help="pin the server side (every node and the private "
                        "Redis of a distributed setup) and the load generators to CPUs, e.g. 0:1 (the "
                        "reporting mode)")  # fmt: skip
    parser.add_argument("--loadgens", type=int, help="load-generator processes per scenario (default 2, more "
                        "when the connection count needs it)")  # fmt: skip
    parser.add_argument("--redis", help="redis://HOST:PORT for the pub/sub limit (default: a private redis-server)")
    parser.add_argument("--size", type=parse_size, action="append", default=[], metavar="KEY=VALUE",
                        help="override a size: " + "; ".join(f"{k} ({v})" for k, v in SIZE_KEYS.items()))  # fmt: skip
    parser.add_argument("--server-nofile", type=int, help="start the server with this lower open-files limit "
                        "(to see the idle scenario meet the limit with few connections)")  # fmt: skip
    parser.add_argument("--tcp-backlog", type=int, default=1024, help="listen(2) backlog of the server's "
                        "client listener (the endpoint's backlog=; Twisted's default is 50)")  # fmt: skip
    parser.add_argument("--server-source", type=Path, metavar="DIR", help="run the goim servers (not the "
                        "load generators) from the goim checkout in DIR, e.g. a git worktree of an older "
                        "commit, for a before/after comparison in the same run")  # fmt: skip
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch directories (logs, database)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    if bool(args.target_http) != bool(args.target_tcp):
        raise SystemExit("goim-bench: --target-http and --target-tcp go together")
    if args.database and not args.database.startswith("mysql://"):
        raise SystemExit("goim-bench: --database takes a mysql:// server URL (SQLite is the default)")
    if args.database and args.database.rstrip("/").count("/") > 2:
        raise SystemExit("goim-bench: --database names the server only; a scratch database is created there")
    server_cpus, load_cpus = args.cpus if args.cpus else (None, None)
    try:
        setups = parse_setups(",".join(args.setup)) if args.setup else []
    except ValueError as e:
        raise SystemExit(f"goim-bench: --setup {e}") from None
    if args.target_http and setups:
        raise SystemExit("goim-bench: --setup starts servers; --target-http benchmarks a running one")
    source = args.server_source.resolve() if args.server_source else None
    if source is not None and not (source / "goim" / "__init__.py").is_file():
        raise SystemExit(f"goim-bench: --server-source {args.server_source} holds no goim package")
    if source is not None and args.target_http:
        raise SystemExit("goim-bench: --server-source starts servers; --target-http benchmarks a running one")
    return Settings(
        setups=setups,
        setups_given=bool(setups),
        quick=args.quick,
        output=args.output,
        database=args.database.rstrip("/") if args.database else None,
        server_cpus=server_cpus,
        load_cpus=load_cpus,
        loadgens=args.loadgens,
        target_http=args.target_http,
        target_tcp=args.target_tcp,
        target_pid=args.target_pid,
        keep_work=args.keep_work,
        redis=args.redis,
        server_nofile=args.server_nofile,
        tcp_backlog=args.tcp_backlog,
        server_source=source,
        sizes=dict(args.size),
    )


def result_stem(name: str, setup: Setup | None) -> str:
    """The result files' name: ``one-to-one``, ``one-to-one@mysql``, ``group@2+2``."""
    return name + (setup.suffix if setup is not None else "")


def make_server(reactor: Any, settings: Settings, name: str, setup: Setup, workdir: Path) -> Server:
    """The server side of one scenario run on ``setup`` (not started)."""
    extra_args = SERVER_ARGS.get(name, NO_BUDGET)
    if setup == TARGET:
        assert settings.target_http and settings.target_tcp
        return TargetServer(settings.target_http, settings.target_tcp, settings.target_pid)
    if setup.distributed:
        return BenchCluster(
            reactor,
            workdir,
            mysql=settings.mysql_server,
            logic_nodes=setup.logic_nodes,
            connect_nodes=setup.connect_nodes,
            cpus=settings.server_cpus,
            nofile=settings.server_nofile,
            backlog=settings.tcp_backlog,
            extra_args=extra_args,
            source=settings.server_source,
        )
    return BenchServer(
        reactor,
        workdir,
        database=settings.mysql_server if setup.needs_mysql else None,
        cpus=settings.server_cpus,
        nofile=settings.server_nofile,
        backlog=settings.tcp_backlog,
        extra_args=extra_args,
        source=settings.server_source,
    )


async def run_scenario(reactor: Any, settings: Settings, name: str, setup: Setup | None = None) -> dict[str, Any]:
    """Run one scenario with its own server (on ``setup``; None for the scenarios that
    need no goim server) and load generators; write its JSON and PNG."""
    function, needs_server = SCENARIOS[name]
    if needs_server and setup is None:
        setup = TARGET if settings.target_http else SQLITE
    stem = result_stem(name, setup if needs_server else None)
    workdir = Path(tempfile.mkdtemp(prefix=f"goim-bench-{stem.replace('@', '-').replace('+', 'p')}-"))
    server = make_server(reactor, settings, name, setup, workdir) if needs_server and setup else Server()
    ctx = Context(reactor, settings, server, workdir, stem)
    result = ctx.result
    result.update(quick=settings.quick, machine=machine_info(), started_at=time.time())
    if needs_server and setup is not None:
        result["setup"] = setup.describe()
        result["pinned"] = {"server": settings.server_cpus, "load": settings.load_cpus}
        if settings.server_source is not None:
            result["server_source"] = source_info(settings.server_source)
    started = time.monotonic()
    try:
        if needs_server:
            await server.start()
            result["server"] = server.describe()
        await function(ctx)
    except Exception as e:
        ctx.errors.append(f"{type(e).__name__}: {e}")
        (workdir / "driver-traceback.txt").write_text(traceback.format_exc())
    finally:
        for pool in ctx.pools:
            await pool.stop()
            ctx.errors.extend(pool.failures())
        try:
            await server.stop()
        except Exception as e:
            ctx.errors.append(f"stopping the server: {e}")
        if isinstance(server, (BenchServer, BenchCluster)):
            server.kill()
    if isinstance(server, BenchCluster) and "server" in result:
        spread: dict[str, int] = {}
        for pool in ctx.pools:
            for port, count in pool.devices_per_port.items():
                node = f"c{server.tcp_ports.index(port) + 1}" if port in server.tcp_ports else str(port)
                spread[node] = spread.get(node, 0) + count
        result["server"]["devices_per_connect_node"] = spread
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["machine"]["load_average_end"] = load_average()
    verification = result.get("verification", {})
    result["verified"] = bool(verification.get("verified")) and not ctx.errors
    settings.output.mkdir(parents=True, exist_ok=True)
    if not result["verified"] or settings.keep_work:
        logs = settings.output / f"{stem}-logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        for path in workdir.rglob("*.log"):  # a cluster's nodes log in their own subdirectories
            shutil.copy(path, logs / "-".join(path.relative_to(workdir).parts))
        if (workdir / "driver-traceback.txt").exists():
            shutil.copy(workdir / "driver-traceback.txt", logs / "driver-traceback.txt")
        result["logs"] = str(logs)
    from goim_bench.plots import PLOTS

    try:
        write_plot(settings.output, stem, lambda figure: PLOTS[name](figure, result))
    except Exception as e:
        result["errors"].append(f"plotting: {type(e).__name__}: {e}")
        result["verified"] = False
    write_result(settings.output, name, result, stem=stem)
    if not settings.keep_work:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def headline(name: str, result: dict[str, Any]) -> str:
    """One line per scenario for the closing summary."""
    m = result.get("metrics", {})
    try:
        if name == "idle":
            return (f"{m.get('connected_after_hold', 0):,} connections, {m.get('kib_per_connection')} KiB each, "
                    f"{m.get('sign_ins_per_s')} sign-ins/s")  # fmt: skip
        if name in ("one-to-one", "one-to-one-ws"):
            p50: dict[str, Any] = next((lv for lv in m.get("levels", []) if lv["fraction"] == 0.5), {})
            return (f"{m['max_sustained']['sends_per_s']:,.0f} sends/s max; at 50%: "
                    f"p99 {p50.get('latency_ms', {}).get('p99')} ms")  # fmt: skip
        if name == "group":
            return "; ".join(
                f"{g['members']}: {g['saturate']['sends_per_s']:,.0f} sends/s, "
                f"{g['saturate']['deliveries_per_s']:,.0f} deliveries/s" for g in m.get("groups", [])
            )
        if name == "sync":
            return "; ".join(f"{r['backlog']:,}: {r['messages_per_s'] or 0:,.0f} msg/s, peak +{(r['peak_growth_kib'] or 0) / 1024:.1f} MiB"
                             for r in m.get("syncs", []))  # fmt: skip
        if name == "storm":
            return f"{m.get('up_to_date', 0):,} devices up to date in {m.get('seconds_until_last_up_to_date')} s"
        if name == "limits":
            return (f"echo {m.get('tlv_echo', {}).get('frames_per_s', 0):,.0f} frames/s, "
                    f"sqlite {m.get('sqlite_rows', {}).get('rows_per_s', 0):,.0f} rows/s, "
                    f"mysql {m.get('mysql_rows', {}).get('rows_per_s', 0):,.0f} rows/s, "
                    f"redis {m.get('redis_pubsub', {}).get('messages_per_s', 0):,.0f} msg/s")  # fmt: skip
        if name == "noisy":
            q, a, t = m["phases"]["quiet"], m["phases"]["attack"], m["targets"]
            return (f"p99 {q['latency_ms'].get('p99')} ms quiet, {a['latency_ms'].get('p99')} ms under attack "
                    f"(x{t['p99_attack_over_quiet']}); failed {t['failed_normal_requests']}; "
                    f"RSS max {m['rss_mib']['quiet_max']} -> {m['rss_mib']['attack_max']} MiB; "
                    f"p99 x quiet by attack: {t['p99_over_quiet']}")  # fmt: skip
        if name == "framing":
            return "; ".join(f"{r['value']}: decode {r['decode_per_s']:,} fr/s, receiver {r['receiver_per_s']:,} fr/s"
                             for r in m.get("frames", []))  # fmt: skip
        if name == "logic":
            return "; ".join(f"{lv['case']} x{lv['in_flight']}: {lv['sends_per_s']:,.0f}/s" for lv in m.get("levels", []))
        if name == "durability":
            return (f"SQLite FULL {m['full_sends_per_s']:,.0f} sends/s, NORMAL {m['normal_sends_per_s']:,.0f} "
                    f"sends/s (x{m['normal_over_full']})")  # fmt: skip
    except (KeyError, TypeError, StopIteration):
        pass
    return ""


async def resolve_setups(settings: Settings, names: list[str]) -> list[str]:
    """Fill ``settings.setups`` when --setup was not given; check what the setups need.

    Without --setup: standalone SQLite (MariaDB with --database, the target with
    --target-http), then 1+1 and 2+2 when a scenario that runs distributed is asked
    for, MariaDB answers and ``redis-server`` is installed.

    Returns:
        Notes for the summary (distributed setups left out, and why).

    Raises:
        SystemExit: a setup given with --setup cannot run here.
    """
    from twisted.internet.threads import deferToThread

    notes: list[str] = []
    wants_server = any(SCENARIOS[name][1] for name in names)
    if settings.target_http:
        settings.setups = [TARGET]
        return notes
    if settings.setups_given:
        if wants_server and any(setup.needs_mysql for setup in settings.setups):
            if not await deferToThread(mysql_reachable, settings.mysql_server):
                raise SystemExit(f"goim-bench: no MySQL/MariaDB answers at {settings.mysql_server} (--database)")
        if wants_server and any(setup.distributed for setup in settings.setups) and not RedisProcess.available():
            raise SystemExit("goim-bench: the distributed setups start a private redis-server: none on PATH")
        return notes
    settings.setups = [MYSQL if settings.database else SQLITE]
    if not any(name in DISTRIBUTED_SCENARIOS for name in names):
        return notes
    if not RedisProcess.available():
        notes.append(f"distributed setups ({', '.join(DEFAULT_DISTRIBUTED)}) left out: no redis-server on PATH")
    elif not await deferToThread(mysql_reachable, settings.mysql_server):
        notes.append(f"distributed setups ({', '.join(DEFAULT_DISTRIBUTED)}) left out: no MariaDB answers at "
                     f"{settings.mysql_server} (--database)")  # fmt: skip
    else:
        settings.setups += [parse_setups(name)[0] for name in DEFAULT_DISTRIBUTED]
    return notes


def plan(settings: Settings, names: list[str]) -> tuple[list[tuple[str, Setup | None]], list[str]]:
    """The runs, in order: each server scenario once per setup it supports (one after
    the other, so that a scenario's setups are measured close together), the others once.

    Returns:
        ``([(scenario, setup or None)], notes on scenarios a given setup does not run)``.
    """
    runs: list[tuple[str, Setup | None]] = []
    notes: list[str] = []
    for name in names:
        if not SCENARIOS[name][1]:
            runs.append((name, None))
            continue
        for setup in settings.setups:
            if setup.distributed and name not in DISTRIBUTED_SCENARIOS:
                if settings.setups_given:
                    notes.append(f"{name} runs on standalone setups only: not on {setup.name}")
                continue
            runs.append((name, setup))
    return runs, notes


async def run(reactor: Any, settings: Settings, names: list[str]) -> int:
    """Run the scenarios one after the other; returns the exit status."""
    notes = await resolve_setups(settings, names)
    runs, skipped = plan(settings, names)
    notes += skipped
    for note in notes:
        print(f"goim-bench: {note}", flush=True)
    if not runs:
        print("goim-bench: nothing to run (see the notes above)", flush=True)
        return 1
    failed = []
    lines = []
    results: dict[str, dict[str, Any]] = {}
    for name, setup in runs:
        stem = result_stem(name, setup if SCENARIOS[name][1] else None)
        result = results[stem] = await run_scenario(reactor, settings, name, setup)
        status = "ok" if result["verified"] else "FAILED"
        if not result["verified"]:
            failed.append(stem)
        lines.append(f"{stem:<16} {status:<7} {result['duration_s']:>7.1f} s  {headline(name, result)}")
        for problem in (result.get("errors", []) + result.get("verification", {}).get("problems", []))[:10]:
            lines.append(f"{'':<16} - {problem.splitlines()[0] if problem else problem}")
    from goim_bench.report import setup_summary, websocket_rows

    for setup in settings.setups:
        tcp, ws = results.get(result_stem("one-to-one", setup)), results.get(result_stem("one-to-one-ws", setup))
        if tcp and ws:
            lines.append(f"WebSocket beside TCP ({setup.label}), same run:")
            lines.extend(f"  {row.strip('|').strip()}" for row in websocket_rows(tcp.get("metrics", {}),
                                                                                   ws.get("metrics", {})))  # fmt: skip
    lines.extend(setup_summary(results))
    lines.extend(f"note: {note}" for note in notes)
    print("\n".join(["", f"goim-bench results in {settings.output}/:"] + lines), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``goim-bench``."""
    args = build_parser().parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"goim-bench: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    settings = settings_from(args)
    from twisted.internet import defer, task

    async def go(reactor: Any) -> None:
        code = await run(reactor, settings, names)
        if code:
            raise SystemExit(code)  # task.react exits with this status

    task.react(lambda reactor: defer.Deferred.fromCoroutine(go(reactor)))


if __name__ == "__main__":
    main()
