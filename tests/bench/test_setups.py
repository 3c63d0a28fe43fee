"""The benchmark suite's setups (standalone SQLite/MariaDB, L+C distributed): parsing,
the run plan, the cluster's command lines, spreading devices over connect nodes, and
the report's side-by-side and before/after tables. No process is started here;
tests/bench/test_distributed.py runs a distributed setup end to end.
"""

import contextlib
import gc
import io
import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from goim_bench import report
from goim_bench.cli import DISTRIBUTED_SCENARIOS, build_parser, plan, result_stem, settings_from
from goim_bench.cluster import BenchCluster
from goim_bench.common import DEFAULT_MYSQL, Settings
from goim_bench.driver import child_env, port_for
from goim_bench.loadgen.generator import LoadGenerator
from goim_bench.results import write_result
from goim_bench.server import BENCH_LIMIT_ARGS, BenchServer
from goim_bench.topology import MYSQL, SQLITE, Setup, parse_setup, parse_setups, setup_of


class SetupParsingTests(SynchronousTestCase):
    def test_names(self) -> None:
        """sqlite, mysql (or mariadb) and L+C are setups; each knows its store, file suffix and label."""
        self.assertEqual(parse_setup("sqlite"), SQLITE)
        self.assertEqual(parse_setup("mariadb"), MYSQL)
        two = parse_setup(" 2+2 ")
        self.assertEqual((two.name, two.logic_nodes, two.connect_nodes), ("2+2", 2, 2))
        self.assertTrue(two.distributed)
        self.assertEqual(two.store, "mysql")
        self.assertEqual(two.suffix, "@2+2")
        self.assertEqual(two.label, "2 logic + 2 connect (MariaDB, Redis)")
        self.assertEqual(SQLITE.suffix, "")
        self.assertEqual(MYSQL.suffix, "@mysql")
        self.assertFalse(MYSQL.distributed)
        self.assertTrue(MYSQL.needs_mysql)
        self.assertFalse(SQLITE.needs_mysql)

    def test_refuses_bad_names(self) -> None:
        """Unknown names, zero or too many nodes are refused with what is accepted."""
        for bad in ("postgres", "0+1", "1+0", "9+1", "1+", "+1", "1-1", ""):
            with self.assertRaises(ValueError) as caught:
                parse_setups(bad)
            self.assertTrue("L+C" in str(caught.exception) or "at least one" in str(caught.exception), bad)

    def test_list_keeps_order_and_drops_repeats(self) -> None:
        self.assertEqual([s.name for s in parse_setups("2+2,sqlite,,2+2,1+1")], ["2+2", "sqlite", "1+1"])

    def test_setup_of_old_results(self) -> None:
        """Result files from before setups existed are placed by their database."""
        self.assertEqual(setup_of({"setup": {"name": "1+1"}}), "1+1")
        self.assertEqual(setup_of({"server": {"database": "mysql"}}), "mysql")
        self.assertEqual(setup_of({"server": {"database": "sqlite"}}), "sqlite")
        self.assertEqual(setup_of({}), "sqlite")


class CommandLineTests(SynchronousTestCase):
    def settings(self, *argv: str) -> Settings:
        return settings_from(build_parser().parse_args(list(argv)))

    def test_setup_option(self) -> None:
        """--setup takes comma-separated lists and repeats; --topology is the same option."""
        settings = self.settings("--setup", "sqlite,1+1", "--topology", "2+2", "one-to-one")
        self.assertEqual([s.name for s in settings.setups], ["sqlite", "1+1", "2+2"])
        self.assertTrue(settings.setups_given)
        self.assertEqual(settings.mysql_server, DEFAULT_MYSQL)
        settings = self.settings("--database", "mysql://root@db:3307/", "group")
        self.assertEqual(settings.setups, [])  # chosen at run time
        self.assertFalse(settings.setups_given)
        self.assertEqual(settings.mysql_server, "mysql://root@db:3307")

    def test_server_source(self) -> None:
        """--server-source names a goim checkout (resolved); a directory without a goim
        package, or a running target, is refused."""
        checkout = Path(self.mktemp())
        (checkout / "goim").mkdir(parents=True)
        (checkout / "goim" / "__init__.py").write_text("")
        self.assertEqual(self.settings("--server-source", str(checkout), "one-to-one").server_source, checkout.resolve())
        self.assertIsNone(self.settings("one-to-one").server_source)
        self.assertRaises(SystemExit, self.settings, "--server-source", str(checkout.parent), "one-to-one")
        self.assertRaises(SystemExit, self.settings, "--server-source", str(checkout), "--target-http", "http://x",
                          "--target-tcp", "x:1")  # fmt: skip

    def test_bad_setup_is_an_error(self) -> None:
        self.assertRaises(SystemExit, self.settings, "--setup", "3-3")
        self.assertRaises(SystemExit, self.settings, "--setup", "1+1", "--target-http", "http://x",
                          "--target-tcp", "x:1")  # fmt: skip

    def test_plan(self) -> None:
        """Server scenarios run once per setup, one after the other; the others once;
        a scenario that needs a standalone server skips the distributed setups, with a
        note when the setups were asked for."""
        settings = Settings(setups=parse_setups("sqlite,1+1"), setups_given=True)
        runs, notes = plan(settings, ["limits", "one-to-one", "noisy", "group"])
        self.assertEqual(
            [(name, setup.name if setup else None) for name, setup in runs],
            [("limits", None), ("one-to-one", "sqlite"), ("one-to-one", "1+1"), ("noisy", "sqlite"),
             ("group", "sqlite"), ("group", "1+1")],
        )  # fmt: skip
        self.assertEqual(notes, ["noisy runs on standalone setups only: not on 1+1"])
        settings.setups_given = False
        self.assertEqual(plan(settings, ["noisy"])[1], [])
        self.assertIn("one-to-one", DISTRIBUTED_SCENARIOS)
        self.assertIn("group", DISTRIBUTED_SCENARIOS)

    def test_result_stems(self) -> None:
        self.assertEqual(result_stem("one-to-one", SQLITE), "one-to-one")
        self.assertEqual(result_stem("one-to-one", MYSQL), "one-to-one@mysql")
        self.assertEqual(result_stem("group", parse_setup("2+2")), "group@2+2")
        self.assertEqual(result_stem("limits", None), "limits")


