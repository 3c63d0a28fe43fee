"""``python -m goim_bench.loadgen --job FILE [--max-seconds S]``."""

from goim_bench.loadgen.channel import main

main()
