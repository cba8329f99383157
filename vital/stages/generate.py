"""Stage 1 — generate: a vision model writes multi-turn conversations about each figure, prompted with one
clinician-selected demonstration per modality; a sample of figures also gets questions with two answers each, for
the clinicians' preference task.

Usage:

    vital pipeline --config recipes/quickstart/pipeline.yaml                  # offline: the pipeline runs the stand-in
    vital stand-in --port 8123 &                                              # or serve the stand-in yourself ...
    vital generate --config recipes/quickstart/generate.yaml                  # ... and run this stage alone on it
    python recipes/generate.py --config recipes/biomed_vital/generate.yaml      # GPT-4V class model (OPENAI_API_KEY)
    accelerate launch --num_processes 4 recipes/generate.py --config ...       # 4 shards, merged by process 0
    python recipes/generate.py --config ... --shard 2/8                         # one shard on one machine
    python recipes/generate.py --config ... --mode batch                        # the Batch API: half price, <= 24 h

The stage talks to the configured OpenAI-compatible endpoint; the quickstart YAML names the stand-in's default
address (``vital stand-in``, http://127.0.0.1:8123/v1; ``--base_url`` points elsewhere). Replies that came from the
stand-in (it answers as model ``vital-stand-in``) are flagged ``stand_in`` in every row and on the cards.

Every finished request is journaled under a stable key (pair image, demos, prompt, model, parameters), so a killed
run resumes where it stopped. With `--shard i/n` a process only fills its journal; a run without `--shard` over the
same `journal_dir` (holding every shard's journal) merges them and pushes. What could not be generated or parsed
goes to the `failures` config of the candidates repo, with the reason and the raw reply.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.data.inputs import require_columns
from vital.data.schemas import CANDIDATE_FEATURES, rows_to_dataset, validate_dataset
from vital.demos import DemoSampler
from vital.generation import (
    answer_pair_features,
    answer_pair_rows,
    build_answer_pair_messages,
    build_generation_messages,
    candidate_rows,
    failure_features,
    plan_generation,
    quarantine_failures,
    usage_stats,
)
from vital.hub import PushResult, get_hub
from vital.llm import EndpointConfig, from_stand_in, image_to_data_url
from vital.llm.batch import BatchConfig
from vital.llm.jobs import run_jobs_sharded
from vital.llm.provenance import recorded_endpoint
from vital.runner import artifact_table, process_state, recipe_parser, setup_logging


logger = logging.getLogger("vital.generate")
API_STAGE = True  # sends model requests: `vital pipeline` points it at the stand-in when the pipeline has one


@dataclass
class GenerateArguments(HubArguments):
    """
    Arguments of the generation stage (beside `EndpointConfig`, where requests go, and `BatchConfig`, how).

    Parameters:
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the candidates and answer pairs. `False` sends the requests (journaled) and pushes nothing.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch the candidates and answer pairs are pushed to.
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create the output repos private.
        pairs_repo (`str`, *optional*, defaults to `"quickstart/pairs"`):
            Dataset of figure-caption pairs to generate conversations about.
        pairs_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the pairs (resolved to a commit, recorded in the lineage).
        demos_repo (`str`, *optional*, defaults to `"quickstart/demos"`):
            Clinician-approved demonstrations, drawn per modality into every request.
        demos_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the demonstrations.
        candidates_repo (`str`, *optional*, defaults to `"quickstart/candidates"`):
            Dataset repo the conversations (config `default`) and what failed (config `failures`) are pushed to.
        answer_pairs_repo (`str`, *optional*, defaults to `"quickstart/answer-pairs"`):
            Dataset repo of the two-answer questions (clinicians' preference task).
        limit (`int` or `None`, *optional*):
            Only the first N pairs (smoke runs); `None` takes all.
        samples_per_pair (`int`, *optional*, defaults to `1`):
            Conversations per pair; samples after the first get their own sampling seed.
        demos_per_modality (`int`, *optional*, defaults to `1`):
            Demonstrations per modality per request (the paper: 1).
        demo_modalities (`list[str]` or `None`, *optional*):
            Domain flags that get a demonstration each, in order (the paper: chest_xray, mri, ct, histology, gross).
            `None`: every modality the demos cover.
        demo_images (`bool`, *optional*, defaults to `True`):
            Show the demonstrations' images; `False` sends text-only demonstrations (the paper).
        prompt_style (`str`, *optional*, defaults to `"ours"`):
            `"paper"` (the official prompt's requirements) or `"ours"`.
        answer_pair_demos (`int`, *optional*, defaults to `1`):
            Worked two-answer examples shown before the target figure (0 or 1; the paper: 1).
        json_output (`bool`, *optional*, defaults to `False`):
            Ask for JSON replies (endpoints with `response_format`).
        answer_pairs (`int`, *optional*, defaults to `0`):
            How many pairs (a seeded sample) also get two-answer questions.
        journal_dir (`str`, *optional*, defaults to `"outputs/journals/generate"`):
            Where the request journals live (a rerun resumes from them).
        shard (`str` or `None`, *optional*):
            `"i/n"`: fill shard i's journal only and push nothing; a run without it merges the shards' journals.
        data_seed (`int`, *optional*, defaults to `0`):
            Seeds the demonstration draw and the answer-pair sample.
        expected_pairs (`int` or `None`, *optional*):
            For `--dry_run` when the pairs repo cannot be read: how many pairs there are.
    """

    pairs_repo: str = field(default="quickstart/pairs", metadata={"help": "Pairs dataset repo."})
    pairs_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the pairs."})
    demos_repo: str = field(default="quickstart/demos", metadata={"help": "Clinician-approved demonstrations repo."})
    demos_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the demos."})
    candidates_repo: str = field(default="quickstart/candidates", metadata={"help": "Repo the candidates go to."})
    answer_pairs_repo: str = field(default="quickstart/answer-pairs", metadata={"help": "Repo of the answer pairs."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N pairs (smoke runs)."})
    samples_per_pair: int = field(default=1, metadata={"help": "Conversations per pair (seeds differ)."})
    demos_per_modality: int = field(default=1, metadata={"help": "Demonstrations per modality per request (paper 1)."})
    demo_modalities: list[str] | None = field(
        default=None,
        metadata={
            "help": "Domain flags that get a demo each, in order (the paper: chest_xray, mri, ct, histology, "
            "gross); default: every modality the demos cover."
        },
    )
    demo_images: bool = field(
        default=True, metadata={"help": "Show the demonstrations' images; false: text-only demos (the paper)."}
    )
    prompt_style: str = field(
        default="ours", metadata={"help": "'paper' (the official prompt's requirements) or 'ours'."}
    )
    answer_pair_demos: int = field(
        default=1, metadata={"help": "Worked two-answer examples before the target figure (0 or 1; the paper: 1)."}
    )
    json_output: bool = field(default=False, metadata={"help": "Ask for JSON (endpoints with response_format)."})
    answer_pairs: int = field(default=0, metadata={"help": "How many pairs also get two-answer questions."})
    journal_dir: str = field(default="outputs/journals/generate", metadata={"help": "Where request journals live."})
    shard: str | None = field(default=None, metadata={"help": "'i/n': fill shard i's journal only, push nothing."})
    data_seed: int = field(default=0, metadata={"help": "Seeds demo sampling and the answer-pair sample."})
    expected_pairs: int | None = field(
        default=None, metadata={"help": "For --dry_run when the pairs repo cannot be read: how many pairs there are."}
    )


def push_with_failures(hub, rows, failures: list[dict], repo_id: str, card, args: HubArguments) -> PushResult:
    """Push the rows (config ``default``), what failed (config ``failures``) and the card as one commit.
    `datasets` cannot load an empty split, so an empty side is removed rather than pushed."""
    if not len(rows) and not failures:
        raise ValueError(f"nothing to push to {repo_id}: no rows and no failures")
    configs = {"default": (rows, "train")} if len(rows) else {}
    if failures:
        configs["failures"] = (rows_to_dataset(failures, failure_features()), "train")
    empty = [name for name in ("default", "failures") if name not in configs]
    return hub.push_datasets(configs, repo_id, args.hub_revision, card, args.hub_private_repo, delete_configs=empty)


def failure_counts(failures: list[dict]) -> str:
    """`` (request: 3, parse: 1)``: the failures by where they happened, or nothing when there are none."""
    counts = Counter(f["stage"] for f in failures).most_common()
    return f" ({', '.join(f'{stage}: {count}' for stage, count in counts)})" if counts else ""


def load_inputs(hub, args: GenerateArguments):
    """The pairs and demos at pinned commits (``limit`` applied), their refs, and the quarantine report of the pairs
    that cannot be sent (e.g. a corrupt image): they become ``input`` failures, never requests."""
    pairs_ref = hub.ref(args.pairs_repo, args.pairs_revision)
    demos_ref = hub.ref(args.demos_repo, args.demos_revision)
    pairs = hub.load_dataset(args.pairs_repo, revision=pairs_ref.commit, split="train")
    require_columns(pairs, "generate", "pairs", pairs_ref)
    if args.limit:
        pairs = pairs.select(range(min(args.limit, len(pairs))))
    pairs, quarantine = validate_dataset(pairs, "pairs", errors="skip")
    demos = hub.load_dataset(args.demos_repo, revision=demos_ref.commit, split="train")
    require_columns(demos, "generate", "demos", demos_ref)
    return pairs, demos, [pairs_ref, demos_ref], quarantine


def candidates_card(args, lineage, plan, sampler, candidates, failures, done, endpoint, stand_in):
    """The candidates' dataset card: model, prompt, demonstrations, usage, failures, and the stand-in flag."""
    results = [done[job.key] for job in plan.jobs]
    return dataset_card(
        "candidates",
        lineage=lineage,
        pretty_name="BioMed-VITAL candidates" + (" (stand-in)" if stand_in else ""),
        repo_id=args.candidates_repo,
        revision=args.hub_revision,
        stand_in=stand_in,
        model=results[0].model if results and results[0].model else endpoint.model,
        endpoint="stand-in" if stand_in else endpoint.provider,
        prompt_sha=plan.prompt_sha,
        demos_per_modality=args.demos_per_modality,
        demo_modalities=sampler.modalities,
        demo_images=args.demo_images,
        prompt_style=args.prompt_style,
        seed=args.data_seed,
        demo_ids=sorted({d for job in plan.jobs for d in job.demo_ids}),
        stats=usage_stats(results),
        num_rows=len(candidates),
        num_turns=sum(len(m) // 2 for m in candidates["messages"]),
        modalities=dict(sorted(Counter(candidates["modality"]).items())),
        num_failures=len(failures),
        failure_reasons=dict(Counter(f["stage"] for f in failures)),
        api_run=done.summary_of(job.key for job in plan.jobs) if hasattr(done, "summary") else None,
    )


def answer_pairs_card(args, lineage, plan, answer_pairs, failures, done, endpoint, stand_in):
    """The answer pairs' dataset card: generator, prompt, usage (their own requests) and failures."""
    return dataset_card(
        "answer_pairs",
        lineage=lineage,
        pretty_name="BioMed-VITAL answer pairs" + (" (stand-in)" if stand_in else ""),
        stand_in=stand_in,
        num_rows=len(answer_pairs),
        num_pairs=len(plan.pair_jobs),
        model=endpoint.model,
        prompt_sha=plan.pair_prompt_sha,
        answer_pair_demos=args.answer_pair_demos,
        stats=usage_stats([done[job.key] for job in plan.pair_jobs]),
        num_failures=len(failures),
        failure_reasons=dict(Counter(f["stage"] for f in failures)),
        api_run=done.summary_of(job.key for job in plan.pair_jobs) if hasattr(done, "summary") else None,
    )


def main(args: GenerateArguments, endpoint: EndpointConfig, batch: BatchConfig | None = None) -> list[PushResult]:
    setup_logging(main_process=process_state().is_main_process)
    hub = get_hub(args.hub)
    batch = batch or BatchConfig()

    # 1. Inputs at pinned commits; bad pairs (e.g. a corrupt image) are quarantined, not sent.
    pairs, demos, inputs, quarantine = load_inputs(hub, args)
    sampler = DemoSampler(
        demos, seed=args.data_seed, modalities=args.demo_modalities, per_modality=args.demos_per_modality
    )

    # 2. Plan keyed jobs: one conversation per pair and sample, two-answer questions for a seeded sample of pairs.
    plan = plan_generation(
        pairs,
        demos,
        sampler,
        endpoint,
        samples_per_pair=args.samples_per_pair,
        json_output=args.json_output,
        prompt_style=args.prompt_style,
        demo_images=args.demo_images,
        answer_pairs=args.answer_pairs,
        answer_pair_demos=args.answer_pair_demos,
        data_seed=args.data_seed,
    )

    # 3. Send what no journal holds yet (this process's shard), then merge every journal on the main process.
    done = run_jobs_sharded(
        plan.jobs + plan.pair_jobs, endpoint, plan.build, args.journal_dir, args.shard, batch=batch
    )
    if done is None:
        return []

    # 4. Parse replies into rows; push candidates and answer pairs, each with a `failures` config.
    stand_in = from_stand_in(endpoint, done.values())
    kind = "stand-in" if stand_in else endpoint.provider
    failures = quarantine_failures(quarantine)
    rows = candidate_rows(pairs, plan.jobs, done, kind, plan.prompt_sha, failures)
    candidates = rows_to_dataset(list(rows), CANDIDATE_FEATURES)
    config = [args, recorded_endpoint(endpoint, stand_in), batch]
    lineage = Lineage(stage="generate", inputs=inputs, config=config, seed=args.data_seed)
    card = candidates_card(args, lineage, plan, sampler, candidates, failures, done, endpoint, stand_in)
    pair_failures: list = []
    rows = answer_pair_rows(pairs, plan.pair_jobs, done, kind, plan.pair_prompt_sha, pair_failures)
    answer_pairs = rows_to_dataset(list(rows), answer_pair_features())
    headline = f"{len(candidates)} conversations, {len(failures)} failures{failure_counts(failures)}"
    level = logging.WARNING if failures else logging.INFO  # failures are recorded, and said out loud
    if not args.push_to_hub:
        logger.log(level, "push_to_hub is false: %s, %d answer pairs not pushed", headline, len(answer_pairs))
        return []
    pushed = [push_with_failures(hub, candidates, failures, args.candidates_repo, card, args)]
    logger.log(level, "candidates: %s -> %s", headline, pushed[0].location)
    headlines = {args.candidates_repo: headline}
    if plan.pair_jobs:
        card = answer_pairs_card(args, lineage, plan, answer_pairs, pair_failures, done, endpoint, stand_in)
        pushed.append(push_with_failures(hub, answer_pairs, pair_failures, args.answer_pairs_repo, card, args))
        pairs_headline = f"{len(answer_pairs)} questions, {len(pair_failures)} failures{failure_counts(pair_failures)}"
        headlines[args.answer_pairs_repo] = pairs_headline
        logger.log(
            logging.WARNING if pair_failures else logging.INFO,
            "answer pairs: %s -> %s",
            pairs_headline,
            pushed[-1].location,
        )
    print(artifact_table(pushed, headlines))
    return pushed


def estimate(argv: list[str] | None = None) -> list:
    """Requests, tokens and cost of this stage without sending anything (`vital pipeline --dry_run`): the request
    count from the pairs repo's card (or `expected_pairs`), the request size from prompts built on the bundled sample."""
    from vital.data.sample import load_sample_demos, load_sample_pairs
    from vital.llm.estimate import count_rows, estimate_requests

    args, endpoint, _ = recipe_parser((GenerateArguments, EndpointConfig, BatchConfig)).parse_args_and_config(argv)
    pairs = count_rows(get_hub(args.hub), args.pairs_repo, args.pairs_revision)
    basis = f"{args.pairs_repo} card"
    if pairs is None:
        if args.expected_pairs is None:
            raise ValueError(f"cannot read {args.pairs_repo}; set expected_pairs for a dry run")
        pairs, basis = args.expected_pairs, "expected_pairs"
    pairs = min(pairs, args.limit) if args.limit else pairs
    sample_pairs = load_sample_pairs()
    sample_demos = load_sample_demos(sample_pairs)
    flags = [m for m in args.demo_modalities or [] if m in set(sample_demos["modality"])] or None
    sampler = DemoSampler(sample_demos, modalities=flags, per_modality=args.demos_per_modality)
    json_output = args.json_output or endpoint.response_format == "json_object"
    conversation = [
        build_generation_messages(
            p,
            sampler.sample(p["id"], exclude_pair=p["id"]),
            image_to_data_url,
            json_output,
            prompt_style=args.prompt_style,
            demo_images=args.demo_images,
        )
        for p in sample_pairs
    ]
    answer_pair = [build_answer_pair_messages(p, image_to_data_url, args.answer_pair_demos) for p in sample_pairs]
    return [
        estimate_requests(
            "generate", "conversation", endpoint, conversation, pairs * args.samples_per_pair, 900, basis
        ),
        estimate_requests(
            "generate", "answer pairs", endpoint, answer_pair, min(args.answer_pairs, pairs), 700, basis
        ),
    ]


def cli(argv: list[str] | None = None) -> list[PushResult]:
    args, endpoint, batch = recipe_parser((GenerateArguments, EndpointConfig, BatchConfig)).parse_args_and_config(argv)
    return main(args, endpoint, batch)


if __name__ == "__main__":
    cli()
