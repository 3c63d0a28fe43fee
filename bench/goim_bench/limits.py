"""Raw limits of this machine, measured in the same run as goim (scenario ``limits``).

* a minimal Twisted TLV echo server (goim's framing, nothing else): frames/s;
* batched INSERTs into a table of the shape of goim's ``messages`` through a Twisted
  adbapi pool configured as goim's (100-row ``executemany`` transactions, 10 in
  flight; no goim storage code): rows/s on SQLite and on MariaDB;
* Redis pub/sub through txredisapi (hiredis installed): messages/s.

Each runs in its own process (``python -m goim_bench.limits KIND ...``, JSON on
stdout) so that goim's numbers can be read as ratios to these.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
from typing import Any

from twisted.internet import defer, task
from twisted.internet.threads import deferToThread
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from goim_bench.driver import die_with_parent
from goim.protocols.framing import TLVReceiver, decode_frames, encode_frame

ECHO_VALUE = bytes(range(32))
ECHO_TYPE = 4


# --- TLV echo -----------------------------------------------------------------------------


class EchoServerProtocol(TLVReceiver):
    """Writes every frame back as it came."""

    def frameReceived(self, frame_type: int, value: bytes) -> None:
        transport: Any = self.transport
        transport.write(encode_frame(frame_type, value))


class EchoClient(Protocol):
    """Keeps ``window`` frames in flight and counts the echoes."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self._buffer = b""

    def connectionMade(self) -> None:
        self.state["connected"] += 1
        frame = encode_frame(ECHO_TYPE, ECHO_VALUE)
        transport: Any = self.transport
        transport.write(frame * self.state["window"])
        self.state["sent"] += self.state["window"]

    def dataReceived(self, data: bytes) -> None:
        frames, self._buffer = decode_frames(self._buffer + data)
        state = self.state
        good = sum(1 for t, v in frames if t == ECHO_TYPE and v == ECHO_VALUE)
        state["echoed"] += len(frames)
        state["bad"] += len(frames) - good
        if state["running"] and frames:
            transport: Any = self.transport
            transport.write(encode_frame(ECHO_TYPE, ECHO_VALUE) * len(frames))
            state["sent"] += len(frames)


class _EchoClientFactory(ClientFactory):
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def buildProtocol(self, addr: Any) -> EchoClient:
        return EchoClient(self.state)


async def _echo_client(reactor: Any, host: str, port: int, source: str, connections: int, window: int,
                       seconds: float) -> dict[str, Any]:  # fmt: skip
    state: dict[str, Any] = {"connected": 0, "sent": 0, "echoed": 0, "bad": 0, "window": window, "running": True}
    factory = _EchoClientFactory(state)
    for _ in range(connections):
        reactor.connectTCP(host, port, factory, bindAddress=(source, 0))
    deadline = time.time() + 10
    while state["connected"] < connections and time.time() < deadline:
        await task.deferLater(reactor, 0.01, lambda: None)
    start_count = state["echoed"]
    start = time.time()
    await task.deferLater(reactor, seconds, lambda: None)
    elapsed = time.time() - start
    count = state["echoed"] - start_count
    state["running"] = False
    deadline = time.time() + 5
    while state["echoed"] < state["sent"] and time.time() < deadline:
        await task.deferLater(reactor, 0.01, lambda: None)
    return {"frames": count, "seconds": elapsed, "sent": state["sent"], "echoed": state["echoed"], "bad": state["bad"],
            "connected": state["connected"]}  # fmt: skip


def _serve_echo(reactor: Any, port: int) -> defer.Deferred[None]:
    """Listen (port 0: one the kernel picks) and print ``{"listening": PORT}``."""
    factory = Factory.forProtocol(EchoServerProtocol)
    listening = reactor.listenTCP(port, factory, interface="127.0.0.1", backlog=1024)
    print(json.dumps({"listening": listening.getHost().port}), flush=True)
    return defer.Deferred()  # runs until killed


# --- batched inserts ---------------------------------------------------------------------------

