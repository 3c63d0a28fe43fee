"""Pure parts of the benchmark suite: statistics, verification arithmetic, result files."""

import json
import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from goim_bench.cli import parse_cpus, parse_size
from goim_bench.common import CoreSampler, check_reports, expected_by_user, rate_series, steady_rate, worst_series
from goim_bench.driver import source_address, split
from goim_bench.loadgen import Device, parse_stamp, stamp_content
from goim_bench.loadgen.probe import LagProbe
from goim_bench.plots import PLOTS
from goim_bench.results import machine_info, read_result, write_plot, write_result
from goim_bench.server import busy_seconds, cpu_list
from goim_bench.stats import Reservoir, digest, percentile, summarize


class PercentileTests(SynchronousTestCase):
    def test_nearest_rank(self) -> None:
        """Percentiles are nearest-rank: the smallest value with at least p % at or below it."""
        values = list(range(1, 101))
        self.assertEqual(percentile(values, 50), 50)
        self.assertEqual(percentile(values, 90), 90)
        self.assertEqual(percentile(values, 99), 99)
        self.assertEqual(percentile(values, 100), 100)
        self.assertEqual(percentile([7.0], 1), 7.0)
        self.assertEqual(percentile([1, 2, 3, 4], 50), 2)
        self.assertEqual(percentile([1, 2, 3, 4], 51), 3)

    def test_refuses_bad_input(self) -> None:
        """No values, or p outside (0, 100], is an error rather than a made-up number."""
        self.assertRaises(ValueError, percentile, [], 50)
        self.assertRaises(ValueError, percentile, [1], 0)
        self.assertRaises(ValueError, percentile, [1], 101)

    def test_summary(self) -> None:
        """A summary carries count, mean, min, p50, p90, p99 and max; empty input only a count."""
        summary = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
        self.assertEqual(summary, {"count": 5, "mean": 3.0, "min": 1.0, "p50": 3.0, "p90": 5.0, "p99": 5.0, "max": 5.0})
        self.assertEqual(summarize([]), {"count": 0})

    def test_reservoir_bounds_and_counts(self) -> None:
        """A reservoir keeps at most its capacity, counts everything offered, keeps only offered values."""
        reservoir = Reservoir(100, seed=1)
        for i in range(10_000):
            reservoir.add(float(i))
        self.assertEqual(len(reservoir.values), 100)
        self.assertEqual(reservoir.seen, 10_000)
        self.assertTrue(all(0 <= v < 10_000 for v in reservoir.values))
        # a uniform sample of 0..9999 has its median near the middle
        self.assertTrue(2_000 < percentile(sorted(reservoir.values), 50) < 8_000)


class VerificationTests(SynchronousTestCase):
    def test_digest_is_a_set_fingerprint(self) -> None:
        """Order and repetition do not change a digest; a different set does."""
        self.assertEqual(digest([3, 1, 2]), digest([1, 2, 3, 3]))
        self.assertNotEqual(digest([1, 2, 3]), digest([1, 2, 4]))

    def test_expected_by_user(self) -> None:
        """One-to-one sends belong to both users, group sends to every member; a repeated id is counted."""
        acked = [[10, 1, 1, 2, 100], [11, 2, 1, 1, 200], [12, 1, 2, 7, 100], [12, 1, 2, 7, 100]]
        expected, repeated = expected_by_user(acked, {7: [1, 2, 3]})
        self.assertEqual(expected, {1: {10, 11, 12}, 2: {10, 11, 12}, 3: {12}})
        self.assertEqual(repeated, 1)

    def test_check_reports(self) -> None:
        """A device passes only with exactly the expected ids at seqs 1..n and no conflicting copy."""
        expected = {1: {10, 11}, 2: {10}}
        good = [100, 1, 2, 2, digest([10, 11]), True, 0]
        missing = [101, 1, 1, 1, digest([10]), True, 0]
        duplicate = [102, 2, 1, 1, digest([10]), False, 0]
        conflict = [103, 2, 1, 1, digest([10]), True, 1]
        extra = [104, 3, 0, 1, digest([99]), True, 0]
        outcome = check_reports([good], expected)
        self.assertTrue(outcome["verified"])
        self.assertEqual(outcome["push_coverage"], 1.0)
        outcome = check_reports([good, missing, duplicate, conflict, extra], expected)
        self.assertFalse(outcome["verified"])
        self.assertEqual(outcome["ok"], 1)
        self.assertEqual(len(outcome["problems"]), 4)
        self.assertIn("synced 1 messages, 2 acknowledged", outcome["problems"][0])

    def test_steady_rate_trims_the_edges(self) -> None:
        """The steady rate leaves out the ramp-up and the tail of a phase."""
        # 10 s at 100 events per quarter second, with a slow first and last second
        buckets = {k: 100 for k in range(4000, 4040)}
        for k in (4000, 4001, 4002, 4003, 4036, 4037, 4038, 4039):
            buckets[k] = 1
        self.assertEqual(steady_rate(buckets, 1000.0, 1010.0), 400.0)
        self.assertEqual(steady_rate({}, 5.0, 5.0), 0.0)
        times, rates = rate_series({4: 1, 6: 2}, 1.0)
        self.assertEqual(times, [0.0, 0.25, 0.5])
        self.assertEqual(rates, [4.0, 0.0, 8.0])

    def test_worst_series_takes_the_longest_of_every_process(self) -> None:
        """The longest latency per quarter second of send time, over load generators (JSON keys are strings)."""
        series = worst_series([{"4": 3.0, "6": 10.04}, {4: 7.5}, {}], 1.0)
        self.assertEqual(series, [[0.0, 7.5], [0.5, 10.0]])
        self.assertEqual(worst_series([], 0.0), [])


