"""Stage 3b — select (`vital select`): score every candidate with the trained selector and keep the best at each ratio.

The script is `select_data.py`, not `select.py`: `python recipes/<stage>.py` puts recipes/ first on `sys.path`, where
a `select.py` would shadow the standard library's `select` module (which subprocess, socket and asyncio import).

Usage:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/select_data.py --config recipes/quickstart/select.yaml
    python recipes/select_data.py --config recipes/quickstart/select.yaml
    vital select --config recipes/quickstart/select.yaml --hub local:outputs/hub

    # paper settings (top 10 / 40 / 80 / 90 %, the 150K and 210K mixtures with LLaVA-Med's data), GPUs:
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/select_data.py \\
        --config recipes/biomed_vital/select.yaml

Every question–answer turn is scored (candidates streamed from disk in batches; under `accelerate launch` each
process scores its slice and the main process gathers them); a candidate's score is the mean (or min / max) of its
turns'. Candidates whose image is missing or corrupt are quarantined with the reason (config `quarantine`), never
scored or dropped silently. Each ratio becomes a config (`top10`, `top40`, ...): the best `ceil(ratio * n)`
candidates, best first, ties broken by candidate id, so the same selector and candidates commits give the same
`selected` commit. Mixtures (`name=top80+repo@rev[:config]+...`) merge a selection with other instruction sets in TRL
format into extra configs with a `provenance` column. The card shows the score histogram with the cut lines.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.data.inputs import require_columns
from vital.hub import HubError, PushResult, get_hub
from vital.runner import artifact_table, process_state, recipe_parser, setup_logging
from vital.selection import (
    cut_scores,
    load_mixtures,
    plot_score_histogram,
    score_candidates,
    select_top_ratios,
)


logger = logging.getLogger("vital.select")
FIGURE = "figures/score_histogram.png"


@dataclass
class ScriptArguments(HubArguments):
    """
    Arguments of the `select` stage: the candidates and the selector that scores them, how scores become a selection,
    and the repo the selection is pushed to.

    Parameters:
        > Parameters that control the inputs

        candidates_repo (`str`, *optional*, defaults to `"quickstart/candidates"`):
            Dataset repo of the candidates to score.
        candidates_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the candidates; resolved to a commit before reading.
        selector_repo (`str`, *optional*, defaults to `"quickstart/selector"`):
            Selector model repo on the hub, or a local selector folder (recorded by its fingerprint).
        selector_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the selector.
        limit (`int` or `None`, *optional*):
            Score only the first N candidates (smoke runs).

        > Parameters that control the selection

        ratios (`list[float]`, *optional*, defaults to `[0.1, 0.4, 0.8, 0.9]`):
            Kept ratios, one config each (`0.1` -> `top10`); the paper: 0.1, 0.4, 0.8, 0.9.
        aggregate (`str`, *optional*, defaults to `"mean"`):
            How a candidate's turn scores become its score: `"mean"` (ours), `"min"`, `"max"`, or `"first"` (the
            official code: only the first turn is scored).
        cut (`str`, *optional*, defaults to `"ceil"`):
            Rows a ratio keeps: `ceil(ratio * n)` (`"ceil"`, ours) or `"floor"` (the official `int()`).
        mixtures (`list[str]`, *optional*, defaults to `[]`):
            Extra configs mixing a selection with other instruction sets in TRL format:
            `name=top80+repo[@revision][:config]+...` (the paper: the 150K and 210K mixes with LLaVA-Med's 10K / 60K).
        histogram_bins (`int`, *optional*, defaults to `40`):
            Bins of the score histogram in the card.

        > Parameters that control the scoring

        batch_size (`int`, *optional*, defaults to `64`):
            Candidates read, and inputs scored, per step.
        max_length (`int` or `None`, *optional*):
            Token limit per text. Default: the tokenizer's.
        dataloader_num_workers (`int`, *optional*, defaults to `1`):
            Worker processes (per scoring process) that read, decode, preprocess and tokenise batches ahead of the
            model, as the `Trainer` argument of that name. `0`: in the scoring process. Scores do not depend on it.
        torch_threads (`int` or `None`, *optional*):
            CPU threads per process for torch. Unset: torch's default.
        use_cpu (`bool`, *optional*, defaults to `False`):
            Score on CPU even where an accelerator is present. Several processes on a machine without CUDA
            (`accelerate_configs/cpu.yaml`) always run on CPU, over gloo.

        > Parameters that control the push (those of [`~vital.arguments.HubArguments`])

        selected_repo (`str`, *optional*, defaults to `"quickstart/selected"`):
            Dataset repo the selection (one config per ratio and mixture, the quarantine, the histogram) is pushed to.
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the selection. `False` scores, selects and reports, and pushes nothing.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch of `selected_repo` the selection is pushed to (created from the default branch if missing).
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create `selected_repo` private. An existing repo keeps its visibility.
    """

    candidates_repo: str = field(default="quickstart/candidates", metadata={"help": "Candidates to score."})
    candidates_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the candidates."})
    selector_repo: str = field(
        default="quickstart/selector", metadata={"help": "Selector model repo on the hub, or a local selector folder."}
    )
    selector_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the selector."})
    selected_repo: str = field(default="quickstart/selected", metadata={"help": "Dataset repo the selection goes to."})
    ratios: list[float] = field(
        default_factory=lambda: [0.1, 0.4, 0.8, 0.9],
        metadata={"help": "Kept ratios, one config each (0.1 -> top10); paper: 0.1, 0.4, 0.8, 0.9."},
    )
    aggregate: str = field(
        default="mean",
        metadata={
            "help": "How a candidate's turn scores become its score: mean (ours), min, max, or first (the official "
            "code: only the first turn is scored).",
            "choices": ["first", "max", "mean", "min"],
        },
    )
    cut: str = field(
        default="ceil",
        metadata={
            "help": "Rows a ratio keeps: ceil(ratio * n) (ours) or floor (the official int()).",
            "choices": ["ceil", "floor"],
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Candidates read, and inputs scored, per step."})
    max_length: int | None = field(default=None, metadata={"help": "Token limit per text; default the tokenizer's."})
    dataloader_num_workers: int = field(
        default=1,
        metadata={"help": "Worker processes that preprocess batches ahead of the model; 0: in the scoring process."},
    )
    mixtures: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Extra configs mixing a selection with other instruction sets in TRL format: "
            "'name=top80+repo[@revision][:config]+...' (paper: the 150K and 210K mixes with LLaVA-Med's 10K / 60K)."
        },
    )
    histogram_bins: int = field(default=40, metadata={"help": "Bins of the score histogram in the card."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N candidates (smoke runs)."})
    torch_threads: int | None = field(
        default=None, metadata={"help": "CPU threads per process for torch; unset: torch's default."}
    )
    use_cpu: bool = field(
        default=False,
        metadata={
            "help": "Score on CPU even where an accelerator is present. Several processes on a machine without CUDA "
            "(accelerate_configs/cpu.yaml) always run on CPU, over gloo."
        },
    )


def load_selector(hub, args: ScriptArguments, device):
    """The selector and its processor from a model repo at a pinned commit (or a local folder), and its lineage."""
    from transformers import AutoModel, AutoProcessor

    import vital.selector  # noqa: F401  (registers the selector with the Auto classes)
    from vital.selector.training import folder_fingerprint

    if os.path.isdir(args.selector_repo):
        folder = args.selector_repo
        lineage = {"source": os.path.abspath(folder), "repo_type": "model", "sha256": folder_fingerprint(folder)}
    else:
        lineage = hub.ref(args.selector_repo, args.selector_revision, "model")
        folder = str(hub.snapshot(args.selector_repo, lineage.commit, "model"))
    model = AutoModel.from_pretrained(folder).to(device).eval()
    return model, AutoProcessor.from_pretrained(folder), lineage


def main(args: ScriptArguments) -> list[PushResult]:
    # 1. Processes, logging, inputs at pinned commits.
    state = process_state(cpu=args.use_cpu)
    setup_logging(main_process=state.is_main_process)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    hub = get_hub(args.hub)
    candidates_ref = hub.ref(args.candidates_repo, args.candidates_revision)
    candidates = hub.load_dataset(args.candidates_repo, revision=candidates_ref.commit, split="train")
    require_columns(candidates, "select", "candidates", candidates_ref)
    if args.limit:
        candidates = candidates.select(range(min(args.limit, len(candidates))))
    model, processor, selector_ref = load_selector(hub, args, state.device)

    # 2. Score every turn, this process's slice, gathered on every process; bad candidates are quarantined.
    scored = score_candidates(
        model,
        processor,
        candidates,
        batch_size=args.batch_size,
        aggregate=args.aggregate,
        max_length=args.max_length,
        state=state,
        log_every=10 * args.batch_size,
        num_workers=args.dataloader_num_workers,
    )
    logger.info("%d candidates scored, %d quarantined", len(scored), len(scored.quarantine))
    pushed: list[PushResult] = []
    if not state.is_main_process:
        state.wait_for_everyone()
        return pushed
    if not len(scored):
        raise ValueError(f"no candidate of {candidates_ref} could be scored: {scored.quarantine.counts()}")

    # 3. One config per ratio, then the mixtures; lineage records every input at its commit.
    configs = select_top_ratios(candidates, scored, args.ratios, cut=args.cut)
    mixtures, mixture_rows, mixture_inputs = load_mixtures(hub, args.mixtures, configs, candidates_ref)
    inputs = [candidates_ref, selector_ref, *mixture_inputs]

    # 4. Push: every config, the quarantine (or its removal), stale configs removed, then the figure and the card.
    if args.push_to_hub:
        final = push_selection(hub, args, candidates, scored, configs, mixtures, mixture_rows, inputs, selector_ref)
        pushed = [final]
        print(artifact_table(pushed, {args.selected_repo: summary_line(configs, scored)}))
    else:
        print(summary_line(configs, scored))
    state.wait_for_everyone()
    return pushed


def summary_line(configs, scored) -> str:
    kept = ", ".join(f"{name} {len(ds)}" for name, ds in configs.items())
    return f"{len(scored)} scored, {len(scored.quarantine)} quarantined; {kept}"


def push_selection(hub, args, candidates, scored, configs, mixtures, mixture_rows, inputs, selector_ref) -> PushResult:
    """Push every config, the quarantine, the histogram and the card; returns the commit that holds them all (``created``
    is False when the repo already held exactly this selection)."""
    try:
        head = hub.resolve(args.selected_repo, args.hub_revision)
        current = hub.read_card(args.selected_repo, args.hub_revision)
    except (HubError, RepositoryNotFoundError, RevisionNotFoundError):  # no repo or branch yet
        head, current = None, None
    before = [c["config_name"] for c in (current.data.to_dict().get("configs") or [])] if current else []
    outputs = {name: (dataset, "train") for name, dataset in {**configs, **mixtures}.items()}
    if len(scored.quarantine):
        outputs["quarantine"] = (scored.quarantine.to_dataset(), "train")
    stale = [c for c in before if c not in outputs]
    if stale:
        logger.info("removing configs %s of an earlier selection", stale)

    cuts = cut_scores(scored, args.ratios, args.cut)
    stand_in = "generation" in candidates.column_names and bool((candidates[0]["generation"] or {}).get("stand_in"))
    rows = [
        {
            "name": name,
            "rows": len(ds),
            "kept": f"{len(ds) / len(scored):.1%}",
            "cut": f"{cuts[name]:.4f}",
            "mean": f"{float(np.mean(ds['selector_score'])):.4f}",
        }
        for name, ds in configs.items()
    ]
    reasons = Counter(r.reason.split(" (")[0].split(":")[0] for r in scored.quarantine.records)
    card = dataset_card(
        "selected",
        lineage=Lineage(
            stage="select",
            inputs=inputs,
            config=args,
            extra={"aggregate": args.aggregate, "ratios": args.ratios, "cut": args.cut},
        ),
        pretty_name="BioMed-VITAL selected instructions" + (" (stand-in)" if stand_in else ""),
        tags=["selected", "sft"],
        repo_id=args.selected_repo,
        revision=args.hub_revision,
        selector=str(selector_ref) if not isinstance(selector_ref, dict) else selector_ref["source"],
        aggregate=args.aggregate,
        stand_in=stand_in,
        figure=FIGURE,
        num_scored=len(scored),
        num_quarantined=len(scored.quarantine),
        quarantine=dict(sorted(reasons.items())),
        configs=rows,
        mixtures=mixture_rows,
    )
    with tempfile.TemporaryDirectory() as staging:
        title = f"Selector scores of {len(scored)} candidates ({args.aggregate} over turns)"
        plot_score_histogram(scored.scores, cuts, os.path.join(staging, FIGURE), args.histogram_bins, title)
        final = hub.push_datasets(  # every config, the histogram and the card: one commit
            outputs,
            args.selected_repo,
            args.hub_revision,
            card,
            args.hub_private_repo,
            "Selection",
            delete_configs=stale,
            files={FIGURE: os.path.join(staging, FIGURE)},
        )
    return dataclasses.replace(final, created=final.commit != head)


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = recipe_parser((ScriptArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