#: the shape of goim's ``messages`` table (goim/storage/schema.py), created here on
#: a scratch database so that the limit needs nothing of goim's storage code
MESSAGES_TABLE = """CREATE TABLE IF NOT EXISTS messages (
    user_id {bigint} NOT NULL, seq {bigint} NOT NULL, message_id {bigint} NOT NULL,
    sender_type INTEGER NOT NULL, sender_id {bigint} NOT NULL, sender_device_id {bigint} NOT NULL,
    receiver_type INTEGER NOT NULL, receiver_id {bigint} NOT NULL, type INTEGER NOT NULL,
    content TEXT NOT NULL, send_time {bigint} NOT NULL, created_at {bigint} NOT NULL,
    PRIMARY KEY (user_id, seq)){options}"""


def _open_sqlite(connection: Any) -> None:
    """goim's SQLite settings: WAL, synchronous=FULL (its default)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def rows_pool(url: str) -> tuple[Any, str, str]:
    """A Twisted adbapi pool for ``url`` configured as goim configures its own (one
    SQLite connection; up to 10 PyMySQL connections, READ COMMITTED), the DDL of the
    table and the driver's placeholder."""
    from urllib.parse import unquote, urlsplit

    from twisted.enterprise import adbapi

    if url.startswith("sqlite:"):
        pool = adbapi.ConnectionPool("sqlite3", database=url[len("sqlite:"):], check_same_thread=False, cp_min=1,
                                     cp_max=1, cp_openfun=_open_sqlite)  # fmt: skip
        return pool, MESSAGES_TABLE.format(bigint="INTEGER", options=""), "?"
    parts = urlsplit(url)
    pool = adbapi.ConnectionPool(
        "pymysql", host=parts.hostname or "127.0.0.1", port=parts.port or 3306, user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""), database=parts.path.lstrip("/"), cp_min=1, cp_max=10,
        cp_reconnect=True, cp_noisy=False, charset="utf8mb4", autocommit=False, connect_timeout=5,
        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )  # fmt: skip
    ddl = MESSAGES_TABLE.format(bigint="BIGINT", options=" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
    return pool, ddl, "%s"


async def insert_rows(pool: Any, placeholder: str, rows: int, *, in_flight: int = 10) -> float:
    """Insert ``rows`` message rows as 100-row ``executemany`` transactions, ``in_flight``
    at once, through an adbapi pool (users above 10**9); returns the seconds it took.

    Only placeholders stand in VALUES: PyMySQL then folds each executemany into one
    multi-row INSERT.
    """
    statement = (
        "INSERT INTO messages (user_id, seq, message_id, sender_type, sender_id, sender_device_id,"
        " receiver_type, receiver_id, type, content, send_time, created_at)"
        f" VALUES ({', '.join([placeholder] * 12)})"
    )

    def insert_txn(cursor: Any, base: int) -> None:
        cursor.executemany(statement, [(10**9 + base, i, base + i, 1, 1, 1, 1, 1, 1, "x" * 20, 0, 0) for i in range(100)])

    bases = list(range(1, rows + 1, 100))
    start = time.perf_counter()

    async def worker() -> None:
        while bases:
            await pool.runInteraction(insert_txn, bases.pop(0))

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(in_flight)])
    return time.perf_counter() - start


async def _db_rows(reactor: Any, url: str, rows: int) -> dict[str, Any]:
    pool, ddl, placeholder = rows_pool(url)
    try:
        await pool.runOperation(ddl)
        elapsed = await insert_rows(pool, placeholder, rows)
        counted = await pool.runQuery(f"SELECT COUNT(*) FROM messages WHERE user_id > {placeholder}", (10**9,))
        stored = int(counted[0][0])
    finally:
        pool.close()
    inserted = len(range(1, rows + 1, 100)) * 100
    return {"rows": inserted, "stored": stored, "seconds": elapsed, "rows_per_s": inserted / elapsed}


# --- Redis pub/sub ----------------------------------------------------------------------------------


