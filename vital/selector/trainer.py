"""Pairwise training of the selector: a thin subclass of TRL's ``RewardTrainer`` that takes images and pair weights.

TRL's reward trainer tokenises text-only pairs and drops every other column. :class:`SelectorTrainer` keeps its
training loop, logging and metrics (accuracy, margin, reward range, tokens: TRL's own ``compute_loss`` computes them)
and overrides only what images and weights need: ``_prepare_dataset`` (no text-only tokenisation: the collator
processes images and text on the fly), ``_set_signature_columns_if_needed`` (keep the columns the collator reads) and
``compute_loss`` (the pair weights and sources are taken out of the batch, TRL's ``compute_loss`` runs the model and
records its metrics, and its unweighted loss is replaced by the weighted Bradley–Terry or the paper's hinge). The
trainer never pushes by itself (`vital.runs.HubLayerPushMixin`): the stages push through the hub layer. ``__init__`` only fills defaults: the :class:`SelectorCollator`, the processor,
and the pair sources as evaluation labels so that ``compute_metrics`` can split judge accuracy from clinician
alignment.

Example (also under ``accelerate launch``, and with ``peft_config=selector_lora_config()`` for LoRA)::

    trainer = SelectorTrainer(
        model=SelectorModel.from_backbone(backbone_dir),
        args=SelectorTrainingConfig("out", loss_type="hinge", clinician_weight=10.0),
        train_dataset=concatenate_datasets([judge_train, clinician_train]),
        eval_dataset={"judge": judge_heldout, "clinician": clinician_heldout},
        processing_class=processor,
    )
    trainer.train()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import AutoProcessor
from trl import RewardConfig, RewardTrainer

from vital.runs import HubLayerPushMixin
from vital.selector.data import SelectorCollator
from vital.selector.metrics import compute_metrics as selector_compute_metrics


__all__ = [
    "LOSS_TYPES",
    "WEIGHT_NORMALIZATIONS",
    "SelectorTrainer",
    "SelectorTrainingConfig",
    "clipping_caps_weights",
    "pairwise_loss",
    "selector_lora_config",
]

logger = logging.getLogger(__name__)

LOSS_TYPES = ("bradley_terry", "hinge")
WEIGHT_NORMALIZATIONS = ("training_set", "none")
"""How the weighted pair losses of a batch become its loss: ``training_set`` (ours) divides ``mean(w l)`` by the
training set's mean weight; ``none`` (the official code) is ``mean(w l)`` over the batch."""


@dataclass
class SelectorTrainingConfig(RewardConfig):
    """
    `trl.RewardConfig` plus what the selector's pairwise loss needs. The hub options are TRL's own: `push_to_hub`,
    `hub_model_id` (the selector's repo), `hub_revision` (its branch; unset: `main`) and `hub_private_repo` (unset:
    private); the stages push through the hub layer, never the trainer itself.

    Defaults that differ from `RewardConfig`: activation (gradient) checkpointing off (dual encoders are small, and
    open_clip backbones do not support transformers' switch; turn it on with `activation_checkpointing=True`), and
    `max_length=None` (texts are truncated to the tokenizer's `model_max_length`, never filtered out).

    Parameters:
        loss_type (`str`, *optional*, defaults to `"bradley_terry"`):
            `"bradley_terry"`: `-w * logsigmoid(r_c - r_r)`; `"hinge"` (the paper's ranking loss):
            `w * max(0, margin - (r_c - r_r))`. How the batch's losses are combined is `weight_normalization`.
        margin (`float`, *optional*, defaults to `1.0`):
            The hinge's margin (the paper's 1.0); unused by `bradley_terry`.
        weight_normalization (`str`, *optional*, defaults to `"training_set"`):
            `"training_set"` (ours): a weighted mean over the *training set*, `sum(w l) / sum(w)`: a batch contributes
            `sum_batch(w l) / (batch size * mean training weight)`. (A per-batch `sum(w l) / sum(w)` would cap the
            influence of rare, heavily weighted pairs at the share of batches that contain one, whatever their
            weight.) The mean training weight is read from the train dataset's `weight` / `source` columns; for an
            `IterableDataset` the per-batch weighted mean is used. `"none"` (the official code): `mean_batch(w l)`,
            so a batch holding a pair of weight 400 has a loss (and gradient) hundreds of times larger than one
            without: the learning rate acts per weight.
        clinician_weight (`float`, *optional*):
            If set, the weight of every clinician pair (`source == "clinician"`), replacing the `weight` stored in the
            data; unset uses the stored weights (set by `load_clinician_pairs`).
        gradient_checkpointing (`bool`, *optional*):
            Deprecated alias of `activation_checkpointing`, left unset (off) rather than TRL's `True`: transformers 5
            reads the alias only when it is set, and warns.
        max_length (`int`, *optional*):
            Token limit per scored text (truncation); unset uses the tokenizer's `model_max_length`.
    """

    loss_type: str = field(
        default="bradley_terry",
        metadata={
            "help": "Pairwise loss: 'bradley_terry' (-w*logsigmoid(r_c - r_r)) or 'hinge' "
            "(w*max(0, margin - (r_c - r_r)), the paper's ranking loss). Weighted mean over pairs.",
            "choices": list(LOSS_TYPES),
        },
    )
    margin: float = field(default=1.0, metadata={"help": "Margin of the hinge loss (the paper uses 1.0)."})
    weight_normalization: str = field(
        default="training_set",
        metadata={
            "help": "'training_set': batch loss = mean(w*l) / (the training set's mean weight), a weighted mean over "
            "the training set (ours); 'none': mean(w*l) over the batch (the official code).",
            "choices": list(WEIGHT_NORMALIZATIONS),
        },
    )
    clinician_weight: float | None = field(
        default=None,
        metadata={
            "help": "If set, the loss weight of every clinician pair (source == 'clinician'), replacing the weight "
            "stored in the data. None keeps the stored weights."
        },
    )
    # Unset (off) rather than TRL's True: transformers 5 reads the deprecated alias only when it is set, and warns.
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of `activation_checkpointing` (off by default for the selector)."},
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Token limit per scored text (truncation); None uses the tokenizer's model_max_length."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.weight_normalization not in WEIGHT_NORMALIZATIONS:
            raise ValueError(
                f"weight_normalization must be one of {WEIGHT_NORMALIZATIONS}, got {self.weight_normalization!r}"
            )
        if self.margin < 0:
            raise ValueError(f"margin must be non-negative, got {self.margin}")
        if self.clinician_weight is not None and not self.clinician_weight > 0:
            raise ValueError(f"clinician_weight must be positive, got {self.clinician_weight}")


