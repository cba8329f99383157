"""Key figures of the benchmark scripts, as JSON lines for `vital bench`'s results table.

A script calls ``record(...)`` for each headline figure it prints. When ``$VITAL_BENCH_RESULTS`` names a file, the
figure is appended to it as one JSON line; otherwise nothing happens, so the scripts run alone as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


RESULTS_ENV = "VITAL_BENCH_RESULTS"


def record(
    name: str,
    figure: str,
    value: float,
    baseline: float | None = None,
    target: float | None = None,
    unit: str = "",
) -> None:
    """Append one figure (benchmark ``name``, what ``figure`` measures, its ``value``) to ``$VITAL_BENCH_RESULTS``.

    ``baseline`` is what the value is compared with (ratio = value / baseline); ``target`` is the figure to reach.
    """
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    row = {"benchmark": name, "figure": figure, "value": value, "baseline": baseline, "target": target, "unit": unit}
    with open(Path(path), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
