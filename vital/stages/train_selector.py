"""Stage 3a — train the selector: distil the judge's and the clinicians' preferences into one image+text scorer.

Usage:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/train_selector.py \\
        --config recipes/quickstart/train_selector.yaml
    python recipes/train_selector.py --config recipes/quickstart/train_selector.yaml
    vital train_selector --config recipes/quickstart/train_selector.yaml --hub local:outputs/hub

    # the official settings (30,000 judge pairs, clinician weight 400, hinge loss, Adam 1e-5, 6 epochs), GPUs:
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/train_selector.py \\
        --config recipes/biomed_vital/train_selector.yaml
    # ours (every difference explained in the README's "Paper vs ours"):
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/train_selector.py \\
        --config recipes/biomed_vital_plus/train_selector.yaml

Judge pairs are pairs of candidate turns from different judge-score levels (`build_judge_pairs`: train and held-out
sets with no candidate on both sides); clinician pairs come from a preferences repo (the annotation app's export), a
JSON / CSV file, or the bundled sample judgements joined with the answer pairs (`clinician_preferences: sample`), and
weigh `clinician_weight` times a judge pair. The backbone is any CLIP-family dual encoder (`backbone:` a Hub id, a
folder, or `hub:<repo>@<rev>` on the recipe's hub, like the quickstart's `hub:quickstart/tiny-clip` from the
`tiny_models` stage) or BiomedCLIP through open_clip (`backbone:
open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`, `pip install biomed-vital[biomedclip]`).

With `push_to_hub: true` the run pushes, through the hub layer (local or hf), the selector (merged when trained with
LoRA; with its processor and a card holding the held-out metrics, the clinician weight and every input commit) to
`hub_model_id`, and its training pairs (`train` and `heldout` splits) to `pairs_repo`, both on branch `hub_revision`,
creating them private unless `hub_private_repo: false` (TRL's names, in `SelectorTrainingConfig`; the Trainer itself
never pushes). Under `accelerate launch` only the main process pushes. The helpers live in `vital.selector`
(`arguments`, `inputs`, `runs`, `publish`).
"""

from __future__ import annotations

import logging
import os

import torch
from transformers import set_seed

from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging
from vital.runs import FingerprintCallback, log_not_pushed, prepare_output_dir, run_figures
from vital.selector import SelectorTrainingConfig, selector_lora_config
from vital.selector.arguments import SelectorScriptArguments, selector_config
from vital.selector.inputs import prepare_data
from vital.selector.publish import headline, push_selector
from vital.selector.runs import finished_selector, save_selector, selector_fingerprint, selector_target
from vital.selector.training import fit_selector, load_selector, resolve_backbone, summarize_metrics, training_pairs


logger = logging.getLogger("vital.train_selector")

ScriptArguments = SelectorScriptArguments  # the stage's script arguments (shared with sweep_clinician_weight)


def main(script_args: ScriptArguments, training_args: SelectorTrainingConfig) -> list[PushResult]:
    # 1. Logging (warnings only off the main process), seed; where the fit lands (TRL's hub_* names).
    setup_logging(main_process=training_args.process_index == 0)
    set_seed(training_args.seed)
    if script_args.torch_threads:
        torch.set_num_threads(script_args.torch_threads)
    hub, target = get_hub(script_args.hub), selector_target(script_args, training_args)

    # 2. Data: judge pairs from the ratings, clinician pairs, each at a pinned commit.
    with training_args.main_process_first(desc="build the selector's training pairs"):
        data = prepare_data(script_args, training_args, hub)
        backbone = resolve_backbone(hub, script_args.backbone, script_args.backbone_revision)
    train_dataset = training_pairs(data["judge"]["train"], data["clinician_train"])
    logger.info(
        "training on %d judge + %d clinician pairs (weight %s); held out: %s",
        len(data["judge"]["train"]),
        len(data["clinician_train"] or []),
        data["weight"],
        {name: len(ds) for name, ds in data["eval_sets"].items()},
    )

    # 3. Model: the backbone with a fresh head (seeded), optionally LoRA on the backbone.
    model, processor = load_selector(backbone, seed=training_args.seed, **selector_config(script_args))
    peft_config = None
    if script_args.use_lora:
        lora = (script_args.lora_r, script_args.lora_alpha, script_args.lora_dropout)
        peft_config = selector_lora_config(*lora, tuple(script_args.lora_target_modules))

    # 4. Resume: only a checkpoint of this very run (inputs at their commits, config, seed, world size, effective
    #    batch); a finished fit with this fingerprint is the result; another run's output_dir is moved aside.
    fingerprint = selector_fingerprint(script_args, training_args, data, backbone)
    data["run_fingerprint"] = fingerprint["sha256"]
    done = finished_selector(hub, target, fingerprint) if target.push else None
    if done:
        logger.info(
            "%s@%s already holds this fit (same inputs, config, seed): skipped", done[1].repo_id, done[1].commit
        )
        print(artifact_table(done))
        return done
    with training_args.main_process_first(local=training_args.save_on_each_node, desc="bind output_dir to the run"):
        checkpoint = prepare_output_dir(
            training_args.output_dir, fingerprint, training_args.resume_from_checkpoint, training_args.should_save
        )
    if checkpoint:
        logger.info("resuming this run from %s", checkpoint)

    # 5. Train, then evaluate on held-out judge pairs and the clinician pairs.
    trainer, metrics = fit_selector(
        model,
        processor,
        training_args,
        train_dataset,
        data["eval_sets"],
        peft_config,
        checkpoint,
        callbacks=[FingerprintCallback(fingerprint)],
    )
    # A resumed run: the Trainer's train_loss covers only the steps of this process; the run's is in its trainer state.
    if checkpoint and "train_loss" in run_figures(trainer.state.log_history):
        metrics["train_loss"] = run_figures(trainer.state.log_history)["train_loss"]
    n_clinician = len(data["eval_sets"].get(data["clinician_set"]) or []) if data["clinician_set"] else 0
    summary = summarize_metrics(metrics, data["clinician_set"], n_clinician, script_args.mean_rank)
    trainer.log_metrics("selector", summary)
    trainer.save_metrics("all", metrics)

    # 6. Save (merged when LoRA), card and push, from the main process only.
    pushed: list[PushResult] = []
    if trainer.is_world_process_zero():
        save_dir = save_selector(trainer, processor, os.path.join(training_args.output_dir, "selector"))
        if target.push:
            pushed = push_selector(hub, target, script_args, training_args, data, backbone, summary, save_dir)
            print(artifact_table(pushed, {target.model_repo: headline(summary)}))
        else:
            log_not_pushed("the selector", save_dir, target.model_repo)
    trainer.accelerator.wait_for_everyone()
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    script_args, training_args = recipe_parser((ScriptArguments, SelectorTrainingConfig)).parse_args_and_config(argv)
    return main(script_args, training_args)


if __name__ == "__main__":
    cli()
