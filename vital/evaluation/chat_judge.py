"""The open visual chat judge (LLaVA-Med's protocol, our wording) and its relative score.

The judge sees the question, the figure's caption and in-text mentions (and, optionally, the figure), the reference
answer as Assistant 1 and the evaluated model's answer as Assistant 2, and gives both a score from 1 to 10 on its
first line. A reply that cannot be read (`parse_pair_scores`) is asked once more with a reminder; if that fails too,
the question is recorded with the error and the raw replies and EXCLUDED from the scores, with a count: never scored.

`relative_scores` reports, overall, by question type and by domain, both

* ``mean_of_ratios``: the mean over questions of model score / reference score, ×100 (LLaVA-Med's published number,
  ``summarize_gpt_review.py``), and
* ``ratio_of_means``: mean model score / mean reference score, ×100 (LLaVA's definition; less noisy when a reference
  score is low).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from datasets import Features, List, Value

from vital.evaluation.judge_jobs import error_reason, read_chain, reask_job
from vital.evaluation.judge_parsing import parse_pair_scores
from vital.generation import figure_context


CHAT_JUDGE_VERSION = "vital-chat-judge-v1"
CHAT_JUDGE_TASK = "chat-judge"

CHAT_JUDGE_SYSTEM = "You are a meticulous biomedical expert who grades AI assistants' answers about medical figures."

CHAT_JUDGE_SEES_TEXT = (
    "You cannot see the figure itself; its caption and the sentences of the article that mention it, given above, "
    "describe what it shows."
)
CHAT_JUDGE_SEES_IMAGE = (
    "The figure is attached; its caption and the sentences of the article that mention it are given above."
)

CHAT_JUDGE_RULES = """\
Two AI assistants answered the question above about a biomedical figure. {sees}

Grade each answer on how helpful, relevant and medically accurate it is, and on how much useful detail it gives. \
Give each assistant one overall score from 1 to 10; higher is better.

Write only the two scores on the first line, Assistant 1's first, separated by a space (for example: 8 6). From the \
second line on, explain your scores briefly and impartially: neither the order in which the answers appear nor their \
length may sway you."""

CHAT_JUDGE_RETRY_NOTE = (
    "Your previous reply did not start with the two scores. Reply again: the first line must hold only two numbers "
    "from 1 to 10, Assistant 1's score and then Assistant 2's, followed by your explanation."
)

CHAT_EVAL_FEATURES = Features(
    {
        "question_id": Value("string"),
        "pair_id": Value("string"),
        "type": Value("string"),
        "domain": Value("string"),
        "question": Value("string"),
        "reference": Value("string"),
        "prediction": Value("string"),
        "answer_error": Value("string"),
        "score_reference": Value("float32"),  # null when the verdict could not be read (then `judge_error` is set)
        "score_model": Value("float32"),
        "ratio": Value("float32"),
        "judge_error": Value("string"),
        "judge_raw": Value("string"),
        "judge_replies": List(Value("string")),
        "judge_attempts": Value("int32"),
        "judge": {"model": Value("string"), "prompt_sha": Value("string"), "with_image": Value("bool")},
        "cost_usd": Value("float64"),
    }
)


