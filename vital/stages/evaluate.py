"""Stage 5 — evaluate: a model answers VQA-RAD, SLAKE and PathVQA (scored with LLaVA-Med's metric and the strict one)
and, optionally, LLaVA-Med's open-chat questions (scored by a judge against the reference answers) and a pairwise
judge compares its answers with another model's (win rate). Results go to an eval dataset and the model's card.

Usage:

    vital pipeline --config recipes/quickstart/pipeline.yaml                 # offline: the pipeline starts the stand-in
    vital stand-in --port 8123 &                                            # or serve the stand-in judge yourself ...
    vital evaluate --config recipes/quickstart/evaluate.yaml                 # ... and run this stage alone against it
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/evaluate.py \\
        --config recipes/biomed_vital/evaluate.yaml                           # the paper's benchmarks, GPT-4 judge
    python recipes/evaluate.py --config ... --model_name_or_path hub:org/sft@main --compare_with org/eval-base@<sha>

The model is a local folder, ``hub:<repo>@<revision>`` on the recipe's hub or a Hugging Face id (answered with
transformers, batched, split across `accelerate` processes), or an OpenAI-compatible endpoint
(``answer_endpoint_url``). Answers and judge requests are journaled under ``output_dir``: a killed run resumes without
asking anything twice. Unreadable judge replies are asked once more, then recorded and left out of the scores with a
count. The judges are the configured OpenAI-compatible endpoint; the quickstart YAML names the stand-in's default
address (``vital stand-in``, http://127.0.0.1:8123/v1), and an eval judged by the stand-in (model ``vital-stand-in``)
says so on its card. The eval dataset gets one config per benchmark (per-item predictions and both metric modes),
``chat`` and ``win_rate`` (verdicts and raw judge replies) and ``summary``; the numbers also go into the evaluated
model's card as ``model-index`` entries (a new commit of its README on the hub), and a comparison chart with
``compare_with`` models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Image

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.evaluation import answering as ans
from vital.evaluation import results as res
from vital.evaluation.benchmarks import load_eval_inputs
from vital.evaluation.chat_judge import chat_judge_prompt_sha
from vital.evaluation.judges import judge_tables, plan_judges, run_judges
from vital.evaluation.win_rate import win_rate_inputs, win_rate_prompt_sha
from vital.hub import PushResult, get_hub
from vital.llm import EndpointConfig, from_stand_in
from vital.llm.batch import BatchConfig
from vital.llm.jobs import sent_by
from vital.llm.provenance import recorded_endpoint
from vital.runner import artifact_table, process_state, recipe_parser, setup_logging


logger = logging.getLogger("vital.evaluate")
API_STAGE = True  # sends judge requests: `vital pipeline` points it at the stand-in when the pipeline has one


@dataclass
class EvaluateArguments(HubArguments):
    """
    Arguments of the evaluation stage (beside `GenerationSettings`, how the model answers, `EndpointConfig`, the
    judges, and `BatchConfig`, how judge requests are sent).

    Parameters:
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the eval dataset and the model card's results. `False` answers and judges (journaled), pushes
            nothing.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch the eval dataset is pushed to.
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create the eval repo private.
        model_name_or_path (`str` or `None`, *optional*):
            The evaluated model: a local folder, `"hub:<repo>@<revision>"` on the stage's hub or a Hugging Face id
            (answered with transformers).
        model_revision (`str`, *optional*, defaults to `"main"`):
            Revision of a Hugging Face id or `hub:` model given without `@`.
        model_label (`str` or `None`, *optional*):
            The model's name in tables and charts (default: derived from the model).
        dtype (`str`, *optional*, defaults to `"auto"`):
            `"auto"`, `"float32"`, `"bfloat16"` or `"float16"`.
        batch_size (`int`, *optional*, defaults to `8`):
            Questions per `generate()` call (local models).
        answer_endpoint_url (`str` or `None`, *optional*):
            Answer through this OpenAI-compatible base URL instead of a local model (vLLM, ...).
        answer_endpoint_model (`str` or `None`, *optional*):
            The model name that endpoint serves.
        answer_endpoint_api_key_env (`str`, *optional*, defaults to `"VLLM_API_KEY"`):
            Environment variable holding that endpoint's API key.
        benchmarks (`list[str]`, *optional*, defaults to `["vqa-rad", "slake", "path-vqa"]`):
            VQA sets as `"name[=repo][@revision][:split]"`. Pin revisions to commits for reported numbers.
        limit (`int` or `None`, *optional*):
            Only the first N items of each set (smoke runs).
        cache_dir (`str` or `None`, *optional*):
            Where extracted benchmark images go (default `~/.cache/vital`).
        push_fixtures (`bool`, *optional*, defaults to `False`):
            First push the tiny benchmark fixtures to the hub (the quickstart); they are then read at the commits
            pushed (or found), whatever revision `benchmarks` and `chat_questions` name.
        chat_questions (`str` or `None`, *optional*):
            Open-chat questions: a dataset `"repo@revision"` or a local JSONL file; `None`: no open chat.
        chat_images (`str` or `None`, *optional*):
            Image folder of a local chat JSONL (default: the file's folder).
        chat_questions_file (`str`, *optional*, defaults to `"questions.jsonl"`):
            The JSONL file in a chat repo.
        chat_images_dir (`str`, *optional*, defaults to `"images"`):
            The image folder in a chat repo.
        chat_judge (`bool`, *optional*, defaults to `True`):
            Judge the open-chat answers against the references (with `chat_questions`).
        judge_with_image (`bool`, *optional*, defaults to `False`):
            Show the open-chat judge the image too.
        win_rate_with_image (`bool` or `None`, *optional*):
            Show the win-rate judge the image (the official win-rate script does); `None`: `judge_with_image`.
        win_rate_verdict_position (`str`, *optional*, defaults to `"last"`):
            Where the win-rate judge puts its verdict: `"last"` (after its reasons) or `"first"` (the official
            prompt: the reply begins with it).
        judge_retries (`int`, *optional*, defaults to `1`):
            Re-asks of a judge reply that cannot be read.
        win_rate_against (`str` or `None`, *optional*):
            Another model's eval dataset `"repo@revision"`: the pairwise win rate against its answers.
        win_rate_answer_types (`list[str]`, *optional*, defaults to `["open"]`):
            VQA answer types in the win rate (open-chat questions always are).
        compare_with (`list[str]`, *optional*, defaults to `[]`):
            Other eval datasets `"repo@revision"` for the comparison table and chart.
        eval_repo (`str`, *optional*, defaults to `"quickstart/eval"`):
            Dataset repo the eval dataset is pushed to.
        update_model_card (`bool`, *optional*, defaults to `True`):
            Write the numbers into the evaluated model's card (`model-index`).
        model_card_repo (`str` or `None`, *optional*):
            Hub model `"repo[@branch]"` whose card gets them (default: the evaluated hub model).
        output_dir (`str`, *optional*, defaults to `"outputs/evaluate"`):
            Answer and judge journals, and the card of a model that is not a hub repo.
        shard (`str` or `None`, *optional*):
            `"i/n"`: this machine's share only, push nothing.
        expected_chat_questions (`int` or `None`, *optional*):
            For `--dry_run`: open-chat questions to judge when they cannot be counted.
        expected_win_rate_items (`int` or `None`, *optional*):
            For `--dry_run`: questions judged for the win rate (each asked twice).
    """

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
    update_model_card: bool = field(default=True, metadata={"help": "Write the numbers into the model's card."})
    model_card_repo: str | None = field(
        default=None, metadata={"help": "Hub model 'repo[@branch]' whose card gets them (default: the hub model)."}
    )
    output_dir: str = field(default="outputs/evaluate", metadata={"help": "Answer and judge journals, local card."})
    shard: str | None = field(default=None, metadata={"help": "'i/n': this machine's share only, push nothing."})
    expected_chat_questions: int | None = field(
        default=None, metadata={"help": "For --dry_run: open-chat questions to judge when they cannot be counted."}
    )
    expected_win_rate_items: int | None = field(
        default=None, metadata={"help": "For --dry_run: questions judged for the win rate (each asked twice)."}
    )


def eval_card(args, lineage, label, judge, stand_in, summary, vqa_metrics, display_names, tables, other_label, plan,
              judge_results, answers, generation, comparison, configs):  # fmt: skip
    """The eval dataset's card: the summary, each judge's numbers and settings, costs, and the comparison table."""
    return dataset_card(
        "eval",
        lineage=lineage,
        pretty_name=f"Evaluation of {label}" + (" (stand-in judge)" if stand_in else ""),
        task_categories=["visual-question-answering"],
        model_label=label,
        stand_in=stand_in,
        summary=summary,
        vqa=vqa_metrics,
        display_names=display_names,
        chat=tables["chat_scores"],
        win=tables["win_summary"],
        other_model=other_label,
        judge=judge,
        chat_prompt_sha=chat_judge_prompt_sha(),
        win_prompt_sha=win_rate_prompt_sha(),
        judge_cost_usd=sum(r.cost_usd for r in judge_results.values()),
        judge_sent=sent_by(judge_results.values()),
        api_run=getattr(judge_results, "summary", None),
        answer_cost_usd=sum(a.cost_usd for a in answers.values()),
        judge_with_image=args.judge_with_image,
        win_rate_with_image=plan.win_with_image,
        win_rate_verdict_position=plan.verdict_position,
        generation=generation.to_dict(),
        comparison=comparison,
        configs={name: len(dataset) for name, (dataset, _) in configs.items()},
    )


def main(
    args: EvaluateArguments,
    generation: ans.GenerationSettings,
    endpoint: EndpointConfig,
    batch: BatchConfig | None = None,
) -> list[PushResult]:
    # Several processes on a machine without a GPU (accelerate_configs/cpu.yaml) are gloo processes on the CPU.
    state = process_state()
    setup_logging(main_process=state.is_main_process)
    hub, out, batch = get_hub(args.hub), Path(args.output_dir), batch or BatchConfig()

    # 1. Inputs at pinned commits: the VQA sets and the open-chat questions.
    benchmarks, chat_questions = args.benchmarks, args.chat_questions
    if args.push_fixtures:
        from vital.evaluation.fixtures import pin_fixtures, push_fixtures

        if state.is_main_process:
            push_fixtures(hub)
        state.wait_for_everyone()
        # The fixtures are read at the commits just pushed (or found), whatever revision the config names.
        benchmarks, chat_questions = pin_fixtures(hub, benchmarks, chat_questions)
    specs, sets, sources, chat, chat_ref = load_eval_inputs(
        hub, benchmarks, args.cache_dir, args.limit, chat_questions, args.chat_images, args.chat_questions_file,
        args.chat_images_dir,
    )  # fmt: skip

    # 2. Answers: a transformers model (batched, split across processes) or an endpoint; both journaled.
    questions = [q for dataset, _ in sets.values() for q in ans.vqa_questions(dataset, generation.closed_hint)]
    questions += ans.chat_questions(chat) if chat is not None else []
    answers, model = ans.answer_questions(
        hub, questions, generation, out, model_name_or_path=args.model_name_or_path,
        model_revision=args.model_revision, model_label=args.model_label, endpoint_url=args.answer_endpoint_url,
        endpoint_model=args.answer_endpoint_model, endpoint_api_key_env=args.answer_endpoint_api_key_env,
        batch_size=args.batch_size, dtype=args.dtype, shard=args.shard,
    )  # fmt: skip
    if answers is None:
        return []

    # 3. Score VQA both ways; plan the judges: open chat, and the win rate against the other model's answers.
    vqa_rows, vqa_metrics = res.score_benchmarks(sets, answers, model.label)
    chat_items = chat.cast_column("image", Image(decode=False)).to_list() if chat is not None else []
    chat_answers = {i["question_id"]: answers[f"chat/{i['question_id']}"] for i in chat_items}
    chat_predictions = {qid: a.prediction for qid, a in chat_answers.items() if a.error is None}
    win_items, other_label, other_ref = [], None, None
    if args.win_rate_against:
        win_items, other_label, other_ref = win_rate_inputs(
            hub, args.win_rate_against, sources, sets, vqa_rows, chat_items, chat_answers, args.win_rate_answer_types
        )
    plan = plan_judges(
        chat_items, chat_predictions, win_items, endpoint.model, chat_judge=args.chat_judge,
        judge_with_image=args.judge_with_image, win_rate_with_image=args.win_rate_with_image,
        verdict_position=args.win_rate_verdict_position, retries=args.judge_retries,
    )  # fmt: skip

    # 4. Ask the judges (this process's shard; unreadable replies asked once more), merge the journals.
    results = run_judges(plan, endpoint, out / "journals", args.shard, batch)
    if results is None or not state.is_main_process:
        return []

    # 5. Verdicts and the summary table: one config per benchmark, `chat`, `win_rate` and `summary`.
    label, judge = model.label, endpoint.model
    tables = judge_tables(plan, results, {qid: a.error for qid, a in chat_answers.items()})
    configs, summary = res.eval_configs(label, sources, vqa_rows, vqa_metrics, tables)

    # 6. The comparison with other eval datasets (table and chart), the card, and the push (the card goes last).
    summaries, compare_refs = res.load_comparisons(hub, args.compare_with, label, summary)
    display_names = {s.name: s.display_name for s in specs} | {"chat": "LLaVA-Med open chat"}
    inputs = [model.ref, *(ref for _, ref in sets.values()), *(r for r in (chat_ref, other_ref) if r), *compare_refs]
    stand_in = from_stand_in(endpoint, results.values())
    config = [args, generation, recorded_endpoint(endpoint, stand_in), batch]
    lineage = Lineage(stage="evaluate", inputs=inputs, config=config)
    card = eval_card(
        args, lineage, label, judge, stand_in, summary, vqa_metrics, display_names, tables, other_label, plan,
        results, answers, generation, res.comparison_table(summaries), configs,
    )  # fmt: skip
    if not args.push_to_hub:
        logger.info("push_to_hub is false: the eval of %s is not pushed", label)
        return []
    pushed = [res.push_eval_dataset(hub, configs, summaries, args.eval_repo, card, args, label)]

    # 7. The numbers into the evaluated model's card (`model-index`): a new commit of its README on the hub.
    if args.update_model_card:
        source_name = f"biomed-vital eval {args.eval_repo}@{pushed[0].commit[:12]}"
        entries = res.eval_results(summary, display_names, judge, other_label, source_name, pushed[0].location)
        card_push = res.record_model_card_results(
            hub, model.ref, args.model_card_repo, entries, label, source_name, model.folder, out
        )
        pushed += [card_push] if card_push else []
    print(artifact_table(pushed, {args.eval_repo: res.headline(summary, specs[0].name)}))
    return pushed


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