class FakeServer:
    """A server whose CPU time the test sets."""

    cpu = 0.0

    def cpu_seconds(self) -> float:
        return self.cpu


def write_stat(path: Path, cpu0: tuple[int, int, int], cpu1: tuple[int, int, int]) -> None:
    """A /proc/stat with two CPUs' user, nice, system (and idle, irq, softirq) ticks."""
    rows = [("cpu", tuple(a + b for a, b in zip(cpu0, cpu1))), ("cpu0", cpu0), ("cpu1", cpu1)]
    text = "".join(f"{name} {u} {n} {s} 5000 0 777 888 0 0 0\n" for name, (u, n, s) in rows)
    path.write_text(text + "intr 12345\nctxt 999\n")


class CoreSamplerTests(SynchronousTestCase):
    def test_cpu_list(self) -> None:
        """CPU lists in taskset's form."""
        self.assertEqual(cpu_list("0"), {0})
        self.assertEqual(cpu_list("0-2,5"), {0, 1, 2, 5})

    def test_busy_seconds_counts_only_the_given_cpus(self) -> None:
        """user + nice + system ticks of the named CPUs, not interrupts nor other CPUs."""
        stat = Path(self.mktemp())
        write_stat(stat, (100, 10, 40), (1000, 0, 0))
        hz = os.sysconf("SC_CLK_TCK")
        self.assertAlmostEqual(busy_seconds({0}, str(stat)), 150 / hz)
        self.assertAlmostEqual(busy_seconds({0, 1}, str(stat)), 1150 / hz)
        self.assertIsNone(busy_seconds({0}, str(stat) + ".missing"))

    def test_sampler_reports_other_processes_time_per_quarter(self) -> None:
        """A quarter's figure is the cores' busy time less the server's own, never below 0."""
        hz = os.sysconf("SC_CLK_TCK")
        stat = Path(self.mktemp())
        clock = Clock()
        clock.advance(1000.0)
        server = FakeServer()
        write_stat(stat, (0, 0, 0), (0, 0, 0))
        sampler = CoreSampler(clock, server, "0", str(stat)).begin()  # type: ignore[arg-type]
        # first quarter: the core busy 20 ticks, all of them the server's
        write_stat(stat, (15, 0, 5), (50, 0, 0))
        server.cpu = 20 / hz
        clock.advance(0.25)
        # second quarter: the core busy 10 more ticks, the server's 2 of them
        write_stat(stat, (23, 0, 7), (99, 0, 0))
        server.cpu = 22 / hz
        clock.advance(0.25)
        # third quarter: the server's count moved a tick more than the core's (the
        # two are sampled a moment apart): nothing, not less than nothing
        write_stat(stat, (24, 0, 7), (99, 0, 0))
        server.cpu = 24 / hz
        clock.advance(0.25)
        samples = sampler.end(origin=1000.0)
        self.assertEqual([t for t, _ in samples], [0.0, 0.25, 0.5])
        self.assertEqual(samples[0][1], 0.0)
        self.assertAlmostEqual(samples[1][1], round(8 / hz * 1000.0, 1))
        self.assertEqual(samples[2][1], 0.0)
        self.assertAlmostEqual(sampler.total, 8 / hz)
        self.assertEqual(clock.getDelayedCalls(), [])


