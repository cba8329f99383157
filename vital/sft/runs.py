"""An SFT run's identity on the hub and its training loop: one branch per run, reruns of a finished run, launch
checks, the trainer (exact resume, no pushes of its own) and the throughput callback."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import SFTTrainer

from vital.arguments import HubArguments
from vital.cards import Lineage
from vital.hub import Hub, PushResult
from vital.runs import (
    ExactResumeMixin,
    HubLayerPushMixin,
    card_lineage,
    fingerprint_changes,
    fingerprinted,
    run_figures,
    run_fingerprint,
)


logger = logging.getLogger(__name__)


class RunBranchError(RuntimeError):
    """The run's branch already holds a finished run, and overwriting was not asked for."""


def default_run_branch(output_dir: str | os.PathLike) -> str:
    """The branch a run pushes to when none is given: the output folder's name, made a valid ref name."""
    name = re.sub(r"[^\w.-]+", "-", Path(output_dir).resolve().name).strip("-.") or "run"
    return name


def finished_run(hub: Hub, repo_id: str, branch: str) -> dict[str, Any] | None:
    """The lineage of the finished SFT run on ``branch`` (its card says stage ``sft`` and this branch), else None."""
    lineage = card_lineage(hub, repo_id, branch, "model")
    if lineage and lineage.get("stage") == "sft" and (lineage.get("extra") or {}).get("run_branch") == branch:
        return lineage
    return None


def same_finished_run(hub: Hub, repo_id: str, branch: str, lineage, world_size: int) -> str | None:
    """The commit of the finished run on ``branch`` if it was made from the same inputs (at the same commits), config,
    seed and stack versions as ``lineage`` (a `vital.cards.Lineage`), by as many processes (``world_size``; a
    1-process and a 2-process run differ in batches and reductions): rerunning it would change nothing."""
    finished = finished_run(hub, repo_id, branch)
    if finished is None:
        return None
    # Settings that do not touch the weights (where it writes, how it logs: NOT_FINGERPRINTED) do not make another
    # run, as in the run fingerprint; the card still records them as set.
    planned = lineage.to_dict()
    old = {**finished, "config": _weight_config(finished.get("config")), "world_size": _world_size(finished)}
    new = {**planned, "config": _weight_config(planned.get("config")), "world_size": world_size}
    changed = fingerprint_changes(old, new, keys=("inputs", "seed", "versions", "world_size"))
    if changed:
        logger.info("the finished run on %s@%s differs in %s: running again", repo_id, branch, ", ".join(changed))
        return None
    return hub.resolve(repo_id, branch, "model")


def _world_size(lineage: dict[str, Any]) -> Any:
    return (lineage.get("extra") or {}).get("world_size")


def _weight_config(config: Any) -> Any:
    if not isinstance(config, dict):
        return config
    return {part: fingerprinted(values) if isinstance(values, dict) else values for part, values in config.items()}


def check_run_branch(hub: Hub, repo_id: str, branch: str, overwrite: bool = False) -> None:
    """Refuse to start a run whose branch already holds a finished run (unless ``overwrite``), as open-r1 does.

    A killed run never wrote its card, so it can be rerun (and resumes from its last checkpoint).
    """
    lineage = finished_run(hub, repo_id, branch)
    if lineage is None:
        return
    if not overwrite:
        raise RunBranchError(
            f"{repo_id}@{branch} already holds a finished SFT run; choose another `hub_revision` or set "
            "`overwrite_branch: true` to replace it"
        )
    logger.warning("overwriting the finished run on %s@%s", repo_id, branch)


class SFTRunTrainer(HubLayerPushMixin, ExactResumeMixin, SFTTrainer):
    """TRL's `SFTTrainer` that resumes a full fine-tune with every tensor of its checkpoint
    (`vital.runs.ExactResumeMixin`: the plain Trainer misses LLaVA's and Qwen2-VL's saved key names) and never pushes
    by itself (`vital.runs.HubLayerPushMixin`: the stage pushes through the hub layer, to ``hub_model_id`` at
    ``hub_revision``)."""