class ClusterTests(SynchronousTestCase):
    def cluster(self, **kwargs: Any) -> BenchCluster:
        workdir = Path(self.mktemp())
        workdir.mkdir()
        defaults: dict[str, Any] = dict(mysql="mysql://root@127.0.0.1:3306/", logic_nodes=2, connect_nodes=2)
        return BenchCluster(Clock(), workdir, **{**defaults, **kwargs})

    def test_command_lines(self) -> None:
        """Logic nodes get the database, Redis, a shared prefix and secret, their ids, the
        bench's lifted throttles and the extra arguments; connect nodes get every logic
        node's PB port; every process is pinned; prlimit applies to connect nodes only."""
        cluster = self.cluster(cpus="0", nofile=512, extra_args=("--send-rate", "1e9"))
        cluster.configure_logic("mysql://root@127.0.0.1:3306/scratch", "redis://127.0.0.1:7000/0")
        cluster.configure_connect([5001, 5002], "redis://127.0.0.1:7000/0")
        shared = ["--redis", "redis://127.0.0.1:7000/0", "--redis-prefix", cluster.prefix,
                  "--secret-file", str(cluster.secret_file)]  # fmt: skip
        for i, node in enumerate(cluster.logic):
            self.assertEqual(node.args, ["--database", "mysql://root@127.0.0.1:3306/scratch", *shared,
                                         "--node-id", f"l{i + 1}", *BENCH_LIMIT_ARGS, "--send-rate", "1e9"])  # fmt: skip
            argv = node.argv()
            self.assertEqual(argv[:3], ["taskset", "-c", "0"])
            self.assertIn("goim-logic", argv)
            self.assertNotIn("prlimit", argv)
        for i, node in enumerate(cluster.connect):
            self.assertEqual(node.args, ["--logic", "127.0.0.1:5001,127.0.0.1:5002", *shared, "--node-id", f"c{i + 1}"])
            argv = node.argv()
            self.assertEqual(argv[:5], ["prlimit", "--nofile=512:512", "--", "taskset", "-c"])
            self.assertIn("goim-connect", argv)
            self.assertIn("tcp:0:interface=127.0.0.1:backlog=1024", argv)
        # each node has its own directory (its log and ports file)
        self.assertEqual(len({node.workdir for node in cluster.nodes}), 4)
        self.assertEqual(cluster.mysql, "mysql://root@127.0.0.1:3306")

    def test_server_source_goes_first_on_every_node_s_path(self) -> None:
        """With a source checkout, every node imports goim from it first; without, the
        nodes' PYTHONPATH is the driver's own."""
        self.patch(os, "environ", {**os.environ, "PYTHONPATH": "/already/there"})
        source = Path("/src/goim-before")
        for node in self.cluster(source=source).nodes:
            self.assertEqual(node.env["PYTHONPATH"].split(os.pathsep), [str(source), "/already/there"])
        for node in self.cluster().nodes:
            self.assertEqual(node.env["PYTHONPATH"], "/already/there")
        server = BenchServer(Clock(), Path(self.mktemp()), source=source)
        self.assertEqual(server.process.env["PYTHONPATH"].split(os.pathsep), [str(source), "/already/there"])
        self.assertEqual(child_env()["PYTHONPATH"], "/already/there")  # the load generators'

    def test_unpinned_and_bad_sizes(self) -> None:
        cluster = self.cluster(logic_nodes=1, connect_nodes=1)
        self.assertNotIn("taskset", cluster.logic[0].argv())
        self.assertRaises(ValueError, self.cluster, logic_nodes=0)

    def test_describe_before_start(self) -> None:
        cluster = self.cluster()
        self.assertEqual(cluster.tcp_ports, [])
        self.assertEqual(cluster.status(), {})
        self.assertEqual(cluster.describe()["pids"], {})


