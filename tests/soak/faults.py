"""The seeded fault schedule.

One fault at a time, chosen by ``random.Random(seed)`` before the run starts, so the
same seed gives the same sequence of faults (targets, kinds, durations, gaps). Kinds:

* ``kill``: SIGKILL a process (logic node, connect node or Redis), keep it down for
  the fault's duration, start it again on the same ports (and wait until it is up);
* ``pause``: SIGSTOP for the duration, then SIGCONT;
* ``mysql-kill``: KILL every MySQL connection to the scratch database
  (``information_schema.processlist``), as a MySQL restart would drop them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

from tests.soak.cluster import SoakCluster
from tests.soak.history import Fault, History

TARGETS = ["l1", "l2", "c1", "c2", "redis"]


@dataclass(frozen=True)
class Planned:
    gap: float  # seconds after the previous fault ended
    action: str
    target: str
    duration: float

    def describe(self) -> str:
        if self.action == "mysql-kill":
            return "KILL every MySQL connection of the goim database"
        verb = {"kill": "SIGKILL", "pause": "SIGSTOP"}[self.action]
        then = "restart" if self.action == "kill" else "SIGCONT"
        return f"{verb} {self.target}, {then} after {self.duration:.1f} s"


def plan(seed: int, duration: float, targets: list[str] = TARGETS) -> list[Planned]:
    """The faults of a run of ``duration`` seconds (more than fit; the run stops on time).

    Args:
        targets: the processes that may be killed or paused (``mariadb`` too when the
            run has a private mariadbd).
    """
    rng = random.Random(f"faults-{seed}")
    faults: list[Planned] = []
    total = 0.0
    while total < duration:
        gap = round(rng.uniform(2.0, 8.0), 1)
        roll = rng.random()
        if roll < 0.45:
            action, target, length = "kill", rng.choice(targets), round(rng.uniform(0.5, 4.0), 1)
        elif roll < 0.8:
            action, target, length = "pause", rng.choice(targets), round(rng.uniform(1.0, 6.0), 1)
        else:
            action, target, length = "mysql-kill", "mysql", 0.0
        faults.append(Planned(gap, action, target, length))
        total += gap + length + (2.0 if action == "kill" else 0.0)
    return faults


async def run_faults(cluster: SoakCluster, history: History, planned: list[Planned], duration: float,
                     say: Callable[[str], None], sleep: Callable[[float], object]) -> None:
    """Inject the planned faults until ``duration`` seconds have passed."""
    start = time.monotonic()
    for fault in planned:
        await sleep(fault.gap)  # type: ignore[misc]
        at = time.monotonic() - start
        if at >= duration:
            break
        record = Fault(at=round(at, 1), wall=time.time(), action=fault.action, target=fault.target,
                       duration=fault.duration)
        history.faults.append(record)
        say(f"fault {len(history.faults)}: {fault.describe()}")
        if fault.action == "mysql-kill":
            try:
                killed = cluster.kill_database_connections()
                say(f"  killed {killed} MySQL connections")
            except Exception as e:
                say(f"  MySQL KILL failed: {e!r}")
        elif fault.action == "pause":
            cluster.pause(fault.target)
            await sleep(fault.duration)  # type: ignore[misc]
            cluster.resume(fault.target)
        else:
            cluster.kill(fault.target)
            await sleep(fault.duration)  # type: ignore[misc]
            try:
                await cluster.restart(fault.target)
            except Exception as e:
                # heal() starts it again after the faults; the health check judges the end state
                say(f"  restart of {fault.target} failed: {str(e)[:300]}")
                history.notes.append(f"restart of {fault.target} at {at:.1f}s failed: {str(e)[:1000]}")
            else:
                say(f"  {fault.target} is up again")
        record.end_wall = time.time()
