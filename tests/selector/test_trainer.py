"""SelectorTrainer: the weighted losses, the columns it keeps, and what training on synthetic preferences achieves.

The learning tests can fail: the synthetic rule (conftest) needs the image and the text together, and the clinician
test needs the weights to reach the loss.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import concatenate_datasets
from transformers import AutoModelForSequenceClassification, AutoProcessor

from vital.selector import (
    SelectorModel,
    SelectorTrainer,
    SelectorTrainingConfig,
    pairwise_loss,
    score_texts_images,
    selector_lora_config,
)
from vital.selector.data import preference_side


pytestmark = pytest.mark.usefixtures("single_thread")


def _args(tmp_path, **overrides):
    values = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 150,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 64,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 50,
        "disable_tqdm": True,
        "seed": 0,
    }
    values.update(overrides)
    return SelectorTrainingConfig(**values)


# ---- the loss -------------------------------------------------------------------------------------------------------
def test_pairwise_losses_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 0.0])  # differences 2, 0, -1
    weights = torch.tensor([1.0, 2.0, 1.0])
    bt = [math.log1p(math.exp(-2)), math.log(2), math.log1p(math.exp(1))]  # -logsigmoid(d)
    assert pairwise_loss(chosen, rejected).item() == pytest.approx(sum(bt) / 3, rel=1e-6)
    # the batch's weighted mean, or normalised by a given (training set) mean weight
    assert pairwise_loss(chosen, rejected, weights).item() == pytest.approx((bt[0] + 2 * bt[1] + bt[2]) / 4, rel=1e-6)
    weighted = pairwise_loss(chosen, rejected, weights, mean_weight=2.0).item()
    assert weighted == pytest.approx((bt[0] + 2 * bt[1] + bt[2]) / 3 / 2, rel=1e-6)
    # hinge with margin 1: max(0, 1 - d) = 0, 1, 2
    assert pairwise_loss(chosen, rejected, loss_type="hinge").item() == pytest.approx(1.0)
    assert pairwise_loss(chosen, rejected, weights, loss_type="hinge").item() == pytest.approx((0 + 2 + 2) / 4)
    assert pairwise_loss(chosen, rejected, loss_type="hinge", margin=3.0).item() == pytest.approx((1 + 3 + 4) / 3)


def test_config_refuses_unknown_loss_and_bad_weights(tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        _args(tmp_path, loss_type="dpo")
    with pytest.raises(ValueError, match="clinician_weight"):
        _args(tmp_path, clinician_weight=0.0)


class _FixedRewards(torch.nn.Module):
    """Stands in for the model in compute_loss: returns the same rewards whatever the inputs."""

    def __init__(self, rewards):
        super().__init__()
        self.rewards = torch.tensor(rewards).view(-1, 1)

    def forward(self, **inputs):
        # The pair weights and sources never reach the model; TRL's compute_loss adds use_cache=False.
        assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "use_cache"}
        assert inputs["use_cache"] is False
        return SimpleNamespace(logits=self.rewards)


def test_weights_change_compute_loss(make_selector, processor, pairs, tmp_path):
    # Training weights 1, 1, 1 and 5: the losses are normalised by their mean, 2.
    train = concatenate_datasets([pairs("consistency", 3, 0), pairs("contradiction", 1, 0, weight=5.0)])
    trainer = SelectorTrainer(
        model=make_selector(), args=_args(tmp_path), train_dataset=train, processing_class=processor
    )
    assert trainer.mean_pair_weight == 2.0
    fixed = _FixedRewards([2.0, 0.0, 0.0, 1.0])  # chosen 2, 0; rejected 0, 1: differences 2, -1
    inputs = {"input_ids": None, "attention_mask": torch.ones(4, 3, dtype=torch.long), "pixel_values": None}
    d1, d2 = math.log1p(math.exp(-2)), math.log1p(math.exp(1))

    def loss(weights, sources):
        batch = {**inputs, "weights": torch.tensor(weights), "sources": torch.tensor(sources)}
        return trainer.compute_loss(fixed, batch).item()

    assert loss([1.0, 1.0], [0.0, 0.0]) == pytest.approx((d1 + d2) / 2 / 2, rel=1e-6)
    assert loss([1.0, 3.0], [0.0, 0.0]) == pytest.approx((d1 + 3 * d2) / 2 / 2, rel=1e-6)
    _, outputs = trainer.compute_loss(fixed, {**inputs, "weights": torch.ones(2)}, return_outputs=True)
    torch.testing.assert_close(outputs["rewards"], torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    # TRL's own metric lines ran for each of the three calls: rewards 2, 0, 0, 1; one of two pairs right, margin 0.5.
    recorded = trainer._metrics["train"]
    assert recorded["accuracy"] == [0.5] * 3 and recorded["margin"] == [0.5] * 3
    assert recorded["min_reward"] == [0.0] * 3 and recorded["max_reward"] == [2.0] * 3
    assert recorded["mean_reward"] == [0.75] * 3 and recorded["num_tokens"] == [36]  # 3 calls x 12 mask entries

    # clinician_weight replaces the stored weight of clinician pairs, in the batch and in the training mean (1+1+1+9)/4
    trainer = SelectorTrainer(
        model=make_selector(),
        args=_args(tmp_path, clinician_weight=9.0),
        train_dataset=train,
        processing_class=processor,
    )
    assert trainer.mean_pair_weight == 3.0
    assert loss([1.0, 1.0], [0.0, 1.0]) == pytest.approx((d1 + 9 * d2) / 2 / 3, rel=1e-6)


def test_images_and_weights_reach_the_batch(make_selector, processor, pairs, tmp_path):
    train = pairs("consistency", 8, 0).add_column("unused", list(range(8)))
    trainer = SelectorTrainer(
        model=make_selector(), args=_args(tmp_path), train_dataset=train, processing_class=processor
    )
    assert trainer.train_dataset.column_names == train.column_names  # not tokenised away
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "weights", "sources"}
    assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0] == 16


# ---- learning --------------------------------------------------------------------------------------------------------
def _heldout_accuracy(model, processor, dataset):
    images, texts = [], []
    for side in ("chosen", "rejected"):
        for row in dataset:
            image, text = preference_side(row, side, model.config.text_fields)
            images.append(image)
            texts.append(text)
    scores = np.array(score_texts_images(model, processor, images, texts, batch_size=64))
    chosen, rejected = np.split(scores, 2)
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["bradley_terry", "hinge"])
def test_selector_learns_a_rule_over_image_and_text(make_selector, processor, pairs, tmp_path, loss_type):
    model = make_selector(text_fields=["answer"])
    heldout = pairs("consistency", 128, seed=2)
    untrained = _heldout_accuracy(model, processor, heldout)
    assert 0.35 <= untrained <= 0.65

    trainer = SelectorTrainer(
        model=model,
        args=_args(tmp_path, loss_type=loss_type),
        train_dataset=pairs("consistency", 256, seed=1),
        eval_dataset=heldout,
        processing_class=processor,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trained = _heldout_accuracy(trainer.model, processor, heldout)
    assert trained >= 0.8, (untrained, trained)
    assert metrics["eval_pair_accuracy"] == pytest.approx(trained)
    assert metrics["eval_auc"] > 0.8


@pytest.mark.slow
def test_raising_the_clinician_weight_raises_clinician_alignment(make_selector, processor, pairs, tmp_path):
    # Judges prefer bright images; clinicians prefer a dark image saying "effusion" over a bright one saying "normal".
    # A quarter of the judge pairs are exactly that comparison the other way round, and outnumber the clinicians.
    train = concatenate_datasets([pairs("brightness", 256, seed=1), pairs("contradiction", 32, seed=2)])
    heldout = {"judge": pairs("brightness", 64, seed=3), "clinician": pairs("contradiction", 64, seed=4)}
    alignment = {}
    for weight in (None, 100.0):  # None: the stored weight, 1.0
        # A frozen backbone keeps the model from memorising the 32 clinician pairs' noise instead of their rule.
        trainer = SelectorTrainer(
            model=make_selector(text_fields=["answer"], freeze_backbone=True),
            args=_args(tmp_path, max_steps=200, learning_rate=3e-3, clinician_weight=weight),
            train_dataset=train,
            eval_dataset=heldout,
            processing_class=processor,
        )
        trainer.train()
        metrics = trainer.evaluate()
        alignment[weight] = metrics["eval_clinician_clinician_alignment"]
        if weight is None:
            assert metrics["eval_judge_judge_accuracy"] >= 0.75
    assert alignment[100.0] - alignment[None] >= 0.5, alignment


def test_lora_selector_trains_and_saves(make_selector, processor, pairs, tmp_path):
    from peft import PeftModel

    heldout = pairs("consistency", 64, seed=2)
    trainer = SelectorTrainer(
        model=make_selector(text_fields=["answer"]),
        args=_args(tmp_path, max_steps=40, learning_rate=3e-3, save_strategy="steps", save_steps=40),
        train_dataset=pairs("consistency", 128, seed=1),
        eval_dataset=heldout,
        processing_class=processor,
        peft_config=selector_lora_config(),
    )
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or ".head." in name for name in trainable)
    assert any("vision_model" in name for name in trainable) and any("text_model" in name for name in trainable)
    trainer.train()
    trained = _heldout_accuracy(trainer.model, processor, heldout)
    assert trained >= 0.8
    assert (tmp_path / "out" / "checkpoint-40" / "adapter_model.safetensors").exists()

    # The adapter and the processor, on a freshly loaded base selector.
    adapter_dir = tmp_path / "adapter"
    trainer.save_model(adapter_dir)
    base = make_selector(text_fields=["answer"])
    reloaded = PeftModel.from_pretrained(base, adapter_dir)
    reloaded_processor = AutoProcessor.from_pretrained(adapter_dir)
    assert _heldout_accuracy(reloaded, reloaded_processor, heldout) == trained

    # Merged into a plain selector folder.
    merged_dir = tmp_path / "merged"
    trainer.model.merge_and_unload().save_pretrained(merged_dir)
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    assert isinstance(merged, SelectorModel)
    assert _heldout_accuracy(merged, processor, heldout) == trained


def test_trainer_saves_a_folder_it_can_start_from(make_selector, processor, pairs, tmp_path):
    trainer = SelectorTrainer(
        model=make_selector(),
        args=_args(tmp_path, max_steps=2),
        train_dataset=pairs("consistency", 16, seed=1),
        processing_class=processor,
    )
    trainer.train()
    trainer.save_model(tmp_path / "selector")
    # A saved folder is enough: the model is loaded as a sequence classifier and the processor next to it.
    again = SelectorTrainer(
        model=str(tmp_path / "selector"),
        args=_args(tmp_path, max_steps=2),
        train_dataset=pairs("consistency", 16, seed=1),
        eval_dataset=pairs("consistency", 16, seed=2),
    )
    assert isinstance(again.model, SelectorModel)
    assert hasattr(again.processing_class, "image_processor")
    assert "eval_pair_accuracy" in again.evaluate()
