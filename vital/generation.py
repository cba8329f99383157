"""Prompts and reply parsing for BioMed-VITAL's data generation (stage 1).

A request shows the generator a system instruction, then one clinician-selected demonstration per modality (image,
caption, in-text mentions, and the demonstration conversation as the assistant's reply), then the target figure.
The reply is a conversation; `parse_conversation` turns it into question–answer turns robustly (multi-line answers,
lists, numbered or bold speaker labels, JSON). `build_answer_pair_messages` / `parse_answer_pairs` do the same for
the clinicians' preference task: each question with two alternative answers.

The prompt text is our own wording of the paper's instructions; `prompt_sha` names it in every artifact.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vital.data.schemas import image_part, message_text, text_part


PROMPT_VERSION = "vital-generation-v2"

# "ours": the requirements of the paper's final generation prompt (below) plus two of the first official prompt's that
# the final one dropped: no facts only the text could reveal, no medical advice.
CONVERSATION_SYSTEM = """\
You are an AI assistant with expertise in biomedicine. You are shown a figure from a biomedical research article,
together with its caption and, sometimes, the sentences of the article that refer to it (Figure Context).

Write a conversation in which a person (User) asks about the figure and you (Assistant) answer, as if both of you were
looking at the image together. Draw out as many visual details of the image as you can, and use the caption and
context to interpret them correctly; make the links between the text and the visual details explicit.

Requirements:
- Start with a question from the User. Write at least 4-5 exchanges; more when the figure carries more information.
  Every question gets its answer.
- Ask diverse questions that cover different visual aspects of the figure: the imaging modality, the organ, the
  location of a finding, possible diseases, the size and the number of structures, and questions that need more
  complex reasoning; mix yes/no questions with open-ended ones.
- Where the text is relevant to a question, answer with the expertise and the specialised terminology it carries,
  never with vague, non-specialist descriptions.
- Do not quote specific facts, numbers, dates, abbreviations or names that only the text could reveal; stay with what
  can be inferred from the image.
- Answer carefully: no overconfidence and no vague answers. Give no medical advice or diagnosis for a patient;
  suggest consulting a healthcare professional where that matters.
- The conversation will be used to train another medical vision-language model: make every question-answer pair
  worth learning from.
- Format every turn as "User: <question>" or "Assistant: <answer>", each turn starting on a new line."""

# "paper": our own wording of every requirement of the final official generation prompt (BioMed-VITAL,
# generate/instructions_generation.py), nothing added but the output format the official parser relies on.
PAPER_CONVERSATION_SYSTEM = """\
You are an AI assistant specialising in biomedicine. You are given a figure from a biomedical research paper and,
sometimes, extra text that refers to it (Figure Context). Extract every visual detail you can from the image, and
weave the supplementary text into your questions and answers, bringing out how the text and the visual elements
relate, so that the full context is captured.

Hold a dialogue in which a person (User) asks about the image and you (Assistant) give insightful answers, as if you
were both looking at the image. Draw on the text (Figure Caption and Figure Context) and on what is visible, so that
the exchange is rich and shows why the visual details matter.

Requirements for the questions and answers:
- Focus on the visual aspects that can be inferred without the text, and extract as much detail from the image as
  possible.
- Make the questions diverse, covering many visual aspects, and give each question its answer. Questions may ask
  about the imaging modality, the organ, the location, possible diseases, sizes and the number of elements, or need
  more complex reasoning; use both yes/no questions and open-ended ones.
- Write at least 4-5 question-answer exchanges; adjust the number to the image and text, and write more when there is
  a lot of information to discuss.
- When the text bears on a question, answer with the expertise and the specialised terminology found in the text,
  not with vague, non-specialist descriptions.
- Answer responsibly: no overconfidence and no vague answers.
- Begin with a question from the User, not with an answer from the Assistant.
- What you write is an instruction-following dataset for training another large medical model, so make every
  question-answer pair as useful as possible for training other vision-language models.
