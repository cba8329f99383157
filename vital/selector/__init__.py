"""The selector: an image+text scorer trained on judge and clinician pairwise preferences (``docs/design.md``,
Selector).

- :mod:`vital.selector.modeling`: :class:`SelectorConfig`, :class:`SelectorModel` (any CLIP-family dual encoder, or
  BiomedCLIP through open_clip, plus an MLP head), :func:`score_texts_images` for batched scoring.
- :mod:`vital.selector.data`: the text to score, :class:`SelectorCollator`, :func:`build_judge_pairs`,
  :func:`load_clinician_pairs`.
- :mod:`vital.selector.trainer`: :class:`SelectorTrainer` (a ``trl.RewardTrainer`` subclass) and
  :class:`SelectorTrainingConfig`.
- :mod:`vital.selector.metrics`: pair accuracy, clinician alignment, AUC, mean rank, MAP.
- :mod:`vital.selector.training`: backbones, clinician preferences, fitting and summarising (shared by the stages).
- What the ``train_selector`` and ``sweep_clinician_weight`` stages call: :mod:`vital.selector.arguments` (their
  script arguments), :mod:`vital.selector.inputs` (judge and clinician pairs at pinned commits),
  :mod:`vital.selector.runs` (where a fit lands, its fingerprint, a finished fit, the saved selector) and
  :mod:`vital.selector.publish` (the pairs and the selector pushed with their cards and tables).

Importing this package registers ``vital_selector`` with transformers' Auto classes.
"""

from vital.selector.data import (
    JUDGE_PAIR_FEATURES,
    OFFICIAL_TEXT_TEMPLATE,
    TEXT_FIELDS,
    SelectorCollator,
    build_judge_pairs,
    candidate_turn_text,
    compose_text,
    encode_texts_images,
    load_clinician_pairs,
    preference_side,
)
from vital.selector.metrics import (
    alignment_interval,
    average_precision,
    clinician_alignment,
    compute_metrics,
    mean_average_precision,
    normalized_mean_rank,
    official_mean_rank,
    pair_accuracy,
    preference_metrics,
    roc_auc,
)
from vital.selector.modeling import OpenClipBackbone, SelectorConfig, SelectorModel, score_texts_images
from vital.selector.trainer import (
    LOSS_TYPES,
    WEIGHT_NORMALIZATIONS,
    SelectorTrainer,
    SelectorTrainingConfig,
    clipping_caps_weights,
    pairwise_loss,
    selector_lora_config,
)


__all__ = [
    "JUDGE_PAIR_FEATURES",
    "LOSS_TYPES",
    "OFFICIAL_TEXT_TEMPLATE",
    "WEIGHT_NORMALIZATIONS",
    "TEXT_FIELDS",
    "OpenClipBackbone",
    "SelectorCollator",
    "SelectorConfig",
    "SelectorModel",
    "SelectorTrainer",
    "SelectorTrainingConfig",
    "alignment_interval",
    "average_precision",
    "build_judge_pairs",
    "candidate_turn_text",
    "clinician_alignment",
    "clipping_caps_weights",
    "compose_text",
    "compute_metrics",
    "encode_texts_images",
    "load_clinician_pairs",
    "mean_average_precision",
    "normalized_mean_rank",
    "official_mean_rank",
    "pair_accuracy",
    "pairwise_loss",
    "preference_metrics",
    "preference_side",
    "roc_auc",
    "score_texts_images",
    "selector_lora_config",
]
