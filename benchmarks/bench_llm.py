"""Benchmarks of the LLM client against the stand-in server, and of journal resume against a rescan per item.

    python benchmarks/bench_llm.py            # all three, about three minutes
    python benchmarks/bench_llm.py --quick    # smaller sizes, for a smoke run
    python benchmarks/bench_llm.py --parts a  # only (a)

(a) throughput at fixed latency and bounded concurrency, as a fraction of the bound concurrency / latency;
(b) a requests-per-minute budget: mean rate and the most requests in any sliding window, scaled to a minute;
(c) resume cost: loading a journal once and answering "done?" for every item, next to the approach of the original
    generation script (for each item, load the whole JSON output file and scan it), which is quadratic and so is
    measured on small sizes and extrapolated.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported, not run as a script
from _results import record as record_figure  # noqa: E402

from vital.llm import ChatRequest, CompletionResult, EndpointConfig, Journal, run_sync
from vital.testing.standin import SampleResponder, StandInServer


# A generated conversation of about the size the generation stage journals (4-5 question/answer exchanges).
REPLY = (
    "User: What imaging modality is shown?\nAssistant: " + "A contrast-enhanced axial CT of the abdomen. " * 8
) * 4


def requests(count: int, tag: str) -> list[ChatRequest]:
    return [
        ChatRequest(messages=[{"role": "user", "content": f"{tag} figure {i}: describe it"}]) for i in range(count)
    ]


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps in any half-open window [t, t + window)."""
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


@contextlib.contextmanager
def standin_process(*flags: str):
    """A stand-in server in its own process (so that it does not share the client's GIL); yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vital.testing.standin", "--port", "0", *flags], stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stderr.readline()
        match = re.search(r"at (http://\S+/v1)", line)
        if not match:
            raise RuntimeError(f"the stand-in did not start: {line!r}")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def bench_throughput(count: int, latency_ms: float = 500, concurrency: int = 32) -> None:
    with standin_process("--latency-ms", str(latency_ms)) as base_url:
        config = EndpointConfig(
            provider="openai-compatible", model="gpt-4o", base_url=base_url, concurrency=concurrency
        )
        started = time.monotonic()
        cpu = time.process_time()
        results, stats = run_sync(config, requests(count, "throughput"), progress=False)
        wall = time.monotonic() - started
        cpu = time.process_time() - cpu
    bound = concurrency / (latency_ms / 1000)
    rate = count / wall
    print(
        f"(a) throughput: {count} requests, latency {latency_ms:.0f} ms, concurrency {concurrency} (stand-in process)"
    )
    print(f"    {stats.succeeded} succeeded in {wall:.2f} s (first request included): {rate:.1f} req/s")
    print(f"    bound concurrency/latency = {bound:.1f} req/s -> fraction {rate / bound:.3f} (target >= 0.85)")
    print(f"    client CPU: {cpu:.2f} s, {cpu / count * 1000:.2f} ms a request")
    record_figure("llm", f"(a) throughput, {count} requests", rate, baseline=bound, unit="req/s")
    record_figure("llm", "(a) throughput fraction of the bound", rate / bound, target=0.85)


def bench_rpm(rpm: float, seconds: float) -> None:
    count = int(rpm * seconds / 60)
    with StandInServer(SampleResponder(default="ok"), latency_ms=50) as server:
        config = EndpointConfig(
            provider="openai-compatible",
            model="gpt-4o",
            base_url=server.base_url,
            concurrency=16,
            requests_per_minute=rpm,
        )
        results, stats = run_sync(config, requests(count, "rpm"), progress=False)
        arrivals = sorted(server.stats.arrivals)
    span = arrivals[-1] - arrivals[0]
    mean = (len(arrivals) - 1) / span * 60
    print(f"(b) requests-per-minute budget {rpm:.0f}: {len(arrivals)} requests over {span:.1f} s (server arrivals)")
    print(f"    mean rate {mean:.1f} rpm ({(mean / rpm - 1) * 100:+.2f}% of the budget)")
    record_figure("llm", f"(b) mean rate, budget {rpm:.0f} rpm", mean, baseline=rpm, unit="rpm")
    record_figure("llm", "(b) rpm error", (mean / rpm - 1) * 100, unit="%")
    for window in (60.0, 10.0, 5.0, 1.0):
        if window > span + 1:
            print(f"    sliding {window:>4.0f} s window: longer than the run; see the shorter windows")
            continue
        most = max_in_window(arrivals, window)
        share = rpm * window / 60
        print(
            f"    sliding {window:>4.0f} s window: at most {most} requests (budget share {share:.0f}) "
            f"= {most * 60 / window:.0f} rpm scaled"
        )
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    print(
        f"    inter-arrival gaps: min {min(gaps) * 1000:.1f} ms, max {max(gaps) * 1000:.1f} ms, ideal {60000 / rpm:.1f} ms"
    )


def record(key: str) -> CompletionResult:
    return CompletionResult(
        key=key, text=REPLY, finish_reason="stop", prompt_tokens=1200, completion_tokens=400, cost_usd=0.007,
        latency_s=4.2, elapsed_s=4.3, attempts=1, model="gpt-4o-2024-08-06",
    )  # fmt: skip


def write_journal(path: Path, keys: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for key in keys:
            handle.write(json.dumps(record(key).to_record(), ensure_ascii=False, separators=(",", ":")) + "\n")


def write_original_output(path: Path, keys: list[str]) -> None:
    """The original script's output: one JSON list (indent 4) of finished entries, keyed by image name."""
    entries = [
        {"id": i, "image": key, "domain": "CT", "conversations": [{"from": "gpt", "value": REPLY}]}
        for i, key in enumerate(keys)
    ]  # noqa: E501
    path.write_text(json.dumps(entries, ensure_ascii=False, indent=4), encoding="utf-8")