- Format every turn as "User: <question>" or "Assistant: <answer>", each turn starting on a new line."""

PROMPT_STYLES: tuple[str, ...] = ("paper", "ours")

# What the user turn says about the caption and the in-text mentions (both styles): the caption is a description of
# the figure to read as an extension of the image; the mentions are where the article refers to the figure.
CAPTION_FRAME = "Text that describes this figure (its caption); read it as an extension of the image:"
MENTIONS_FRAME = "Where the paper refers to this figure (the in-text mentions):"

JSON_FORMAT_NOTE = """
Return only a JSON object of the form {"conversation": [{"question": "...", "answer": "..."}, ...]}."""

ANSWER_PAIRS_SYSTEM = """\
You are an AI assistant with expertise in biomedicine. You are shown a figure from a biomedical research article with
its caption and, sometimes, the sentences that refer to it (Figure Context).

Write questions a User could ask about the figure and, for every question, two different answers (Answer 1 and
Answer 2), each offering its own explanation or emphasis, so that an expert can judge which one is better.

Requirements:
- Write at least 3-4 questions, each followed by its two answers; cover different visual aspects of the figure.
- Do not quote specific facts, numbers, dates, abbreviations or names that only the text could reveal.
- Answer carefully and without overconfidence; give no medical advice or diagnosis.
- Format: "User: <question>", then "Answer 1: <answer>", then "Answer 2: <answer>", each on a new line."""

REFUSAL_RE = re.compile(
    r"^\s*(i['’]m sorry|i am sorry|sorry, (but )?i|i can(no|')t (help|assist|provide|do)|i (am|'m) unable|"
    r"as an ai\b.*\b(cannot|can't))",
    re.IGNORECASE,
)

# A speaker label at the start of a line: "User:", "**User:**", "**User**:", "1. User:", "- Q1:", "Question 2:",
# "A:", "Human:", "GPT:", "Answer 1:" (answer pairs), or a label alone on a markdown-header or bold line ("### User").
_LABEL_RE = re.compile(
    r"""^\s*(?:[-*>]\s+)?(?:\d+[.)]\s+)?(?P<header>\#{1,6}\s*)?(?P<bold>\*\*|__)?\s*
    (?P<label>user|human|question|q|assistant|gpt|answer|a|ai)\s*(?P<num>\d+)?\s*(?:\*\*|__)?\s*
    (?P<sep>[:：])?\s*(?:\*\*|__)?[ \t]*(?P<rest>.*)$""",
    re.IGNORECASE | re.VERBOSE,
)
QUESTION_LABELS = {"user", "human", "question", "q"}
ANSWER_LABELS = {"assistant", "gpt", "answer", "a", "ai"}


class ParseError(ValueError):
    """A reply with no usable question–answer turns; ``reason`` is what goes into the ``failures`` split."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class QATurn:
    question: str
    answer: str


# ----------------------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------------------
# One worked example of the two-answer format (written by the maintainers, text only, not clinician-reviewed); the
# official two-answer prompt also shows the generator one demonstration before the target figure.
ANSWER_PAIR_DEMO: dict[str, Any] = {
    "caption": "Axial contrast-enhanced CT of the abdomen showing a hypodense lesion in the right lobe of the liver "
    "(arrow).",
    "fig_label": "Figure 2",
    "mentions": ["Abdominal CT revealed a well-defined hypodense hepatic lesion in the right lobe (Figure 2)."],
    "reply": """\
User: Which imaging modality was used for this figure?
Answer 1: This is an axial computed tomography (CT) image of the abdomen acquired after intravenous contrast.
Answer 2: The image is a cross-sectional CT slice through the upper abdomen; the bright vessels suggest a contrast agent.
User: Where is the abnormality that the arrow points to?
Answer 1: The arrow marks a darker (hypodense) area within the right lobe of the liver.
Answer 2: It lies in the liver, on the patient's right side, which appears on the left of an axial image.
User: Is the lesion well defined?
Answer 1: Yes. Its edge is sharp against the surrounding liver tissue.
Answer 2: Yes, it appears well circumscribed, although one slice cannot show its full extent.""",
}


def conversation_system(style: str = "ours") -> str:
    """The system prompt of a conversation request: ``"paper"`` (the official prompt's requirements) or ``"ours"``."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {style!r}")
    return PAPER_CONVERSATION_SYSTEM if style == "paper" else CONVERSATION_SYSTEM


def figure_context(caption: str, fig_label: str = "", mentions: Sequence[str] = ()) -> str:
    """The text shown beside a figure: its caption, then the in-text mentions as a list."""
    label = f"{fig_label}: " if fig_label else ""
    text = f"Figure Caption:\n{label}{caption.strip()}"
    mentions = [m.strip() for m in mentions if m and m.strip()]
    if mentions:
        text += "\n\nFigure Context:\n" + "\n".join(f"- {m}" for m in mentions)
    return text


def framed_figure_text(caption: str, fig_label: str = "", mentions: Sequence[str] = ()) -> list[dict[str, str]]:
    """The text parts of a figure's user turn: the caption framed as a description of the image, then the in-text
    mentions framed as where the paper refers to it (as the official prompts frame them)."""
    label = f"{fig_label}: " if fig_label else ""
    parts = [{"type": "text", "text": f"{CAPTION_FRAME}\n{label}{caption.strip()}"}]
    mentions = [m.strip() for m in mentions if m and m.strip()]
    if mentions:
        parts.append({"type": "text", "text": MENTIONS_FRAME + "\n" + "\n".join(f"- {m}" for m in mentions)})
    return parts


def conversation_to_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """A TRL conversation as the "User: ... / Assistant: ..." text a demonstration shows the generator."""
    lines = []
    for message in messages:
        if message["role"] == "system":
            continue
        speaker = "User" if message["role"] == "user" else "Assistant"
        lines.append(f"{speaker}: {message_text(message).strip()}")
    return "\n\n".join(lines)


def _figure_turn(image_url: str | None, caption: str, fig_label: str, mentions: Sequence[str]) -> dict[str, Any]:
    """A figure's user turn; ``image_url=None`` leaves the image out (a text-only demonstration)."""
    image = [{"type": "image_url", "image_url": {"url": image_url}}] if image_url is not None else []
    return {"role": "user", "content": [*image, *framed_figure_text(caption, fig_label, mentions)]}


def build_generation_messages(
    target: Mapping[str, Any],
    demos: Sequence[Mapping[str, Any]],
    image_url,
    json_output: bool = False,
    system: str | None = None,
    prompt_style: str = "ours",
    demo_images: bool = True,
) -> list[dict[str, Any]]:
    """The chat request for one pair: system, demonstrations (user figure + assistant conversation), target figure.

    Args:
        target: a pair row (``image``, ``caption``, ``fig_label``, ``mentions``).
        demos: demo rows (pair columns + ``messages``), e.g. one per modality from `vital.demos.DemoSampler`.
        image_url: a function turning a PIL image into a URL (normally a data URL).
        json_output: ask for the JSON form (for endpoints that support ``response_format``).
        system: the system prompt (default: `conversation_system` of ``prompt_style``).
        prompt_style: ``"paper"`` or ``"ours"``.
        demo_images: show each demonstration's image; False sends demonstrations as text only, as the official
            prompts do (only the target figure carries an image).
    """
    system = conversation_system(prompt_style) if system is None else system
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system + (JSON_FORMAT_NOTE if json_output else "")}
    ]
    for demo in demos:
        url = image_url(demo["image"]) if demo_images else None
        messages.append(_figure_turn(url, demo["caption"], demo["fig_label"], demo["mentions"]))
        reply = conversation_to_text(demo["messages"])
        if json_output:
            from vital.data.schemas import qa_turns

            reply = json.dumps({"conversation": [{"question": q, "answer": a} for q, a in qa_turns(demo["messages"])]})
        messages.append({"role": "assistant", "content": reply})
    messages.append(
        _figure_turn(image_url(target["image"]), target["caption"], target["fig_label"], target["mentions"])
    )
    return messages


