"""goim's benchmark suite: ``goim-bench`` (see docs/benchmarks.md).

The server under test runs as its own process (``twistd -n goim``), the load as
several ``python -m goim_bench.loadgen`` processes speaking the wire protocol
with goim's own framing and codec; ``goim_bench.cli`` drives both.
"""
