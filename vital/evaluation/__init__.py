"""Evaluation: VQA metrics in LLaVA-Med-compatible (``legacy``) and fixed (``strict``) modes, and judge-reply parsing.

The `evaluate` modules in ``vital/metrics/vqa_legacy`` and ``vital/metrics/vqa_strict`` wrap `score_vqa`.
"""

from vital.evaluation.judge_parsing import ParseError, combine_swapped, parse_pair_scores, parse_verdict
from vital.evaluation.vqa_metrics import (
    legacy_closed_hit,
    legacy_exact_match,
    legacy_normalize,
    legacy_open_scores,
    score_vqa,
    strict_closed_answer,
    strict_closed_hit,
    strict_normalize,
    strict_open_recall,
)


__all__ = [
    "ParseError",
    "combine_swapped",
    "legacy_closed_hit",
    "legacy_exact_match",
    "legacy_normalize",
    "legacy_open_scores",
    "parse_pair_scores",
    "parse_verdict",
    "score_vqa",
    "strict_closed_answer",
    "strict_closed_hit",
    "strict_normalize",
    "strict_open_recall",
]