def pairwise_loss(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    weights: torch.Tensor | None = None,
    loss_type: str = "bradley_terry",
    margin: float = 1.0,
    mean_weight: float | None = None,
) -> torch.Tensor:
    """Weighted pairwise loss ``sum(w * l) / (n * mean_weight)`` over the ``n`` pairs of a batch.

    ``l = -logsigmoid(r_c - r_r)`` for ``"bradley_terry"``, ``l = max(0, margin - (r_c - r_r))`` for ``"hinge"``.
    Without weights every pair weighs 1. ``mean_weight`` defaults to the batch's mean weight, which gives the batch's
    weighted mean ``sum(w l) / sum(w)``; the trainer passes the training set's mean weight instead, so that the batch
    losses average to the weighted mean over the whole training set (see :class:`SelectorTrainingConfig`).
    """
    difference = rewards_chosen.float() - rewards_rejected.float()
    if loss_type == "bradley_terry":
        losses = -nn.functional.logsigmoid(difference)
    elif loss_type == "hinge":
        losses = torch.clamp(margin - difference, min=0)
    else:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if weights is None:
        weights = torch.ones_like(losses)
    weights = weights.to(losses)
    if mean_weight is None:
        return (weights * losses).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)
    return (weights * losses).mean() / mean_weight


def selector_lora_config(
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
):
    """A ``peft.LoraConfig`` for the selector: LoRA on the backbone's attention, the MLP head fully trained and saved.

    ``target_modules`` names CLIP / SigLIP attention projections (both towers). The head is in ``modules_to_save``;
    no ``task_type`` is set, so the PEFT model passes ``pixel_values`` through unchanged.
    """
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(target_modules),
        modules_to_save=["head"],
    )


