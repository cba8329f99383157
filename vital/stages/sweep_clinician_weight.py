"""Stage 3a, sweep — train the selector once per clinician weight and chart alignment against judge accuracy.

Usage:

    python recipes/sweep_clinician_weight.py --config recipes/quickstart/sweep_clinician_weight.yaml
    vital sweep_clinician_weight --config recipes/quickstart/sweep_clinician_weight.yaml --hub local:outputs/hub

    # paper settings (weights 1, 10, 100, 200, 300, 400):
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/sweep_clinician_weight.py \\
        --config recipes/biomed_vital/sweep_clinician_weight.yaml

Takes every argument of `train_selector` plus `weights`. The pairs are built once; each weight trains a selector
from the same initial model (same seed) on the same pairs and is evaluated on the same held-out pairs. The recipe
prints a table (weight, judge accuracy, clinician alignment with its 95% Wilson interval, AUC, MAP), draws
clinician alignment (with the interval) and judge accuracy against the weight (log x axis) and, with
`push_to_hub: true`, pushes both, with a card, to `results_repo` on branch `hub_revision`. With `push_models`, each
selector also goes to `hub_model_id` on branch `weight-<w>` (and its pairs to `pairs_repo` on the same branch). The
selector's library (`vital.selector`: `arguments`, `inputs`, `runs`, `publish`) does the work; no stage imports
another.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field

import torch
from datasets import Dataset, Features, Value
from transformers import set_seed

from vital.cards import Lineage, dataset_card
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging
from vital.selector import SelectorTrainingConfig, alignment_interval, clipping_caps_weights
from vital.selector.arguments import SelectorScriptArguments, selector_config
from vital.selector.inputs import prepare_data
from vital.selector.publish import push_selector
from vital.selector.runs import save_selector, selector_target
from vital.selector.training import fit_selector, load_selector, resolve_backbone, summarize_metrics, training_pairs


logger = logging.getLogger("vital.sweep_clinician_weight")
FIGURE = "figures/clinician_weight_sweep.png"
RESULT_FEATURES = Features(
    {
        "weight": Value("float64"),
        "judge_accuracy": Value("float64"),
        "clinician_alignment": Value("float64"),
        "clinician_alignment_low": Value("float64"),  # 95% Wilson interval
        "clinician_alignment_high": Value("float64"),
        "clinician_alignment_n": Value("int64"),
        "clinician_alignment_on": Value("string"),
        "auc": Value("float64"),
        "mean_rank": Value("float64"),
        "mean_rank_on": Value("string"),
        "map": Value("float64"),
        "clinician_auc": Value("float64"),
        "clinician_map": Value("float64"),
        "train_loss": Value("float64"),
    }
)


@dataclass
class SweepArguments(SelectorScriptArguments):
    """
    The sweep's arguments: every argument of `train_selector` (`vital.selector.arguments.SelectorScriptArguments`)
    plus the weights swept and where the results go. The push options are `SelectorTrainingConfig`'s (TRL's):
    `push_to_hub`, `hub_revision` (the results' branch), `hub_private_repo`, and `hub_model_id` (the selectors' repo,
    with `push_models`).

    Parameters:
        weights (`list[float]`, *optional*, defaults to `[1.0, 10.0, 100.0, 200.0, 300.0, 400.0]`):
            Clinician weights to train with, one selector each (paper: 1, 10, 100, 200, 300, 400).
        results_repo (`str`, *optional*, defaults to `"quickstart/clinician-weight-sweep"`):
            Dataset repo of the results table and the chart.
        push_models (`bool`, *optional*, defaults to `False`):
            Also push every selector to `hub_model_id`, branch `weight-<w>` (its pairs to `pairs_repo`, same branch).
    """

    weights: list[float] = field(
        default_factory=lambda: [1.0, 10.0, 100.0, 200.0, 300.0, 400.0],
        metadata={"help": "Clinician weights to train with, one selector each (paper: 1, 10, 100, 200, 300, 400)."},
    )
    results_repo: str = field(
        default="quickstart/clinician-weight-sweep", metadata={"help": "Dataset repo of the results and the chart."}
    )
    push_models: bool = field(
        default=False, metadata={"help": "Also push every selector to hub_model_id, branch 'weight-<w>'."}
    )


def main(args: SweepArguments, training_args: SelectorTrainingConfig) -> list[PushResult]:
    # 1. Logging, seed, the pairs and the backbone, once for every weight.
    setup_logging(main_process=training_args.process_index == 0)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if not args.weights or any(not w > 0 for w in args.weights):
        raise ValueError(f"weights must be positive, got {args.weights}")
    hub, target = get_hub(args.hub), selector_target(args, training_args)
    with training_args.main_process_first(desc="build the selector's training pairs"):
        data = prepare_data(args, training_args, hub)
        backbone = resolve_backbone(hub, args.backbone, args.backbone_revision)
    train_dataset = training_pairs(data["judge"]["train"], data["clinician_train"])
    if data["clinician_set"] is None:
        raise ValueError("the sweep varies the clinician weight: set `clinician_preferences`")

    # 2. One selector per weight, from the same initial model, on the same pairs.
    rows, pushed = [], []
    for weight in sorted(args.weights):
        run_args = copy.deepcopy(training_args)
        run_args.clinician_weight = float(weight)
        run_args.output_dir = os.path.join(training_args.output_dir, f"weight-{weight:g}")
        set_seed(training_args.seed)
        model, processor = load_selector(backbone, seed=training_args.seed, **selector_config(args))
        trainer, metrics = fit_selector(model, processor, run_args, train_dataset, data["eval_sets"])
        n_clinician = len(data["eval_sets"][data["clinician_set"]])
        summary = summarize_metrics(metrics, data["clinician_set"], n_clinician, args.mean_rank)
        low, high = alignment_interval(summary.get("clinician_alignment", math.nan), n_clinician)
        summary.update(clinician_alignment_low=low, clinician_alignment_high=high, clinician_alignment_n=n_clinician)
        defaults = {"clinician_alignment_on": "", "mean_rank_on": ""}
        rows.append(
            {name: summary.get(name, defaults.get(name, math.nan)) for name in RESULT_FEATURES}
            | {"weight": float(weight)}
        )
        logger.info("weight %g: %s", weight, summary)
        if args.push_models and trainer.is_world_process_zero():
            save_dir = save_selector(trainer, processor, os.path.join(run_args.output_dir, "selector"))
            branch = dataclasses.replace(target, revision=f"weight-{weight:g}")
            run_data = {**data, "weight": float(weight)}
            pushed += push_selector(hub, branch, args, run_args, run_data, backbone, summary, save_dir)
        del trainer, model
        gc.collect()

    # 3. Table, chart, and push from the main process.
    if training_args.process_index != 0:
        return pushed
    print(results_table(rows))
    if target.push:
        pushed.append(push_results(hub, target, args, training_args, data, rows, backbone))
        print(artifact_table(pushed[-1:]))
    return pushed


def results_table(rows: list[dict]) -> str:
    """Per weight: held-out judge accuracy, clinician alignment with its 95% interval, AUC and MAP."""
    header = f"{'weight':>8}  {'judge acc':>9}  {'clinician':>9}  {'95% interval':>15}  {'AUC':>6}  {'MAP':>6}"
    lines = [header, "-" * len(header)]
    for r in rows:
        interval = f"[{r['clinician_alignment_low']:.3f}, {r['clinician_alignment_high']:.3f}]"
        lines.append(
            f"{r['weight']:>8g}  {r['judge_accuracy']:>9.4f}  {r['clinician_alignment']:>9.4f}  {interval:>15}  "
            f"{r['auc']:>6.4f}  {r['map']:>6.4f}"
        )
    if any(interval_spans_chance(r) for r in rows):
        lines.append(
            "A clinician-alignment interval spans 0.5: too few clinician pairs to tell that weight from chance, "
            "let alone to rank the weights."
        )
    return "\n".join(lines)


def interval_spans_chance(row: dict) -> bool:
    """Whether a row's clinician-alignment interval holds 0.5 (or could not be computed)."""
    low, high = row["clinician_alignment_low"], row["clinician_alignment_high"]
    return math.isnan(low) or math.isnan(high) or low <= 0.5 <= high


