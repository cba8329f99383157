"""Throughput of the VQA metrics on synthetic predictions, in both modes.

    python benchmarks/bench_metrics.py --n 100000

Predictions are model-like sentences (5-40 words, punctuation, numbers, the odd markdown), almost all distinct, so the
per-call normalisation cache helps only with the short ground-truth answers, as on a real split. Half the items are
closed (yes/no ground truth), half open.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported, not run as a script
from _results import record  # noqa: E402

from vital.evaluation.vqa_metrics import score_vqa


WORDS = [
    "the",
    "left",
    "right",
    "lung",
    "lobe",
    "lower",
    "upper",
    "mass",
    "lesion",
    "nodule",
    "opacity",
    "effusion",
    "pleural",
    "cardiac",
    "silhouette",
    "enlarged",
    "normal",
    "abnormal",
    "there",
    "is",
    "no",
    "evidence",
    "of",
    "a",
    "an",
    "in",
    "with",
    "without",
    "consolidation",
    "ct",
    "mri",
    "x-ray",
    "axial",
    "coronal",
    "t2-weighted",
    "image",
    "shows",
    "likely",
    "consistent",
    "hyperintense",
    "hypodense",
    "liver",
    "kidney",
    "spleen",
    "brain",
    "ventricle",
    "fracture",
    "rib",
]
MARKS = ["", "", "", "", ",", ".", ";", "!", "?", " -", "-", ":", "**"]
OPEN_TRUTHS = ["left lung", "right lower lobe", "pleural effusion", "ct", "mri", "liver", "axial", "brain", "3.5 cm"]


def synthetic_split(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(seed)
    predictions, references, answer_types = [], [], []
    for i in range(n):
        closed = i % 2 == 0
        words = [rng.choice(WORDS) + rng.choice(MARKS) for _ in range(rng.randint(5, 40))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), f"{rng.randint(1, 20)},{rng.randint(100, 999)}")
        if closed:
            words.insert(0, rng.choice(["Yes,", "No.", "**Yes**", "no", "Yes"]))
            references.append(rng.choice(["yes", "no"]))
        else:
            references.append(rng.choice(OPEN_TRUTHS))
        predictions.append(" ".join(words) + f" (case {i}).")
        answer_types.append("CLOSED" if closed else "OPEN")
    return predictions, references, answer_types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of synthetic items")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the best is reported")
    args = parser.parse_args()

    predictions, references, answer_types = synthetic_split(args.n)
    mean_words = sum(len(p.split()) for p in predictions) / len(predictions)
    print(f"{args.n:,} items, {mean_words:.1f} words per prediction on average")
    for mode in ("legacy", "strict"):
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = score_vqa(predictions, references, answer_types, mode=mode)
            best = min(best, time.perf_counter() - start)
        print(
            f"{mode:>6}: {best:6.2f} s, {args.n / best:>10,.0f} items/s  "
            f"(closed accuracy {out['closed_accuracy']:.2f}, open recall {out['open_recall']:.2f})"
        )
        record("metrics", f"{mode} items/s ({args.n:,} items)", args.n / best, unit="items/s")


if __name__ == "__main__":
    main()
