"""``goim-bench --quick noisy durability`` end to end, and the noisy scenario's helpers.

The run checks that both scenarios complete and report what docs/benchmarks.md
quotes; the figures themselves (latency ratios, RSS) are measurements, never
asserted here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from goim_bench.noisy import _rss, http_request, status_of

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 300


class HelperTests(SynchronousTestCase):
    def test_http_request_and_status(self) -> None:
        request = http_request("POST", "/user/signin", {"number": "n", "password": "p"}, {"device_id": "1", "token": "t"})
        head, _, body = request.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"POST /user/signin HTTP/1.1\r\n"))
        self.assertIn(f"Content-Length: {len(body)}".encode(), head)
        self.assertEqual(json.loads(body), {"number": "n", "password": "p"})
        self.assertEqual(status_of(b"HTTP/1.1 429 Too Many Requests\r\n\r\n"), 429)
        self.assertEqual(status_of(b""), 0)

    def test_rss_window(self) -> None:
        samples = [[0.0, 1024], [1.0, 2048], [2.0, 4096], [3.0, 1024]]
        self.assertEqual(_rss(samples, 0.5, 2.5), {"start_mib": 2.0, "end_mib": 4.0, "max_mib": 4.0})
        self.assertEqual(_rss(samples, 5, 6), {})


class QuickNoisyTests(SynchronousTestCase):
    def test_quick_noisy_and_durability(self) -> None:
        """Both scenarios finish, verify the normal users' messages and report every phase and attacker."""
        output = Path(self.mktemp()).resolve()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT)
        try:
            run = subprocess.run(
                [sys.executable, "-m", "goim_bench.cli", "--quick", "--output", str(output), "noisy", "durability"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=DEADLINE_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired as e:
            self.fail(f"did not finish in {DEADLINE_S} s:\n{(e.output or b'')[-4000:]!r}")
        text = run.stdout.decode(errors="replace")
        self.assertEqual(run.returncode, 0, text[-4000:])
        noisy = json.loads((output / "noisy.json").read_text())
        self.assertIs(noisy["verified"], True, noisy.get("errors"))
        metrics = noisy["metrics"]
        self.assertEqual(list(metrics["phases"]), ["quiet", "flood", "guess", "slow", "attack"])
        for phase in metrics["phases"].values():
            self.assertGreater(phase["acked"], 0)
            self.assertIn("p99", phase["latency_ms"])
            self.assertGreater(phase["http"]["requests"], 0)
        flood = metrics["attackers"]["flood"]["flood"]
        self.assertGreater(flood["refused_code_5"], 0, "the flooder was refused at the door")
        self.assertGreater(metrics["attackers"]["guess"]["password_guesses"]["sent"], 0)
        self.assertIn("closed_by_server", metrics["attackers"]["never_reader"])
        durability = json.loads((output / "durability.json").read_text())
        self.assertIs(durability["verified"], True, durability.get("errors"))
        self.assertGreater(durability["metrics"]["full_sends_per_s"], 0)
        self.assertGreater(durability["metrics"]["normal_sends_per_s"], 0)
