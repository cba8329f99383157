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

The run pushes the selector (merged when trained with LoRA; with its processor and a card holding the held-out
metrics, the clinician weight and every input commit) to `output_repo`, and its training pairs (`train` and `heldout`
splits) to `pairs_repo`. Under `accelerate launch` only the main process pushes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field

import torch
from transformers import set_seed

from vital.cards import Lineage, dataset_card, model_card
from vital.data.inputs import require_columns
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging
from vital.runs import FingerprintCallback, finished_fingerprint, prepare_output_dir, run_figures, run_fingerprint
from vital.selector import SelectorTrainingConfig, build_judge_pairs, clipping_caps_weights, selector_lora_config
from vital.selector.training import (
    fit_selector,
    load_clinician_preferences,
    load_selector,
    resolve_backbone,
    split_clinician_pairs,
    summarize_metrics,
    training_pairs,
)


logger = logging.getLogger("vital.train_selector")


@dataclass
class ScriptArguments:
    hub: str | None = field(default=None, metadata={"help": "'local:<dir>' or 'hf'. Default: $VITAL_HUB."})
    # Judge pairs
    candidates_repo: str = field(default="quickstart/candidates", metadata={"help": "Candidates the judge rated."})
    candidates_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the candidates."})
    ratings_repo: str = field(default="quickstart/ratings", metadata={"help": "The judge's ratings of the turns."})
    ratings_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the ratings."})
    n_train_pairs: int = field(default=30000, metadata={"help": "Judge pairs to train on (paper: 30,000)."})
    n_heldout_pairs: int = field(default=10000, metadata={"help": "Held-out judge pairs (paper: 10,000)."})
    min_score_gap: float = field(default=1.0, metadata={"help": "Smallest judge-score difference that makes a pair."})
    pair_sampling: str = field(
        default="uniform_pairs",
        metadata={
            "help": "'uniform_pairs' (ours: uniform over pairs with a large enough gap, candidates split first) or "
            "'score_levels' (official: two score levels uniformly, then an item in each; 80/20 split per level).",
            "choices": ["uniform_pairs", "score_levels"],
        },
    )
    judge_turns: str = field(
        default="all",
        metadata={
            "help": "Rated turns that make judge pairs: 'all' (ours) or 'first' (official: first turn only).",
            "choices": ["all", "first"],
        },
    )
    judge_heldout_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Share held out (of candidates, or of each level's items with score_levels; official 0.2); "
            "unset: n_heldout_pairs / (n_train_pairs + n_heldout_pairs)."
        },
    )
    pairs_seed: int = field(default=0, metadata={"help": "Seeds the candidate split and the pair sampling."})
    # Clinician pairs
    clinician_preferences: str | None = field(
        default=None,
        metadata={
            "help": "Clinician pairs: a preferences repo 'repo[@revision]' (annotation-app export), a .json/.jsonl/"
            ".csv file, 'sample' (bundled sample judgements, not clinicians', joined with answer_pairs_repo) or "
            "'none'. Their weight is the trainer's `clinician_weight` (paper sweeps 1, 10, 100, 200, 300, 400)."
        },
    )
    answer_pairs_repo: str = field(
        default="quickstart/answer-pairs", metadata={"help": "Answer pairs the sample judgements are joined with."}
    )
    answer_pairs_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the answer pairs."})
    clinician_image_root: str | None = field(
        default=None, metadata={"help": "Folder that relative image paths of a clinician file start from."}
    )
    clinician_heldout_preferences: str | None = field(
        default=None,
        metadata={
            "help": "A separate set of held-out clinician pairs to measure alignment on (same forms as "
            "clinician_preferences; the official code keeps training and alignment pairs in separate files). Unset: "
            "hold out part of clinician_preferences (clinician_heldout_fraction)."
        },
    )
    clinician_train_limit: int | None = field(
        default=None,
        metadata={"help": "Train on the first N clinician pairs only (official: 50); unset: all."},
    )
    clinician_heldout_fraction: float = field(
        default=0.2, metadata={"help": "Share of clinician pairs held out (by figure) to measure alignment."}
    )
    min_clinician_heldout: int = field(
        default=20,
        metadata={
            "help": "Hold clinician pairs out only if at least this many would be; otherwise train on all and report "
            "alignment on the training pairs, labelled as such."
        },
    )
    # Model
    backbone: str = field(
        default="hub:quickstart/tiny-clip",
        metadata={
            "help": "Dual encoder: 'hub:<repo>[@<rev>]' on the recipe's hub (quickstart: the tiny random CLIP of the "
            "tiny_models stage), a folder, a Hub id (CLIP / SigLIP / VisionTextDualEncoder) or 'open_clip:<name>' "
            "(BiomedCLIP: open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224, extra "
            "'biomedclip')."
        },
    )
    backbone_revision: str = field(default="main", metadata={"help": "Revision of the backbone (Hub or hub: repo)."})
    hidden_sizes: list[int] = field(
        default_factory=lambda: [512, 512, 512], metadata={"help": "MLP head hidden sizes (paper: 512, 512, 512)."}
    )
    text_fields: list[str] = field(
        default_factory=lambda: ["question", "answer"],
        metadata={"help": "Texts of a turn joined for scoring: question, answer, caption, mentions."},
    )
    text_template: str | None = field(
        default=None,
        metadata={
            "help": "Fill the scored text from a template instead of joining text_fields with newlines; official: "
            "'{caption}{mentions}Question:{question}Answer:{answer}'."
        },
    )
    head_activation: str | None = field(
        default=None,
        metadata={
            "help": "'sigmoid' ends the head in a sigmoid (official; a hinge margin of 1 can then never be met); "
            "unset: raw scores (ours)."
        },
    )
    mean_rank: str = field(
        default="ours",
        metadata={
            "help": "Which mean rank the card headlines: 'ours' (1-based over n, held-out judge pairs) or 'official' "
            "(0-based over n, clinician pairs).",
            "choices": ["ours", "official"],
        },
    )
    head_dropout: float = field(default=0.1, metadata={"help": "Dropout in the head (TRL disables it by default)."})
    normalize_features: bool = field(default=False, metadata={"help": "L2-normalise features before the head."})
    freeze_backbone: bool = field(default=False, metadata={"help": "Train the head only."})
    # LoRA on the backbone
    use_lora: bool = field(
        default=False, metadata={"help": "LoRA on the backbone's attention; the head trains fully."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "Backbone modules LoRA wraps."}
    )
    # Output
    output_repo: str = field(default="quickstart/selector", metadata={"help": "Model repo the selector goes to."})
    pairs_repo: str = field(default="quickstart/selector-pairs", metadata={"help": "Dataset repo of the pairs."})
    revision: str = field(default="main", metadata={"help": "Branch to push to."})
    push: bool = field(default=True, metadata={"help": "Push the selector and its training pairs."})
    private: bool = field(default=True, metadata={"help": "Create repos private."})
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads per process for torch (tiny models on shared CPUs run faster on 1); unset: torch's."
        },
    )


