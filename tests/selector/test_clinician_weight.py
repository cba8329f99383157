"""The clinician weight must act, under the paper profile's training settings.

Judges prefer a bright image whatever its text, and between two images of the same brightness the one whose text says
"normal"; clinicians prefer, between two images of the same brightness, the one saying "effusion" (conftest's
``brightness``, ``judge_wording`` and ``clinician_wording``): the judge and the clinicians conflict on the wording
pairs, and the clinicians' rule is in the text only. A weight that acts makes the clinician pairs fit better as it
rises, while the judge's brightness rule, and so held-out judge accuracy, stays.

The trainer settings are the paper profile's (``recipes/biomed_vital/train_selector.yaml``: Adam, constant rate, no
gradient clipping, hinge with margin 1 averaged over the batch as weight x hinge, a sigmoid head, the official text);
only the scale changes: a tiny random backbone, frozen (on 16 clinician pairs a trainable one memorises their noise,
and at weight 100 it drifts off the judge's rule too), about 9 epochs of batches of 16, a rate of 3e-4. Seen here:
clinician fit 0.19 / 0.50 / 0.81 at weights 1 / 10 / 100 (mean margin -0.004 / 0.002 / 0.007: the sigmoid head keeps
scores close), held-out judge accuracy 0.91 / 0.93 / 0.90.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import concatenate_datasets

from vital.selector import SelectorTrainer, SelectorTrainingConfig, clipping_caps_weights, score_texts_images
from vital.selector.data import preference_side


pytestmark = pytest.mark.usefixtures("single_thread")

PAPER = Path(__file__).resolve().parents[2] / "recipes" / "biomed_vital" / "train_selector.yaml"
TRAINER_KEYS = (
    "loss_type",
    "margin",
    "weight_normalization",
    "optim",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "lr_scheduler_type",
    "warmup_steps",
    "max_grad_norm",
    "bf16",
)
MODEL_KEYS = ("text_template", "text_fields", "head_activation", "normalize_features")


def paper_args(tmp_path, **overrides) -> SelectorTrainingConfig:
    """The paper profile's trainer settings at a tiny scale (steps, batch size and rate are the scale)."""
    config = yaml.safe_load(PAPER.read_text())
    values = {key: config[key] for key in TRAINER_KEYS}
    values.update(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        max_steps=150,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=3e-4,
        report_to="none",
        save_strategy="no",
        logging_steps=50,
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return SelectorTrainingConfig(**values)


def paper_model(make_selector):
    config = yaml.safe_load(PAPER.read_text())
    return make_selector(**{key: config[key] for key in MODEL_KEYS}, dropout=0.0, freeze_backbone=True)


def pair_fit(model, processor, dataset, margin: bool = False) -> float:
    """Share of pairs whose chosen side scores higher (ties half), with the model's own text; with ``margin``, the
    mean score difference chosen - rejected instead."""
    images, texts = [], []
    for side in ("chosen", "rejected"):
        for row in dataset:
            image, text = preference_side(row, side, model.config.text_fields, model.config.text_template)
            images.append(image)
            texts.append(text)
    scores = np.array(score_texts_images(model, processor, images, texts, batch_size=64))
    chosen, rejected = np.split(scores, 2)
    if margin:
        return float(np.mean(chosen - rejected))
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


@pytest.mark.slow
def test_clinician_fit_rises_with_the_weight_under_the_paper_settings(make_selector, processor, pairs, tmp_path):
    clinician = pairs("clinician_wording", 16, seed=2)
    judge_train = concatenate_datasets([pairs("brightness", 160, seed=1), pairs("judge_wording", 96, seed=4)])
    train = concatenate_datasets([judge_train, clinician])
    judge_heldout = concatenate_datasets([pairs("brightness", 64, seed=3), pairs("judge_wording", 16, seed=5)])
    fit, margin, judge = {}, {}, {}
    for weight in (1.0, 10.0, 100.0):
        args = paper_args(tmp_path, clinician_weight=weight)
        assert args.max_grad_norm == 0 and args.weight_normalization == "none"
        trainer = SelectorTrainer(
            model=paper_model(make_selector), args=args, train_dataset=train, processing_class=processor
        )
        assert trainer.mean_pair_weight == 1.0  # the batch mean of weight x hinge, as the official code
        trainer.train()
        fit[weight] = pair_fit(trainer.model, processor, clinician)
        margin[weight] = pair_fit(trainer.model, processor, clinician, margin=True)
        judge[weight] = pair_fit(trainer.model, processor, judge_heldout)
    assert fit[1.0] < fit[10.0] < fit[100.0], fit
    assert fit[1.0] < 0.5 and fit[100.0] - fit[1.0] >= 0.4, fit
    # the clinicians' pairs are pushed apart more with every weight: against them at 1, for them at 10 and 100
    assert margin[1.0] < 0 < margin[10.0] < margin[100.0], margin
    assert min(judge.values()) > 0.6, judge


def test_clipping_with_a_heavy_pair_warns(make_selector, processor, pairs, tmp_path, caplog):
    train = concatenate_datasets([pairs("brightness", 8, seed=1), pairs("contradiction", 2, seed=2)])
    with caplog.at_level(logging.WARNING, logger="vital.selector.trainer"):
        SelectorTrainer(
            model=paper_model(make_selector),
            args=paper_args(tmp_path, max_grad_norm=1.0, clinician_weight=10.0),
            train_dataset=train,
            processing_class=processor,
        )
    assert any("gradient clipping is on" in r.getMessage() for r in caplog.records)
    caplog.clear()
    # no warning without clipping, nor with clipping when every pair weighs 1
    for overrides in (
        {"max_grad_norm": 0.0, "clinician_weight": 10.0},
        {"max_grad_norm": 1.0, "clinician_weight": 1.0},
    ):
        with caplog.at_level(logging.WARNING, logger="vital.selector.trainer"):
            SelectorTrainer(
                model=paper_model(make_selector),
                args=paper_args(tmp_path, **overrides),
                train_dataset=train,
                processing_class=processor,
            )
        assert not any("gradient clipping is on" in r.getMessage() for r in caplog.records), overrides


def test_clipping_caps_weights_rule():
    class Args:
        max_grad_norm = 1.0

    assert clipping_caps_weights(Args, 400.0)
    assert not clipping_caps_weights(Args, 1.0)
    Args.max_grad_norm = 0.0
    assert not clipping_caps_weights(Args, 400.0)
