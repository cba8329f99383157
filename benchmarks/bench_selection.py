"""Selection throughput (per-sample loop, batched, two processes) and memory while streaming 100,000 candidates.

    python benchmarks/bench_selection.py                                  # 2,000 for throughput, 100,000 streamed
    python benchmarks/bench_selection.py --throughput-n 1000 --loop-n 200 --stream-n 20000

Synthetic candidates (TRL conversations with one or two question-answer turns, one 24x24 PNG each, drawn from a pool
of distinct noise images) are written once to an Arrow file on disk with `Dataset.from_generator` (the workdir keeps
it between runs) and memory-mapped from there, as `datasets` does with a Hub download. The selector is a tiny random
CLIP with an MLP head (`vital.testing.tiny_models`), saved and reloaded as `vital select` would load it.

Throughput, in candidates/s and turns/s over the same first `--throughput-n` candidates:

* **loop**: one forward pass per turn (`score_texts_images` with a batch of one), on the first `--loop-n`;
* **per-turn path**: the previous scoring function, in the same run: streamed batches, every row checked, but
  every turn's image preprocessed and encoded again (`score_texts_images` over one (image, text) input per turn), in
  one process;
* **batched**: `vital.selection.score_candidates` as the select stage runs it (streamed batches of `--batch-size`;
  one DataLoader worker process decodes, preprocesses and tokenises ahead; each image preprocessed and encoded once
  per candidate, texts in even batches), 1 torch thread, then 2 threads; the worker's start-up is inside the time;
* **pure forward**: the model alone over the same inputs, preprocessed beforehand (image and text encoders, head):
  the bound the whole path is measured against;
* **2 processes**: the same function under `accelerate launch --config_file accelerate_configs/cpu.yaml` (two gloo
  processes, 1 thread each, each scoring its slice, gathered on the main process). The time is the scoring itself,
  between two barriers, after both processes loaded the model; process start-up is reported apart.

CPU: beside each path's time, the CPU seconds it used: this process and its DataLoader workers (their CPU is counted
once they exit). CPU over the machine's cores is the least wall time the path could take here, so the last line also
prints the most the batched path could gain over the per-turn path on this machine: the per-turn path's time against
the batched path's CPU spread over every core.

Memory: `score_candidates` over all `--stream-n` candidates in one call, batched, while a logging handler records at
every 10,000 candidates the process's RSS, its anonymous part (`RssAnon`: heap and tensors; memory-mapped Arrow pages
are file-backed and reclaimable, so they are left out) and the peak RSS (`VmHWM`). With `--tracemalloc`, the Python
heap as well (slower). What does grow is the result itself: an id, a score and the turn scores per candidate.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported, not run as a script
from _results import record  # noqa: E402


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have exited (DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def proc_status() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM of this process, in MiB (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------
def _image_pool(n: int = 256, size: int = 24) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    pool = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        pool.append(buffer.getvalue())
    return pool


def _rows(n: int):
    from vital.data.schemas import image_part, text_part

    pool = _image_pool()
    words = [
        "the",
        "scan",
        "shows",
        "a",
        "rounded",
        "opacity",
        "in",
        "the",
        "left",
        "lower",
        "lobe",
        "with",
        "a",
        "smooth",
        "margin",
        "and",
        "no",
        "effusion",
    ]
    rng = np.random.default_rng(1)
    for i in range(n):
        messages = []
        for t in range(1 + i % 2):
            question = f"What does region {t} of figure {i} show?"
            answer = " ".join(rng.choice(words, size=int(rng.integers(8, 24))))
            content = [image_part(), text_part(question)] if t == 0 else [text_part(question)]
            messages += [{"role": "user", "content": content}, {"role": "assistant", "content": [text_part(answer)]}]
        yield {
            "id": f"synthetic-{i:06d}",
            "pair_id": f"pair-{i:06d}",
            "images": [{"bytes": pool[i % len(pool)], "path": f"{i % len(pool)}.png"}],
            "messages": messages,
            "modality": "other",
            "caption": "A synthetic figure.",
            "mentions": [],
            "generation": None,
        }


def candidates_on_disk(workdir: Path, n: int):
    """``n`` synthetic candidates in an Arrow file under ``workdir`` (written once), memory-mapped."""
    from datasets import Dataset

    from vital.data.schemas import CANDIDATE_FEATURES

    return Dataset.from_generator(
        _rows,
        gen_kwargs={"n": n},
        features=CANDIDATE_FEATURES,
        cache_dir=str(workdir / "datasets"),
        writer_batch_size=1000,
    )


def selector_folder(workdir: Path) -> Path:
    """A saved tiny selector (random CLIP + MLP head) and its processor."""
    import torch

    from vital.selector import SelectorModel
    from vital.testing.tiny_models import build_tiny_clip

    folder = workdir / "selector"
    if not (folder / "config.json").is_file():
        clip = workdir / "tiny-clip"
        _, processor = build_tiny_clip(save_dir=clip, seed=0)
        torch.manual_seed(0)
        SelectorModel.from_backbone(clip, hidden_sizes=[64, 64]).save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder


def load_selector(folder: Path):
    from transformers import AutoModel, AutoProcessor

    import vital.selector  # noqa: F401  (registers the selector)

    return AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------------------------------------------------
def per_sample_loop(model, processor, candidates) -> tuple[float, int]:
    """Seconds and turns for one forward pass per turn, decoding each candidate's image per turn."""
    from vital.data.schemas import qa_turns
    from vital.selector import candidate_turn_text, score_texts_images

    fields = model.config.text_fields
    turns = 0
    start = time.perf_counter()
    for row in candidates:
        for t in range(len(qa_turns(row["messages"]))):
            score_texts_images(
                model, processor, [row["images"][0]], [candidate_turn_text(row, t, fields)], batch_size=1
            )
            turns += 1
    return time.perf_counter() - start, turns