async def _redis_pubsub(reactor: Any, host: str, port: int, seconds: float, window: int) -> dict[str, Any]:
    import txredisapi
    from twisted.internet import endpoints

    channel = f"goim-bench-{secrets.token_hex(4)}"
    state: dict[str, Any] = {"received": 0, "bad": 0, "ready": defer.Deferred()}
    payload = b"m" * 100

    class Subscriber(txredisapi.SubscriberProtocol):
        def connectionMade(self) -> Any:
            d = super().connectionMade()
            self.whenConnected().addCallback(lambda _: self.subscribe(channel)).addCallback(
                lambda _: state["ready"].callback(None)
            )
            return d

        def messageReceived(self, pattern: Any, ch: Any, message: Any) -> None:
            state["received"] += 1
            if message != payload:
                state["bad"] += 1

    factory = txredisapi.SubscriberFactory()
    factory.charset = None
    factory.protocol = Subscriber
    factory.startConnecting(endpoints.HostnameEndpoint(reactor, host, port, timeout=3))
    await state["ready"]
    publisher = txredisapi.lazyConnectionPool(host=host, port=port, poolsize=1, charset=None)
    published = 0
    running = True

    async def publish_loop() -> None:
        nonlocal published
        while running:
            await publisher.publish(channel, payload)
            published += 1

    start = time.time()
    loops = [defer.Deferred.fromCoroutine(publish_loop()) for _ in range(window)]
    await task.deferLater(reactor, seconds, lambda: None)
    running = False
    await defer.gatherResults(loops)
    deadline = time.time() + 10
    while state["received"] < published and time.time() < deadline:
        await task.deferLater(reactor, 0.01, lambda: None)
    elapsed = time.time() - start
    await publisher.disconnect()
    await factory.disconnect()
    return {
        "published": published,
        "received": state["received"],
        "bad": state["bad"],
        "seconds": elapsed,
        "messages_per_s": state["received"] / elapsed,
        "hiredis": _has_hiredis(),
    }


def _has_hiredis() -> bool:
    import importlib.util

    return importlib.util.find_spec("hiredis") is not None


# --- the scenario (driver side) -------------------------------------------------------------------