class SpreadTests(SynchronousTestCase):
    def test_devices_take_the_ports_in_turn(self) -> None:
        """A load generator's devices take the connect nodes' ports in turn: in a
        one-to-one job (rows a0, b0, a1, b1) a sender and its peer land on different nodes."""
        self.assertEqual([port_for(i, [7, 8]) for i in range(5)], [7, 8, 7, 8, 7])
        self.assertEqual([port_for(i, [7]) for i in range(3)], [7, 7, 7])
        rows = [[i + 1, i + 1, "t", 0, 0] for i in range(4)]
        gen = self.generator({"host": "127.0.0.1", "port": 7, "ports": [7, 8], "devices": rows})
        self.assertEqual([gen.port_for(d) for d in gen.devices], [7, 8, 7, 8])
        single = self.generator({"host": "127.0.0.1", "port": 9, "devices": rows})
        self.assertEqual({single.port_for(d) for d in single.devices}, {9})

    def generator(self, job: dict[str, Any]) -> LoadGenerator:
        gen = LoadGenerator(job, lambda _: None, Clock())
        # it registers a garbage-collection callback (pause timing) for its process's life
        self.addCleanup(lambda: gc.callbacks.remove(gen._on_gc) if gen._on_gc in gc.callbacks else None)
        return gen


def one_to_one_metrics(closed: float, sustained: float, p99: float) -> dict[str, Any]:
    levels = [{"fraction": f, "offered_per_s": sustained * f, "acked_per_s": sustained * f,
               "latency_ms": {"p50": p99 / 4, "p99": p99 * f * 2}} for f in (0.25, 0.5, 0.75)]  # fmt: skip
    return {"closed_loop": {"sends_per_s": closed}, "max_sustained": {"sends_per_s": sustained}, "levels": levels}


def group_metrics(deliveries: float) -> dict[str, Any]:
    phase = {"sends_per_s": deliveries / 500, "deliveries_per_s": deliveries, "last_member_latency_ms": {"p99": 150.0}}
    return {"groups": [{"members": 500, "saturate": phase, "paced_50": phase}]}


LIMITS = {
    "tlv_echo": {"frames_per_s": 300_000.0},
    "sqlite_rows": {"rows_per_s": 100_000.0},
    "mysql_rows": {"rows_per_s": 40_000.0},
    "redis_pubsub": {"messages_per_s": 20_000.0},
}


def write_run(directory: Path, scale: float = 1.0) -> None:
    """A results directory: limits, and one-to-one and group on sqlite, mysql and 2+2."""
    write_result(directory, "limits", {"verified": True, "metrics": LIMITS, "machine": {"load_average": [0.1]}})
    for setup, factor in (("sqlite", 1.0), ("mysql", 0.5), ("2+2", 0.3)):
        described = parse_setup(setup).describe()
        common = {"verified": True, "setup": described, "server": {"database": described["store"]},
                  "pinned": {"server": "0", "load": "1"}, "machine": {"load_average": [0.2]}}  # fmt: skip
        stem = result_stem("one-to-one", parse_setup(setup))
        write_result(directory, "one-to-one", {**common, "metrics": one_to_one_metrics(
            10_000 * factor * scale, 5_000 * factor * scale, 20 / factor)}, stem=stem)  # fmt: skip
        write_result(directory, "group", {**common, "metrics": group_metrics(50_000 * factor * scale)},
                     stem=result_stem("group", parse_setup(setup)))  # fmt: skip


