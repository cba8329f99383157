"""Compare evaluated models: the headline numbers of several eval datasets (the `evaluate` stage's output) side by
side, as a markdown table and a bar chart, pushed as a small dataset with its card.

Usage:

    vital compare_evals --hub local:outputs/hub --eval_repos quickstart/eval@main quickstart/eval-base@main \\
        --output_repo quickstart/eval-comparison
    python recipes/compare_evals.py --hub hf --eval_repos your-org/eval-sft@<commit> your-org/eval-base@<commit> \\
        --output_repo your-org/eval-comparison

Each eval dataset is read at a pinned commit (its ``summary`` config); the lineage of the comparison names them all.
`vital evaluate --compare_with ...` draws the same chart into a single model's eval dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.data.schemas import rows_to_dataset
from vital.evaluation.results import SUMMARY_FEATURES, comparison_chart, comparison_table, load_summary
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.compare_evals")


@dataclass
class CompareArguments(HubArguments):
    """
    Arguments of the `compare_evals` stage: which eval datasets to put side by side, and where the comparison goes.

    Parameters:
        eval_repos (`list[str]`, *optional*, defaults to `[]`):
            Eval datasets (the `evaluate` stage's output) as `"repo@revision"`; each is read at the commit its
            revision resolves to. At least one.
        output_repo (`str` or `None`, *optional*, defaults to `None`):
            Dataset repo the comparison (merged summaries, chart, card) is pushed to. `None`: print the table and
            write the chart only.
        mode (`str`, *optional*, defaults to `"legacy"`):
            VQA metric mode the chart shows: `"legacy"` (LLaVA-Med's) or `"strict"`.
        output_dir (`str`, *optional*, defaults to `"outputs/compare_evals"`):
            Folder the chart (`comparison.png`) is also written to.
    """

    eval_repos: list[str] = field(default_factory=list, metadata={"help": "Eval datasets 'repo@revision' to compare."})
    output_repo: str | None = field(default=None, metadata={"help": "Repo the comparison goes to (none: print only)."})
    mode: str = field(default="legacy", metadata={"help": "VQA metric mode in the chart: legacy or strict."})
    output_dir: str = field(default="outputs/compare_evals", metadata={"help": "Where the chart is also written."})


def main(args: CompareArguments) -> list[PushResult]:
    setup_logging()
    hub = get_hub(args.hub)
    if len(args.eval_repos) < 1:
        raise ValueError("give at least one eval dataset in eval_repos")

    # 1. Every model's summary at a pinned commit; a model evaluated twice keeps both, told apart by the commit.
    summaries, refs = {}, []
    for spec in args.eval_repos:
        rows, ref = load_summary(hub, spec)
        label = rows[0]["model"] if rows else ref.repo_id
        summaries[label if label not in summaries else f"{label} ({ref.commit[:7]})"] = rows
        refs.append(ref)

    # 2. The table and the chart.
    table = comparison_table(summaries)
    chart = comparison_chart(summaries, Path(args.output_dir, "comparison.png"), args.mode)
    print(table)
    logger.info("chart: %s", chart)
    if not args.output_repo or not args.push_to_hub:
        return []

    # 3. Push the merged summaries, the chart and the card.
    merged = [{**row, "model": model} for model, rows in summaries.items() for row in rows]
    card = dataset_card(
        "eval_comparison",
        lineage=Lineage(stage="compare_evals", inputs=refs, config=args),
        pretty_name="Evaluation comparison: " + ", ".join(summaries),
        task_categories=["visual-question-answering"],
        models=list(summaries),
        table=table,
        mode=args.mode,
    )
    pushed = [  # the table, the chart and the card: one commit
        hub.push_datasets(
            {"default": (rows_to_dataset(merged, SUMMARY_FEATURES), "test")},
            args.output_repo,
            args.hub_revision,
            card,
            args.hub_private_repo,
            "Compare evaluations",
            files={"figures/comparison.png": chart},
        )
    ]
    print(artifact_table(pushed, {args.output_repo: f"{len(summaries)} models"}))
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = recipe_parser((CompareArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