async def _child(ctx: Any, args: list[str], cpus: str | None, timeout: float) -> dict[str, Any]:
    """Run ``python -m goim_bench.limits ARGS`` (pinned to ``cpus``); its JSON output."""
    from twisted.internet.utils import getProcessOutputAndValue

    from goim_bench.driver import child_env, pinned

    argv = pinned([sys.executable, "-m", "goim_bench.limits", *args], cpus)
    d = getProcessOutputAndValue(shutil.which(argv[0]) or argv[0], argv[1:], env=child_env(), path=str(ctx.workdir))
    d.addTimeout(timeout, ctx.reactor)
    out, err, code = await d
    if code != 0:
        raise RuntimeError(f"limits {args[0]} exited with {code}: {err.decode(errors='replace')[-1500:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def limits(ctx: Any) -> None:
    """Measure the raw limits; every part checks its own counts."""
    from goim_bench.driver import child_env, gather, pinned, source_address
    from goim_bench.server import mysql_admin, mysql_reachable

    s = ctx.settings
    seconds = float(s.size("limits_seconds", 1.5, 5.0))
    rows = int(s.size("limits_rows", 5000, 50000))
    clients = ctx.loadgen_count(wanted=2)
    ctx.params.update(seconds=seconds, rows=rows, echo_clients=clients, echo_connections_per_client=8,
                      echo_window=100)  # fmt: skip
    problems: list[str] = []
    bar = ctx.bar("raw limits", 4, "part")

    # 1. a bare TLV echo server, on a port it binds itself and reports
    argv = pinned([sys.executable, "-m", "goim_bench.limits", "echo-server", "--port", "0"], s.server_cpus)
    server = subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, cwd=ctx.workdir, preexec_fn=die_with_parent)  # fmt: skip
    try:
        assert server.stdout is not None
        line = await deferToThread(server.stdout.readline)
        if not line:
            raise RuntimeError(f"the echo server exited with {server.wait()} before listening")
        port = int(json.loads(line)["listening"])
        replies = await gather(
            [
                _child(ctx, ["echo-client", "--port", str(port), "--source", source_address(i),
                             "--seconds", str(seconds)], s.load_cpus, seconds + 60)  # fmt: skip
                for i in range(clients)
            ]
        )
    finally:
        server.kill()
        server.wait()
    frames_per_s = sum(r["frames"] / r["seconds"] for r in replies)
    ctx.metrics["tlv_echo"] = {"frames_per_s": round(frames_per_s, 1), "clients": replies}
    for r in replies:
        if r["bad"] or r["echoed"] != r["sent"]:
            problems.append(f"echo: sent {r['sent']}, echoed {r['echoed']}, {r['bad']} altered")
    bar.update(1)

    # 2. batched inserts, SQLite and MariaDB
    sqlite = await _child(ctx, ["db-rows", "--database", f"sqlite:{ctx.workdir / 'limits.db'}", "--rows",
                                str(rows)], s.server_cpus, 600)  # fmt: skip
    ctx.metrics["sqlite_rows"] = sqlite
    if sqlite["stored"] != sqlite["rows"]:
        problems.append(f"sqlite: inserted {sqlite['rows']} rows, {sqlite['stored']} stored")
    bar.update(1)
    mysql = s.mysql_server
    if await deferToThread(mysql_reachable, mysql):
        name = f"goim_bench_limits_{secrets.token_hex(4)}"
        await deferToThread(mysql_admin, mysql, f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        try:
            result = await _child(ctx, ["db-rows", "--database", f"{mysql}/{name}", "--rows", str(rows)],
                                  s.server_cpus, 600)  # fmt: skip
        finally:
            await deferToThread(mysql_admin, mysql, f"DROP DATABASE IF EXISTS {name}")
        ctx.metrics["mysql_rows"] = result
        if result["stored"] != result["rows"]:
            problems.append(f"mysql: inserted {result['rows']} rows, {result['stored']} stored")
    else:
        ctx.metrics["mysql_rows"] = {"skipped": f"no MySQL/MariaDB answers at {mysql}"}
    bar.update(1)

    # 3. Redis pub/sub
    from goim_bench.cluster import RedisProcess

    private = None
    try:
        if s.redis:
            from urllib.parse import urlsplit

            parts = urlsplit(s.redis)
            host, rport = parts.hostname or "127.0.0.1", parts.port or 6379
        elif RedisProcess.available():
            # started from the reactor thread: a child's parent-death signal follows the forking thread
            private = RedisProcess(ctx.reactor, ctx.workdir, s.server_cpus)
            await private.start()
            host, rport = "127.0.0.1", private.port
        if s.redis or private:
            result = await _child(ctx, ["redis-pubsub", "--host", host, "--port", str(rport), "--seconds",
                                        str(seconds)], s.load_cpus, seconds + 60)  # fmt: skip
            ctx.metrics["redis_pubsub"] = result
            if result["bad"] or result["received"] != result["published"]:
                problems.append(f"redis: published {result['published']}, received {result['received']}")
        else:
            ctx.metrics["redis_pubsub"] = {"skipped": "no --redis given and no redis-server binary"}
    finally:
        if private:
            await private.stop()
    bar.update(1)
    bar.close()
    ctx.result["verification"] = {"verified": not problems, "problems": problems}


def main(argv: list[str] | None = None) -> None:
    """``python -m goim_bench.limits echo-server|echo-client|db-rows|redis-pubsub ...``."""
    parser = argparse.ArgumentParser(description="raw limits for goim-bench (JSON on stdout)")
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("echo-server")
    p.add_argument("--port", type=int, default=0)
    p = sub.add_parser("echo-client")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", default="127.0.0.2")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--seconds", type=float, default=3.0)
    p = sub.add_parser("db-rows")
    p.add_argument("--database", required=True)
    p.add_argument("--rows", type=int, default=30000)
    p = sub.add_parser("redis-pubsub")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--window", type=int, default=64)
    args = parser.parse_args(argv)

    async def run(reactor: Any) -> None:
        if args.kind == "echo-server":
            await _serve_echo(reactor, args.port)
            return
        if args.kind == "echo-client":
            result = await _echo_client(
                reactor, args.host, args.port, args.source, args.connections, args.window, args.seconds
            )
        elif args.kind == "db-rows":
            result = await _db_rows(reactor, args.database, args.rows)
        else:
            result = await _redis_pubsub(reactor, args.host, args.port, args.seconds, args.window)
        print(json.dumps(result), flush=True)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
