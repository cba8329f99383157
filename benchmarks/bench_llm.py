"""Benchmarks of the LLM client against the stand-in server, and of journal resume against a rescan per item.

    python benchmarks/bench_llm.py            # all four, several minutes
    python benchmarks/bench_llm.py --quick    # smaller sizes, for a smoke run
    python benchmarks/bench_llm.py --parts a --levels 256  # only (a), at c=256
    python benchmarks/bench_llm.py --parts a --repeats 3   # (a), each cell the median of 3 runs taken in turn

(a) throughput at 300 ms latency and c = 16, 64, 256, 512, with one and two client processes, as a fraction of the
    bound concurrency / latency, and client CPU per request, beside a bare AsyncOpenAI + semaphore client on the same
    transport in the same run;
(b) a requests-per-minute budget: mean rate and the most requests in any sliding window, scaled to a minute;
(c) resume cost: loading a journal once and answering "done?" for every item, next to the approach of the original
    generation script (for each item, load the whole JSON output file and scan it), which is quadratic and so is
    measured on small sizes and extrapolated;
(d) journal appends: time the event loop spends in append() with fsync inline against the group commit.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
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


BARE = "bare"
VITAL = "vital"


def worker_main(argv: list[str]) -> None:
    """One client process of the throughput table: ``--worker KIND TRANSPORT C COUNT BASE_URL START_AT BUDGET``.

    Sends COUNT requests at concurrency C from START_AT (a ``time.time()``, so processes start together) and prints
    one JSON line: wall seconds, CPU seconds of this process while sending, successes."""
    import asyncio
    import resource

    kind, transport, concurrency, count, base_url, start_at, budget_path = argv
    concurrency, count, start_at = int(concurrency), int(count), float(start_at)

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    async def bare() -> int:
        import httpx2
        import openai

        limits = httpx2.Limits(max_connections=max(concurrency, 100), max_keepalive_connections=concurrency)
        factory = openai.DefaultAioHttpClient if transport == "aiohttp" else openai.DefaultAsyncHttpxClient
        client = openai.AsyncOpenAI(
            base_url=base_url, api_key="EMPTY", max_retries=0, http_client=factory(limits=limits, timeout=60)
        )
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> bool:
            async with semaphore:
                reply = await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": f"bare figure {i}: describe it"}]
                )
                return bool(reply.choices)

        ok = sum(await asyncio.gather(*(one(i) for i in range(count))))
        await client.close()
        return ok

    async def vital(journal_dir: str) -> int:
        from vital.llm import AsyncLLMClient
        from vital.llm.limits import Budget

        config = EndpointConfig(
            provider="openai-compatible",
            model="gpt-4o",
            base_url=base_url,
            concurrency=concurrency,
            http_transport=transport,
            requests_per_minute=SHARED_RPM,
        )
        # A budget far above the bound: the shared, file-locked bucket is charged for every request but never waits.
        budget = Budget(config.requests_per_minute, shared_path=budget_path)
        async with AsyncLLMClient(config, budget=budget) as client:
            results = await client.run(
                requests(count, f"vital {os.getpid()}"), journal=Path(journal_dir) / "j.jsonl", progress=False
            )
        return sum(r.ok for r in results)

    with tempfile.TemporaryDirectory() as tmp:
        import openai  # noqa: F401 - imported before the clock starts, as a long run would have it

        time.sleep(max(0.0, start_at - time.time()))
        began, cpu0 = time.monotonic(), cpu()
        ok = asyncio.run(bare() if kind == BARE else vital(tmp))
        wall, used = time.monotonic() - began, cpu() - cpu0
    print(json.dumps({"wall": wall, "cpu": used, "ok": ok, "count": count}), flush=True)


SHARED_RPM = 10_000_000  # far above any bound here: charged, never binding


def run_clients(kind: str, transport: str, concurrency: int, count: int, base_url: str, processes: int) -> dict:
    """``processes`` worker processes of one kind, concurrency and count split evenly, started together."""
    start_at = time.time() + 4.0  # after every worker has imported what it needs
    with tempfile.TemporaryDirectory() as tmp:
        budget = str(Path(tmp) / "budget.bin")
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    kind,
                    transport,
                    str(concurrency // processes),
                    str(count // processes),
                    base_url,
                    str(start_at),
                    budget,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(processes)
        ]
        outputs = [json.loads(worker.communicate()[0].strip().splitlines()[-1]) for worker in workers]
    wall = max(o["wall"] for o in outputs)
    return {
        "rate": sum(o["count"] for o in outputs) / wall,
        "cpu_per_request_ms": sum(o["cpu"] for o in outputs) / sum(o["count"] for o in outputs) * 1000,
        "ok": sum(o["ok"] for o in outputs),
        "count": sum(o["count"] for o in outputs),
    }


def bench_throughput(
    levels: list[int], latency_ms: float = 300, waves: int = 20, transport: str = "auto", repeats: int = 1
) -> None:
    import statistics

    from vital.llm.client import resolve_transport

    transport = resolve_transport(transport)
    print(
        f"(a) throughput at {latency_ms:.0f} ms latency, as a fraction of the bound concurrency / latency, and client "
        f"CPU per request: this client (journal, shared budget) beside a bare AsyncOpenAI + semaphore client, both on "
        f"the {transport} transport, against a stand-in (asyncio engine) in its own process; {waves} waves of c "
        f"requests a run, so that opening the c connections is a small part of it"
        + (f"; the median of {repeats} runs of each, the two clients taking turns" if repeats > 1 else "")
    )
    header = f"    {'c':>4} {'procs':>5} {'client':>6} {'req/s':>8} {'bound':>7} {'fraction':>8} {'CPU ms/req':>10}"
    print(header)
    # The asyncio engine: a timer per request in flight instead of a sleeping thread, so the stand-in, which shares
    # the machine's cores with the clients, takes less of them and the same from both clients.
    with standin_process("--latency-ms", str(latency_ms), "--engine", "asyncio") as base_url:
        for concurrency in levels:
            count = max(waves * concurrency, 240)
            bound = concurrency / (latency_ms / 1000)
            for processes in (1, 2):
                runs: dict[str, list[dict]] = {VITAL: [], BARE: []}
                for _ in range(repeats):  # taking turns, so that a burst of load on the machine falls on both
                    for kind in (VITAL, BARE):
                        runs[kind].append(run_clients(kind, transport, concurrency, count, base_url, processes))
                row = {}
                for kind in (VITAL, BARE):
                    result = {
                        name: statistics.median(run[name] for run in runs[kind])
                        for name in ("rate", "cpu_per_request_ms")
                    }
                    failed = sum(run["count"] - run["ok"] for run in runs[kind])
                    row[kind] = result
                    fraction = result["rate"] / bound
                    spread = ", ".join(f"{run['rate'] / bound:.2f}" for run in runs[kind])
                    print(
                        f"    {concurrency:>4} {processes:>5} {kind:>6} {result['rate']:>8.1f} {bound:>7.1f} "
                        f"{fraction:>8.3f} {result['cpu_per_request_ms']:>10.3f}"
                        + (f"  (runs: {spread})" if repeats > 1 else "")
                        + (f"  ({failed} failed)" if failed else "")
                    )
                    record_figure("llm", f"(a) c={concurrency} {processes} proc {kind}: fraction of bound", fraction)
                ratio = row[VITAL]["cpu_per_request_ms"] / row[BARE]["cpu_per_request_ms"]
                print(f"    {'':>4} {'':>5} {'':>6} CPU per request, this client / bare: {ratio:.2f} (target <= 1.05)")
                record_figure(
                    "llm", f"(a) c={concurrency} {processes} proc: CPU per request vs bare", ratio, target=1.05
                )
    print("    targets (2 cores, noisy): one process >= 0.8 of the bound at c=256; two processes >= 0.85 at c=512")


def bench_journal(count: int) -> None:
    """(d) what journal writes cost the event loop: inline fsync per append against the group commit."""
    print(f"(d) journal: {count} appends, time spent inside append() (what the event loop waits for)")
    with tempfile.TemporaryDirectory() as tmp:
        for group in (False, True):
            journal = Journal.open(Path(tmp) / f"j-{group}.jsonl", group_commit=group)
            started = time.perf_counter()
            for i in range(count):
                journal.append(record(f"{i:064x}"))
            inside = time.perf_counter() - started
            journal.close()
            label = "group commit (fsync in a thread)" if group else "fsync inline, every append"
            print(f"    {label:<34}: {inside:7.3f} s in append(), {journal.fsyncs} fsyncs")
            record_figure("llm", f"(d) journal {count} appends, {label}", inside, unit="s")


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
    if sys.argv[1:2] == ["--worker"]:
        return worker_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--parts", default="abcd", help="which benchmarks to run, e.g. 'ab'")
    parser.add_argument("--transport", default="auto", choices=["auto", "aiohttp", "httpx"], help="HTTP transport")
    parser.add_argument("--levels", default="16,64,256,512", help="concurrency levels of (a)")
    parser.add_argument("--waves", type=int, default=20, help="requests per run of (a), in multiples of c")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each cell of (a), the median kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if "a" in args.parts:
        levels = [int(c) for c in args.levels.split(",")]
        bench_throughput(levels, waves=3 if args.quick else args.waves, transport=args.transport, repeats=args.repeats)
    if "b" in args.parts:
        bench_rpm(600, 6 if args.quick else 30)
    if "c" in args.parts:
        bench_resume(*([[1_000, 10_000], [300, 600]] if args.quick else [[10_000, 100_000], [1_000, 3_000]]))
    if "d" in args.parts:
        bench_journal(1_000 if args.quick else 3_000)


if __name__ == "__main__":
    main()
