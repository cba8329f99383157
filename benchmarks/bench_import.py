"""Benchmark: importing LLaVA-format records with images from a local folder (`vital.data.llava.llava_to_messages`).

    python benchmarks/bench_import.py                 # 10k and 100k records
    python benchmarks/bench_import.py --quick         # 2k and 10k
    python benchmarks/bench_import.py --sizes 50000   # any sizes

For each size, a child process converts a JSON list of N records (each naming one of 2,000 small JPEGs under
sub-folders, every image read, decoded and embedded) into an on-disk Arrow dataset, and prints rows per second, the
peak resident memory (VmHWM) and the anonymous memory at the end (RssAnon: heap, not the memory-mapped Arrow pages).
The conversion streams (the JSON list is parsed one record at a time and rows are written in batches), so memory
should stay flat as N grows; the table shows whether it does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported, not run as a script
from _results import record as record_figure  # noqa: E402


N_IMAGES = 2000


def memory() -> dict[str, float]:
    """VmHWM and RssAnon of this process, in MiB (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "VmRSS"):
            out[key] = int(value.split()[0]) / 1024
    return out


def write_inputs(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    images = folder / "images"
    if not (images / f"PMC{N_IMAGES - 1:05d}" / "fig.jpg").exists():
        rng = np.random.default_rng(0)
        for i in range(N_IMAGES):
            path = images / f"PMC{i:05d}" / "fig.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path, quality=85)
    records = folder / f"records-{n}.json"
    with records.open("w", encoding="utf-8") as f:
        f.write("[")
        for i in range(n):
            record = {
                "id": i,
                "image": f"PMC{i % N_IMAGES:05d}/fig.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat does the figure show at 5 µm?"},
                    {"from": "gpt", "value": f"Figure {i}: an axial CT slice with a 3 cm lesion. " * 4},
                    {"from": "human", "value": "Anything else?"},
                    {"from": "gpt", "value": "A small effusion, α-grade."},
                ],
            }
            f.write(("," if i else "") + json.dumps(record, ensure_ascii=False))
        f.write("]")
    return records


def child(records: str, image_dir: str) -> None:
    from vital.data.llava import llava_to_messages

    start = time.perf_counter()
    dataset, quarantine = llava_to_messages(records, image_dir, errors="skip")
    elapsed = time.perf_counter() - start
    print(json.dumps({"rows": len(dataset), "quarantined": len(quarantine), "seconds": elapsed, **memory()}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    sizes = [2_000, 10_000] if args.quick else args.sizes
    print(f"{'records':>9}{'rows/s':>10}{'peak MiB':>10}{'anon MiB':>10}{'seconds':>9}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in sizes:
            records = write_inputs(folder, n)
            env = {**os.environ, "HF_DATASETS_CACHE": str(folder / "cache"), "TQDM_DISABLE": "1"}
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(records), str(folder / "images")],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            assert r["rows"] == n, r
            rate = n / r["seconds"]
            results.append((n, rate, r["VmHWM"], r["RssAnon"]))
            print(f"{n:>9}{rate:>10.0f}{r['VmHWM']:>10.0f}{r['RssAnon']:>10.0f}{r['seconds']:>9.1f}")
            record_figure("import", f"LLaVA records with images, {n} records", rate, unit="rows/s")
            record_figure("import", f"peak memory, {n} records", r["VmHWM"], unit="MiB")
            records.unlink()
            subprocess.run(["rm", "-rf", str(folder / "cache")], check=False)
    if len(results) > 1:
        (n0, _, p0, _), (n1, _, p1, _) = results[0], results[-1]
        print(f"peak memory {p0:.0f} MiB at {n0} records, {p1:.0f} MiB at {n1} ({n1 / n0:.0f}x the records)")


if __name__ == "__main__":
    main()
