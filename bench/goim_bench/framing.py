"""Pure TLV framing speed on one core (scenario ``framing``; speed is never asserted).

``goim-bench framing`` writes the figures as a scenario result;
``python -m goim_bench.framing [--seconds 0.5] [--repeat 5]`` prints the table.

For 32-byte and 1 KiB values it reports frames per second for:

* encode: ``encode_frame(type, value)``, one call per frame;
* decode: ``decode_frames(rest + chunk)`` over 64 KiB chunks, carrying the
  remainder, as a read loop would (one huge buffer is slower: holding ~100k frame
  tuples at once makes the cyclic GC run over them);
* receiver: ``TLVReceiver.dataReceived`` fed 64 KiB chunks (as a socket read would),
  with a no-op ``frameReceived`` -- the real per-connection receive path.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any, Callable

from twisted.internet.testing import StringTransport

from goim.protocols.framing import TLVReceiver, decode_frames, encode_frame
from goim_bench.server import cpu_list

CHUNK = 65536


class _Sink(TLVReceiver):
    def __init__(self) -> None:
        self.count = 0

    def frameReceived(self, frame_type: int, value: bytes) -> None:
        self.count += 1


def _rate(run: Callable[[], int], seconds: float, repeat: int) -> float:
    """Best frames/s of ``repeat`` runs of about ``seconds`` each (as timeit, the best
    run is the one least disturbed by other processes)."""
    run()  # warm up
    best = 0.0
    for _ in range(repeat):
        frames = 0
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < seconds:
            frames += run()
            elapsed = time.perf_counter() - start
        best = max(best, frames / elapsed)
    return best


def measure(size: int, seconds: float, repeat: int) -> tuple[float, float, float]:
    """Encode, decode and receiver rates (frames/s) for values of ``size`` bytes."""
    value = bytes(range(256)) * (size // 256) + bytes(size % 256)
    batch = max(1, (4 << 20) // (size + 4))  # about 4 MiB of frames per round
    data = encode_frame(8, value) * batch
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]

    def encode() -> int:
        for _ in range(batch):
            encode_frame(8, value)
        return batch

    def decode() -> int:
        count = 0
        rest = b""
        for chunk in chunks:
            frames, rest = decode_frames(rest + chunk)
            count += len(frames)
        assert not rest and count == batch
        return count

    def receive() -> int:
        sink = _Sink()
        sink.makeConnection(StringTransport())
        for chunk in chunks:
            sink.dataReceived(chunk)
        assert sink.count == batch
        return sink.count

    return (
        _rate(encode, seconds, repeat),
        _rate(decode, seconds, repeat),
        _rate(receive, seconds, repeat),
    )


SIZES = ((32, "32 B"), (1024, "1 KiB"))


async def framing(ctx: Any) -> None:
    """The scenario: encode, decode and receiver frames/s for 32 B and 1 KiB values,
    in the driver process (pinned to the server's CPUs with ``--cpus``)."""
    import os

    s = ctx.settings
    seconds = float(s.size("framing_seconds", 0.1, 0.5))
    repeat = int(s.size("framing_repeat", 2, 5))
    ctx.params.update(seconds_per_run=seconds, repeat=repeat, python=platform.python_version())
    before = os.sched_getaffinity(0)
    if s.server_cpus:
        os.sched_setaffinity(0, cpu_list(s.server_cpus))
    rows: list[dict[str, Any]] = []
    bar = ctx.bar("framing", len(SIZES), "size")
    try:
        for size, label in SIZES:
            # the measurements check their own frame counts (assert) on every run
            encode, decode, receive = measure(size, seconds, repeat)
            rows.append({"value": label, "bytes": size, "encode_per_s": round(encode), "decode_per_s": round(decode),
                         "receiver_per_s": round(receive), "receiver_mb_per_s": round(receive * (size + 4) / 1e6, 1)})  # fmt: skip
            bar.update(1)
    finally:
        bar.close()
        os.sched_setaffinity(0, before)
    ctx.metrics["frames"] = rows
    ctx.result["verification"] = {"verified": all(r["receiver_per_s"] > 0 for r in rows)}


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (best kept)")
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, one core, "
        f"best of {args.repeat} x {args.seconds} s"
    )
    print(
        f"{'value':>7} | {'encode fr/s':>12} | {'decode fr/s':>12} | "
        f"{'receiver fr/s':>13} | {'receiver MB/s':>13}"
    )
    print("-" * 70)
    for size, label in SIZES:
        enc, dec, rcv = measure(size, args.seconds, args.repeat)
        mbps = rcv * (size + 4) / 1e6
        print(f"{label:>7} | {enc:>12,.0f} | {dec:>12,.0f} | {rcv:>13,.0f} | {mbps:>13,.1f}")


if __name__ == "__main__":
    main()