def check_cpu_launch(use_cpu: bool) -> None:
    """Refuse the silent trap of ``accelerate launch`` with a MULTI_GPU config on a machine without a GPU: unless the
    trainer is told ``use_cpu: true``, each process runs alone and all write the same output."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not use_cpu and not torch.cuda.is_available():
        raise RuntimeError(
            f"launched as {world_size} processes but no GPU is available and `use_cpu` is false: each process would "
            "train alone and overwrite the others' output. Set `use_cpu: true` in the recipe (two gloo processes)."
        )


class ThroughputCallback(TrainerCallback):
    """Adds ``tokens_per_second`` and ``samples_per_second`` (since the previous log, all processes together) to each
    training log, and keeps a run summary (``train_tokens``, ``train_tokens_per_second``) in `summary`.

    Tokens are what `SFTTrainer` counts in its ``num_tokens`` metric: every non-padding input token (prompt, image
    tokens and answers).
    """

    def __init__(self) -> None:
        self.summary: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._last = time.perf_counter()
        self._last_step = state.global_step
        self._tokens = 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "num_tokens" not in logs or "loss" not in logs:
            return
        now = time.perf_counter()
        elapsed = max(now - self._last, 1e-9)
        samples = (state.global_step - self._last_step) * args.train_batch_size * args.gradient_accumulation_steps
        samples *= args.world_size
        added = {
            "tokens_per_second": round((logs["num_tokens"] - self._tokens) / elapsed, 2),
            "samples_per_second": round(samples / elapsed, 3),
        }
        self._tokens, self._last, self._last_step = logs["num_tokens"], now, state.global_step
        logs.update(added)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(added)

    def on_train_end(self, args, state, control, **kwargs):
        # Tokens as of the last log: with logging_steps 1 (the recipes' setting) that is every step.
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self.summary = {"train_tokens": self._tokens, "train_tokens_per_second": round(self._tokens / elapsed, 2)}


# ----------------------------------------------------------------------------------------------------------------------
# The run's place on the hub, and its identity
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class RunTarget:
    """Where an SFT run lands: the model repo (``hub_model_id``), its branch (``hub_revision``), whether the repo is
    created private (``hub_private_repo``) and whether the run is pushed at all (``push_to_hub``)."""

    repo_id: str
    branch: str
    private: bool
    push: bool


def run_target(training_args: Any) -> RunTarget:
    """The `RunTarget` of an `SFTConfig`, in its own words: ``hub_model_id`` (unset: the output folder's name, as the
    Trainer does), ``hub_revision`` (unset: the output folder's name, `default_run_branch`), ``hub_private_repo``
    (unset: private, this project's default) and ``push_to_hub``."""
    branch = default_run_branch(training_args.output_dir)
    options = HubArguments.from_training_args(None, training_args, default_revision=branch)
    repo_id = training_args.hub_model_id or branch
    return RunTarget(repo_id, options.hub_revision, options.hub_private_repo, options.push_to_hub)


def plan_run(inputs: list, config: dict[str, Any], training_args: Any) -> tuple[Lineage, dict[str, Any]]:
    """The lineage a run will record (before training: the trainer adjusts a few fields of the args it is given) and
    its fingerprint (`vital.runs.run_fingerprint`: inputs, config, seed, world size, effective batch)."""
    planned = Lineage(stage="sft", inputs=inputs, config=config, seed=training_args.seed)
    world_size = training_args.world_size
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    fingerprint = run_fingerprint(
        stage="sft",
        inputs=planned.inputs,
        config=planned.config,
        seed=training_args.seed,
        world_size=world_size,
        effective_batch=per_step * world_size,
    )
    return planned, fingerprint


def claim_branch(
    hub: Hub, target: RunTarget, planned: Lineage, world_size: int, overwrite: bool, main_process: bool = True
) -> PushResult | None:
    """Before training: the finished run on the target branch if it is this very run (same inputs and config: nothing
    to do, idempotent reruns); else refuse a branch that holds another finished run unless ``overwrite`` (as open-r1
    does), and create the repo (private per ``target.private``) and the branch from the main process."""
    if not target.push:
        return None
    done = same_finished_run(hub, target.repo_id, target.branch, planned, world_size)
    if done is not None:
        logger.info(
            "%s@%s already holds this run (same inputs and config): nothing to do", target.repo_id, target.branch
        )
        location = str(hub.snapshot(target.repo_id, done, "model"))
        return PushResult(target.repo_id, "model", target.branch, done, location, created=False)
    check_run_branch(hub, target.repo_id, target.branch, overwrite)
    if main_process:
        hub.create_repo(target.repo_id, "model", target.private)
        hub.create_branch(target.repo_id, target.branch, repo_type="model")
    return None


def run_metrics(trainer: Any, train_result: Any, throughput: ThroughputCallback, rows: int, resumed: bool) -> dict:
    """The run's figures: the loss figures come from the trainer state of this run (a resumed run's history starts at
    its step 1; the Trainer's own ``train_loss`` covers only the steps of this process); speeds and runtime are this
    session's."""
    metrics = {**train_result.metrics, **throughput.summary, "train_rows": rows}
    figures = run_figures(trainer.state.log_history)
    metrics["final_loss"] = figures.get("final_loss", float("nan"))
    if resumed and "train_loss" in figures:
        metrics["train_loss"] = figures["train_loss"]
    metrics["train_steps"] = trainer.state.global_step
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    return metrics
