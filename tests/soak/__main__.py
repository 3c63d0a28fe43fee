"""``python -m tests.soak --duration 30m --seed 7``: run the seeded fault soak.

Exit status 0 when the verdict is a pass, 1 when a property was violated, 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from tests.soak.runner import Options, run_soak


def duration(text: str) -> float:
    """``90``, ``90s``, ``3m``, ``1h`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 3m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="scripts/soak",
        description="Seeded fault soak of distributed goim: 2 logic + 2 connect nodes, a scratch MariaDB "
                    "database, a private redis-server, clients under churn, a seeded fault schedule, "
                    "and a model check of the whole history.")
    parser.add_argument("--duration", type=duration, default=90.0, help="traffic and faults (90s, 3m, 30m; default 90s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule and the workload (default 1)")
    parser.add_argument("--users", type=int, default=8, help="users (default 8)")
    parser.add_argument("--devices-per-user", type=int, default=2, help="devices per user (default 2)")
    parser.add_argument("--send-rate", type=float, default=12.0, help="new sends per second in all (default 12)")
    parser.add_argument("--churn-every", type=float, default=10.0,
                        help="mean seconds between churn actions of one device (default 10)")
    parser.add_argument("--mysql", default=os.environ.get("GOIM_TEST_MYSQL") or "mysql://root@127.0.0.1:3306",
                        help="MySQL/MariaDB server URL without a database (default $GOIM_TEST_MYSQL or "
                             "mysql://root@127.0.0.1:3306); a scratch database is created and dropped")
    parser.add_argument("--no-faults", action="store_true", help="traffic and churn only, no faults (a baseline)")
    parser.add_argument("--private-mariadb", action="store_true",
                        help="run a private mariadbd (tests/distributed/harness.py) instead of using --mysql, "
                             "and let the faults SIGKILL and SIGSTOP it too")
    parser.add_argument("--keep", action="store_true", help="keep the process logs even when the run passes")
    a = parser.parse_args(argv)
    if a.users < 2 or a.devices_per_user < 1 or a.send_rate <= 0 or a.duration <= 0:
        parser.error("--users must be >= 2, --devices-per-user >= 1, --send-rate and --duration > 0")
    return Options(duration=a.duration, seed=a.seed, users=a.users, devices_per_user=a.devices_per_user,
                   send_rate=a.send_rate, churn_every=a.churn_every, mysql=a.mysql, keep=a.keep,
                   faults=not a.no_faults, private_mariadb=a.private_mariadb)


def main(argv: list[str]) -> int:
    options = parse(argv)
    status: list[int] = []

    async def go(reactor: object) -> None:
        result = await run_soak(options, lambda line: print(line, flush=True))
        status.append(0 if result.passed else 1)

    try:
        react(lambda reactor: Deferred.fromCoroutine(go(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    return status[0] if status else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
