"""Benchmarks — run the stage benchmarks and gather their key figures into one results table.

Usage:

    vital bench                                   # every benchmark on its quick preset (a few minutes on a CPU)
    vital bench --full true                       # the sizes the benchmark scripts document (much longer)
    python recipes/bench.py --only metrics --metrics_n 2000

The stage itself is `vital.stages.bench` (arguments, `main()`); this script only runs it.
"""

from vital.stages.bench import cli


if __name__ == "__main__":
    cli()