def per_turn_path(model, processor, candidates, batch_size: int) -> tuple[float, int]:
    """Seconds and turns of the previous scoring function, as it was before each image was encoded once per candidate
    (``vital.selection.score_candidates`` at the parent of commit c7aa32c, in one process, on today's helpers): per
    Arrow batch, every row checked (quarantined on a `RecordError`), every turn's image preprocessed and encoded again
    (`score_texts_images` over one (image, text) input per turn), then the per-candidate bookkeeping."""
    from vital.data.errors import Quarantine, RecordError
    from vital.data.schemas import validate_messages
    from vital.selection import _float32, _n_turns, _open_images, _summary, aggregate_turn_scores
    from vital.selector import candidate_turn_text, score_texts_images

    fields = model.config.text_fields
    results, quarantine, index = [], Quarantine("skip"), 0
    start = time.perf_counter()
    for batch in candidates.with_format("arrow").iter(batch_size=batch_size):
        images, texts, owners = [], [], []
        for row in batch.to_pylist():
            rid = str(row.get("id"))
            try:
                opened = _open_images(row, rid)
                validate_messages(row.get("messages"), rid, "messages", n_images=len(opened))
                turns = [candidate_turn_text(row, t, fields) for t in range(_n_turns(row))]
                if not turns:
                    raise RecordError(rid, "messages", "no question-answer turn to score")
            except RecordError as error:
                quarantine.add(error, _summary(row))
            else:
                owners.append((index, rid, len(turns)))
                images += [opened[0]] * len(turns)
                texts += turns
            index += 1
        scores = score_texts_images(model, processor, images, texts, batch_size=batch_size)
        position = 0
        for row_index, rid, n in owners:
            turn_scores = [_float32(s) for s in scores[position : position + n]]
            position += n
            if any(math.isnan(s) for s in turn_scores):
                raise ValueError(f"the selector scored candidate {rid!r} NaN")
            results.append((row_index, rid, aggregate_turn_scores(turn_scores, "mean"), turn_scores))
    results.sort(key=lambda r: r[0])
    return time.perf_counter() - start, sum(len(r[3]) for r in results)


