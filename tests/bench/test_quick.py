"""``goim-bench --quick`` end to end: a smoke test of the whole benchmark suite.

Runs every scenario with small sizes against a standalone server on SQLite (as CI
does; the distributed setups are tests/bench/test_distributed.py's) and checks that each one verified its deliveries and wrote its JSON and PNG.
Speed is never asserted here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from goim_bench.cli import SCENARIOS

#: the noisy-neighbour and durability scenarios have their own test (tests/bench/test_noisy.py)
NAMES = [name for name in SCENARIOS if name not in ("noisy", "durability")]

ROOT = Path(__file__).resolve().parents[2]

#: --quick is meant to take well under two minutes; this only bounds a hung run
DEADLINE_S = 300


class QuickRunTests(SynchronousTestCase):
    def test_quick_run_verifies_every_scenario(self) -> None:
        """`goim-bench --quick` exits 0 and every scenario wrote a verified JSON result and a PNG."""
        output = Path(self.mktemp()).resolve()  # the run's cwd is the repository root
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT)
        try:
            run = subprocess.run(
                [sys.executable, "-m", "goim_bench.cli", "--quick", "--setup", "sqlite", "--output", str(output),
                 *NAMES],  # fmt: skip
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=DEADLINE_S,
            )
        except subprocess.TimeoutExpired as e:
            self.fail(f"goim-bench --quick did not finish in {DEADLINE_S} s:\n{(e.output or b'')[-4000:]!r}")
        text = run.stdout.decode(errors="replace")
        summary = text[text.rfind("goim-bench results") :]
        self.assertEqual(run.returncode, 0, f"exit status {run.returncode}:\n{summary or text[-4000:]}")
        for name in NAMES:
            result = json.loads((output / f"{name}.json").read_text())
            self.assertIs(result["verified"], True, f"{name}: {result.get('errors')} {result.get('verification')}")
            self.assertEqual(result["scenario"], name)
            self.assertTrue(result["quick"])
            png = (output / f"{name}.png").read_bytes()
            self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n", name)
