"""Pairwise win rate of one model against another, by a reference-guided judge asked twice with the answers swapped.

For each question the judge sees the question, the reference answer (and optionally the image) and two answers as
Assistant A and Assistant B, and ends with ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie). Every question is two jobs: the
evaluated model as A, then as B. `combine_swapped` joins them: two agreeing verdicts count, disagreeing ones are a tie
(position bias cancels out). A verdict that cannot be read is asked once more; if it still cannot be read, the
question is recorded as unparsed, with the raw replies, and left out of the rates with a count: never a tie, never a
win.

`summarize_win_rate` gives wins, ties and losses, the win rate with ties (wins / all judged) and without them
(wins / (wins + losses)), per benchmark and overall.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from datasets import Features, List, Value

from vital.evaluation.judge_jobs import error_reason, read_chain, reask_job
from vital.evaluation.judge_parsing import combine_swapped, parse_verdict


WIN_RATE_VERSION = "vital-win-rate-v1"
WIN_RATE_TASK = "win-rate"
MODEL_FIRST, MODEL_SECOND = 0, 1  # Job.sample: the evaluated model is Assistant A, or Assistant B

WIN_RATE_SYSTEM = (
    "You are an impartial biomedical expert who compares two AI assistants' answers to a question about a medical "
    "image."
)

WIN_RATE_RULES = """\
Decide which assistant answered the question better. The reference answer is correct: check each assistant's answer \
against it for medical accuracy first, then for completeness and relevance to the question. {sees} Do not let the \
order of the answers, their length or their style sway you.

