"""The model judge of BioMed-VITAL's selection stage: a rubric score from 0 to 10 for every question–answer turn.

The judge sees the figure, its caption and in-text mentions, one question and its answer, and the paper's rubric
(our wording). It must put the score alone on its first line. `parse_score` is strict: a first line with no number,
two numbers or a number outside 0–10 is unparseable; the turn is asked once more with a reminder, and if that fails
too the rating is recorded as a null score with the error. Never a default number.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vital.data.schemas import qa_turns
from vital.generation import ParseError, figure_context


RUBRIC_VERSION = "vital-rating-v1"

JUDGE_SYSTEM = "You are a careful medical expert who rates training data for medical vision-language models."

RUBRIC = """\
You are rating one question-answer pair from an instruction-following dataset that will be used to fine-tune a
medical vision-language model. You are given the figure, its caption, the sentences of the article that refer to it,
and the pair. Give the pair ONE score from 0 (useless or wrong) to 10 (excellent), weighing:

- Scope and relevance: does the question address key aspects of the image and caption?
- Value for fine-tuning: will learning this pair make a medical model better?
- Answer alignment: does the answer address the question that was asked?
- Accuracy: is the answer medically correct?
- Utility: is the answer useful and insightful in a medical context?
- Use of the image: does the answer recognise what the image shows and build on it?
Also consider clarity (both free of ambiguity), depth (details that deepen understanding) and medical precision
(correct terminology).

