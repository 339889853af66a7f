"""The benchmark and its yardstick, the naive runner: a room of its own.

Runtime code never imports this package; `batchgen bench` (in `cli_tools`) does, lazily.
This file imports nothing, so `python -m batchgen.bench.naive` starts as lean as it can.
"""