def plot_sweep(rows: list[dict], path: str, clinician_on: str) -> str:
    """Clinician alignment and judge accuracy against the clinician weight, log x axis (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path), exist_ok=True)
    weights = [r["weight"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    alignment = [r["clinician_alignment"] for r in rows]
    errors = [
        [max(a - r["clinician_alignment_low"], 0) for a, r in zip(alignment, rows)],
        [max(r["clinician_alignment_high"] - a, 0) for a, r in zip(alignment, rows)],
    ]
    ax.errorbar(
        weights, alignment, yerr=errors, fmt="o-", capsize=3, label=f"clinician alignment ({clinician_on}, 95%)"
    )
    ax.plot(weights, [r["judge_accuracy"] for r in rows], "s--", label="judge accuracy (held-out judge pairs)")
    ax.set_xscale("log")
    ax.set_xlabel("clinician weight")
    ax.set_ylabel("pair accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_title("Selector: clinician weight sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def push_results(hub, target, args, training_args, data, rows, backbone) -> PushResult:
    """The results table, the chart and their card, as one commit to ``results_repo`` on ``target.revision``."""
    clinician_on = rows[0]["clinician_alignment_on"] if rows else ""
    keys = ("judge_accuracy", "clinician_alignment", "auc", "mean_rank", "map", "clinician_auc", "clinician_map")
    fmt = {k: (lambda v: f"{v:.4f}") for k in keys}
    fmt["interval"] = lambda r: f"[{r['clinician_alignment_low']:.3f}, {r['clinician_alignment_high']:.3f}]"
    card = dataset_card(
        "clinician_weight_sweep",
        lineage=Lineage(
            stage="sweep_clinician_weight",
            inputs=[*data["inputs"], backbone.lineage],
            config={"script": args, "training": training_args},
            seed=training_args.seed,
        ),
        pretty_name="BioMed-VITAL selector: clinician weight sweep" + (" (stand-in)" if data["stand_in"] else ""),
        task_categories=["image-text-to-text"],
        tags=["selector", "ablation"],
        rows=[
            {
                "weight": f"{r['weight']:g}",
                **{k: f(r) if k == "interval" else f(r[k]) for k, f in fmt.items()},
                "spans_chance": interval_spans_chance(r),
            }
            for r in rows
        ],
        spans_chance=[f"{r['weight']:g}" for r in rows if interval_spans_chance(r)],
        n_clinician_alignment=rows[0]["clinician_alignment_n"] if rows else 0,
        mean_rank_on=rows[0]["mean_rank_on"] if rows else "",
        max_grad_norm=training_args.max_grad_norm,
        clipping_caps_weights=clipping_caps_weights(training_args, max(args.weights)),
        num_judge_pairs=len(data["judge"]["train"]),
        num_clinician_pairs=len(data["clinician_train"] or []),
        judge_on=f"{len(data['judge']['heldout'])} held-out judge pairs",
        clinician_on=clinician_on,
        figure=FIGURE,
        stand_in=data["stand_in"],
        sample_preferences=data["sample_preferences"],
    )
    results = Dataset.from_list(rows, features=RESULT_FEATURES)
    with tempfile.TemporaryDirectory() as staging:  # the results, the chart and the card: one commit
        plot_sweep(rows, os.path.join(staging, FIGURE), clinician_on.split(" (")[0])
        return hub.push_datasets(
            {"default": (results, "train")},
            args.results_repo,
            target.revision,
            card,
            target.private,
            "Sweep",
            files={FIGURE: os.path.join(staging, FIGURE)},
        )


def cli(argv: list[str] | None = None) -> list[PushResult]:
    args, training_args = recipe_parser((SweepArguments, SelectorTrainingConfig)).parse_args_and_config(argv)
    return main(args, training_args)


if __name__ == "__main__":
    cli()
