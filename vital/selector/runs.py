"""A selector fit's place on the hub and its identity: where it is pushed (`SelectorTarget`, from TRL's
``hub_model_id`` / ``hub_revision`` / ``hub_private_repo`` / ``push_to_hub``), its run fingerprint, the finished fit
that makes a rerun unnecessary, and the saved (merged) selector folder."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vital.arguments import HubArguments
from vital.hub import Hub, PushResult
from vital.runs import finished_fingerprint, run_fingerprint
from vital.selector.arguments import SelectorScriptArguments


@dataclass
class SelectorTarget:
    """Where a selector fit lands: the model repo (``hub_model_id``), the pairs' dataset repo (``pairs_repo``), the
    branch of both (``hub_revision``), whether new repos are private (``hub_private_repo``) and whether anything is
    pushed (``push_to_hub``)."""

    model_repo: str
    pairs_repo: str
    revision: str
    private: bool
    push: bool


def selector_target(args: SelectorScriptArguments, training_args: Any) -> SelectorTarget:
    """The `SelectorTarget` of a run: ``hub_model_id`` (unset: the output folder's name, as the Trainer does),
    ``hub_revision`` (unset: ``main``), ``hub_private_repo`` (unset: private) and ``push_to_hub`` of the trainer config,
    ``pairs_repo`` of the script arguments."""
    options = HubArguments.from_training_args(args.hub, training_args)
    model_repo = training_args.hub_model_id or Path(training_args.output_dir).resolve().name
    return SelectorTarget(
        model_repo, args.pairs_repo, options.hub_revision, options.hub_private_repo, options.push_to_hub
    )


def selector_fingerprint(args: SelectorScriptArguments, training_args: Any, data: dict, backbone: Any) -> dict:
    """The run fingerprint of a selector fit (`vital.runs.run_fingerprint`)."""
    world_size = training_args.world_size
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    return run_fingerprint(
        stage="train_selector",
        inputs=[*data["inputs"], backbone.lineage],
        config={"script": args, "training": training_args},
        seed=training_args.seed,
        world_size=world_size,
        effective_batch=per_step * world_size,
    )


def finished_selector(hub: Hub, target: SelectorTarget, fingerprint: dict) -> list[PushResult] | None:
    """The pairs and selector pushes of a finished fit with this fingerprint (and the same stack versions), if the
    output repo's branch holds one: rerunning it would change nothing."""
    lineage = finished_fingerprint(hub, target.model_repo, target.revision, "model", fingerprint)
    if lineage is None:
        return None
    pairs = next((i for i in lineage["inputs"] if i.get("repo_id") == target.pairs_repo and i.get("commit")), None)
    if pairs is None:
        return None
    commit = hub.resolve(target.model_repo, target.revision, "model")
    return [
        PushResult(
            target.pairs_repo,
            "dataset",
            pairs.get("revision", target.revision),
            pairs["commit"],
            str(hub.snapshot(target.pairs_repo, pairs["commit"], "dataset")),
            created=False,
        ),
        PushResult(
            target.model_repo,
            "model",
            target.revision,
            commit,
            str(hub.snapshot(target.model_repo, commit, "model")),
            created=False,
        ),
    ]


def save_selector(trainer, processor, save_dir: str) -> str:
    """The trained selector and its processor in ``save_dir``; a LoRA adapter is merged into the backbone first, so
    the folder is a plain selector that ``AutoModel.from_pretrained`` loads."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(save_dir)
    processor.save_pretrained(save_dir)
    # The run's logs travel with the model: the trainer state (loss curve) and TensorBoard's event files, if any.
    trainer.state.save_to_json(os.path.join(save_dir, "trainer_state.json"))
    runs = os.path.join(trainer.args.output_dir, "runs")
    if os.path.isdir(runs):
        shutil.copytree(runs, os.path.join(save_dir, "runs"), dirs_exist_ok=True)
    return save_dir