class LoadgenPureTests(SynchronousTestCase):
    def test_stamp_round_trip(self) -> None:
        """A stamped content gives back its send time and phase; other content gives None."""
        content = stamp_content(1700000000.123456, "p50", 64)
        self.assertEqual(len(content), 64)
        self.assertEqual(parse_stamp(content), (1700000000.123456, "p50"))
        self.assertIsNone(parse_stamp("hello"))
        self.assertIsNone(parse_stamp("not a stamp"))

    def test_device_holds_contiguous_top(self) -> None:
        """A device tracks its highest contiguous seq and reports a conflicting copy."""
        device = Device(0, 1, 2, "t", 0, 0)
        self.assertTrue(device.hold(2, 20))
        self.assertEqual(device.top, 0)
        self.assertTrue(device.hold(1, 10))
        self.assertEqual(device.top, 2)
        self.assertTrue(device.hold(2, 20))
        self.assertFalse(device.hold(2, 21))

    def test_client_frame_budget(self) -> None:
        """The client-side budget stays under the server's rate limit."""
        device = Device(0, 1, 2, "t", 0, 0)
        taken = sum(device.take_token(100.0) for _ in range(5000))
        self.assertLessEqual(taken, 1500)
        self.assertTrue(device.take_token(101.0))

    def test_lag_probe_records_how_late_its_timer_ran(self) -> None:
        """The probe keeps the longest delay of its timer per quarter second of due time,
        in ms, and forgets what it handed out."""
        clock = Clock()
        clock.advance(100.0)
        probe = LagProbe(clock, interval=0.01)
        probe.start()
        for _ in range(3):
            clock.advance(0.01)  # on time
        clock.advance(0.2)  # the process was busy: the timer due at 100.04 ran at 100.23
        self.assertEqual(sorted(probe.late_ms), [400])
        self.assertAlmostEqual(probe.late_ms[400], 190.0, places=6)
        taken = probe.take()
        self.assertEqual(list(taken), [400])
        self.assertEqual(probe.late_ms, {})
        clock.advance(0.01)
        self.assertEqual(list(probe.late_ms), [400])
        self.assertAlmostEqual(probe.late_ms[400], 0.0, places=6)
        probe.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_split_and_sources(self) -> None:
        """Work is dealt round-robin; each load generator has its own loopback source address."""
        self.assertEqual(split([1, 2, 3, 4, 5], 2), [[1, 3, 5], [2, 4]])
        self.assertEqual(source_address(0), "127.0.0.2")
        self.assertEqual(source_address(3), "127.0.0.5")
        self.assertRaises(ValueError, source_address, 300)


class CommandLineTests(SynchronousTestCase):
    def test_sizes_and_cpus(self) -> None:
        """--size takes numbers or lists; --cpus takes SERVER:LOAD CPU lists."""
        self.assertEqual(parse_size("pairs=10"), ("pairs", 10))
        self.assertEqual(parse_size("group_sizes=100,500"), ("group_sizes", [100, 500]))
        self.assertEqual(parse_size("sync_backlogs=300"), ("sync_backlogs", [300]))
        self.assertEqual(parse_size("fixed_rates=2000"), ("fixed_rates", [2000]))
        self.assertEqual(parse_size("idle_hold=2.5"), ("idle_hold", 2.5))
        self.assertEqual(parse_cpus("0:1"), ("0", "1"))
        self.assertEqual(parse_cpus("0-1:2,3"), ("0-1", "2,3"))
        import argparse

        for bad in ("nope=1", "pairs", "pairs=x"):
            self.assertRaises(argparse.ArgumentTypeError, parse_size, bad)
        for bad in ("0", "a:b", ":1"):
            self.assertRaises(argparse.ArgumentTypeError, parse_cpus, bad)


class ResultFileTests(SynchronousTestCase):
    def test_write_and_read(self) -> None:
        """A result file is JSON with the scenario name, a version and the verified flag."""
        output = Path(self.mktemp())
        path = write_result(output, "sync", {"verified": True, "metrics": {"x": (1, 2)}, "keys": {3: {4}}})
        self.assertEqual(path, output / "sync.json")
        data = read_result(path)
        self.assertEqual(data["scenario"], "sync")
        self.assertEqual(data["metrics"], {"x": [1, 2]})
        self.assertEqual(data["keys"], {"3": [4]})
        self.assertIs(data["verified"], True)
        self.assertEqual(json.loads(path.read_text())["version"], 1)
        self.assertEqual(list(output.iterdir()), [path])

    def test_result_must_say_verified(self) -> None:
        """A result without a verified flag is refused."""
        self.assertRaises(ValueError, write_result, Path(self.mktemp()), "x", {})

    def test_every_plot_draws_from_an_empty_result(self) -> None:
        """Each scenario's plot draws (empty panels) even from a failed run's result."""
        output = Path(self.mktemp())
        for name, draw in PLOTS.items():
            path = write_plot(output, name, lambda figure, draw=draw: draw(figure, {"verified": False}))
            self.assertEqual(path.read_bytes()[:4], b"\x89PNG")

    def test_machine_info(self) -> None:
        """The machine description names cores, memory, CPU and versions."""
        info = machine_info()
        for key in ("nproc", "memory_kib", "cpu_model", "python", "twisted", "load_average"):
            self.assertIn(key, info)


class WebSocketReportTests(SynchronousTestCase):
    def test_websocket_rows_are_ratios_to_tcp(self) -> None:
        """one-to-one over WebSocket is reported beside TCP of the same run, as ratios."""
        from goim_bench.report import websocket_rows

        def metrics(closed: float, sustained: float, p99: float) -> dict[str, object]:
            return {
                "closed_loop": {"sends_per_s": closed},
                "max_sustained": {"sends_per_s": sustained},
                "levels": [{"fraction": 0.25, "latency_ms": {"p99": 1.0}}, {"fraction": 0.5, "latency_ms": {"p99": p99}}],
            }

        rows = websocket_rows(metrics(1000, 800, 10.0), metrics(500, 600, 15.0))
        self.assertEqual(len(rows), 3)
        self.assertIn("0.50 × TCP", rows[0])
        self.assertIn("0.75 × TCP", rows[1])
        self.assertIn("1.50 × TCP", rows[2])
        self.assertTrue(websocket_rows({}, metrics(1, 1, 1))[0].endswith("|  |"))
