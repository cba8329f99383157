"""What a selector fit publishes: its training pairs (``train`` / ``heldout``) and the selector, each with its card (the
held-out metrics, the settings that decide the selector, every input commit), and the tables those cards show."""

from __future__ import annotations

import json
import os
from typing import Any

from vital.cards import Lineage, dataset_card, model_card
from vital.hub import Hub, PushResult
from vital.selector.arguments import SelectorScriptArguments
from vital.selector.runs import SelectorTarget
from vital.selector.trainer import clipping_caps_weights
from vital.selector.training import training_pairs


def headline(summary: dict) -> str:
    """The run's figures in a few words: held-out judge accuracy and clinician alignment."""
    parts = [f"judge acc {summary['judge_accuracy']:.3f}" if "judge_accuracy" in summary else ""]
    if "clinician_alignment" in summary:
        parts.append(f"clinician {summary['clinician_alignment']:.3f}")
    return ", ".join(p for p in parts if p)


def push_selector(
    hub: Hub,
    target: SelectorTarget,
    args: SelectorScriptArguments,
    training_args: Any,
    data: dict,
    backbone: Any,
    summary: dict,
    save_dir: str,
) -> list[PushResult]:
    """Push the training pairs (train / heldout) to ``target.pairs_repo`` and then the selector to
    ``target.model_repo``, both on ``target.revision``; the selector's card records the pairs' commit."""
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
        repo_id=target.pairs_repo,
        revision=target.revision,
        counts=counts,
        min_gap=args.min_score_gap,
        clinician_weight=data["weight"],
        clinician_split=clinician_split,
        **flags,
    )
    push = {"revision": target.revision, "private": target.private}
    pairs = hub.push_dataset(splits, target.pairs_repo, card=card, **push)

    data_table = [
        {"name": f"{ref.repo_id} ({ref.repo_type})", "commit": ref.commit}
        if hasattr(ref, "commit")
        else {
            "name": ref.get("source") or ref.get("repo_id", ""),
            "commit": ref.get("sha256") or ref.get("revision", ""),
        }
        for ref in [*data["inputs"], backbone.lineage]
    ]
    data_table.append({"name": f"{target.pairs_repo} (training pairs)", "commit": pairs.commit})
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
        model_name=target.model_repo.split("/")[-1],
        base_model=backbone.hub_id,
        datasets=[target.pairs_repo],
        tags=["selector", "reward-model", "trl", *(["lora"] if args.use_lora else [])],
        repo_id=target.model_repo,
        revision=target.revision,
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
        pairs_repo=target.pairs_repo,
        **flags,
    )
    model = hub.push_folder(
        save_dir,
        target.model_repo,
        "model",
        revision=target.revision,
        card=card,
        private=target.private,
        commit_message=f"Selector, clinician weight {data['weight']:g}: {headline(summary)}",
        delete_patterns=["*"],  # the branch holds exactly this selector
    )
    return [pairs, model]


def settings_table(args: SelectorScriptArguments, training_args: Any) -> list[dict]:
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
    """The card's table of the held-out metrics, each with the pairs it was measured on."""
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