{verdict}"""

# Where the verdict goes: "last" (ours: reason first, then decide) or "first" (the official BioMed-VITAL win-rate
# prompt: the reply must begin with the verdict, a tie only as a last resort). Our wording of both.
VERDICT_POSITIONS: tuple[str, ...] = ("first", "last")
WIN_RATE_VERDICT_LAST = """\
Explain your decision in a few sentences, then end your reply with your verdict alone on the last line: [[A]] if \
Assistant A is better, [[B]] if Assistant B is better, or [[C]] if they are equally good."""
WIN_RATE_VERDICT_FIRST = """\
Begin your reply with your verdict: [[A]] if Assistant A is better, [[B]] if Assistant B is better, or [[C]] for a \
tie, which you should give only when you truly cannot tell the answers apart. Then explain your decision."""

WIN_RATE_SEES_TEXT = "You do not see the image; judge from the question and the reference answer."
WIN_RATE_SEES_IMAGE = "The image is attached."

WIN_RATE_RETRY_NOTE = (
    "Your previous reply did not hold a readable verdict. Reply again with exactly one of [[A]], [[B]] or [[C]] "
    "where you were asked to put it."
)

WIN_EVAL_FEATURES = Features(
    {
        "id": Value("string"),
        "benchmark": Value("string"),
        "question": Value("string"),
        "reference": Value("string"),
        "prediction": Value("string"),
        "other_prediction": Value("string"),
        "other_model": Value("string"),
        "verdict_model_first": Value("string"),  # A / B / C as the judge wrote it, the model being A; null: unread
        "verdict_model_second": Value("string"),  # the model being B
        "outcome": Value("string"),  # win / loss / tie for the evaluated model; null when a verdict was unread
        "judge_error": Value("string"),
        "raw_model_first": Value("string"),
        "raw_model_second": Value("string"),
        "replies_model_first": List(Value("string")),
        "replies_model_second": List(Value("string")),
        "judge_attempts": Value("int32"),
        "judge": {"model": Value("string"), "prompt_sha": Value("string"), "with_image": Value("bool")},
        "cost_usd": Value("float64"),
    }
)


def win_rate_prompt_sha() -> str:
    """Names the pairwise judge's wording (system prompt, rules in both variants, reminder)."""
    text = "\n".join(
        [
            WIN_RATE_VERSION,
            WIN_RATE_SYSTEM,
            WIN_RATE_RULES,
            WIN_RATE_SEES_TEXT,
            WIN_RATE_SEES_IMAGE,
            WIN_RATE_RETRY_NOTE,
            WIN_RATE_VERDICT_LAST,
            WIN_RATE_VERDICT_FIRST,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _verdict_rule(position: str) -> str:
    if position not in VERDICT_POSITIONS:
        raise ValueError(f"verdict position must be one of {VERDICT_POSITIONS}, got {position!r}")
    return WIN_RATE_VERDICT_FIRST if position == "first" else WIN_RATE_VERDICT_LAST


def build_win_rate_messages(
    question: str,
    reference: str,
    answer_a: str,
    answer_b: str,
    image_url: str | None = None,
    retry: bool = False,
    verdict_position: str = "last",
) -> list[dict[str, Any]]:
    """The pairwise judge request: the question, the reference answer and Assistants A and B; the verdict asked for
    at the end of the reply (``"last"``) or at its beginning (``"first"``)."""
    rules = WIN_RATE_RULES.format(
        sees=WIN_RATE_SEES_IMAGE if image_url else WIN_RATE_SEES_TEXT, verdict=_verdict_rule(verdict_position)
    )
    text = (
        f"[Question]\n{question.strip()}\n\n"
        f"[Reference answer]\n{reference.strip()}\n[End of reference answer]\n\n"
        f"[Assistant A]\n{answer_a.strip()}\n[End of Assistant A]\n\n"
        f"[Assistant B]\n{answer_b.strip()}\n[End of Assistant B]\n\n{rules}"
    )
    if retry:
        text += f"\n\n{WIN_RATE_RETRY_NOTE}"
    content = [{"type": "image_url", "image_url": {"url": image_url}}] if image_url else []
    return [
        {"role": "system", "content": WIN_RATE_SYSTEM},
        {"role": "user", "content": [*content, {"type": "text", "text": text}]},
    ]


def ordered_answers(item: Mapping[str, Any], sample: int) -> tuple[str, str]:
    """(Assistant A, Assistant B) of an item for one order."""
    if sample == MODEL_FIRST:
        return item["prediction"], item["other_prediction"]
    return item["other_prediction"], item["prediction"]


def build_win_rate_job_messages(
    item: Mapping[str, Any], job, image_url: str | None = None, verdict_position: str = "last"
) -> list[dict[str, Any]]:
    """The request of one win-rate job (either order, first ask or re-ask)."""
    answer_a, answer_b = ordered_answers(item, job.sample)
    retry = job.task != WIN_RATE_TASK
    return build_win_rate_messages(
        item["question"], item["reference"], answer_a, answer_b, image_url, retry, verdict_position
    )


def plan_win_rate_jobs(
    items: Sequence[Mapping[str, Any]], judge_model: str, with_image: bool = False, verdict_position: str = "last"
) -> list:
    """Two jobs per item (``id``, ``question``, ``reference``, ``prediction``, ``other_prediction``, and ``image``
    when ``with_image``): the model as Assistant A (sample 0), then as Assistant B (sample 1)."""
    from vital.llm import request_key
    from vital.llm.jobs import Job, image_sha256

    sha = win_rate_prompt_sha()
    jobs = []
    for index, item in enumerate(items):
        image = image_sha256(item["image"]) if with_image else None
        for sample in (MODEL_FIRST, MODEL_SECOND):
            answer_a, answer_b = ordered_answers(item, sample)
            extra = {
                "task": WIN_RATE_TASK,
                "prompt": sha,
                "q": item["question"],
                "reference": item["reference"],
                "a": answer_a,
                "b": answer_b,
                "image": image,
            }
            if verdict_position != "last":  # keys of verdict-last jobs stay as they were
                extra["verdict"] = _verdict_rule(verdict_position) and verdict_position
            jobs.append(Job(request_key(judge_model, [], {}, extra), index, item["id"], WIN_RATE_TASK, sample))
    return jobs


def verdict_retry_job(job, result, retries: int = 1, verdict_position: str = "last"):
    """The re-ask of a pairwise verdict that did not parse, or None."""
    return reask_job(job, result, partial(parse_verdict, position=verdict_position), retries)


def win_rate_rows(
    items: Sequence[Mapping[str, Any]],
    jobs: Sequence,
    results: Mapping[str, Any],
    judge_model: str,
    retries: int = 1,
    with_image: bool = False,
    verdict_position: str = "last",
) -> list[dict[str, Any]]:
    """One `WIN_EVAL_FEATURES` row per item: both verdicts, the combined outcome (null when either is unread)."""
    sha = win_rate_prompt_sha()
    parse = partial(parse_verdict, position=verdict_position)
    jobs_of: dict[tuple[str, int], Any] = {(job.record_id, job.sample): job for job in jobs}
    rows = []
    for item in items:
        first = read_chain(jobs_of[item["id"], MODEL_FIRST], results, parse, retries, judge_model)
        second = read_chain(jobs_of[item["id"], MODEL_SECOND], results, parse, retries, judge_model)
        errors = [f"{name}: {c.error}" for name, c in (("model first", first), ("model second", second)) if c.error]
        outcome = combine_swapped(first.value, second.value) if not errors else None
        rows.append(
            {
                "id": item["id"],
                "benchmark": item["benchmark"],
                "question": item["question"],
                "reference": item["reference"],
                "prediction": item["prediction"],
                "other_prediction": item["other_prediction"],
                "other_model": item.get("other_model", ""),
                "verdict_model_first": first.value,
                "verdict_model_second": second.value,
                "outcome": outcome,
                "judge_error": "; ".join(errors) or None,
                "raw_model_first": first.raw,
                "raw_model_second": second.raw,
                "replies_model_first": first.replies,
                "replies_model_second": second.replies,
                "judge_attempts": first.attempts + second.attempts,
                "judge": {"model": first.model, "prompt_sha": sha, "with_image": with_image},
                "cost_usd": first.cost_usd + second.cost_usd,
            }
        )
    return rows


def _tally(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    wins = sum(1 for r in rows if r["outcome"] == "win")
    ties = sum(1 for r in rows if r["outcome"] == "tie")
    losses = sum(1 for r in rows if r["outcome"] == "loss")
    unparsed = [r for r in rows if r["outcome"] is None]
    reasons: dict[str, int] = {}
    for r in unparsed:
        for part in (r["judge_error"] or "").split("; "):
            reason = error_reason(part.split(": ", 1)[-1]) if part else "unknown"
            reasons[reason] = reasons.get(reason, 0) + 1
    judged = wins + ties + losses
    swapped = {"A": "B", "B": "A", "C": "C"}  # a verdict in the second order, read in the first order's terms
    disagreed = sum(
        1 for r in rows if r["outcome"] == "tie" and r["verdict_model_first"] != swapped[r["verdict_model_second"]]
    )
    return {
        "n": len(rows),
        "n_judged": judged,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "n_unparsed": len(unparsed),
        "unparsed_reasons": dict(sorted(reasons.items())),
        "n_disagreed": disagreed,  # ties that come from two verdicts that disagree
        "win_rate": 100.0 * wins / judged if judged else None,
        "win_rate_excluding_ties": 100.0 * wins / (wins + losses) if wins + losses else None,
        "tie_rate": 100.0 * ties / judged if judged else None,
    }


def summarize_win_rate(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"overall": {...}, "by_benchmark": {name: {...}}}``: ``wins``, ``ties``, ``losses``, ``n_unparsed``
    (left out), ``n_disagreed``, ``win_rate`` (×100, ties in the denominator), ``win_rate_excluding_ties`` and
    ``tie_rate``."""
    by_benchmark: dict[str, list] = {}
    for row in rows:
        by_benchmark.setdefault(row["benchmark"], []).append(row)
    return {"overall": _tally(rows), "by_benchmark": {k: _tally(v) for k, v in sorted(by_benchmark.items())}}


def win_rate_items(
    ours: Mapping[str, Sequence[Mapping[str, Any]]],
    theirs: Mapping[str, Sequence[Mapping[str, Any]]],
    images: Mapping[str, Mapping[str, Any]],
    other_model: str,
    answer_types: Sequence[str] = ("open",),
) -> list[dict[str, Any]]:
    """The questions both models answered, as win-rate items, per benchmark.

    ``ours`` and ``theirs`` map a benchmark (or ``chat``) to per-item rows of an eval dataset: VQA rows (``id``,
    ``question``, ``answer``, ``answer_type``, ``prediction``, ``answer_error``) or chat rows (``question_id``,
    ``question``, ``reference``, ``prediction``, ``answer_error``). Only VQA items whose answer type is in
    ``answer_types`` are kept (chat questions are all open), and only those both models answered without error.
    ``images`` maps ``<benchmark>/<id>`` to the undecoded image cell.
    """
    items = []
    for benchmark, rows in ours.items():
        other = {(r.get("id") or r.get("question_id")): r for r in theirs.get(benchmark, [])}
        for row in rows:
            item_id = row.get("id") or row.get("question_id")
            if "answer_type" in row and row["answer_type"] not in answer_types:
                continue
            mate = other.get(item_id)
            if mate is None or row.get("answer_error") or mate.get("answer_error"):
                continue
            items.append(
                {
                    "id": f"{benchmark}/{item_id}",
                    "benchmark": benchmark,
                    "question": row["question"],
                    "reference": row.get("answer", row.get("reference")),
                    "prediction": row["prediction"],
                    "other_prediction": mate["prediction"],
                    "other_model": other_model,
                    "image": images.get(f"{benchmark}/{item_id}"),
                }
            )
    return items


def load_other_answers(hub, spec: str, splits: Mapping[str, str]) -> tuple[dict[str, list], str, Any]:
    """Another model's per-item answers from its eval dataset (``repo@revision``, read at one commit): the config of
    each benchmark in ``splits`` (name -> split) that it has, its label (from its ``summary``) and the commit read."""
    import logging

    from vital.hub import parse_repo_ref

    repo_id, revision = parse_repo_ref(spec)
    ref = hub.ref(repo_id, revision, "dataset")
    answers = {}
    for name, split in splits.items():
        try:
            answers[name] = hub.load_dataset(repo_id, name, revision=ref.commit, split=split).to_list()
        except (ValueError, FileNotFoundError) as e:
            logging.getLogger(__name__).warning("win rate: %s has no %s answers (%s); skipped", spec, name, e)
    summary = hub.load_dataset(repo_id, "summary", revision=ref.commit, split="test")
    return answers, summary[0]["model"] if len(summary) else repo_id, ref


def win_rate_inputs(
    hub,
    against: str,
    sources: Mapping[str, tuple[str, str, str]],
    sets: Mapping[str, tuple[Any, Any]],
    vqa_rows: Mapping[str, list],
    chat_items: Sequence[Mapping[str, Any]],
    chat_answers: Mapping[str, Any],
    answer_types: Sequence[str],
) -> tuple[list[dict[str, Any]], str, Any]:
    """The items of a win rate against another model's eval dataset ``against`` (``repo@revision``): our answers
    (per-benchmark rows, and the open-chat answers), theirs, and every question's image. Returns the items, the
    other model's label and its eval dataset's ref."""
    from datasets import Image

    splits = {name: split for name, (_, _, split) in sources.items()}
    theirs, other_label, other_ref = load_other_answers(hub, against, splits)
    ours, images = dict(vqa_rows), {}
    ours["chat"] = [
        {
            "question_id": item["question_id"],
            "question": item["text"],
            "reference": item["gpt4_answer"],
            "prediction": chat_answers[item["question_id"]].prediction,
            "answer_error": chat_answers[item["question_id"]].error,
        }
        for item in chat_items
    ]
    for name, (dataset, _) in sets.items():
        for row in dataset.cast_column("image", Image(decode=False)).select_columns(["id", "image"]):
            images[f"{name}/{row['id']}"] = row["image"]
    images |= {f"chat/{i['question_id']}": i["image"] for i in chat_items}
    return win_rate_items(ours, theirs, images, other_label, answer_types), other_label, other_ref
