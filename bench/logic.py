"""Service-layer throughput on MariaDB (not a test; speed is never asserted).

Usage: ``PYTHONPATH=. python bench/logic.py [--mysql mysql://root@127.0.0.1:3306] [--sends 3000]``

Creates a scratch database, then measures through ``MessageService.send`` (the
batching writer, one transaction per batch) with 1, 10 and 100 sends in flight:

* 1:1 sends/s between friends (each stores 2 copies),
* group-of-100 sends/s (each stores 100 copies),

and, in the same run, the raw limit: rows/s of 100-row ``executemany`` INSERT
transactions through the same adbapi pool. Prints a table; drops the database.
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any

import pymysql
from twisted.internet import defer, task

from goim.bench.limits import insert_rows
from goim.storage.database import Database
from goim.storage.schema import migrate_txn
from goim.types import RECEIVER_GROUP, RECEIVER_USER, SendRequest
from tests.support.services import Services


def _admin(server: str, statement: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    conn = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                           password=parts.password or "", autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute(statement)
    conn.close()


async def _pipelined(services: Services, requests: list[SendRequest], in_flight: int) -> float:
    """Send ``requests`` keeping ``in_flight`` outstanding; returns sends/s."""
    started = time.perf_counter()
    queue = list(requests)

    async def worker() -> None:
        while queue:
            result = await services.messages.send(queue.pop(0))
            assert result.code == 0, result

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(in_flight)])
    return len(requests) / (time.perf_counter() - started)


async def _raw_rows(db: Database, rows: int) -> float:
    """rows/s of 100-row executemany INSERT transactions, 10 transactions in flight."""
    return rows / await insert_rows(db, rows)


async def main(reactor: Any, server: str, sends: int) -> None:
    name = f"goim_bench_{secrets.token_hex(4)}"
    _admin(server, f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        db = Database(f"{server}/{name}", reactor)
        await db.run("migrate", migrate_txn)
        s = Services(db, reactor, id_step=10000)
        # 1:1: 50 pairs of friends, senders take turns
        pairs = []
        for i in range(50):
            a, da, _ = await s.new_user(f"a{i}")
            b, _, _ = await s.new_user(f"b{i}")
            await s.social.add_friend(a, b, "")
            pairs.append((a, da, b))
        owner, owner_device, _ = await s.new_user("owner")
        members = [(await s.new_user(f"m{i}"))[0] for i in range(99)]
        group_id = await s.social.create_group(owner, "bench", members)
        seq = 0
        print(f"{'scenario':<22}{'in flight':>10}{'sends/s':>12}{'copies/s':>12}")
        for in_flight in (1, 10, 100):
            requests = []
            for n in range(sends):
                a, da, b = pairs[n % len(pairs)]
                seq += 1
                requests.append(SendRequest(da, a, RECEIVER_USER, b, 1, "hello " * 5, seq, 0))
            rate = await _pipelined(s, requests, in_flight)
            print(f"{'1:1':<22}{in_flight:>10}{rate:>12,.0f}{rate * 2:>12,.0f}")
        for in_flight in (1, 10, 100):
            requests = []
            for _ in range(max(100, sends // 10)):
                seq += 1
                requests.append(SendRequest(owner_device, owner, RECEIVER_GROUP, group_id, 1, "hello", seq, 0))
            rate = await _pipelined(s, requests, in_flight)
            print(f"{'group of 100':<22}{in_flight:>10}{rate:>12,.0f}{rate * 100:>12,.0f}")
        rows = await _raw_rows(db, 30000)
        print(f"{'raw executemany rows':<22}{10:>10}{'':>12}{rows:>12,.0f}")
        db.close()
    finally:
        _admin(server, f"DROP DATABASE IF EXISTS {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mysql", default="mysql://root@127.0.0.1:3306", help="server URL, no database")
    parser.add_argument("--sends", type=int, default=3000, help="1:1 sends per in-flight level")
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, args.mysql.rstrip("/"), args.sends)))
