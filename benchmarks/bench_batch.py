"""Client CPU per 1,000 requests, online vs batch mode, over the same requests against the stand-in (in its own process).

    python benchmarks/bench_batch.py                      # 10,000 requests
    python benchmarks/bench_batch.py --requests 2000      # quicker

Online: `vital.llm.run_sync` (the async client, `--concurrency` in flight, every result journaled). Batch: the same
jobs through `vital.llm.batch.run_batch_jobs` (JSONL input files, upload, batch creation, polling, download, every
result merged into the journal). The stand-in runs as a separate process, so the client's CPU time
(`time.process_time()`, user + system of this process) is the client's alone. Both runs journal to fresh folders.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported, not run as a script
from _results import record  # noqa: E402


PROMPT = (
    "You are an AI assistant specialized in biomedical topics. Figure caption: Axial contrast-enhanced CT of the "
    "abdomen shows a well-defined hypodense lesion in segment VII of the liver. Write a question about the figure "
    "and answer it as a clinician would, citing what is visible. Request {i}."
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(batch_delay_s: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "vital.testing.standin_batch", "--port", str(port)]
    command += ["--batch-delay-s", str(batch_delay_s)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the stand-in did not start")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64, help="online requests in flight")
    parser.add_argument("--batch-max-requests", type=int, default=50_000, help="requests per batch input file")
    parser.add_argument("--batch-delay-s", type=float, default=0.5, help="how long the stand-in takes per batch")
    args = parser.parse_args(argv)

    from vital.llm import ChatRequest, EndpointConfig, run_sync
    from vital.llm.batch import BatchConfig, run_batch_jobs
    from vital.llm.jobs import Job

    n = args.requests
    process, base_url = start_server(args.batch_delay_s)
    results = {}
    try:
        endpoint = EndpointConfig(
            provider="openai-compatible", model="gpt-4o", base_url=base_url, concurrency=args.concurrency
        )
        with tempfile.TemporaryDirectory() as tmp:
            messages = [[{"role": "user", "content": PROMPT.format(i=i)}] for i in range(n)]
            cpu, wall = time.process_time(), time.perf_counter()
            run_sync(endpoint, [ChatRequest(m) for m in messages], journal=Path(tmp, "online.jsonl"), progress=False)
            results["online"] = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}

            jobs = [Job(key=f"{i:064x}", index=i, record_id=str(i), task="bench") for i in range(n)]
            config = BatchConfig(
                mode="batch", batch_max_requests=args.batch_max_requests, batch_poll_s=0.05, batch_poll_max_s=0.5
            )
            cpu, wall = time.process_time(), time.perf_counter()
            run_batch_jobs(
                jobs, endpoint, lambda job: messages[job.index], Path(tmp, "batch", "journal.jsonl"), config
            )
            results["batch"] = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
    finally:
        process.terminate()
        process.wait(timeout=10)

    print(f"\n{n:,} requests against the stand-in (batch mode: {args.batch_delay_s} s per batch on the server)")
    print(f"{'mode':<8}{'wall s':>10}{'client CPU s':>14}{'CPU s / 1k req':>16}")
    for mode, r in results.items():
        print(f"{mode:<8}{r['wall_s']:>10.2f}{r['cpu_s']:>14.2f}{1000 * r['cpu_s'] / n:>16.3f}")
    ratio = results["online"]["cpu_s"] / results["batch"]["cpu_s"]
    print(f"online uses {ratio:.2f}x the client CPU of batch mode per request")
    per_k = {mode: 1000 * r["cpu_s"] / n for mode, r in results.items()}
    record("batch", f"client CPU s per 1k requests, batch mode ({n} requests)", per_k["batch"],
           baseline=per_k["online"], unit="s")  # fmt: skip
    return results


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