def prepare_data(args: ScriptArguments, training_args: SelectorTrainingConfig, hub) -> dict:
    """Judge pairs, clinician pairs (train / held out) and the lineage of every input, at pinned commits."""
    candidates_ref = hub.ref(args.candidates_repo, args.candidates_revision)
    ratings_ref = hub.ref(args.ratings_repo, args.ratings_revision)
    candidates = hub.load_dataset(args.candidates_repo, revision=candidates_ref.commit, split="train")
    ratings = hub.load_dataset(args.ratings_repo, revision=ratings_ref.commit, split="train")
    require_columns(candidates, "train_selector", "candidates", candidates_ref)
    require_columns(ratings, "train_selector", "ratings", ratings_ref)
    judge = build_judge_pairs(
        ratings,
        candidates,
        args.n_train_pairs,
        args.n_heldout_pairs,
        args.min_score_gap,
        args.pairs_seed,
        heldout_fraction=args.judge_heldout_fraction,
        sampling=args.pair_sampling,
        turns=args.judge_turns,
    )
    weight = training_args.clinician_weight or 1.0
    clinician, clinician_inputs = load_clinician_preferences(
        hub,
        args.clinician_preferences,
        weight,
        args.answer_pairs_repo,
        args.answer_pairs_revision,
        args.clinician_image_root,
    )
    clinician_train, clinician_heldout = None, None
    if args.clinician_heldout_preferences:
        # Separate files, as in the official code: train on one, measure alignment on the other.
        clinician_train = clinician
        clinician_heldout, heldout_inputs = load_clinician_preferences(
            hub,
            args.clinician_heldout_preferences,
            weight,
            args.answer_pairs_repo,
            args.answer_pairs_revision,
            args.clinician_image_root,
        )
        clinician_inputs = [*clinician_inputs, *heldout_inputs]
    elif clinician is not None:
        clinician_train, clinician_heldout = split_clinician_pairs(
            clinician, args.clinician_heldout_fraction, args.min_clinician_heldout, args.pairs_seed
        )
    if clinician_train is not None and args.clinician_train_limit is not None:
        if len(clinician_train) > args.clinician_train_limit:
            logger.info(
                "training on the first %d of %d clinician pairs (clinician_train_limit)",
                args.clinician_train_limit,
                len(clinician_train),
            )
        clinician_train = clinician_train.select(range(min(args.clinician_train_limit, len(clinician_train))))
    # Clinician alignment is measured on held-out clinician pairs when there are enough, else on the training ones.
    eval_sets, clinician_set = {"judge": judge["heldout"]}, None
    if clinician_heldout is not None:
        clinician_set, eval_sets["clinician"] = "clinician", clinician_heldout
    elif clinician_train is not None:
        clinician_set, eval_sets["clinician_train"] = "clinician_train", clinician_train
    return {
        "judge": judge,
        "clinician_train": clinician_train,
        "clinician_heldout": clinician_heldout,
        "clinician_set": clinician_set,
        "eval_sets": eval_sets,
        "inputs": [candidates_ref, ratings_ref, *clinician_inputs],
        "weight": weight,
        "stand_in": bool(len(candidates)) and bool((candidates[0].get("generation") or {}).get("stand_in")),
        "sample_preferences": args.clinician_preferences == "sample",
    }


