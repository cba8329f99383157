"""Benchmarks — run the stage benchmarks and gather their key figures into one results table.

Usage:

    vital bench                                   # every benchmark on its quick preset (a few minutes on a CPU)
    vital bench --full true                       # the sizes the benchmark scripts document (much longer)
    python recipes/bench.py --only metrics --metrics_n 2000

Each benchmark is a script in `benchmarks/` run as its own process (from the repository root, with this Python):
`bench_llm` (generation throughput against its concurrency/latency bound, the requests-per-minute budget, journal
resume against a rescan per item), `bench_selection` (selector scoring, batched against a per-sample loop),
`bench_sft` (the SFT recipe's overhead over a bare trainer), `bench_metrics` (VQA metric speed per mode) and
`bench_batch` (client CPU per 1k requests, online vs batch mode). A script's
whole stdout goes to `<output_dir>/<name>.txt`; the figures it records (`benchmarks/_results.py`) make up
`<output_dir>/results.md`, which is printed at the end. A benchmark that fails is in the table with its exit code.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vital.runner import recipe_parser, setup_logging


logger = logging.getLogger("vital.bench")

REPO_ROOT = Path(__file__).resolve().parents[2]  # benchmarks/ lives in a checkout, beside vital/

# name -> (script, quick preset, full preset); the full preset is each script's documented defaults.
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "llm": ("benchmarks/bench_llm.py", ["--quick"], []),
    "selection": (
        "benchmarks/bench_selection.py",
        ["--throughput-n", "200", "--loop-n", "40", "--stream-n", "2000", "--skip-processes"],
        [],
    ),
    "sft": ("benchmarks/bench_sft.py", ["--steps", "10", "--repeats", "2", "--rows", "16"], []),
    "metrics": ("benchmarks/bench_metrics.py", ["--n", "20000"], []),
    "batch": ("benchmarks/bench_batch.py", ["--requests", "1000"], []),
}


@dataclass
class BenchArguments:
    """
    Arguments of the `bench` stage: which benchmark scripts run, at which sizes. The stage reads and pushes nothing,
    so it has no hub options (it does not derive from `HubArguments`).

    Parameters:
        only (`list[str]`, *optional*, defaults to `[]`):
            Run only these benchmarks (keys of `BENCHMARKS`: `llm`, `selection`, `sft`, `metrics`, `batch`); empty
            runs them all.
        full (`bool`, *optional*, defaults to `False`):
            Run each script at the sizes it documents instead of the quick preset (much longer).
        metrics_n (`int` or `None`, *optional*, defaults to `None`):
            Items for `bench_metrics`, overriding the preset.
        timeout_s (`float` or `None`, *optional*, defaults to `None`):
            Give up on a benchmark after this many seconds (it is reported as timed out); `None` waits.
        output_dir (`str`, *optional*, defaults to `"outputs/bench"`):
            Folder for each script's stdout (`<name>.txt`), its figures (`<name>.jsonl`) and `results.md`.
    """

    only: list[str] = field(
        default_factory=list, metadata={"help": f"Run only these benchmarks (of {', '.join(BENCHMARKS)})."}
    )
    full: bool = field(default=False, metadata={"help": "The documented sizes instead of the quick presets."})
    metrics_n: int | None = field(default=None, metadata={"help": "Items for bench_metrics (overrides the preset)."})
    timeout_s: float | None = field(default=None, metadata={"help": "Give up on a benchmark after this long."})
    output_dir: str = field(default="outputs/bench", metadata={"help": "Where the outputs and results.md go."})


def check_scripts(names: list[str]) -> None:
    """Fail before running anything when a benchmark script is missing: `benchmarks/` exists only in a checkout of
    the repository, not in an installed wheel."""
    missing = [BENCHMARKS[name][0] for name in names if not (REPO_ROOT / BENCHMARKS[name][0]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"benchmark scripts not found under {REPO_ROOT}: {', '.join(missing)}. `vital bench` runs the scripts "
            "of a checkout (git clone the repository and install it with `pip install -e .`); a wheel has none."
        )


def benchmark_argv(name: str, args: BenchArguments) -> list[str]:
    """The script and its flags for one benchmark."""
    script, quick, full = BENCHMARKS[name]
    flags = list(full if args.full else quick)
    if name == "metrics" and args.metrics_n is not None:
        flags = ["--n", str(args.metrics_n)]
    return [sys.executable, script, *flags]


def run_benchmark(name: str, args: BenchArguments, out: Path) -> dict:
    """Run one benchmark script; its stdout to `<name>.txt`, its figures to `<name>.jsonl`. Returns how it went."""
    stdout, stderr, figures = out / f"{name}.txt", out / f"{name}.stderr.txt", out / f"{name}.jsonl"
    figures.unlink(missing_ok=True)
    env = {**os.environ, "VITAL_BENCH_RESULTS": str(figures.resolve()), "PYTHONPATH": str(REPO_ROOT)}
    argv = benchmark_argv(name, args)
    logger.info("=== %s: %s", name, " ".join(argv[1:]))
    started = time.monotonic()
    with open(stdout, "w", encoding="utf-8") as out_handle, open(stderr, "w", encoding="utf-8") as err_handle:
        try:
            code = subprocess.run(
                argv, cwd=REPO_ROOT, env=env, stdout=out_handle, stderr=err_handle, timeout=args.timeout_s
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.monotonic() - started
    rows = [json.loads(line) for line in figures.open(encoding="utf-8")] if figures.exists() else []
    if code != 0:
        tail = stderr.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
        logger.error("%s failed (exit code %s) after %.0f s: %s", name, code, seconds, tail[0])
    return {"name": name, "exit_code": code, "seconds": seconds, "rows": rows, "stdout": str(stdout)}


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".rstrip() if unit and unit != "%" else text + unit


def fmt_ratio(value: float, reference: float) -> str:
    if not reference:
        return ""
    ratio = value / reference
    return f"{ratio:.3f}" if abs(ratio) >= 0.01 else f"{ratio:.2e}"


def results_table(runs: list[dict]) -> str:
    """The markdown table: one row per recorded figure, one row for a benchmark that failed or recorded none."""
    lines = ["| benchmark | figure | value | baseline/target | ratio |", "|---|---|---|---|---|"]
    for run in runs:
        if run["exit_code"] != 0:
            why = "timed out" if run["exit_code"] is None else f"exit code {run['exit_code']}"
            lines.append(f"| {run['name']} | **FAILED** ({why}, see {run['stdout']}) |  |  |  |")
        elif not run["rows"]:
            lines.append(f"| {run['name']} | **no figures recorded** |  |  |  |")
        for row in run["rows"]:
            unit, reference, ratio = row.get("unit", ""), "", ""
            if row.get("baseline") is not None:
                reference = f"baseline {fmt(row['baseline'], unit)}"
                ratio = fmt_ratio(row["value"], row["baseline"])
            if row.get("target") is not None:
                reference = (reference + "; " if reference else "") + f"target {fmt(row['target'], unit)}"
                ratio = ratio or fmt_ratio(row["value"], row["target"])
            lines.append(
                f"| {row['benchmark']} | {row['figure']} | {fmt(row['value'], unit)} | {reference} | {ratio} |"
            )
    timings = ", ".join(f"{run['name']} {run['seconds']:.1f} s" for run in runs)
    return "\n".join(lines) + f"\n\nWall time per benchmark: {timings}.\n"


def main(args: BenchArguments) -> list[dict]:
    setup_logging()
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"--only names unknown benchmarks {sorted(unknown)}; available: {', '.join(BENCHMARKS)}")
    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    check_scripts(names)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Each benchmark in its own process, one after another (they time themselves: no two at once).
    runs = [run_benchmark(name, args, out) for name in names]

    # 2. One table of the key figures.
    preset = "full (documented sizes)" if args.full else "quick presets"
    table = f"# Benchmark results ({preset})\n\n" + results_table(runs)
    (out / "results.md").write_text(table, encoding="utf-8")
    print(f"\n{table}\n(full outputs: {out}/<benchmark>.txt; table: {out / 'results.md'})")
    return runs


def cli(argv: list[str] | None = None) -> list[dict]:
    (args,) = recipe_parser((BenchArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