def journal_resume(path: Path, keys: list[str]) -> int:
    journal = Journal.open(path)
    done = sum(journal.done(key) is not None for key in keys)
    journal.close()
    return done


def original_resume(path: Path, keys: list[str]) -> int:
    """For each item: load the whole output file and scan it for the item (the original's duplicate check)."""
    done = 0
    for key in keys:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
        done += any(entry.get("image") == key for entry in entries)
    return done


def measure(function, *args) -> tuple[float, float, int]:
    """(seconds, peak MiB by tracemalloc, result): time in one run, memory in another (tracemalloc slows code)."""
    gc.collect()
    started = time.perf_counter()
    result = function(*args)
    seconds = time.perf_counter() - started
    gc.collect()
    tracemalloc.start()
    function(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, result


def bench_resume(journal_sizes: list[int], original_sizes: list[int]) -> None:
    print("(c) resume: answer 'done?' for every item of a run whose items are all finished")
    print(f"    record size: {len(json.dumps(record('k').to_record()))} bytes a journal line")
    journal_seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in journal_sizes:
            keys = [f"{i:064x}" for i in range(n)]
            path = Path(tmp) / f"journal-{n}.jsonl"
            write_journal(path, keys)
            seconds, peak, done = measure(journal_resume, path, keys)
            assert done == n
            journal_seconds[n] = seconds
            print(
                f"    journal (one O(n) load + dict lookups), n = {n:>7,}: {seconds:7.3f} s, "
                f"peak {peak:7.1f} MiB, file {path.stat().st_size / 2**20:.1f} MiB"
            )
        measured = {}
        for n in original_sizes:
            keys = [f"PMC{i:08d}_FIG1.jpg" for i in range(n)]
            path = Path(tmp) / f"original-{n}.json"
            write_original_output(path, keys)
            gc.collect()
            started = time.perf_counter()
            assert original_resume(path, keys) == n
            seconds = time.perf_counter() - started
            tracemalloc.start()
            original_resume(path, keys[:5])
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            measured[n] = seconds
            print(
                f"    original (reload + scan per item), n = {n:>7,}: {seconds:7.3f} s, "
                f"peak {peak / 2**20:7.1f} MiB, file {path.stat().st_size / 2**20:.1f} MiB  [measured]"
            )
        largest = max(measured)
        for n in journal_sizes:
            estimate = measured[largest] * (n / largest) ** 2
            print(
                f"    original (reload + scan per item), n = {n:>7,}: {estimate:9.0f} s "
                f"(= {estimate / 3600:.1f} h)  [EXTRAPOLATED as t({largest:,}) * (n / {largest:,})^2, not run]"
            )
            record_figure(
                "llm", f"(c) resume n={n:,}: journal vs rescan (extrapolated)", journal_seconds[n], estimate, unit="s"
            )
        for n, seconds in measured.items():
            record_figure("llm", f"(c) resume n={n:,}: rescan baseline (measured)", seconds, unit="s")
        if len(measured) >= 2:
            small, big = sorted(measured)[:2]
            exponent = math.log(measured[big] / measured[small]) / math.log(big / small)
            print(
                f"    original's measured growth exponent between {small:,} and {big:,}: {exponent:.2f} (2 = quadratic)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--parts", default="abc", help="which benchmarks to run, e.g. 'ab'")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if "a" in args.parts:
        bench_throughput(96 if args.quick else 320)
    if "b" in args.parts:
        bench_rpm(600, 6 if args.quick else 30)
    if "c" in args.parts:
        bench_resume(*([[1_000, 10_000], [300, 600]] if args.quick else [[10_000, 100_000], [1_000, 3_000]]))


if __name__ == "__main__":
    main()