class ReportTests(SynchronousTestCase):
    def test_load_groups_by_setup(self) -> None:
        directory = Path(self.mktemp())
        write_run(directory)
        # a file from before setups existed, run with --database: standalone MariaDB
        (directory / "sync.json").write_text(json.dumps({"scenario": "sync", "server": {"database": "mysql"}}))
        runs = report._load(directory)
        self.assertEqual(sorted(runs), ["", "2+2", "mysql", "sqlite"])
        self.assertEqual(sorted(runs[""]), ["limits"])
        self.assertEqual(sorted(runs["mysql"]), ["group", "one-to-one", "sync"])

    def test_load_refuses_an_empty_or_missing_directory(self) -> None:
        directory = Path(self.mktemp())
        self.assertRaises(SystemExit, report._load, directory)
        directory.mkdir()
        self.assertRaises(SystemExit, report._load, directory)

    def test_side_by_side(self) -> None:
        """One column per setup, each beside its store's raw limit (and Redis for the
        distributed one), the pinning, the distributed figures as ratios to the
        standalone on MariaDB and the stored copies as a share of the raw rows."""
        directory = Path(self.mktemp())
        write_run(directory)
        text = report.report(report._load(directory))
        self.assertIn("| measure | standalone SQLite | standalone MariaDB | 2 logic + 2 connect (MariaDB, Redis) |", text)
        self.assertIn("| raw limit of the store, rows/s (this run's `limits`) | 100,000 | 40,000 | 40,000 |", text)
        self.assertIn("| raw limit of Redis pub/sub, messages/s (this run's `limits`) |  |  | 20,000 |", text)
        self.assertIn("| pinning (`--cpus`) | server on CPU 0 | server on CPU 0 | server on CPU 0 |", text)
        self.assertIn("| one-to-one: max sustained sends/s | 5,000 | 2,500 | 1,500 |", text)
        self.assertIn("| one-to-one: max sustained sends/s ÷ standalone MariaDB | 2.00 | 1.00 | 0.60 |", text)
        self.assertIn("| one-to-one: stored copies/s at max sustained (2 a send) ÷ store's raw rows/s | 10% | 12% | 8% |", text)
        self.assertIn("| group of 500: saturated deliveries/s ÷ store's raw rows/s | 50% | 62% | 38% |", text)
        # the standalone table with its targets comes first
        self.assertTrue(text.startswith("| scenario | measure | result | target |"))
        self.assertIn("Verification: limits: verified, one-to-one: verified, group: verified, "
                      "one-to-one@mysql: verified", text)  # fmt: skip

    def test_compare(self) -> None:
        """Before / after: every figure of both runs with after ÷ before and which way is better."""
        before, after = Path(self.mktemp()), Path(self.mktemp())
        write_run(before)
        write_run(after, scale=1.5)
        text = report.compare(report._load(before), report._load(after))
        self.assertIn("| 2 logic + 2 connect (MariaDB, Redis) | one-to-one: max sustained sends/s | 1,500 | 2,250 | 1.50 | higher |", text)
        self.assertIn("| standalone SQLite | group of 500: saturated deliveries/s | 50,000 | 75,000 | 1.50 | higher |", text)
        self.assertIn("| - | raw limit: SQLite rows/s (100-row executemany) | 100,000 | 100,000 | 1.00 | higher |", text)
        self.assertIn("| standalone SQLite | one-to-one: send→push p99 ms at 50 % | 20.0 | 20.0 | 1.00 | lower |", text)

    def test_compare_names_what_only_one_run_has(self) -> None:
        before, after = Path(self.mktemp()), Path(self.mktemp())
        write_run(before)
        write_result(after, "limits", {"verified": True, "metrics": LIMITS})
        text = report.compare(report._load(before), report._load(after))
        self.assertIn("Only before: on sqlite: one-to-one, group; on mysql: one-to-one, group; on 2+2: one-to-one, group.", text)
        self.assertIn("Pinning: before server on CPU 0; after unpinned (they differ", text)

    def test_main_compare(self) -> None:
        before, after = Path(self.mktemp()), Path(self.mktemp())
        write_run(before)
        write_run(after, scale=2.0)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            report.main(["--compare", str(before), str(after)])
        self.assertIn("| after ÷ before |", out.getvalue())
        self.assertIn("| 2.00 |", out.getvalue())

    def test_summary_of_a_run(self) -> None:
        """goim-bench's closing summary shows the setups side by side (stems as keys)."""
        results = {
            "one-to-one": {"setup": SQLITE.describe(), "server": {}, "metrics": one_to_one_metrics(100, 50, 10)},
            "one-to-one@1+1": {"setup": parse_setup("1+1").describe(), "server": {},
                               "metrics": one_to_one_metrics(60, 30, 20)},  # fmt: skip
        }
        lines = report.setup_summary(results)
        self.assertEqual(lines[0], "Setups side by side, same run:")
        self.assertIn("  | one-to-one: max sustained sends/s | 50 | 30 |", lines)
        self.assertEqual(report.setup_summary({"one-to-one": results["one-to-one"]}), [])

    def test_setup_label(self) -> None:
        self.assertEqual(report._label("1+1"), Setup("1+1", 1, 1).label)
        self.assertEqual(report._label("weird"), "weird")