class SelectorTrainer(HubLayerPushMixin, RewardTrainer):
    """``trl.RewardTrainer`` for (image, text) pairs with per-pair weights.

    Args:
        model: a :class:`SelectorModel` (or a saved selector folder, loaded with ``AutoModelForSequenceClassification``
            after ``import vital.selector``).
        args: a :class:`SelectorTrainingConfig`.
        train_dataset, eval_dataset: preference rows (``vital.data.schemas.PREFERENCE_FEATURES``, or judge pairs with
            per-side columns). ``eval_dataset`` may be a dict, e.g. ``{"judge": ..., "clinician": ...}``.
        processing_class: the backbone's processor (tokenizer + image processor); loaded from the model's folder when
            None. It is what ``save_model`` writes next to the weights. A bare tokenizer works only with your own
            ``data_collator``.
        data_collator: default :class:`SelectorCollator` with ``args.max_length`` and the model's ``text_fields`` and
            ``text_padding``.
        compute_metrics: default :func:`vital.selector.metrics.compute_metrics` (pair accuracy, judge accuracy,
            clinician alignment, AUC, mean rank, MAP).
        **kwargs: passed on to ``RewardTrainer`` (``callbacks``, ``optimizers``, ``peft_config``, ...).
    """

    _tag_names = ["trl", "reward-trainer", "biomed-vital", "selector"]

    def __init__(
        self,
        model: Any,
        args: SelectorTrainingConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = selector_compute_metrics,
        **kwargs: Any,
    ):
        if args is None:
            args = SelectorTrainingConfig("selector")
        if processing_class is None:
            source = model if isinstance(model, str) else model.config.name_or_path
            processing_class = AutoProcessor.from_pretrained(source)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if data_collator is None:
            if not hasattr(processing_class, "image_processor"):
                raise ValueError("processing_class must be the backbone's processor (tokenizer + image processor)")
            config = _selector_config(model)
            data_collator = SelectorCollator(
                processing_class,
                max_length=args.max_length,
                text_fields=list(getattr(config, "text_fields", None) or ("question", "answer")),
                padding=getattr(config, "text_padding", True),
                text_template=getattr(config, "text_template", None),
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,  # TRL reads pad/eos tokens from it
            compute_metrics=compute_metrics,
            **kwargs,
        )
        # Saved with the model (Trainer._save writes processing_class), so the folder reloads with AutoProcessor.
        self.processing_class = processing_class
        self.mean_pair_weight = (
            _mean_pair_weight(self.train_dataset, self.args.clinician_weight)
            if self.args.weight_normalization == "training_set"
            else 1.0
        )
        self.max_pair_weight = _max_pair_weight(self.train_dataset, self.args.clinician_weight)
        if clipping_caps_weights(self.args, self.max_pair_weight):
            logger.warning(
                "gradient clipping is on (max_grad_norm=%g) and pairs weigh up to %g: clipping caps the gradient of "
                "every batch that holds a heavy pair, so raising the weight further barely changes the model. Set "
                "max_grad_norm: 0 to let the weight act.",
                self.args.max_grad_norm,
                self.max_pair_weight,
            )
        # The pair sources are the evaluation labels: prediction_step then returns them, and compute_metrics can tell
        # clinician pairs from model pairs.
        self.label_names = ["sources"]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # Images and text are processed on the fly by the collator; TRL's text-only tokenisation would drop the images.
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(getattr(self.data_collator, "columns", ())) or [
                "prompt",
                "images",
                "chosen",
                "rejected",
                "source",
                "weight",
            ]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        weights = inputs.pop("weights", None)
        sources = inputs.pop("sources", None)
        # TRL's compute_loss runs the model on the (chosen, rejected) batch and records TRL's metrics (reward range,
        # accuracy, margin, tokens) in self._metrics; only its loss, unweighted Bradley-Terry, is replaced here.
        _, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1).float(), chunks=2)
        if weights is None:
            weights = torch.ones_like(rewards_chosen)
        if self.args.clinician_weight is not None and sources is not None:
            weights = torch.where(sources.to(weights.device) > 0.5, float(self.args.clinician_weight), weights)

        loss = pairwise_loss(
            rewards_chosen, rewards_rejected, weights, self.args.loss_type, self.args.margin, self.mean_pair_weight
        )
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
        if return_outputs:
            # (n_pairs, 2) rewards: what prediction_step hands to compute_metrics.
            return loss, {"rewards": torch.stack([rewards_chosen, rewards_rejected], dim=1)}
        return loss


def clipping_caps_weights(args: Any, max_pair_weight: float | None) -> bool:
    """Whether gradient clipping is on (``max_grad_norm > 0``) while some pair weighs more than 1: then clipping caps
    the heavy pairs' batches and the clinician weight stops acting above some value."""
    clip = getattr(args, "max_grad_norm", None)
    return bool(clip) and clip > 0 and max_pair_weight is not None and max_pair_weight > 1


def _effective_weights(dataset: Any, clinician_weight: float | None) -> list[float] | None:
    columns = getattr(dataset, "column_names", None) or []
    if not isinstance(dataset, Dataset) or len(dataset) == 0 or "weight" not in columns:
        return None
    weights = [1.0 if w is None else float(w) for w in dataset["weight"]]
    if clinician_weight is not None and "source" in columns:
        weights = [clinician_weight if s == "clinician" else w for w, s in zip(weights, dataset["source"])]
    return weights


def _max_pair_weight(dataset: Any, clinician_weight: float | None) -> float | None:
    """Largest effective pair weight of the training set; for an unreadable set, the clinician weight (or None)."""
    weights = _effective_weights(dataset, clinician_weight)
    return max(weights) if weights else clinician_weight


def _mean_pair_weight(dataset: Any, clinician_weight: float | None) -> float | None:
    """Mean effective pair weight of the training set; None (batch weighted mean) when it cannot be read."""
    weights = _effective_weights(dataset, clinician_weight)
    return sum(weights) / len(weights) if weights else None


def _selector_config(model: Any) -> Any:
    if isinstance(model, str):
        from transformers import AutoConfig

        import vital.selector.modeling  # noqa: F401  (registers the config class)

        return AutoConfig.from_pretrained(model)
    return getattr(model, "config", None)
