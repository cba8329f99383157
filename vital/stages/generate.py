"""Stage 1 — generate: a vision model writes multi-turn conversations about each figure, prompted with one
clinician-selected demonstration per modality; a sample of figures also gets questions with two answers each, for
the clinicians' preference task.

Usage:

    vital generate --config recipes/quickstart/generate.yaml                   # offline, on the bundled stand-in
    python recipes/generate.py --config recipes/biomed_vital/generate.yaml      # GPT-4V class model (OPENAI_API_KEY)
    accelerate launch --num_processes 4 recipes/generate.py --config ...       # 4 shards, merged by process 0
    python recipes/generate.py --config ... --shard 2/8                         # one shard on one machine
    python recipes/generate.py --config ... --mode batch                        # the Batch API: half price, <= 24 h

Every finished request is journaled under a stable key (pair image, demos, prompt, model, parameters), so a killed
run resumes where it stopped. With `--shard i/n` a process only fills its journal; a run without `--shard` over the
same `journal_dir` (holding every shard's journal) merges them and pushes. What could not be generated or parsed
goes to the `failures` config of the candidates repo, with the reason and the raw reply.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field

from datasets import Image

from vital.cards import Lineage, dataset_card
from vital.data.inputs import require_columns
from vital.data.schemas import CANDIDATE_FEATURES, rows_to_dataset, validate_dataset
from vital.demos import DemoSampler
from vital.generation import (
    ANSWER_PAIRS_SYSTEM,
    answer_pair_features,
    answer_pair_rows,
    build_answer_pair_messages,
    build_generation_messages,
    candidate_rows,
    failure_features,
    plan_jobs,
    prompt_sha,
)
from vital.hub import PushResult, get_hub
from vital.llm import EndpointConfig, image_to_data_url
from vital.llm.batch import BatchConfig
from vital.llm.jobs import run_jobs_sharded
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.generate")


@dataclass
class GenerateArguments:
    hub: str | None = field(default=None, metadata={"help": "'local:<dir>' or 'hf'. Default: $VITAL_HUB."})
    pairs_repo: str = field(default="quickstart/pairs", metadata={"help": "Pairs dataset repo."})
    pairs_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the pairs."})
    demos_repo: str = field(default="quickstart/demos", metadata={"help": "Clinician-approved demonstrations repo."})
    demos_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the demos."})
    candidates_repo: str = field(default="quickstart/candidates", metadata={"help": "Repo the candidates go to."})
    answer_pairs_repo: str = field(default="quickstart/answer-pairs", metadata={"help": "Repo of the answer pairs."})
    revision: str = field(default="main", metadata={"help": "Branch to push to."})
    private: bool = field(default=True, metadata={"help": "Create repos private."})
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
    stand_in: bool = field(default=False, metadata={"help": "Answer from the bundled stand-in server (offline)."})
    stand_in_latency_ms: float = field(default=0.0, metadata={"help": "Stand-in latency per request."})
    stand_in_faults: float = field(
        default=0.0, metadata={"help": "Stand-in fault rate, split over 429/500/malformed."}
    )
    expected_pairs: int | None = field(
        default=None, metadata={"help": "For --dry_run when the pairs repo cannot be read: how many pairs there are."}
    )


def push_with_failures(hub, rows, failures: list[dict], repo_id: str, card, push: dict) -> PushResult:
    """Push the rows (config ``default``), what failed (config ``failures``) and the card as one commit.
    `datasets` cannot load an empty split, so an empty side is removed rather than pushed."""
    if not len(rows) and not failures:
        raise ValueError(f"nothing to push to {repo_id}: no rows and no failures")
    configs = {"default": (rows, "train")} if len(rows) else {}
    if failures:
        configs["failures"] = (rows_to_dataset(failures, failure_features()), "train")
    empty = [name for name in ("default", "failures") if name not in configs]
    return hub.push_datasets(configs, repo_id, push["revision"], card, push["private"], delete_configs=empty)


def main(args: GenerateArguments, endpoint: EndpointConfig, batch: BatchConfig | None = None) -> list[PushResult]:
    from accelerate import PartialState

    setup_logging(main_process=PartialState().is_main_process)
    hub = get_hub(args.hub)

    # 1. Inputs at pinned commits; bad pairs (e.g. a corrupt image) are quarantined, not sent.
    pairs_ref = hub.ref(args.pairs_repo, args.pairs_revision)
    demos_ref = hub.ref(args.demos_repo, args.demos_revision)
    pairs = hub.load_dataset(args.pairs_repo, revision=pairs_ref.commit, split="train")
    require_columns(pairs, "generate", "pairs", pairs_ref)
    if args.limit:
        pairs = pairs.select(range(min(args.limit, len(pairs))))
    pairs, quarantine = validate_dataset(pairs, "pairs", errors="skip")
    demos = hub.load_dataset(args.demos_repo, revision=demos_ref.commit, split="train")
    require_columns(demos, "generate", "demos", demos_ref)
    sampler = DemoSampler(
        demos, seed=args.data_seed, modalities=args.demo_modalities, per_modality=args.demos_per_modality
    )
    server, configured = None, endpoint  # the lineage records the endpoint as configured, not the stand-in's port
    batch = batch or BatchConfig()
    if args.stand_in:
        from vital.testing.sample_replies import SampleDataResponder, start_stand_in
        from vital.testing.standin_batch import start_batch_stand_in

        responder = SampleDataResponder(pairs)
        stand_in_args = (endpoint, responder, args.stand_in_latency_ms, args.stand_in_faults, args.data_seed)
        if batch.mode == "batch":
            server, endpoint = start_batch_stand_in(*stand_in_args, batch_delay_s=batch.stand_in_batch_delay_s)
        else:
            server, endpoint = start_stand_in(*stand_in_args)

    # 2. Plan keyed jobs: one conversation per pair and sample, two-answer questions for a seeded sample of pairs.
    raw = pairs.cast_column("image", Image(decode=False))
    json_output = args.json_output or endpoint.response_format == "json_object"
    sha = prompt_sha(json_output=json_output, prompt_style=args.prompt_style, demo_images=args.demo_images)
    pair_sha = prompt_sha(ANSWER_PAIRS_SYSTEM, answer_pair_demos=args.answer_pair_demos)
    jobs = plan_jobs(
        raw, endpoint.model, "conversation", sampler, args.samples_per_pair, json_output, endpoint.seed, None, sha
    )
    chosen = sorted(random.Random(args.data_seed).sample(range(len(pairs)), min(args.answer_pairs, len(pairs))))
    pair_jobs = plan_jobs(raw, endpoint.model, "answer_pairs", indices=chosen, prompt_hash=pair_sha)
    demo_rows = {row["id"]: row for row in demos}

    def build(job):
        target = pairs[job.index]
        if job.task == "answer_pairs":
            return build_answer_pair_messages(target, image_to_data_url, args.answer_pair_demos)
        return build_generation_messages(
            target,
            [demo_rows[d] for d in job.demo_ids],
            image_to_data_url,
            json_output,
            prompt_style=args.prompt_style,
            demo_images=args.demo_images,
        )

    # 3. Send what no journal holds yet (this process's shard), then merge every journal on the main process.
    try:
        done = run_jobs_sharded(jobs + pair_jobs, endpoint, build, args.journal_dir, args.shard, batch=batch)
    finally:
        if server is not None:
            server.stop()
    if done is None:
        return []

    # 4. Parse replies into rows; push candidates and answer pairs, each with a `failures` config.
    kind = "stand-in" if args.stand_in else endpoint.provider
    failures = [
        {"id": q.record_id, "pair_id": q.record_id, "stage": "input", "reason": f"{q.field}: {q.reason}", "raw": ""}
        for q in quarantine.records
    ]
    candidates = rows_to_dataset(
        list(candidate_rows(pairs, jobs, done, kind, sha, args.stand_in, failures)), CANDIDATE_FEATURES
    )
    lineage = Lineage(
        stage="generate", inputs=[pairs_ref, demos_ref], config=[args, configured, batch], seed=args.data_seed
    )
    results = [done[job.key] for job in jobs]
    card = dataset_card(
        "candidates",
        lineage=lineage,
        pretty_name="BioMed-VITAL candidates" + (" (stand-in)" if args.stand_in else ""),
        repo_id=args.candidates_repo,
        revision=args.revision,
        stand_in=args.stand_in,
        model=results[0].model if results and results[0].model else endpoint.model,
        endpoint=kind,
        mode=batch.mode,
        prompt_sha=sha,
        demos_per_modality=args.demos_per_modality,
        demo_modalities=sampler.modalities,
        demo_images=args.demo_images,
        prompt_style=args.prompt_style,
        seed=args.data_seed,
        demo_ids=sorted({d for job in jobs for d in job.demo_ids}),
        stats={
            "requests": len(results),
            "prompt_tokens": sum(r.prompt_tokens for r in results),
            "completion_tokens": sum(r.completion_tokens for r in results),
            "cost_usd": sum(r.cost_usd for r in results),
        },
        num_rows=len(candidates),
        num_turns=sum(len(m) // 2 for m in candidates["messages"]),
        modalities=dict(sorted(Counter(candidates["modality"]).items())),
        num_failures=len(failures),
        failure_reasons=dict(Counter(f["stage"] for f in failures)),
        api_run=getattr(done, "summary", None),
    )
    push = {"revision": args.revision, "private": args.private}
    pushed = [push_with_failures(hub, candidates, failures, args.candidates_repo, card, push)]
    logger.info("candidates: %d conversations, %d failures -> %s", len(candidates), len(failures), pushed[0].location)

    if pair_jobs:
        pair_failures: list = []
        rows = list(answer_pair_rows(pairs, pair_jobs, done, kind, pair_sha, args.stand_in, pair_failures))
        answer_pairs = rows_to_dataset(rows, answer_pair_features())
        card = dataset_card(
            "answer_pairs",
            lineage=lineage,
            pretty_name="BioMed-VITAL answer pairs" + (" (stand-in)" if args.stand_in else ""),
            stand_in=args.stand_in,
            num_rows=len(answer_pairs),
            num_pairs=len(pair_jobs),
            model=endpoint.model,
            prompt_sha=pair_sha,
            answer_pair_demos=args.answer_pair_demos,
            num_failures=len(pair_failures),
        )
        pushed.append(push_with_failures(hub, answer_pairs, pair_failures, args.answer_pairs_repo, card, push))
    print(artifact_table(pushed, {args.candidates_repo: f"{len(candidates)} conversations, {len(failures)} failures"}))
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
