"""Stage 5 — evaluate: a model answers VQA-RAD, SLAKE and PathVQA (scored with LLaVA-Med's metric and the strict one)
and, optionally, LLaVA-Med's open-chat questions (scored by a judge against the reference answers) and a pairwise
judge compares its answers with another model's (win rate). Results go to an eval dataset and the model's card.

Usage:

    python -c "from vital.testing.tiny_models import build_tiny_llava as b; b('outputs/models/tiny-llava')"
    vital evaluate --config recipes/quickstart/evaluate.yaml                   # offline: tiny fixtures, stand-in judge
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/evaluate.py \\
        --config recipes/biomed_vital/evaluate.yaml                           # the paper's benchmarks, GPT-4 judge
    python recipes/evaluate.py --config ... --model_name_or_path hub:org/sft@main --compare_with org/eval-base@<sha>

The model is a local folder, ``hub:<repo>@<revision>`` on the recipe's hub or a Hugging Face id (answered with
transformers, batched, split across `accelerate` processes), or an OpenAI-compatible endpoint
(``answer_endpoint_url``). Answers and judge requests are journaled under ``output_dir``: a killed run resumes without
asking anything twice. Unreadable judge replies are asked once more, then recorded and left out of the scores with a
count. The eval dataset gets one config per benchmark (per-item predictions and both metric modes), ``chat`` and
``win_rate`` (verdicts and raw judge replies) and ``summary``; the numbers also go into the evaluated model's card as
``model-index`` entries (a new commit of its README on the hub), and a comparison chart with ``compare_with`` models.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Image

from vital.cards import Lineage, dataset_card
from vital.data.schemas import rows_to_dataset
from vital.evaluation import answering as ans
from vital.evaluation import results as res
from vital.evaluation.benchmarks import BenchmarkSpec, load_benchmark, load_open_chat, read_open_chat
from vital.evaluation.chat_judge import (
    CHAT_EVAL_FEATURES,
    CHAT_JUDGE_TASK,
    build_chat_judge_messages,
    chat_judge_prompt_sha,
    chat_judge_rows,
    chat_retry_job,
    plan_chat_judge_jobs,
    relative_scores,
)
from vital.evaluation.judge_jobs import base_task
from vital.evaluation.win_rate import (
    WIN_EVAL_FEATURES,
    build_win_rate_job_messages,
    load_other_answers,
    plan_win_rate_jobs,
    summarize_win_rate,
    verdict_retry_job,
    win_rate_items,
    win_rate_prompt_sha,
    win_rate_rows,
)
from vital.hub import ArtifactRef, PushResult, get_hub, sha256_file
from vital.llm import EndpointConfig, image_to_data_url
from vital.llm.batch import BatchConfig
from vital.llm.jobs import run_jobs_sharded
from vital.runner import artifact_table, recipe_parser, setup_logging
from vital.sft import display_name, resolve_model


logger = logging.getLogger("vital.evaluate")


@dataclass
class EvaluateArguments:
    hub: str | None = field(default=None, metadata={"help": "'local:<dir>' or 'hf'. Default: $VITAL_HUB."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local folder, 'hub:<repo>@<revision>' or a Hugging Face id (transformers)."}
    )
    model_revision: str = field(default="main", metadata={"help": "Revision of a Hugging Face id or hub: model."})
    model_label: str | None = field(default=None, metadata={"help": "Name in tables and charts (default: derived)."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    batch_size: int = field(default=8, metadata={"help": "Questions per generate() call (local models)."})
    answer_endpoint_url: str | None = field(
        default=None, metadata={"help": "Answer through this OpenAI-compatible base URL instead (vLLM, ...)."}
    )
    answer_endpoint_model: str | None = field(default=None, metadata={"help": "Model name the endpoint serves."})
    answer_endpoint_api_key_env: str = field(default="VLLM_API_KEY", metadata={"help": "Env var of its API key."})
    benchmarks: list[str] = field(
        default_factory=lambda: ["vqa-rad", "slake", "path-vqa"],
        metadata={
            "help": "VQA sets: 'name[=repo][@revision][:split]'. Pin revisions to commits for reported numbers."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Only the first N items of each set (smoke runs)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Extracted images (default ~/.cache/vital)."})
    push_fixtures: bool = field(default=False, metadata={"help": "First push the tiny fixtures (quickstart)."})
    chat_questions: str | None = field(
        default=None, metadata={"help": "Open-chat questions: a dataset 'repo@revision' or a local JSONL file."}
    )
    chat_images: str | None = field(default=None, metadata={"help": "Image folder of a local chat JSONL."})
    chat_questions_file: str = field(default="questions.jsonl", metadata={"help": "JSONL in the chat repo."})
    chat_images_dir: str = field(default="images", metadata={"help": "Image folder in the chat repo."})
    chat_judge: bool = field(default=True, metadata={"help": "Judge the open-chat answers (with chat_questions)."})
    judge_with_image: bool = field(default=False, metadata={"help": "Show the open-chat judge the image too."})
    win_rate_with_image: bool | None = field(
        default=None,
        metadata={
            "help": "Show the win-rate judge the image (the official win-rate script does); default: judge_with_image."
        },
    )
    win_rate_verdict_position: str = field(
        default="last",
        metadata={
            "help": "Where the win-rate judge puts its verdict: 'last' (after its reasons) or 'first' (the "
            "official prompt: the reply begins with it)."
        },
    )
    judge_retries: int = field(default=1, metadata={"help": "Re-asks of a judge reply that cannot be read."})
    win_rate_against: str | None = field(
        default=None, metadata={"help": "Another model's eval dataset 'repo@revision': pairwise win rate against it."}
    )
    win_rate_answer_types: list[str] = field(
        default_factory=lambda: ["open"], metadata={"help": "VQA answer types in the win rate (chat: always)."}
    )
    compare_with: list[str] = field(
        default_factory=list, metadata={"help": "Other eval datasets 'repo@revision' for the comparison chart."}
    )
    eval_repo: str = field(default="quickstart/eval", metadata={"help": "Repo the eval dataset goes to."})
    revision: str = field(default="main", metadata={"help": "Branch to push the eval dataset to."})
    private: bool = field(default=True, metadata={"help": "Create repos private."})
    update_model_card: bool = field(default=True, metadata={"help": "Write the numbers into the model's card."})
    model_card_repo: str | None = field(
        default=None, metadata={"help": "Hub model 'repo[@branch]' whose card gets them (default: the hub model)."}
    )
    output_dir: str = field(default="outputs/evaluate", metadata={"help": "Answer and judge journals, local card."})
    shard: str | None = field(default=None, metadata={"help": "'i/n': this machine's share only, push nothing."})
    stand_in: bool = field(default=False, metadata={"help": "Judge with the bundled stand-in (offline)."})
    stand_in_latency_ms: float = field(default=0.0, metadata={"help": "Stand-in latency per request."})
    stand_in_faults: float = field(default=0.0, metadata={"help": "Stand-in fault rate (429/500/malformed)."})
    expected_chat_questions: int | None = field(
        default=None, metadata={"help": "For --dry_run: open-chat questions to judge when they cannot be counted."}
    )
    expected_win_rate_items: int | None = field(
        default=None, metadata={"help": "For --dry_run: questions judged for the win rate (each asked twice)."}
    )


def main(
    args: EvaluateArguments,
    generation: ans.GenerationSettings,
    endpoint: EndpointConfig,
    batch: BatchConfig | None = None,
) -> list[PushResult]:
    import torch
    from accelerate import PartialState

    # Several processes on a machine without a GPU (accelerate_configs/cpu.yaml) are gloo processes on the CPU.
    state = PartialState(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    setup_logging(main_process=state.is_main_process)
    hub = get_hub(args.hub)
    out = Path(args.output_dir)

    # 1. Inputs at pinned commits: the VQA sets and the open-chat questions.
    if args.push_fixtures and state.is_main_process:
        from vital.evaluation.fixtures import push_fixtures

        push_fixtures(hub)
    state.wait_for_everyone()
    specs = [BenchmarkSpec.parse(s) for s in args.benchmarks]
    sets = {s.name: load_benchmark(hub, s, args.cache_dir, args.limit) for s in specs}
    sources = {s.name: (s.repo_id, sets[s.name][1].commit, s.split) for s in specs}  # (repo, commit, split)
    chat, chat_ref = None, None
    if args.chat_questions and Path(args.chat_questions).is_file():
        questions_file = Path(args.chat_questions)
        chat = read_open_chat(questions_file, args.chat_images or questions_file.parent, args.limit)
        chat_ref = {"source": str(questions_file.resolve()), "sha256": sha256_file(questions_file)}
        sources["chat"] = (chat_ref["source"], chat_ref["sha256"], "test")
    elif args.chat_questions:
        chat, chat_ref = load_open_chat(
            hub, args.chat_questions, args.chat_questions_file, args.chat_images_dir, args.limit
        )
        sources["chat"] = (chat_ref.repo_id, chat_ref.commit, "test")

    # 2. Answers: a transformers model (batched, split across processes) or an endpoint; both journaled.
    questions = [q for dataset, _ in sets.values() for q in ans.vqa_questions(dataset, generation.closed_hint)]
    questions += ans.chat_questions(chat) if chat is not None else []
    model_folder = None
    if args.answer_endpoint_url:
        model = args.answer_endpoint_model or "default"
        served = EndpointConfig(
            "openai-compatible", model, args.answer_endpoint_url, api_key_env=args.answer_endpoint_api_key_env
        )
        model_ref, label = {"source": args.answer_endpoint_url, "model": model}, args.model_label or model
        answers = ans.answer_with_endpoint(questions, served, generation, out / "journals", args.shard)
    else:
        source = resolve_model(hub, args.model_name_or_path, args.model_revision)
        model_ref, label = source.lineage, args.model_label or display_name(source)
        if isinstance(model_ref, ArtifactRef):  # the weights' commit: our own model-index updates do not count
            model_ref = dataclasses.replace(model_ref, commit=hub.content_commit(model_ref.repo_id, model_ref.commit))
        # Keyed by the weights, not the commit: the card this stage writes back makes a new commit, not a new model.
        model_folder = Path(source.path) if Path(source.path).is_dir() else None
        model_id = (
            f"weights:{ans.model_fingerprint(model_folder)}" if model_folder else f"{source.path}@{source.revision}"
        )
        answers = ans.answer_with_model(
            questions,
            source.path,
            model_id,
            generation,
            out / "answers",
            args.batch_size,
            source.revision,
            args.dtype,
            args.shard,
        )
    if answers is None:
        return []

    # 3. Score VQA both ways; plan the judges: open chat, and the win rate against the other model's answers.
    vqa_rows, vqa_metrics = {}, {}
    for name, (dataset, _) in sets.items():
        vqa_rows[name], vqa_metrics[name] = res.score_benchmark(dataset, answers, label)
    chat_items = chat.cast_column("image", Image(decode=False)).to_list() if chat is not None else []
    chat_answers = {i["question_id"]: answers[f"chat/{i['question_id']}"] for i in chat_items}
    chat_predictions = {qid: a.prediction for qid, a in chat_answers.items() if a.error is None}
    win_items, other_label, other_ref = [], None, None
    if args.win_rate_against:
        splits = {name: split for name, (_, _, split) in sources.items()}
        theirs, other_label, other_ref = load_other_answers(hub, args.win_rate_against, splits)
        ours, images = dict(vqa_rows), {}
        ours["chat"] = []
        for item in chat_items:
            answer = chat_answers[item["question_id"]]
            ours["chat"].append(
                {
                    "question_id": item["question_id"],
                    "question": item["text"],
                    "reference": item["gpt4_answer"],
                    "prediction": answer.prediction,
                    "answer_error": answer.error,
                }
            )
        for name, (dataset, _) in sets.items():
            for row in dataset.cast_column("image", Image(decode=False)).select_columns(["id", "image"]):
                images[f"{name}/{row['id']}"] = row["image"]
        images |= {f"chat/{i['question_id']}": i["image"] for i in chat_items}
        win_items = win_rate_items(ours, theirs, images, other_label, args.win_rate_answer_types)
    server, configured = None, endpoint  # the lineage records the judge as configured, not the stand-in's port
    batch = batch or BatchConfig()
    if args.stand_in and (win_items or (chat_items and args.chat_judge)):
        from vital.testing.eval_replies import EvalStandInResponder
        from vital.testing.sample_replies import start_stand_in
        from vital.testing.standin_batch import start_batch_stand_in

        stand_in_args = (endpoint, EvalStandInResponder(), args.stand_in_latency_ms, args.stand_in_faults)
        if batch.mode == "batch":
            server, endpoint = start_batch_stand_in(*stand_in_args, batch_delay_s=batch.stand_in_batch_delay_s)
        else:
            server, endpoint = start_stand_in(*stand_in_args)
    judge = endpoint.model
    chat_jobs = (
        plan_chat_judge_jobs(chat_items, chat_predictions, judge, args.judge_with_image) if args.chat_judge else []
    )
    win_with_image = args.judge_with_image if args.win_rate_with_image is None else args.win_rate_with_image
    verdict_position = args.win_rate_verdict_position
    win_jobs = plan_win_rate_jobs(win_items, judge, win_with_image, verdict_position)

    # 4. Ask the judges (this process's shard; unreadable replies asked once more), merge the journals.
    def image_url(cell, with_image: bool | None = None):
        show = args.judge_with_image if with_image is None else with_image
        return image_to_data_url(ans.decode_image(cell)) if show else None

    def build(job):
        if base_task(job.task) == CHAT_JUDGE_TASK:
            item = chat_items[job.index]
            retry = job.task != CHAT_JUDGE_TASK
            return build_chat_judge_messages(
                item, chat_predictions[item["question_id"]], image_url(item["image"]), retry
            )
        item = win_items[job.index]
        return build_win_rate_job_messages(item, job, image_url(item["image"], win_with_image), verdict_position)

    def followup(job, result):
        if base_task(job.task) == CHAT_JUDGE_TASK:
            return chat_retry_job(job, result, args.judge_retries)
        return verdict_retry_job(job, result, args.judge_retries, verdict_position)

    results = {}
    try:
        if chat_jobs or win_jobs:
            results = run_jobs_sharded(
                chat_jobs + win_jobs, endpoint, build, out / "journals", args.shard, followup, batch=batch
            )
    finally:
        if server is not None:
            server.stop()
    if results is None or not state.is_main_process:
        return []

    # 5. Verdicts and the summary table: one config per benchmark, `chat`, `win_rate` and `summary`.
    pooled = res.pooled_vqa([r for rows in vqa_rows.values() for r in rows])
    summary = res.vqa_summary_rows(label, {n: (sources[n], m) for n, m in vqa_metrics.items()}, pooled)
    configs = {n: (rows_to_dataset(rows, res.VQA_EVAL_FEATURES), sources[n][2]) for n, rows in vqa_rows.items()}
    chat_scores = win_summary = None
    if chat_jobs:
        errors = {qid: a.error for qid, a in chat_answers.items()}
        rows = chat_judge_rows(
            chat_items, chat_predictions, chat_jobs, results, judge, args.judge_retries, args.judge_with_image, errors
        )
        chat_scores = relative_scores(rows)
        summary += res.chat_summary_rows(label, *sources["chat"][:2], chat_scores)
        configs["chat"] = (rows_to_dataset(rows, CHAT_EVAL_FEATURES), "test")
    if win_jobs:
        rows = win_rate_rows(win_items, win_jobs, results, judge, args.judge_retries, win_with_image, verdict_position)
        win_summary = summarize_win_rate(rows)
        summary += res.win_summary_rows(label, win_summary, sources)
        configs["win_rate"] = (rows_to_dataset(rows, WIN_EVAL_FEATURES), "test")
    configs["summary"] = (rows_to_dataset(summary, res.SUMMARY_FEATURES), "test")

    # 6. The comparison with other eval datasets (table and chart), the card, and the push (the card goes last).
    summaries, compare_refs = {label: summary}, []
    for spec in args.compare_with:
        rows, ref = res.load_summary(hub, spec)
        name = rows[0]["model"] if rows else ref.repo_id
        summaries[name if name not in summaries else f"{name} ({ref.commit[:7]})"] = rows
        compare_refs.append(ref)
    display_names = {s.name: s.display_name for s in specs} | {"chat": "LLaVA-Med open chat"}
    inputs = [model_ref, *(ref for _, ref in sets.values()), *(r for r in (chat_ref, other_ref) if r), *compare_refs]
    card = dataset_card(
        "eval",
        lineage=Lineage(stage="evaluate", inputs=inputs, config=[args, generation, configured, batch]),
        pretty_name=f"Evaluation of {label}" + (" (stand-in judge)" if args.stand_in else ""),
        task_categories=["visual-question-answering"],
        model_label=label,
        stand_in=args.stand_in,
        summary=summary,
        vqa=vqa_metrics,
        display_names=display_names,
        chat=chat_scores,
        win=win_summary,
        other_model=other_label,
        judge=judge,
        chat_prompt_sha=chat_judge_prompt_sha(),
        win_prompt_sha=win_rate_prompt_sha(),
        judge_cost_usd=sum(r.cost_usd for r in results.values()),
        judge_mode=batch.mode,
        api_run=getattr(results, "summary", None),
        answer_cost_usd=sum(a.cost_usd for a in answers.values()),
        judge_with_image=args.judge_with_image,
        win_rate_with_image=win_with_image,
        win_rate_verdict_position=verdict_position,
        generation=generation.to_dict(),
        comparison=res.comparison_table(summaries),
        configs={name: len(dataset) for name, (dataset, _) in configs.items()},
    )
    with tempfile.TemporaryDirectory() as tmp:  # every config, the chart and the card: one commit
        res.comparison_chart(summaries, Path(tmp, "comparison.png"))
        pushed = hub.push_datasets(
            configs,
            args.eval_repo,
            args.revision,
            card,
            args.private,
            f"Evaluate {label}",
            files={"figures/comparison.png": Path(tmp, "comparison.png")},
        )
    results_pushed = [pushed]

    # 7. The numbers into the evaluated model's card (`model-index`): a new commit of its README on the hub.
    if args.update_model_card:
        source_name = f"biomed-vital eval {args.eval_repo}@{pushed.commit[:12]}"
        entries = res.eval_results(summary, display_names, judge, other_label, source_name, pushed.location)
        target = res.model_card_target(model_ref, args.model_card_repo)
        if target:
            results_pushed.append(
                res.push_model_card_results(hub, *target, entries, f"Evaluation results ({source_name})")
            )
        else:
            readme = model_folder / "README.md" if model_folder else None
            text = readme.read_text(encoding="utf-8") if readme and readme.is_file() else None
            card_path = out / "model_card" / "README.md"
            card_path.parent.mkdir(parents=True, exist_ok=True)
            card_path.write_text(str(res.update_model_card(text, entries, label)), encoding="utf-8")
            logger.info("the model is not a hub repo: its card with the results is in %s", card_path)
    overall = [r for r in summary if r["task"] == "vqa" and r["benchmark"] in ("overall", specs[0].name)]
    headline = ", ".join(
        f"{r['metric']} {r['value']:.1f}" for r in overall[:2] if r["mode"] == "legacy" and r["value"] is not None
    )
    print(artifact_table(results_pushed, {args.eval_repo: headline}))
    return results_pushed


def estimate(argv: list[str] | None = None) -> list:
    """The judges' requests, tokens and cost without sending anything (`vital pipeline --dry_run`). Answering with a
    local model costs no API call; answering through an endpoint is counted with the chat questions."""
    from vital.evaluation.chat_judge import build_chat_judge_messages
    from vital.evaluation.fixtures import open_chat_records
    from vital.evaluation.win_rate import build_win_rate_messages
    from vital.llm.estimate import estimate_requests

    parser = recipe_parser((EvaluateArguments, ans.GenerationSettings, EndpointConfig, BatchConfig))
    args, _, endpoint, _ = parser.parse_args_and_config(argv)
    samples = []
    for record in open_chat_records(8):
        mentions = [m["tokens"] if isinstance(m, dict) else m for m in record["in_text_mention"]]
        samples.append({**record, "in_text_mention": mentions})
    estimates = []
    if args.chat_questions and args.chat_judge:
        local, count, basis = Path(args.chat_questions), args.expected_chat_questions, "expected_chat_questions"
        if local.is_file():
            count, basis = sum(1 for line in local.open() if line.strip()), "chat file"
        else:
            try:  # a chat repo on the hub: count its questions file without downloading the images
                from vital.hub import parse_repo_ref

                repo_id, revision = parse_repo_ref(args.chat_questions)
                text = get_hub(args.hub).read_file(repo_id, args.chat_questions_file, revision)
                count, basis = sum(1 for line in (text or "").splitlines() if line.strip()) or count, "chat repo"
            except Exception:  # unreachable or not pushed yet: the expected count
                pass
        if count is None:
            raise ValueError("cannot count the chat questions offline; set expected_chat_questions for a dry run")
        chat = [build_chat_judge_messages(r, r["gpt4_answer"]) for r in samples]
        estimates.append(estimate_requests("evaluate", "chat judge", endpoint, chat, count, 300, basis))
    if args.win_rate_against:
        if args.expected_win_rate_items is None:
            raise ValueError("set expected_win_rate_items for a dry run with win_rate_against")
        pairwise = [
            build_win_rate_messages(r["text"], r["gpt4_answer"], r["gpt4_answer"], r["fig_caption"]) for r in samples
        ]
        items = 2 * args.expected_win_rate_items  # every item is judged in both orders
        estimates.append(
            estimate_requests("evaluate", "win rate", endpoint, pairwise, items, 300, "expected_win_rate_items")
        )
    return estimates


def cli(argv: list[str] | None = None) -> list[PushResult]:
    parser = recipe_parser((EvaluateArguments, ans.GenerationSettings, EndpointConfig, BatchConfig))
    args, generation, endpoint, batch = parser.parse_args_and_config(argv)
    return main(args, generation, endpoint, batch)


if __name__ == "__main__":
    cli()
