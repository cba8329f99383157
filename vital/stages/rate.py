"""Stage 2a — rate: a model judge scores every question–answer turn of the candidates from 0 to 10 with the paper's
rubric (model preference).

Usage:

    vital pipeline --config recipes/quickstart/pipeline.yaml                # offline: the pipeline starts the stand-in
    vital stand-in --port 8123 &                                           # or serve the stand-in yourself ...
    vital rate --config recipes/quickstart/rate.yaml                        # ... and run this stage alone against it
    python recipes/rate.py --config recipes/biomed_vital/rate.yaml           # GPT-4V class judge (OPENAI_API_KEY)
    accelerate launch --num_processes 4 recipes/rate.py --config ...        # 4 shards, merged by process 0

The judge is the configured OpenAI-compatible endpoint; the quickstart YAML names the stand-in's default address
(``vital stand-in``, http://127.0.0.1:8123/v1). Ratings answered by the stand-in (model ``vital-stand-in``) say so on
their card. A reply whose first line is not a score is asked once more with a reminder; if it still fails, the turn
gets a null score with the error (and the raw reply), never a default number. Requests are journaled like the
generation stage's, so a killed run resumes without asking finished turns again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from datasets import Features, Image, Value

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.data.inputs import require_columns
from vital.data.schemas import RATING_FEATURES, rows_to_dataset
from vital.hub import PushResult, get_hub
from vital.llm import EndpointConfig, from_stand_in, image_to_data_url
from vital.llm.batch import BatchConfig
from vital.llm.jobs import run_jobs_sharded, sent_by
from vital.llm.provenance import STAND_IN_MODEL, recorded_endpoint
from vital.rating import (
    build_rating_messages,
    plan_rating_jobs,
    rating_prompt_sha,
    rating_rows,
    rating_stats,
    retry_job,
)
from vital.runner import artifact_table, process_state, recipe_parser, setup_logging


logger = logging.getLogger("vital.rate")
RATINGS_FEATURES = Features({**RATING_FEATURES, "raw": Value("string"), "judge_attempts": Value("int32")})
API_STAGE = True  # sends model requests: `vital pipeline` points it at the stand-in when the pipeline has one


@dataclass
class RateArguments(HubArguments):
    """
    Arguments of the rating stage (beside `EndpointConfig`, the judge, and `BatchConfig`, how requests are sent).

    Parameters:
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the ratings. `False` asks the judge (journaled) and pushes nothing.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch the ratings are pushed to.
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create the ratings repo private.
        candidates_repo (`str`, *optional*, defaults to `"quickstart/candidates"`):
            Candidate conversations to rate, one score per question-answer turn.
        candidates_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the candidates (resolved to a commit, recorded in the lineage).
        ratings_repo (`str`, *optional*, defaults to `"quickstart/ratings"`):
            Dataset repo the ratings are pushed to.
        limit (`int` or `None`, *optional*):
            Only the first N candidates (smoke runs); `None` rates all.
        judge_retries (`int`, *optional*, defaults to `1`):
            Re-asks of a turn whose reply has no parseable score.
        prompt_style (`str`, *optional*, defaults to `"ours"`):
            `"paper"` (the official system message and `[Context] ... [System]` layout) or `"ours"`.
        journal_dir (`str`, *optional*, defaults to `"outputs/journals/rate"`):
            Where the request journals live (a rerun resumes from them).
        shard (`str` or `None`, *optional*):
            `"i/n"`: fill shard i's journal only and push nothing; a run without it merges the shards' journals.
        expected_turns (`int` or `None`, *optional*):
            For `--dry_run` before the candidates exist: how many question-answer turns will be rated.
    """

    candidates_repo: str = field(default="quickstart/candidates", metadata={"help": "Candidates to rate."})
    candidates_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the candidates."})
    ratings_repo: str = field(default="quickstart/ratings", metadata={"help": "Repo the ratings go to."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N candidates (smoke runs)."})
    judge_retries: int = field(default=1, metadata={"help": "Re-asks of a turn whose reply has no parseable score."})
    prompt_style: str = field(
        default="ours",
        metadata={"help": "'paper' (the official system message and [Context] ... [System] layout) or 'ours'."},
    )
    journal_dir: str = field(default="outputs/journals/rate", metadata={"help": "Where request journals live."})
    shard: str | None = field(default=None, metadata={"help": "'i/n': fill shard i's journal only, push nothing."})
    expected_turns: int | None = field(
        default=None,
        metadata={"help": "For --dry_run before the candidates exist: how many question-answer turns will be rated."},
    )


def main(args: RateArguments, endpoint: EndpointConfig, batch: BatchConfig | None = None) -> list[PushResult]:
    setup_logging(main_process=process_state().is_main_process)
    hub = get_hub(args.hub)
    batch = batch or BatchConfig()

    # 1. The candidates at a pinned commit; one job per question-answer turn.
    candidates_ref = hub.ref(args.candidates_repo, args.candidates_revision)
    candidates = hub.load_dataset(args.candidates_repo, revision=candidates_ref.commit, split="train")
    require_columns(candidates, "rate", "candidates", candidates_ref)
    if args.limit:
        candidates = candidates.select(range(min(args.limit, len(candidates))))
    jobs = plan_rating_jobs(candidates.cast_column("images", [Image(decode=False)]), endpoint.model, args.prompt_style)

    def build(job):
        return build_rating_messages(
            candidates[job.index], job.sample, image_to_data_url, job.task != "rating", args.prompt_style
        )

    # 2. Ask the judge (this process's shard; unparseable replies are asked again), merge the journals.
    followup = lambda job, r: retry_job(job, r, args.judge_retries)  # noqa: E731
    results = run_jobs_sharded(jobs, endpoint, build, args.journal_dir, args.shard, followup, batch=batch)
    if results is None:
        return []

    # 3. One rating per turn; push with a card that counts scores and failures.
    rows = rating_rows(jobs, results, endpoint.model, args.judge_retries, args.prompt_style)
    ratings = rows_to_dataset(list(rows), RATINGS_FEATURES)
    stats = rating_stats(ratings)
    stand_in = from_stand_in(endpoint, results.values())
    config = [args, recorded_endpoint(endpoint, stand_in), batch]
    card = dataset_card(
        "ratings",
        lineage=Lineage(stage="rate", inputs=[candidates_ref], config=config),
        pretty_name="BioMed-VITAL judge ratings" + (" (stand-in)" if stand_in else ""),
        repo_id=args.ratings_repo,
        stand_in=stand_in,
        judge=STAND_IN_MODEL if stand_in else endpoint.model,
        prompt_sha=rating_prompt_sha(args.prompt_style),
        prompt_style=args.prompt_style,
        judge_retries=args.judge_retries,
        num_candidates=len(candidates),
        cost_usd=sum(r.cost_usd for r in results.values()),
        sent=sent_by(results.values()),
        api_run=getattr(results, "summary", None),
        **stats,
    )
    headline = f"{stats['num_scored']}/{len(ratings)} turns scored"
    if not args.push_to_hub:
        logger.info("push_to_hub is false: %s, not pushed", headline)
        return []
    pushed = [
        hub.push_dataset(
            ratings,
            args.ratings_repo,
            split="train",
            card=card,
            revision=args.hub_revision,
            private=args.hub_private_repo,
        )
    ]
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
