"""Stage 2a — rate: a model judge scores every question–answer turn of the candidates from 0 to 10 with the paper's
rubric (model preference).

Usage:

    vital rate --config recipes/quickstart/rate.yaml                        # offline, on the bundled stand-in
    python recipes/rate.py --config recipes/biomed_vital/rate.yaml           # GPT-4V class judge (OPENAI_API_KEY)
    accelerate launch --num_processes 4 recipes/rate.py --config ...        # 4 shards, merged by process 0

A reply whose first line is not a score is asked once more with a reminder; if it still fails, the turn gets a null
score with the error (and the raw reply), never a default number. Requests are journaled like the generation stage's,
so a killed run resumes without asking finished turns again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from datasets import Features, Image, Value

from vital.cards import Lineage, dataset_card
from vital.data.inputs import require_columns
from vital.data.schemas import RATING_FEATURES, rows_to_dataset
from vital.hub import PushResult, get_hub
from vital.llm import EndpointConfig, image_to_data_url
from vital.llm.batch import BatchConfig
from vital.llm.jobs import run_jobs_sharded
from vital.rating import build_rating_messages, plan_rating_jobs, rating_prompt_sha, rating_rows, retry_job
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.rate")
RATINGS_FEATURES = Features({**RATING_FEATURES, "raw": Value("string"), "judge_attempts": Value("int32")})


@dataclass
class RateArguments:
    hub: str | None = field(default=None, metadata={"help": "'local:<dir>' or 'hf'. Default: $VITAL_HUB."})
    candidates_repo: str = field(default="quickstart/candidates", metadata={"help": "Candidates to rate."})
    candidates_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the candidates."})
    ratings_repo: str = field(default="quickstart/ratings", metadata={"help": "Repo the ratings go to."})
    revision: str = field(default="main", metadata={"help": "Branch to push to."})
    private: bool = field(default=True, metadata={"help": "Create repos private."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N candidates (smoke runs)."})
    judge_retries: int = field(default=1, metadata={"help": "Re-asks of a turn whose reply has no parseable score."})
    prompt_style: str = field(
        default="ours",
        metadata={"help": "'paper' (the official system message and [Context] ... [System] layout) or 'ours'."},
    )
    journal_dir: str = field(default="outputs/journals/rate", metadata={"help": "Where request journals live."})
    shard: str | None = field(default=None, metadata={"help": "'i/n': fill shard i's journal only, push nothing."})
    stand_in: bool = field(default=False, metadata={"help": "Answer from the bundled stand-in judge (offline)."})
    stand_in_latency_ms: float = field(default=0.0, metadata={"help": "Stand-in latency per request."})
    stand_in_faults: float = field(
        default=0.0, metadata={"help": "Stand-in fault rate, split over 429/500/malformed."}
    )
    expected_turns: int | None = field(
        default=None,
        metadata={"help": "For --dry_run before the candidates exist: how many question-answer turns will be rated."},
    )


def main(args: RateArguments, endpoint: EndpointConfig, batch: BatchConfig | None = None) -> list[PushResult]:
    from accelerate import PartialState

    setup_logging(main_process=PartialState().is_main_process)
    hub = get_hub(args.hub)

    # 1. The candidates at a pinned commit; one job per question-answer turn.
    candidates_ref = hub.ref(args.candidates_repo, args.candidates_revision)
    candidates = hub.load_dataset(args.candidates_repo, revision=candidates_ref.commit, split="train")
    require_columns(candidates, "rate", "candidates", candidates_ref)
    if args.limit:
        candidates = candidates.select(range(min(args.limit, len(candidates))))
    jobs = plan_rating_jobs(candidates.cast_column("images", [Image(decode=False)]), endpoint.model, args.prompt_style)
    server, configured = None, endpoint
    batch = batch or BatchConfig()
    if args.stand_in:
        from vital.testing.sample_replies import SampleDataResponder, start_stand_in
        from vital.testing.standin_batch import start_batch_stand_in

        stand_in_args = (endpoint, SampleDataResponder(), args.stand_in_latency_ms, args.stand_in_faults)
        if batch.mode == "batch":
            server, endpoint = start_batch_stand_in(*stand_in_args, batch_delay_s=batch.stand_in_batch_delay_s)
        else:
            server, endpoint = start_stand_in(*stand_in_args)

    def build(job):
        return build_rating_messages(
            candidates[job.index], job.sample, image_to_data_url, job.task != "rating", args.prompt_style
        )

    # 2. Ask the judge (this process's shard; unparseable replies are asked again), merge the journals.
    try:
        results = run_jobs_sharded(
            jobs,
            endpoint,
            build,
            args.journal_dir,
            args.shard,
            lambda job, r: retry_job(job, r, args.judge_retries),
            batch=batch,
        )
    finally:
        if server is not None:
            server.stop()
    if results is None:
        return []

    # 3. One rating per turn; push with a card that counts scores and failures.
    rows = rating_rows(jobs, results, endpoint.model, args.judge_retries, args.prompt_style)
    ratings = rows_to_dataset(list(rows), RATINGS_FEATURES)
    scores = [s for s in ratings["score"] if s is not None]
    errors = Counter(e.split(":", 1)[0] for e in ratings["error"] if e)
    # Replies with no readable score on the first ask (whether a second ask saved them or not): never a default score.
    parse_failures = sum(
        1 for a, e in zip(ratings["judge_attempts"], ratings["error"]) if a > 1 or (e or "").startswith("unparseable")
    )
    unparsed = sum(1 for e in ratings["error"] if (e or "").startswith("unparseable"))
    card = dataset_card(
        "ratings",
        lineage=Lineage(stage="rate", inputs=[candidates_ref], config=[args, configured, batch]),
        pretty_name="BioMed-VITAL judge ratings" + (" (stand-in)" if args.stand_in else ""),
        repo_id=args.ratings_repo,
        stand_in=args.stand_in,
        judge=configured.model if not args.stand_in else "vital-stand-in",
        prompt_sha=rating_prompt_sha(args.prompt_style),
        prompt_style=args.prompt_style,
        parse_failures=parse_failures,
        unparsed=unparsed,
        judge_retries=args.judge_retries,
        num_rows=len(ratings),
        num_candidates=len(candidates),
        num_scored=len(scores),
        retried=sum(1 for a in ratings["judge_attempts"] if a > 1),
        errors=dict(errors),
        histogram=dict(sorted(Counter(int(s) for s in scores).items())),
        mean=sum(scores) / len(scores) if scores else float("nan"),
        cost_usd=sum(r.cost_usd for r in results.values()),
        mode=batch.mode,
        api_run=getattr(results, "summary", None),
    )
    pushed = [
        hub.push_dataset(
            ratings, args.ratings_repo, split="train", card=card, revision=args.revision, private=args.private
        )
    ]
    headline = f"{len(scores)}/{len(ratings)} turns scored"
    print(artifact_table(pushed, {args.ratings_repo: headline}))
    return pushed


def estimate(argv: list[str] | None = None) -> list:
    """Requests, tokens and cost of this stage without sending anything (`vital pipeline --dry_run`)."""
    from vital.data.sample import load_sample_demos
    from vital.data.schemas import qa_turns
    from vital.llm.estimate import count_rows, estimate_requests

    args, endpoint, _ = recipe_parser((RateArguments, EndpointConfig, BatchConfig)).parse_args_and_config(argv)
    turns, basis = args.expected_turns, "expected_turns"
    if count_rows(get_hub(args.hub), args.candidates_repo, args.candidates_revision) is not None:
        hub = get_hub(args.hub)
        messages = hub.load_dataset(args.candidates_repo, revision=args.candidates_revision, split="train")["messages"]
        turns, basis = sum(len(qa_turns(m)) for m in messages), f"{args.candidates_repo} turns"
    if turns is None:
        raise ValueError(f"cannot read {args.candidates_repo}; set expected_turns for a dry run")
    samples = [
        build_rating_messages({**d, "images": [d["image"]]}, t, image_to_data_url, prompt_style=args.prompt_style)
        for d in load_sample_demos()
        for t in range(len(qa_turns(d["messages"])))
    ]
    return [estimate_requests("rate", "rubric score", endpoint, samples, turns, 150, basis)]


def cli(argv: list[str] | None = None) -> list[PushResult]:
    args, endpoint, batch = recipe_parser((RateArguments, EndpointConfig, BatchConfig)).parse_args_and_config(argv)
    return main(args, endpoint, batch)


if __name__ == "__main__":
    cli()