def chat_judge_prompt_sha() -> str:
    """Names the chat judge's wording (system prompt, rules in both variants, reminder)."""
    text = "\n".join(
        [
            CHAT_JUDGE_VERSION,
            CHAT_JUDGE_SYSTEM,
            CHAT_JUDGE_RULES,
            CHAT_JUDGE_SEES_TEXT,
            CHAT_JUDGE_SEES_IMAGE,
            CHAT_JUDGE_RETRY_NOTE,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_chat_judge_messages(
    item: Mapping[str, Any], prediction: str, image_url: str | None = None, retry: bool = False
) -> list[dict[str, Any]]:
    """The judge request for one open-chat question (``text``, ``gpt4_answer``, ``fig_caption``,
    ``in_text_mention``) and the model's answer; with ``image_url`` the figure is attached."""
    rules = CHAT_JUDGE_RULES.format(sees=CHAT_JUDGE_SEES_IMAGE if image_url else CHAT_JUDGE_SEES_TEXT)
    text = (
        f"{figure_context(item['fig_caption'], '', item['in_text_mention'])}\n\n"
        f"[Question]\n{item['text'].strip()}\n\n"
        f"[Assistant 1]\n{item['gpt4_answer'].strip()}\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{prediction.strip()}\n[End of Assistant 2]\n\n{rules}"
    )
    if retry:
        text += f"\n\n{CHAT_JUDGE_RETRY_NOTE}"
    content = [{"type": "image_url", "image_url": {"url": image_url}}] if image_url else []
    return [
        {"role": "system", "content": CHAT_JUDGE_SYSTEM},
        {"role": "user", "content": [*content, {"type": "text", "text": text}]},
    ]


def plan_chat_judge_jobs(
    items: Sequence[Mapping[str, Any]], predictions: Mapping[str, str], judge_model: str, with_image: bool = False
) -> list:
    """One job per question that has an answer (``predictions`` by ``question_id``); ``items`` with undecoded
    images. Keyed by the judge model, the prompt hash, the question, both answers, the context and the image."""
    from vital.llm import request_key
    from vital.llm.jobs import Job, image_sha256

    sha = chat_judge_prompt_sha()
    jobs = []
    for index, item in enumerate(items):
        prediction = predictions.get(item["question_id"])
        if prediction is None:
            continue
        extra = {
            "task": CHAT_JUDGE_TASK,
            "prompt": sha,
            "q": item["text"],
            "reference": item["gpt4_answer"],
            "answer": prediction,
            "context": [item["fig_caption"], list(item["in_text_mention"])],
            "image": image_sha256(item["image"]) if with_image else None,
        }
        jobs.append(Job(request_key(judge_model, [], {}, extra), index, item["question_id"], CHAT_JUDGE_TASK))
    return jobs


def chat_retry_job(job, result, retries: int = 1):
    """The re-ask of a chat verdict that did not parse, or None."""
    return reask_job(job, result, parse_pair_scores, retries)


def chat_judge_rows(
    items: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    jobs: Sequence,
    results: Mapping[str, Any],
    judge_model: str,
    retries: int = 1,
    with_image: bool = False,
    answer_errors: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One `CHAT_EVAL_FEATURES` row per question, in ``items`` order. A question without an answer or with an
    unreadable verdict has null scores and its error; `relative_scores` leaves it out and counts it."""
    sha = chat_judge_prompt_sha()
    answer_errors = answer_errors or {}
    by_id = {job.record_id: job for job in jobs}
    rows = []
    for item in items:
        qid = item["question_id"]
        row = {
            "question_id": qid,
            "pair_id": item["pair_id"],
            "type": item["type"],
            "domain": item["domain"],
            "question": item["text"],
            "reference": item["gpt4_answer"],
            "prediction": predictions.get(qid, ""),
            "answer_error": answer_errors.get(qid),
            "score_reference": None,
            "score_model": None,
            "ratio": None,
            "judge_error": None,
            "judge_raw": "",
            "judge_replies": [],
            "judge_attempts": 0,
            "judge": {"model": judge_model, "prompt_sha": sha, "with_image": with_image},
            "cost_usd": 0.0,
        }
        job = by_id.get(qid)
        if job is None:
            row["judge_error"] = f"no answer: {answer_errors.get(qid) or 'missing'}"
        else:
            chain = read_chain(job, results, parse_pair_scores, retries, judge_model)
            row.update(
                judge_error=chain.error,
                judge_raw=chain.raw,
                judge_replies=chain.replies,
                judge_attempts=chain.attempts,
                cost_usd=chain.cost_usd,
            )
            row["judge"]["model"] = chain.model
            if chain.value is not None:
                reference, model = chain.value
                row.update(score_reference=reference, score_model=model, ratio=model / reference)
        rows.append(row)
    return rows


def _group_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    scored = [r for r in rows if r["score_reference"] is not None and r["score_model"] is not None]
    excluded = [r for r in rows if not (r["score_reference"] is not None and r["score_model"] is not None)]
    reasons: dict[str, int] = {}
    for r in excluded:
        reason = "no answer" if (r["judge_error"] or "").startswith("no answer") else error_reason(r["judge_error"])
        reasons[reason] = reasons.get(reason, 0) + 1
    out: dict[str, Any] = {
        "n": len(rows),
        "n_scored": len(scored),
        "n_excluded": len(excluded),
        "excluded_reasons": dict(sorted(reasons.items())),
        "reference_mean": None,
        "model_mean": None,
        "mean_of_ratios": None,
        "ratio_of_means": None,
    }
    if scored:
        reference = [float(r["score_reference"]) for r in scored]
        model = [float(r["score_model"]) for r in scored]
        out["reference_mean"] = sum(reference) / len(reference)
        out["model_mean"] = sum(model) / len(model)
        out["mean_of_ratios"] = 100.0 * sum(m / s for m, s in zip(model, reference)) / len(scored)
        out["ratio_of_means"] = 100.0 * out["model_mean"] / out["reference_mean"]
    return out


def relative_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The relative score of the model against the reference, both definitions, over the scored questions only.

    Returns ``{"overall": {...}, "by_type": {type: {...}}, "by_domain": {domain: {...}}}``; each group holds ``n``,
    ``n_scored``, ``n_excluded`` (with ``excluded_reasons``), ``reference_mean``, ``model_mean``,
    ``mean_of_ratios`` and ``ratio_of_means`` (×100; None when nothing was scored).
    """
    by_type: dict[str, list] = {}
    by_domain: dict[str, list] = {}
    for row in rows:
        by_type.setdefault(row["type"], []).append(row)
        by_domain.setdefault(row["domain"], []).append(row)
    return {
        "overall": _group_scores(rows),
        "by_type": {k: _group_scores(v) for k, v in sorted(by_type.items())},
        "by_domain": {k: _group_scores(v) for k, v in sorted(by_domain.items())},
    }