def pure_forward(model, processor, candidates, batch_size: int) -> tuple[float, int]:
    """Seconds of the model alone (image encoder once per candidate, text encoder per turn, head) over the same
    batches as `score_candidates`, with every input decoded, preprocessed and tokenised beforehand."""
    import torch

    from vital.data.schemas import qa_turns
    from vital.selection import _even_chunks, _open_images
    from vital.selector import candidate_turn_text
    from vital.selector.modeling import _pooled

    fields = model.config.text_fields
    tokenizer = processor.tokenizer
    prepared = []
    for rows in candidates.with_format("arrow").iter(batch_size=batch_size):
        rows = rows.to_pylist()
        pixels = processor.image_processor([_open_images(r, r["id"])[0] for r in rows], return_tensors="pt")
        texts = [candidate_turn_text(r, t, fields) for r in rows for t in range(len(qa_turns(r["messages"])))]
        owners = torch.tensor([i for i, r in enumerate(rows) for _ in range(len(qa_turns(r["messages"])))])
        chunks = [tokenizer(texts[a:b], padding=True, truncation=True, return_tensors="pt")
                  for a, b in _even_chunks(len(texts), batch_size)]  # fmt: skip
        prepared.append((pixels["pixel_values"], chunks, owners))
    turns = sum(len(owners) for _, _, owners in prepared)
    backbone = model.backbone
    start = time.perf_counter()
    with torch.no_grad():
        for pixels, chunks, owners in prepared:
            image = _pooled(backbone.get_image_features(pixel_values=pixels))[owners]
            text = torch.cat([_pooled(backbone.get_text_features(**chunk)) for chunk in chunks])
            if model.config.normalize_features:
                image, text = torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)
            model.head(torch.cat([image, text], dim=-1))
    return time.perf_counter() - start, turns


def batched(model, processor, candidates, batch_size: int, state=None):
    from vital.selection import score_candidates

    start = time.perf_counter()
    scored = score_candidates(model, processor, candidates, batch_size=batch_size, state=state)
    return time.perf_counter() - start, scored


def worker(args) -> None:
    """One process of the two-process run (under accelerate launch): score this process's slice, report on rank 0."""
    import torch
    from accelerate import PartialState

    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    workdir = Path(args.workdir)
    candidates = candidates_on_disk(workdir, args.stream_n).select(range(args.throughput_n))
    model, processor = load_selector(selector_folder(workdir))
    state.wait_for_everyone()
    seconds, scored = batched(model, processor, candidates, args.batch_size, state)
    state.wait_for_everyone()
    if state.is_main_process:
        turns = sum(len(t) for t in scored.turn_scores)
        print("RESULT " + json.dumps({"seconds": seconds, "candidates": len(scored), "turns": turns}), flush=True)