def build_answer_pair_messages(target: Mapping[str, Any], image_url, demos: int = 1) -> list[dict[str, Any]]:
    """The chat request that asks for questions with two alternative answers each, after ``demos`` (0 or 1) worked
    example of the format (`ANSWER_PAIR_DEMO`, text only)."""
    if demos not in (0, 1):
        raise ValueError(f"answer-pair requests take 0 or 1 demonstration, got {demos}")
    messages: list[dict[str, Any]] = [{"role": "system", "content": ANSWER_PAIRS_SYSTEM}]
    if demos:
        demo = ANSWER_PAIR_DEMO
        messages.append(_figure_turn(None, demo["caption"], demo["fig_label"], demo["mentions"]))
        messages.append({"role": "assistant", "content": demo["reply"]})
    messages.append(
        _figure_turn(image_url(target["image"]), target["caption"], target["fig_label"], target["mentions"])
    )
    return messages


def prompt_sha(
    system: str | None = None,
    json_output: bool = False,
    prompt_style: str = "ours",
    demo_images: bool = True,
    answer_pair_demos: int | None = None,
) -> str:
    """A short hash naming the prompt wording and layout (not the images or demos), recorded in every artifact."""
    system = conversation_system(prompt_style) if system is None else system
    layout = f"frame={CAPTION_FRAME}|{MENTIONS_FRAME};demo_images={demo_images}"
    if answer_pair_demos is not None:
        layout += f";answer_pair_demo={answer_pair_demos and ANSWER_PAIR_DEMO['reply']}"
    text = f"{PROMPT_VERSION}\n{system}\n{JSON_FORMAT_NOTE if json_output else ''}\n{layout}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------------------
