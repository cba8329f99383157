"""Inter-annotator agreement on items that two or more clinicians annotated: percent agreement and Cohen's kappa.

For two annotators who labelled the same ``n`` items, with ``p_o`` the share of items they labelled alike and ``p_e``
the share expected by chance from each one's label frequencies (``sum_k p1(k) * p2(k)``)::

    kappa = (p_o - p_e) / (1 - p_e)

Weighted kappa (for ordered labels such as 0-10 scores) replaces "alike" with a disagreement weight ``w(i, j)``
(``|i - j|`` linear, ``(i - j)^2`` quadratic, both scaled to [0, 1] by the largest distance)::

    kappa_w = 1 - sum(w * observed) / sum(w * expected)

Kappa is undefined (NaN) when chance agreement is already perfect (both annotators used a single, identical label).
With more than two annotators, `pairwise_agreement` gives every pair on its shared items, and the summary averages the
pairs' kappas (Light's kappa).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal


Weights = Literal["linear", "quadratic"] | None


def percent_agreement(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """The share of items (0-1) that two annotators labelled alike."""
    _check(a, b)
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def cohen_kappa(
    a: Sequence[Hashable], b: Sequence[Hashable], weights: Weights = None, labels: Sequence[Hashable] | None = None
) -> float:
    """Cohen's kappa of two annotators' labels of the same items (NaN when undefined, see the module docstring).

    Args:
        a, b: the two annotators' labels, item by item.
        weights: ``None`` (nominal labels), ``"linear"`` or ``"quadratic"`` (ordered, numeric labels).
        labels: the label set (default: every label used); weighted kappa measures distances between numeric labels.
    """
    _check(a, b)
    n = len(a)
    categories = list(labels) if labels is not None else sorted(set(a) | set(b), key=_sort_key)
    if weights is None:
        observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
        count_a, count_b = Counter(a), Counter(b)
        expected = sum(count_a[k] * count_b[k] for k in categories) / (n * n)
        return math.nan if expected == 1 else (observed - expected) / (1 - expected)
    if weights not in ("linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    values = [float(k) for k in categories]
    span = max(values) - min(values)
    if span == 0:
        return math.nan

    def w(x, y):
        d = abs(float(x) - float(y)) / span
        return d if weights == "linear" else d * d

    observed = sum(w(x, y) for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[i] * count_b[j] * w(i, j) for i in count_a for j in count_b) / (n * n)
    return math.nan if expected == 0 else 1 - observed / expected


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of two annotators on the items both labelled."""

    annotator_a: str
    annotator_b: str
    n: int
    percent: float  # 0-1
    kappa: float  # NaN when undefined
    weighted_kappa: float | None = None  # for ordered labels


@dataclass(frozen=True)
class AgreementReport:
    """Every annotator pair with shared items, and the summary over them."""

    pairs: list[PairAgreement]
    items_multiply_annotated: int  # items labelled by two or more annotators

    @property
    def mean_percent(self) -> float:
        """Percent agreement over every annotator pair's shared items, pooled (each shared item-pair counts once)."""
        total = sum(p.n for p in self.pairs)
        return sum(p.percent * p.n for p in self.pairs) / total if total else math.nan

    @property
    def mean_kappa(self) -> float:
        """Light's kappa: the mean of the pairs' Cohen's kappas (undefined pairs left out)."""
        kappas = [p.kappa for p in self.pairs if not math.isnan(p.kappa)]
        return sum(kappas) / len(kappas) if kappas else math.nan

    def to_dict(self) -> dict:
        return {
            "items_multiply_annotated": self.items_multiply_annotated,
            "percent_agreement": _finite(self.mean_percent),
            "mean_kappa": _finite(self.mean_kappa),
            "pairs": [
                {
                    "annotators": [p.annotator_a, p.annotator_b],
                    "items": p.n,
                    "percent_agreement": _finite(p.percent),
                    "kappa": _finite(p.kappa),
                    **({"weighted_kappa": _finite(p.weighted_kappa)} if p.weighted_kappa is not None else {}),
                }
                for p in self.pairs
            ],
        }


def pairwise_agreement(
    labels: Mapping[str, Mapping[str, Hashable]], weights: Weights = None, min_items: int = 1
) -> AgreementReport:
    """Agreement of every pair of annotators on the items both labelled.

    Args:
        labels: ``{annotator: {item id: label}}``.
        weights: also compute a weighted kappa (ordered labels) with these weights.
        min_items: leave out pairs sharing fewer items.
    """
    pairs = []
    for first, second in itertools.combinations(sorted(labels), 2):
        shared = sorted(set(labels[first]) & set(labels[second]))
        if len(shared) < min_items or not shared:
            continue
        a = [labels[first][i] for i in shared]
        b = [labels[second][i] for i in shared]
        pairs.append(
            PairAgreement(
                first,
                second,
                len(shared),
                percent_agreement(a, b),
                cohen_kappa(a, b),
                cohen_kappa(a, b, weights) if weights else None,
            )
        )
    counts = Counter(item for per_annotator in labels.values() for item in per_annotator)
    return AgreementReport(pairs, sum(1 for n in counts.values() if n >= 2))


def agreement_markdown(report: AgreementReport, what: str) -> str:
    """The agreement section of a card."""
    if not report.pairs:
        return f"No item was annotated by two annotators, so there is no inter-annotator agreement to report ({what})."
    weighted = any(p.weighted_kappa is not None for p in report.pairs)
    lines = [
        f"{report.items_multiply_annotated} item(s) were annotated by two or more annotators ({what}). "
        f"Percent agreement {_fmt(report.mean_percent, pct=True)}, mean Cohen's kappa {_fmt(report.mean_kappa)}.",
        "",
        "| annotators | shared items | agreement | Cohen's kappa |" + (" weighted kappa |" if weighted else ""),
        "|---|---|---|---|" + ("---|" if weighted else ""),
    ]
    for p in report.pairs:
        row = f"| {p.annotator_a} / {p.annotator_b} | {p.n} | {_fmt(p.percent, pct=True)} | {_fmt(p.kappa)} |"
        if weighted:
            row += f" {_fmt(p.weighted_kappa)} |"
        lines.append(row)
    return "\n".join(lines)


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def _sort_key(value: Hashable):
    return (0, float(value), "") if isinstance(value, int | float) else (1, 0.0, str(value))


def _check(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"the two annotators labelled {len(a)} and {len(b)} items; they must label the same items")
    if not a:
        raise ValueError("no items to compare")