def two_processes(args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml"]
    command += [__file__, "--worker", "--workdir", args.workdir, "--stream-n", str(args.stream_n)]
    command += ["--throughput-n", str(args.throughput_n), "--batch-size", str(args.batch_size)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"accelerate launch failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[0][len("RESULT ") :]), "wall_with_startup": wall}


# ---------------------------------------------------------------------------------------------------------------------
# Streaming memory
# ---------------------------------------------------------------------------------------------------------------------
class MemoryProbe(logging.Handler):
    """Records memory whenever score_candidates logs its progress (every ``log_every`` candidates)."""

    def __init__(self, use_tracemalloc: bool):
        super().__init__(logging.INFO)
        self.samples: list[dict] = []
        self.use_tracemalloc = use_tracemalloc

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("scored "):
            return
        sample = {"candidates": int(record.args[0]), **proc_status()}
        if self.use_tracemalloc:
            import tracemalloc

            current, peak = tracemalloc.get_traced_memory()
            sample.update(py_current=current / 2**20, py_peak=peak / 2**20)
        self.samples.append(sample)


def stream(model, processor, candidates, batch_size: int, use_tracemalloc: bool) -> tuple[float, list[dict], dict]:
    from vital.selection import score_candidates

    probe = MemoryProbe(use_tracemalloc)
    selection_logger = logging.getLogger("vital.selection")
    selection_logger.setLevel(logging.INFO)
    selection_logger.addHandler(probe)
    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
    before = proc_status()
    start = time.perf_counter()
    try:
        score_candidates(model, processor, candidates, batch_size=batch_size, log_every=10_000)
    finally:
        selection_logger.removeHandler(probe)
    return time.perf_counter() - start, probe.samples, before


# ---------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--throughput-n", type=int, default=2000, help="candidates for the throughput runs")
    parser.add_argument("--loop-n", type=int, default=300, help="candidates for the per-sample loop (slow)")
    parser.add_argument("--stream-n", type=int, default=100_000, help="candidates streamed for the memory check")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the compared paths (median time kept)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vital-bench-selection"))
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the Python heap (slower)")
    parser.add_argument("--skip-processes", action="store_true", help="skip the two-process run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.worker:
        worker(args)
        return {}

    import datasets
    import torch

    datasets.disable_progress_bars()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    candidates = candidates_on_disk(workdir, args.stream_n)
    print(
        f"{len(candidates)} candidates on disk ({candidates.cache_files[0]['filename']}), "
        f"{time.perf_counter() - start:.1f} s to write or open"
    )
    model, processor = load_selector(selector_folder(workdir))
    subset = candidates.select(range(min(args.throughput_n, len(candidates))))
    results: dict = {}

    # 1. Throughput.
    torch.set_num_threads(1)
    seconds, turns = per_sample_loop(model, processor, subset.select(range(min(args.loop_n, len(subset)))))
    results["loop"] = {"candidates": min(args.loop_n, len(subset)), "turns": turns, "seconds": seconds}
    # The compared paths take turns, `--repeats` rounds, and each keeps its median time: a burst of load on the
    # machine then falls on every path alike rather than on whichever ran during it.
    timings: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        before = cpu_seconds()
        seconds, turns = per_turn_path(model, processor, subset, args.batch_size)
        cpu.setdefault("per_turn", []).append(cpu_seconds() - before)
        timings.setdefault("per_turn", []).append(seconds)
        results["per_turn"] = {"candidates": len(subset), "turns": turns}
        seconds, turns = pure_forward(model, processor, subset, args.batch_size)
        timings.setdefault("pure_forward", []).append(seconds)
        results["pure_forward"] = {"candidates": len(subset), "turns": turns}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            before = cpu_seconds()
            seconds, scored = batched(model, processor, subset, args.batch_size)
            cpu.setdefault(f"batched_{threads}t", []).append(cpu_seconds() - before)
            turns = sum(len(t) for t in scored.turn_scores)
            timings.setdefault(f"batched_{threads}t", []).append(seconds)
            results[f"batched_{threads}t"] = {"candidates": len(scored), "turns": turns}
            torch.set_num_threads(1)
    for key, seconds in timings.items():
        results[key]["seconds"] = float(np.median(seconds))
        results[key]["all_seconds"] = seconds
    for key, seconds in cpu.items():
        results[key]["cpu_seconds"] = float(np.median(seconds))
    if not args.skip_processes:
        results["two_processes"] = two_processes(args)
    print(
        f"\nThroughput ({len(subset)} candidates, batch {args.batch_size}; loop on {results['loop']['candidates']}; "
        f"median of {args.repeats} rounds, the paths taking turns)"
    )
    print(f"{'mode':<26}{'candidates/s':>14}{'turns/s':>10}{'speed-up':>10}{'CPU s':>8}")
    base = results["loop"]["candidates"] / results["loop"]["seconds"]
    labels = {
        "loop": "per-sample loop, 1 thread",
        "per_turn": "per-turn path (before)",
        "batched_1t": "batched, 1 thread",
        "batched_2t": "batched, 2 threads",
        "pure_forward": "pure forward, 1 thread",
    }
    labels["two_processes"] = "batched, 2 processes x 1"
    for key, label in labels.items():
        if key in results:
            r = results[key]
            rate = r["candidates"] / r["seconds"]
            cpu_column = f"{r['cpu_seconds']:>8.2f}" if "cpu_seconds" in r else ""
            print(f"{label:<26}{rate:>14.1f}{r['turns'] / r['seconds']:>10.1f}{rate / base:>9.1f}x{cpu_column}")
    if "two_processes" in results:
        print(f"(two processes: {results['two_processes']['wall_with_startup']:.1f} s wall including start-up)")
    rate = {key: results[key]["candidates"] / results[key]["seconds"] for key in ("per_turn", "batched_1t")}
    pure = results["pure_forward"]["candidates"] / results["pure_forward"]["seconds"]
    print(
        f"batched vs per-turn path: {rate['batched_1t'] / rate['per_turn']:.2f}x candidates/s; "
        f"pure forward vs batched: {pure / rate['batched_1t']:.2f}x (the path's overhead over the model alone)"
    )
    cores = len(os.sched_getaffinity(0))
    least = results["batched_1t"]["cpu_seconds"] / cores
    print(
        f"CPU: batched {results['batched_1t']['cpu_seconds']:.2f} s (this process and its worker), per-turn path "
        f"{results['per_turn']['cpu_seconds']:.2f} s; over {cores} cores the batched path takes at least {least:.2f} s "
        f"here, so it can be at most {results['per_turn']['seconds'] / least:.2f}x the per-turn path"
    )

    # 2. Memory while streaming every candidate from disk.
    torch.set_num_threads(1)
    seconds, samples, before = stream(model, processor, candidates, args.batch_size, args.tracemalloc)
    results["stream"] = {"candidates": len(candidates), "seconds": seconds, "before": before, "samples": samples}
    print(f"\nStreaming {len(candidates)} candidates from disk: {seconds:.1f} s ({len(candidates) / seconds:.0f}/s)")
    print(f"before: RSS {before['VmRSS']:.0f} MiB (anonymous {before['RssAnon']:.0f}), peak {before['VmHWM']:.0f}")
    header = f"{'scored':>8}{'RSS MiB':>10}{'anon MiB':>10}{'file MiB':>10}{'peak RSS':>10}"
    print(header + (f"{'py heap':>10}{'py peak':>10}" if args.tracemalloc else ""))
    for s in samples:
        line = f"{s['candidates']:>8}{s['VmRSS']:>10.0f}{s['RssAnon']:>10.0f}{s['RssFile']:>10.0f}{s['VmHWM']:>10.0f}"
        if args.tracemalloc:
            line += f"{s['py_current']:>10.1f}{s['py_peak']:>10.1f}"
        print(line)
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    record(
        "selection",
        "batched vs per-turn path",
        rate["batched_1t"],
        rate["per_turn"],
        2 * rate["per_turn"],
        "samples/s",
    )
    record("selection", "batched vs pure forward", rate["batched_1t"], baseline=pure, unit="samples/s")
    for key, label in labels.items():
        if key not in ("loop", "per_turn", "pure_forward") and key in results:
            rate = results[key]["candidates"] / results[key]["seconds"]
            record("selection", f"{label} vs per-sample loop", rate, baseline=base, unit="samples/s")
    record("selection", f"streaming {len(candidates)} candidates", len(candidates) / seconds, unit="samples/s")
    record("selection", "peak RSS while streaming", max([before["VmHWM"], *(s["VmHWM"] for s in samples)]), unit="MiB")
    return results


if __name__ == "__main__":
    main()