def selector_config(args: ScriptArguments) -> dict:
    return {
        "hidden_sizes": args.hidden_sizes,
        "text_fields": args.text_fields,
        "dropout": args.head_dropout,
        "normalize_features": args.normalize_features,
        "freeze_backbone": args.freeze_backbone,
        "text_template": args.text_template,
        "head_activation": args.head_activation,
    }


def main(script_args: ScriptArguments, training_args: SelectorTrainingConfig) -> list[PushResult]:
    # 1. Logging (warnings only off the main process), seed; the hub layer pushes, not the Trainer.
    setup_logging(main_process=training_args.process_index == 0)
    set_seed(training_args.seed)
    if script_args.torch_threads:
        torch.set_num_threads(script_args.torch_threads)
    training_args.push_to_hub = False
    hub = get_hub(script_args.hub)

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
        peft_config = selector_lora_config(
            script_args.lora_r,
            script_args.lora_alpha,
            script_args.lora_dropout,
            tuple(script_args.lora_target_modules),
        )

    # 4. Resume: only a checkpoint of this very run (inputs at their commits, config, seed, world size, effective
    #    batch); an output_dir left by another run is moved aside and this one starts fresh.
    fingerprint = selector_fingerprint(script_args, training_args, data, backbone)
    data["run_fingerprint"] = fingerprint["sha256"]
    if script_args.push:
        done = finished_selector(hub, script_args, fingerprint)
        if done:
            model = done[1]
            logger.info(
                "%s@%s already holds this fit (same inputs, config, seed): skipped", model.repo_id, model.commit
            )
            print(artifact_table(done))
            return done
    with training_args.main_process_first(local=training_args.save_on_each_node, desc="bind output_dir to the run"):
        checkpoint = prepare_output_dir(
            training_args.output_dir,
            fingerprint,
            training_args.resume_from_checkpoint,
            main_process=training_args.should_save,
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
        if script_args.push:
            pushed = push_selector(hub, script_args, training_args, data, backbone, summary, save_dir)
            print(artifact_table(pushed, {script_args.output_repo: headline(summary)}))
    trainer.accelerator.wait_for_everyone()
    return pushed


def selector_fingerprint(args: ScriptArguments, training_args: SelectorTrainingConfig, data: dict, backbone) -> dict:
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


def finished_selector(hub, args: ScriptArguments, fingerprint: dict) -> list[PushResult] | None:
    """The pairs and selector pushes of a finished fit with this fingerprint (and the same stack versions), if the
    output repo's branch holds one: rerunning it would change nothing."""
    lineage = finished_fingerprint(hub, args.output_repo, args.revision, "model", fingerprint)
    if lineage is None:
        return None
    pairs = next((i for i in lineage["inputs"] if i.get("repo_id") == args.pairs_repo and i.get("commit")), None)
    if pairs is None:
        return None
    commit = hub.resolve(args.output_repo, args.revision, "model")
    return [
        PushResult(
            args.pairs_repo,
            "dataset",
            pairs.get("revision", args.revision),
            pairs["commit"],
            str(hub.snapshot(args.pairs_repo, pairs["commit"], "dataset")),
            created=False,
        ),
        PushResult(
            args.output_repo,
            "model",
            args.revision,
            commit,
            str(hub.snapshot(args.output_repo, commit, "model")),
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


def headline(summary: dict) -> str:
    parts = [f"judge acc {summary['judge_accuracy']:.3f}" if "judge_accuracy" in summary else ""]
    if "clinician_alignment" in summary:
        parts.append(f"clinician {summary['clinician_alignment']:.3f}")
    return ", ".join(p for p in parts if p)


def push_selector(hub, args, training_args, data, backbone, summary, save_dir) -> list[PushResult]:
    """Push the training pairs (train / heldout) and then the selector, whose card records the pairs' commit."""
    from datasets import DatasetDict

    splits = {
        "train": training_pairs(data["judge"]["train"], data["clinician_train"]),
        "heldout": training_pairs(data["judge"]["heldout"], data["clinician_heldout"]),
    }
    splits = DatasetDict({name: ds for name, ds in splits.items() if len(ds)})  # datasets cannot load empty splits
    # The weight the clinician pairs were trained with (a sweep trains the same pairs with several).
    stored = {w for split in splits.values() for w, s in zip(split["weight"], split["source"]) if s == "clinician"}
    if stored - {data["weight"]}:
        splits = splits.map(
            lambda weight, source: {"weight": data["weight"] if source == "clinician" else weight},
            input_columns=["weight", "source"],
        )
    counts = {
        name: {
            src: sum(s == src for s in splits[name]["source"]) if name in splits else 0
            for src in ("model", "clinician")
        }
        for name in ("train", "heldout")
    }
    config = {"script": args, "training": training_args}
    clinician_split = {
        None: "none were used.",
        "clinician": "held out by figure (no image on both sides).",
        "clinician_train": "too few to hold any out, so all train and alignment is reported on them.",
    }[data["clinician_set"]]
    flags = {"stand_in": data["stand_in"], "sample_preferences": data["sample_preferences"]}
    card = dataset_card(
        "selector_pairs",
        lineage=Lineage(stage="train_selector", inputs=data["inputs"], config=config, seed=args.pairs_seed),
        pretty_name="BioMed-VITAL selector training pairs" + (" (stand-in)" if data["stand_in"] else ""),
        task_categories=["image-text-to-text"],
        tags=["preferences", "selector"],
        repo_id=args.pairs_repo,
        revision=args.revision,
        counts=counts,
        min_gap=args.min_score_gap,
        clinician_weight=data["weight"],
        clinician_split=clinician_split,
        **flags,
    )
    push = {"revision": args.revision, "private": args.private}
    pairs = hub.push_dataset(splits, args.pairs_repo, card=card, **push)

    data_table = [
        {"name": f"{ref.repo_id} ({ref.repo_type})", "commit": ref.commit}
        if hasattr(ref, "commit")
        else {
            "name": ref.get("source") or ref.get("repo_id", ""),
            "commit": ref.get("sha256") or ref.get("revision", ""),
        }
        for ref in [*data["inputs"], backbone.lineage]
    ]
    data_table.append({"name": f"{args.pairs_repo} (training pairs)", "commit": pairs.commit})
    with open(os.path.join(save_dir, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    head_sizes = [saved["image_feature_dim"] + saved["text_feature_dim"], *saved["hidden_sizes"], 1]
    card = model_card(
        "selector",
        lineage=Lineage(
            stage="train_selector",
            inputs=[*data["inputs"], backbone.lineage, pairs.ref()],
            config=config,
            seed=training_args.seed,
            extra={
                "metrics": summary,
                "clinician_weight": data["weight"],
                "backbone": backbone.spec,
                "run_fingerprint": data.get("run_fingerprint"),
            },
        ),
        model_name=args.output_repo.split("/")[-1],
        base_model=backbone.hub_id,
        datasets=[args.pairs_repo],
        tags=["selector", "reward-model", "trl", *(["lora"] if args.use_lora else [])],
        repo_id=args.output_repo,
        revision=args.revision,
        backbone=backbone.spec,
        head_sizes=head_sizes,
        num_pairs=sum(len(s) for s in splits.values()),
        text_fields=args.text_fields,
        num_judge_pairs=counts["train"]["model"],
        num_clinician_pairs=counts["train"]["clinician"],
        clinician_weight=data["weight"],
        loss_type=training_args.loss_type,
        lora=args.use_lora,
        metrics_table=metrics_table(summary, counts),
        settings_table=settings_table(args, training_args),
        clipping_caps_weights=clipping_caps_weights(training_args, max(data["weight"], 1.0)),
        max_grad_norm=training_args.max_grad_norm,
        head_activation=args.head_activation,
        margin=training_args.margin,
        data_table=data_table,
        pairs_repo=args.pairs_repo,
        **flags,
    )
    model = hub.push_folder(
        save_dir,
        args.output_repo,
        "model",
        revision=args.revision,
        card=card,
        private=args.private,
        commit_message=f"Selector, clinician weight {data['weight']:g}: {headline(summary)}",
        delete_patterns=["*"],  # the branch holds exactly this selector
    )
    return [pairs, model]


def settings_table(args: ScriptArguments, training_args: SelectorTrainingConfig) -> list[dict]:
    """The settings that decide the selector, as the card shows them (every one set in the recipe's config)."""
    clip = training_args.max_grad_norm
    optimizer = _value(training_args.optim)
    if optimizer.startswith("adamw") and not training_args.weight_decay:
        optimizer += " with weight_decay 0 (Adam)"
    batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    clinician_heldout = args.clinician_heldout_preferences or (
        f"{args.clinician_heldout_fraction:g} of clinician_preferences, by figure"
    )
    rows = [
        ("optimizer", optimizer),
        ("learning rate", f"{training_args.learning_rate:g}"),
        ("lr schedule", _value(training_args.lr_scheduler_type)),
        ("warmup", f"{training_args.warmup_steps:g}"),
        (
            "training length",
            f"{training_args.max_steps} steps"
            if training_args.max_steps and training_args.max_steps > 0
            else f"{training_args.num_train_epochs:g} epochs",
        ),
        ("batch size per device x accumulation", f"{batch} (x {training_args.world_size} processes)"),
        ("gradient clipping (max_grad_norm)", f"{clip:g}" if clip and clip > 0 else "off"),
        ("loss", f"{training_args.loss_type}, margin {training_args.margin:g}"),
        ("pair-weight normalisation", training_args.weight_normalization),
        ("head output", args.head_activation or "raw score"),
        ("normalised features", str(args.normalize_features).lower()),
        ("scored text", f"`{args.text_template}`" if args.text_template else " + ".join(args.text_fields)),
        ("judge pair sampling", f"{args.pair_sampling}, {args.judge_turns} turn(s)"),
        ("clinician training pairs", f"first {args.clinician_train_limit}" if args.clinician_train_limit else "all"),
        ("clinician alignment pairs", clinician_heldout),
        ("mean rank", args.mean_rank),
        ("precision", "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"),
    ]
    return [{"name": name, "value": value} for name, value in rows]


def _value(option) -> str:
    return str(getattr(option, "value", option))


def metrics_table(summary: dict, counts: dict) -> list[dict]:
    judge_on = f"held-out judge pairs ({counts['heldout']['model']})"
    clinician_on = summary.get("clinician_alignment_on", "")
    rows = [
        ("judge pair accuracy", "judge_accuracy", judge_on),
        ("AUC", "auc", judge_on),
        ("MAP", "map", judge_on),
        ("normalised mean rank", "mean_rank", summary.get("mean_rank_on", "")),
        ("clinician alignment", "clinician_alignment", clinician_on),
        ("clinician AUC", "clinician_auc", clinician_on),
        ("clinician MAP", "clinician_map", clinician_on),
        ("train loss", "train_loss", "training pairs"),
    ]
    return [{"name": n, "value": f"{summary[k]:.4f}", "on": on} for n, k, on in rows if k in summary]


def cli(argv: list[str] | None = None) -> list[PushResult]:
    script_args, training_args = recipe_parser((ScriptArguments, SelectorTrainingConfig)).parse_args_and_config(argv)
    return main(script_args, training_args)


if __name__ == "__main__":
    cli()