def _strip_fence(text: str) -> str:
    match = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    return match.group(1) if match else text


def _parse_json(text: str) -> list[QATurn] | None:
    candidate = _strip_fence(text).strip()
    if not candidate or candidate[0] not in "[{":
        return None
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        data = next((data[k] for k in ("conversation", "conversations", "messages", "turns") if k in data), None)
    if not isinstance(data, list):
        return None
    turns: list[QATurn] = []
    if all(isinstance(x, dict) and "question" in x and "answer" in x for x in data):
        turns = [QATurn(_clean(str(x["question"])), _clean(str(x["answer"]))) for x in data]
    else:
        pending = None
        for x in data:
            if not isinstance(x, dict):
                return None
            who = str(x.get("from", x.get("role", ""))).lower()
            value = _clean(str(x.get("value", x.get("content", ""))))
            if who in ("human", "user"):
                pending = value
            elif who in ("gpt", "assistant") and pending is not None:
                turns.append(QATurn(pending, value))
                pending = None
    return [t for t in turns if t.question and t.answer]


def _labelled_blocks(text: str) -> list[tuple[str, str | None, str]]:
    """Split text into (``"q"`` or ``"a"``, label number, body) blocks at speaker labels; other lines continue the
    body of the block above them, so multi-line answers and lists stay whole."""
    blocks: list[list] = []
    for line in text.splitlines():
        match = _LABEL_RE.match(line)
        # Without a colon, only a label alone on a header or bold line counts ("A mass ..." is not a label).
        if (
            match
            and not match.group("sep")
            and (match.group("rest") or not (match.group("header") or match.group("bold")))
        ):
            match = None
        if match:
            kind = "q" if match.group("label").lower() in QUESTION_LABELS else "a"
            blocks.append([kind, match.group("num"), match.group("rest")])
        elif blocks:
            blocks[-1][2] += "\n" + line
    return [(kind, num, _clean(body)) for kind, num, body in blocks]


def _clean(body: str) -> str:
    body = body.replace("<image>", "")  # generators sometimes echo LLaVA's placeholder
    body = re.sub(r"\n{3,}", "\n\n", body.strip())
    return re.sub(r"^\*\*\s*|\s*\*\*$", "", body).strip()