Write the score alone on the first line (for example: 7). Then explain it briefly, including any shortcomings."""

# "paper": the official scoring script's request layout: a one-line system message about checking answer quality, then
# the image and one text of [Context] (caption, in-text mention, question, answer, each as a "\t- " item) followed by
# [System] and the rubric. Our wording of both.
PAPER_JUDGE_SYSTEM = "You are a helpful, precise assistant who checks how good an answer is."
RATING_STYLES: tuple[str, ...] = ("paper", "ours")

RETRY_NOTE = (
    "Your previous reply did not start with a score. Reply again: the first line must hold only the score, "
    "a number from 0 to 10, followed by your explanation."
)

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.]*\d)")
_DENOMINATOR = re.compile(r"\s*(?:/\s*10(?:\.0+)?|out of\s+10)\b", re.IGNORECASE)


def _check_style(style: str) -> str:
    if style not in RATING_STYLES:
        raise ValueError(f"prompt_style must be one of {RATING_STYLES}, got {style!r}")
    return style


def rating_prompt_sha(prompt_style: str = "ours") -> str:
    """Names the judge prompt wording and layout in every rating."""
    system = PAPER_JUDGE_SYSTEM if _check_style(prompt_style) == "paper" else JUDGE_SYSTEM
    layout = "[Context]...[System]" if prompt_style == "paper" else "context-question-answer-rubric"
    text = f"{RUBRIC_VERSION}\n{system}\n{RUBRIC}\n{RETRY_NOTE}\n{layout}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def paper_layout(caption: str, mentions: Sequence[str], question: str, answer: str) -> str:
    """The official layout of the judge's text: [Context] with the caption, mentions, question and answer as
    ``"\t- "`` items, then [System] and the rubric."""
    items = "\n".join(f"\t- {m.strip()}" for m in mentions if m and m.strip()) or "\t- "
    return (
        f"[Context]\nFigure Caption:\n\t- {caption.strip()}\n\nFigure Context:\n{items}\n\n"
        f"Question:\n\t- {question.strip()}\n\nAnswer:\n\t- {answer.strip()}\n\n[System]\n{RUBRIC}"
    )


def build_rating_messages(
    candidate: Mapping[str, Any], turn: int, image_url, retry: bool = False, prompt_style: str = "ours"
) -> list[dict[str, Any]]:
    """The judge request for turn ``turn`` of a candidate (``images``, ``caption``, ``mentions``, ``messages``).

    ``prompt_style="paper"`` lays the request out as the official scoring script does (`PAPER_JUDGE_SYSTEM`,
    `paper_layout`); ``"ours"`` sends `JUDGE_SYSTEM` and the figure context, question, answer and rubric. Both ask for
    the score alone on the first line and are read by the same strict `parse_score`.
    """
    question, answer = qa_turns(candidate["messages"])[turn]
    if _check_style(prompt_style) == "paper":
        system = PAPER_JUDGE_SYSTEM
        text = paper_layout(candidate["caption"], candidate["mentions"], question, answer)
    else:
        system = JUDGE_SYSTEM
        text = (
            f"{figure_context(candidate['caption'], '', candidate['mentions'])}\n\n"
            f"Question:\n{question.strip()}\n\nAnswer:\n{answer.strip()}\n\n{RUBRIC}"
        )
    if retry:
        text += f"\n\n{RETRY_NOTE}"
    content = [{"type": "image_url", "image_url": {"url": image_url(image)}} for image in candidate["images"]]
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [*content, {"type": "text", "text": text}]},
    ]


def parse_score(reply: str | None) -> tuple[float, str]:
    """(score, rationale) from a judge reply whose first non-empty line holds the score alone.

    Accepted first lines: ``7``, ``7.5``, ``Score: 7``, ``**7**``, ``7/10``, ``7 out of 10``, ``# 7``. Anything with
    no number, more than one number, or a number outside 0–10 raises `ParseError` with the reason.
    """
    if reply is None or not reply.strip():
        raise ParseError("empty reply")
    lines = reply.strip().splitlines()
    first = lines[0].strip().strip("*#_` ").strip()
    numbers = _NUMBER.findall(_DENOMINATOR.sub("", first))
    if not numbers:
        raise ParseError(f"no score on the first line: {first[:80]!r}")
    if len(numbers) > 1:
        raise ParseError(f"more than one number on the first line: {first[:80]!r}")
    score = float(numbers[0])
    if not 0 <= score <= 10:
        raise ParseError(f"outside 0-10: score {numbers[0]}")
    return score, "\n".join(lines[1:]).strip()


def plan_rating_jobs(candidates, model: str, prompt_style: str = "ours") -> list:
    """One job per question–answer turn of every candidate (``candidates`` with undecoded images)."""
    from vital.llm import request_key
    from vital.llm.jobs import Job, image_sha256

    sha = rating_prompt_sha(prompt_style)
    jobs = []
    for index, row in enumerate(candidates):
        for turn, (question, answer) in enumerate(qa_turns(row["messages"])):
            images = [image_sha256(image) for image in row["images"]]
            extra = {"task": "rating", "images": images, "q": question, "a": answer, "prompt": sha}
            extra["context"] = [row["caption"], list(row["mentions"])]
            jobs.append(Job(request_key(model, [], {}, extra), index, row["id"], "rating", turn))
    return jobs


def retry_job(job, result, retries: int = 1):
    """The follow-up of a judge reply that did not parse (the same turn, asked again with a reminder), or None."""
    from vital.llm.jobs import Job

    attempt = int(job.task.rsplit("-", 1)[1]) if job.task.startswith("rating-retry-") else 0
    if not result.ok or attempt >= retries:
        return None
    try:
        parse_score(result.text)
    except ParseError:
        key = hashlib.sha256(f"{job.key}:retry:{attempt + 1}".encode()).hexdigest()
        return Job(key, job.index, job.record_id, f"rating-retry-{attempt + 1}", job.sample)
    return None


def rating_rows(
    jobs: Sequence, results: Mapping[str, Any], judge_model: str, retries: int = 1, prompt_style: str = "ours"
):
    """One ``ratings`` row per turn: the first parseable reply along the retry chain, else a null score + error."""
    sha = rating_prompt_sha(prompt_style)
    for job in jobs:
        current, attempts, error, score, rationale, raw, model = job, 0, None, None, "", "", judge_model
        while current is not None:
            result = results[current.key]
            attempts += 1
            raw, model = result.text, result.model or judge_model
            if not result.ok:
                error = f"request failed: {result.error}"
                break
            try:
                score, rationale = parse_score(result.text)
                error = None
                break
            except ParseError as e:
                error = f"unparseable reply after {attempts} attempt(s): {e.reason}"
            current = retry_job(current, result, retries)
        yield {
            "candidate_id": job.record_id,
            "turn": job.sample,
            "score": score,
            "error": error,
            "rationale": rationale,
            "judge": {"model": model, "prompt_sha": sha},
            "raw": raw,
            "judge_attempts": attempts,
        }


def rating_stats(ratings) -> dict[str, Any]:
    """What a ratings card counts: scored turns, the score histogram and mean, replies with no readable score on the
    first ask (whether a second ask saved them or not: never a default score), those still unread, and errors."""
    from collections import Counter

    scores = [s for s in ratings["score"] if s is not None]
    attempts, errors = ratings["judge_attempts"], ratings["error"]
    return {
        "num_rows": len(ratings),
        "num_scored": len(scores),
        "parse_failures": sum(1 for a, e in zip(attempts, errors) if a > 1 or (e or "").startswith("unparseable")),
        "unparsed": sum(1 for e in errors if (e or "").startswith("unparseable")),
        "retried": sum(1 for a in attempts if a > 1),
        "errors": dict(Counter(e.split(":", 1)[0] for e in errors if e)),
        "histogram": dict(sorted(Counter(int(s) for s in scores).items())),
        "mean": sum(scores) / len(scores) if scores else float("nan"),
    }
