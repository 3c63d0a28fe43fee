"""The process around a load generator: JSON-line commands on stdin, replies on stdout."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from typing import Any, Callable

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from goim_bench.loadgen.generator import LoadGenerator

log = Logger()

reactor: Any = _reactor



class CommandChannel(LineReceiver):
    """stdin/stdout JSON lines between the driver and this process."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 30

    def __init__(self, gen_factory: Callable[[Callable[[dict[str, Any]], None]], LoadGenerator]) -> None:
        self.gen = gen_factory(self.emit)

    def emit(self, obj: dict[str, Any]) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def lineReceived(self, line: bytes) -> None:
        if not line.strip():
            return
        request = json.loads(line)
        Deferred.fromCoroutine(self._run(request))

    async def _run(self, request: dict[str, Any]) -> None:
        command = request.get("cmd")
        ident = request.get("id")
        if command == "exit":
            self.emit({"event": "reply", "id": ident, "data": {}})
            reactor.callLater(0.05, _stop)
            return
        handler = getattr(self.gen, f"cmd_{command}", None)
        if handler is None:
            self.emit({"event": "error", "id": ident, "message": f"unknown command {command!r}"})
            return
        try:
            data = await handler(request)
        except Exception as e:
            log.failure("command {command} failed", command=command)
            self.emit({"event": "error", "id": ident, "message": f"{type(e).__name__}: {e}"})
            return
        self.emit({"event": "reply", "id": ident, "data": data})

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        _stop()  # the driver went away


def _stop() -> None:
    if reactor.running:
        reactor.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point of a load-generator process."""
    parser = argparse.ArgumentParser(description="goim benchmark load generator (driven by goim-bench)")
    parser.add_argument("--job", required=True, help="JSON job file")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long, whatever happens")
    args = parser.parse_args(argv)
    with open(args.job) as f:
        job = json.load(f)
    observer: Any = textFileLogObserver(sys.stderr)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    gc.freeze()  # the job's objects live for the whole run: keep them out of GC passes
    gc.set_threshold(50_000, 20, 20)  # fewer, not longer, collections: pauses would read as latency
    StandardIO(CommandChannel(lambda emit: LoadGenerator(job, emit)))
    reactor.callLater(args.max_seconds, _stop)
    reactor.run()