def parse_conversation(text: str | None) -> list[QATurn]:
    """Question–answer turns from a generator reply, or `ParseError` with the reason.

    Accepts JSON (``{"conversation": [{"question", "answer"}]}``, LLaVA ``from/value`` or ``role/content`` lists, in or
    out of a code fence) and labelled text: ``User:``/``Assistant:`` and their variants (bold, numbered, ``Q1:``,
    ``Question 2:``, ``Human:``, ``GPT:``, markdown headers). Answers keep their line breaks and lists. Consecutive
    turns of one speaker are joined; a question with no answer at the end is dropped.
    """
    if text is None or not text.strip():
        raise ParseError("empty reply")
    turns = _parse_json(text)
    if turns is None:
        turns, question, answered = [], None, False
        for kind, _, body in _labelled_blocks(text):
            if not body:
                continue
            if kind == "q":
                # Two questions in a row are one question; a question after an answer starts a new turn.
                question, answered = (f"{question}\n\n{body}", False) if question and not answered else (body, False)
            elif question is not None and answered:
                turns[-1] = QATurn(question, f"{turns[-1].answer}\n\n{body}")
            elif question is not None:
                turns.append(QATurn(question, body))
                answered = True
    if not turns:
        if REFUSAL_RE.match(text):
            raise ParseError(f"refusal: {text.strip()[:120]}")
        raise ParseError(f"no question-answer turns found in reply: {text.strip()[:120]!r}")
    return turns


def parse_answer_pairs(text: str | None) -> list[tuple[str, str, str]]:
    """(question, answer 1, answer 2) triples from an answer-pairs reply, or `ParseError`."""
    if text is None or not text.strip():
        raise ParseError("empty reply")
    triples, question, answers = [], None, []
    for kind, _, body in [*_labelled_blocks(text), ("q", None, "")]:
        if kind == "q":
            if question and len(answers) >= 2 and answers[0] and answers[1]:
                triples.append((question, answers[0], answers[1]))
            question, answers = body, []
        elif question is not None:
            answers.append(body)
    if not triples:
        if REFUSAL_RE.match(text):
            raise ParseError(f"refusal: {text.strip()[:120]}")
        raise ParseError(f"no question with two answers found in reply: {text.strip()[:120]!r}")
    return triples


def turns_to_messages(turns: Sequence[QATurn], n_images: int = 1) -> list[dict[str, Any]]:
    """TRL conversational messages with typed parts; the images go at the start of the first user turn."""
    messages = []
    for i, turn in enumerate(turns):
        content = [text_part(turn.question)]
        if i == 0:
            content = [image_part() for _ in range(n_images)] + content
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [text_part(turn.answer)]})
    return messages


# ----------------------------------------------------------------------------------------------------------------------
# Running a generation job: plan keyed requests, send what the journals lack, turn replies into rows
# ----------------------------------------------------------------------------------------------------------------------
FAILURE_FEATURES_SPEC = {
    "id": "string",  # the candidate (or answer-pair set) that could not be made
    "pair_id": "string",
    "stage": "string",  # input (bad pair) | request (the endpoint failed) | parse (no usable turns in the reply)
    "reason": "string",
    "raw": "string",  # the reply text, when there was one
}


def failure_features():
    from datasets import Features, Value

    return Features({name: Value(dtype) for name, dtype in FAILURE_FEATURES_SPEC.items()})


def answer_pair_features():
    from datasets import Features, Image, List, Value

    from vital.data.schemas import GENERATION, MESSAGES

    return Features(
        {
            "id": Value("string"),
            "pair_id": Value("string"),
            "images": List(Image()),
            "prompt": MESSAGES,
            "answer_a": MESSAGES,
            "answer_b": MESSAGES,
            "modality": Value("string"),
            "question": Value("string"),
            "generation": GENERATION,
        }
    )


def plan_jobs(
    pairs,
    model: str,
    task: str,
    sampler=None,
    samples_per_pair: int = 1,
    json_output: bool = False,
    base_seed: int | None = None,
    indices: Sequence[int] | None = None,
    prompt_hash: str | None = None,
) -> list:
    """Keyed jobs for ``pairs`` (an undecoded dataset). The key covers the model, pair image, demos, prompt wording and
    sample, so a rerun finds finished work in the journal without building any request. ``prompt_hash`` names the
    prompt (`prompt_sha` of the recipe's settings); default: the ``ours`` prompt of ``task``."""
    from vital.llm import request_key
    from vital.llm.jobs import Job, image_sha256

    system = CONVERSATION_SYSTEM if task == "conversation" else ANSWER_PAIRS_SYSTEM
    sha = prompt_hash or prompt_sha(system, json_output and task == "conversation")
    jobs = []
    for index in indices if indices is not None else range(len(pairs)):
        row = pairs[index]
        for sample in range(samples_per_pair):
            demo_ids = (
                tuple(sampler.demo_ids(f"{row['id']}#{sample}", exclude_pair=row["id"])) if sampler is not None else ()
            )
            params = (("seed", (base_seed or 0) + sample),) if sample else ()
            extra = {"task": task, "pair": row["id"], "image": image_sha256(row["image"]), "demos": demo_ids}
            key = request_key(model, [], dict(params), extra={**extra, "prompt": sha, "sample": sample})
            jobs.append(Job(key, index, row["id"], task, sample, demo_ids, params))
    return jobs


def generation_record(result, job, endpoint_kind: str, prompt_hash: str) -> dict[str, Any]:
    """The ``generation`` column: who answered, with what prompt and demos, at what cost. ``stand_in`` is read from
    the reply itself (the stand-in answers as `vital.llm.STAND_IN_MODEL`), whatever the endpoint was called."""
    from vital.llm.provenance import from_stand_in

    stand_in = from_stand_in(results=[result])
    return {
        "model": result.model or "",
        "endpoint": "stand-in" if stand_in else endpoint_kind,
        "prompt_sha": prompt_hash,
        "demo_ids": list(job.demo_ids),
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cost_usd": result.cost_usd,
        "stand_in": stand_in,
    }


def _parsed_replies(jobs, results, parse, id_of, failures: list):
    """(job, result, row id, parsed reply) for the jobs whose reply parses; the others go to ``failures`` with the
    stage that failed (the request, or the parsing of its reply), the reason and the raw reply."""
    for job in jobs:
        result, row_id = results[job.key], id_of(job)
        if not result.ok:
            failures.append(_failure(row_id, job.record_id, "request", result.error, ""))
            continue
        try:
            parsed = parse(result.text)
        except ParseError as error:
            failures.append(_failure(row_id, job.record_id, "parse", error.reason, result.text))
            continue
        yield job, result, row_id, parsed


def candidate_rows(pairs, jobs, results, endpoint_kind, prompt_hash, failures: list):
    """Yield candidate rows for the jobs whose reply parses; append the others to ``failures`` with the reason."""
    replies = _parsed_replies(jobs, results, parse_conversation, lambda job: f"{job.record_id}-{job.sample}", failures)
    for job, result, candidate_id, turns in replies:
        pair = pairs[job.index]
        yield {
            "id": candidate_id,
            "pair_id": job.record_id,
            "images": [pair["image"]],
            "messages": turns_to_messages(turns),
            "modality": pair["modality"],
            "caption": pair["caption"],
            "mentions": pair["mentions"],
            "generation": generation_record(result, job, endpoint_kind, prompt_hash),
        }


def answer_pair_rows(pairs, jobs, results, endpoint_kind, prompt_hash, failures: list):
    """Yield one row per question with its two answers; unusable replies go to ``failures``."""
    replies = _parsed_replies(
        jobs, results, parse_answer_pairs, lambda job: f"{job.record_id}-ap{job.sample}", failures
    )
    for job, result, set_id, triples in replies:
        pair = pairs[job.index]
        for i, (question, answer_a, answer_b) in enumerate(triples):
            yield {
                "id": f"{set_id}-q{i}",
                "pair_id": job.record_id,
                "images": [pair["image"]],
                "prompt": [{"role": "user", "content": [image_part(), text_part(question)]}],
                "answer_a": [{"role": "assistant", "content": [text_part(answer_a)]}],
                "answer_b": [{"role": "assistant", "content": [text_part(answer_b)]}],
                "modality": pair["modality"],
                "question": question,
                "generation": generation_record(result, job, endpoint_kind, prompt_hash),
            }


def _failure(record_id: str, pair_id: str, stage: str, reason: str | None, raw: str) -> dict[str, str]:
    return {"id": record_id, "pair_id": pair_id, "stage": stage, "reason": reason or "", "raw": raw or ""}


@dataclass
class GenerationPlan:
    """The keyed requests of one generation run and how to build each one's messages.

    Attributes:
        jobs: one conversation request per pair and sample.
        pair_jobs: one two-answer request per chosen pair.
        prompt_sha: names the conversation prompt (`prompt_sha` of the run's settings).
        pair_prompt_sha: names the two-answer prompt.
        build: ``job -> messages`` (what `vital.llm.jobs.run_jobs_sharded` sends for a job no journal holds).
    """

    jobs: list
    pair_jobs: list
    prompt_sha: str
    pair_prompt_sha: str
    build: Any


def plan_generation(
    pairs,
    demos,
    sampler,
    endpoint,
    *,
    samples_per_pair: int = 1,
    json_output: bool = False,
    prompt_style: str = "ours",
    demo_images: bool = True,
    answer_pairs: int = 0,
    answer_pair_demos: int = 1,
    data_seed: int = 0,
) -> GenerationPlan:
    """Plan a run: one conversation per pair and sample (demos drawn by ``sampler``), and two-answer questions for a
    ``data_seed``-seeded sample of ``answer_pairs`` pairs. ``json_output`` is also on when the endpoint asks for
    JSON replies. Requests are built lazily, only for the jobs no journal holds yet."""
    import random

    from datasets import Image

    from vital.llm import image_to_data_url

    raw = pairs.cast_column("image", Image(decode=False))
    json_output = json_output or endpoint.response_format == "json_object"
    sha = prompt_sha(json_output=json_output, prompt_style=prompt_style, demo_images=demo_images)
    pair_sha = prompt_sha(ANSWER_PAIRS_SYSTEM, answer_pair_demos=answer_pair_demos)
    jobs = plan_jobs(
        raw, endpoint.model, "conversation", sampler, samples_per_pair, json_output, endpoint.seed, None, sha
    )
    chosen = sorted(random.Random(data_seed).sample(range(len(pairs)), min(answer_pairs, len(pairs))))
    pair_jobs = plan_jobs(raw, endpoint.model, "answer_pairs", indices=chosen, prompt_hash=pair_sha)
    demo_rows = {row["id"]: row for row in demos}

    def build(job):
        target = pairs[job.index]
        if job.task == "answer_pairs":
            return build_answer_pair_messages(target, image_to_data_url, answer_pair_demos)
        demos_shown = [demo_rows[d] for d in job.demo_ids]
        return build_generation_messages(
            target, demos_shown, image_to_data_url, json_output, prompt_style=prompt_style, demo_images=demo_images
        )

    return GenerationPlan(jobs, pair_jobs, sha, pair_sha, build)


def quarantine_failures(quarantine) -> list[dict[str, str]]:
    """The ``failures`` rows of pairs quarantined before sending (a `vital.data.schemas` quarantine report)."""
    return [_failure(q.record_id, q.record_id, "input", f"{q.field}: {q.reason}", "") for q in quarantine.records]


def usage_stats(results: Sequence[Any]) -> dict[str, Any]:
    """Requests, how they were sent (online or through the Batch API, each with its cost), tokens and cost of
    ``results`` (`CompletionResult`), for a card."""
    from vital.llm.jobs import sent_by

    return {
        "requests": len(results),
        "sent": sent_by(results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "cost_usd": sum(r.cost_usd for r in results),
    }
