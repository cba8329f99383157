"""Answering evaluation questions: with any transformers vision-language model, or through an OpenAI-compatible
endpoint (vLLM, ``transformers serve``, a hosted API). Both are resumable and split across processes.

Local models: ``AutoModelForImageTextToText`` + ``AutoProcessor``, the processor's chat template, left padding and
batched ``generate`` (greedy unless sampling is asked for). Each batch's answers are appended to a journal
(`vital.llm.Journal`, one file per process) keyed by the model's identity (its commit, or a folder fingerprint), the
question and the generation settings, so a killed run resumes where it stopped and a rerun asks nothing twice. Under
``accelerate launch`` each process answers its part (``PartialState.split_between_processes``) on its own device; with
``--shard i/n`` one machine answers one share. Every process then reads the merged journals::

    answers = answer_with_model(questions, "outputs/models/tiny-llava", model_id, GenerationSettings(), "runs/answers")
    answers["vqa-rad/vqa-rad-test-00003"].prediction

Endpoints: one keyed `Job` per question through `run_jobs_sharded`, the same journaled, sharded runner the other API
stages use (`answer_with_endpoint`).

A closed question can carry a hint (``closed_hint``, e.g. "Answer with yes or no."); it is off by default, as in
LLaVA-Med, and it reads the ground-truth answer type, so report it with the numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vital.llm import CompletionResult, EndpointConfig, Journal, merge_journals, parse_shard, shard_items, shard_path


logger = logging.getLogger(__name__)

ANSWER_JOURNAL = "answers.jsonl"
ANSWER_GLOB = "answers*.jsonl"
DEFAULT_CLOSED_HINT = "Answer with yes or no."


@dataclass
class GenerationSettings:
    """
    How the evaluated model's answers are generated (the evaluation stage's command line); every field is part of an
    answer's journal key. The names avoid those of `EndpointConfig`, which configures the judge in the same command
    line.

    Parameters:
        max_new_tokens (`int`, *optional*, defaults to `128`):
            Most new tokens per answer.
        do_sample (`bool`, *optional*, defaults to `False`):
            Sample instead of greedy decoding.
        sampling_temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature (with `do_sample`).
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling mass (with `do_sample`).
        num_beams (`int`, *optional*, defaults to `1`):
            Beam search width (local models).
        sampling_seed (`int`, *optional*, defaults to `0`):
            Seed for sampling.
        closed_hint (`str` or `None`, *optional*):
            Appended to closed questions, e.g. `"Answer with yes or no."`; `None`: nothing appended.
        system_prompt (`str` or `None`, *optional*):
            A system message before each question; `None`: none.
    """

    max_new_tokens: int = field(default=128, metadata={"help": "Most new tokens per answer."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    sampling_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with do_sample)."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (local models)."})
    sampling_seed: int = field(default=0, metadata={"help": "Seed for sampling."})
    closed_hint: str | None = field(
        default=None, metadata={"help": "Appended to closed questions, e.g. 'Answer with yes or no.' (off: None)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "A system message before each question."})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def endpoint_params(self) -> dict[str, Any]:
        """The sampling parameters of an endpoint request: temperature 0 when greedy."""
        if not self.do_sample:
            return {"temperature": 0.0, "max_tokens": self.max_new_tokens, "seed": self.sampling_seed}
        return {
            "temperature": self.sampling_temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_new_tokens,
            "seed": self.sampling_seed,
        }


@dataclass(frozen=True)
class Question:
    """One question to answer: ``id`` is unique across a run (``<benchmark>/<item id>``), ``image`` an undecoded
    image cell (``{"bytes", "path"}``), ``text`` what the model is asked."""

    id: str
    text: str
    image: Mapping[str, Any]


@dataclass
class Answer:
    """A model's answer to one question; ``error`` is set (and ``prediction`` empty) when none could be had."""

    prediction: str
    error: str | None = None
    model: str = ""
    cost_usd: float = 0.0


def vqa_questions(dataset, closed_hint: str | None = None) -> list[Question]:
    """Questions of a `VQA_FEATURES` dataset; ids are ``<benchmark>/<id>``."""
    from datasets import Image

    raw = dataset.cast_column("image", Image(decode=False))
    out = []
    for row in raw:
        text = row["question"]
        if closed_hint and row["answer_type"] == "closed":
            text = f"{text} {closed_hint}"
        out.append(Question(f"{row['benchmark']}/{row['id']}", text, row["image"]))
    return out


def chat_questions(dataset, prefix: str = "chat") -> list[Question]:
    """Questions of a `CHAT_FEATURES` dataset (the model sees the image and the question only, as in LLaVA-Med)."""
    from datasets import Image

    raw = dataset.cast_column("image", Image(decode=False))
    return [Question(f"{prefix}/{row['question_id']}", row["text"], row["image"]) for row in raw]


def decode_image(cell: Mapping[str, Any]):
    """A PIL RGB image from an undecoded image cell."""
    from PIL import Image as PILImage

    data = cell.get("bytes")
    image = PILImage.open(io.BytesIO(data)) if data is not None else PILImage.open(cell["path"])
    return image.convert("RGB")


def image_sha(cell: Mapping[str, Any]) -> str:
    from vital.llm.jobs import image_sha256

    return image_sha256(cell)


CARD_FILES = frozenset({"README.md", ".gitattributes"})


def model_fingerprint(folder: str | Path, max_file_bytes: int = 256 << 20) -> str:
    """The identity of a model folder's content for answer keys: sha256 over its files' paths and contents, leaving
    out the card (writing evaluation results into it makes a new commit, not a new model). Files over
    ``max_file_bytes`` (weight shards of big models) contribute their size, so a 7B folder is read in seconds."""
    from vital.hub import sha256_file

    digest = hashlib.sha256()
    folder = Path(folder)
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in CARD_FILES):
        size = file.stat().st_size
        content = sha256_file(file) if size <= max_file_bytes else f"size:{size}"
        digest.update(f"{file.relative_to(folder).as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


def answer_key(model_id: str, question: Question, settings: GenerationSettings, image_digest: str) -> str:
    """The journal key of one answer: the model's identity, the question (id, text, image) and the settings."""
    payload = {
        "model": model_id,
        "id": question.id,
        "text": question.text,
        "image": image_digest,
        "settings": settings.to_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# transformers models


def conversation(text: str, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """One user turn with the image first, in the typed-content form processors' chat templates read."""
    messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}] if system_prompt else []
    return [*messages, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def load_vlm(path: str, revision: str | None = None, dtype: str = "auto", device=None):
    """``(model, processor)`` for generation: the model in eval mode on ``device`` (default: this process's)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vital.runner import process_state

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(path, revision=revision, dtype=torch_dtype)
    model.to(device or process_state().device).eval()
    processor = AutoProcessor.from_pretrained(path, revision=revision)
    return model, processor


def generate_answers(model, processor, images: Sequence[Any], texts: Sequence[str], settings: GenerationSettings):
    """Answer a batch: one image and one question each, through the chat template, left-padded, one ``generate``.

    Returns the decoded new tokens of each row, stripped. Greedy unless ``settings.do_sample``.
    """
    import torch

    prompts = [
        processor.apply_chat_template(
            conversation(text, settings.system_prompt), add_generation_prompt=True, tokenize=False
        )
        for text in texts
    ]
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"  # generation continues every row from its end
    inputs = processor(text=prompts, images=[[image] for image in images], padding=True, return_tensors="pt")
    inputs = inputs.to(model.device, dtype=model.dtype)  # pixel values in the model's dtype; ids stay integers
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "num_beams": settings.num_beams,
        "do_sample": settings.do_sample,
    }
    if settings.do_sample:
        kwargs.update(temperature=settings.sampling_temperature, top_p=settings.top_p)
        torch.manual_seed(settings.sampling_seed)
    else:  # a model's generation_config may ask for sampling; greedy means no sampling knobs
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if getattr(model.generation_config, "pad_token_id", None) is None:
        kwargs["pad_token_id"] = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
    with torch.inference_mode():
        output = model.generate(**inputs, **kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _my_share(questions: Sequence[Question], shard: str | None) -> tuple[list[Question], int, int]:
    from vital.runner import process_state

    if shard:
        index, count = parse_shard(shard)
        return shard_items(list(questions), index, count), index, count
    state = process_state()
    with state.split_between_processes(list(questions)) as mine:
        return list(mine), state.process_index, state.num_processes


def answer_with_model(
    questions: Sequence[Question],
    model_path: str,
    model_id: str,
    settings: GenerationSettings,
    answers_dir: str | Path,
    batch_size: int = 8,
    revision: str | None = None,
    dtype: str = "auto",
    shard: str | None = None,
    model_and_processor: tuple[Any, Any] | None = None,
) -> dict[str, Answer] | None:
    """Answer ``questions`` with a transformers VLM, resumably; returns every answer by question id.

    This process answers its share (its `accelerate` part, or ``shard``), in batches of ``batch_size``, skipping what
    the journals in ``answers_dir`` already hold for ``model_id`` and ``settings``; the model is loaded only if
    something is left. Then every process reads all journals. Returns None when ``shard`` is given and other shards
    have not been answered yet.
    """
    from vital.runner import process_state

    answers_dir = Path(answers_dir)
    answers_dir.mkdir(parents=True, exist_ok=True)
    digests = {q.id: image_sha(q.image) for q in questions}
    keys = {q.id: answer_key(model_id, q, settings, digests[q.id]) for q in questions}
    if len(keys) != len(questions):
        raise ValueError("question ids must be unique")
    mine, index, count = _my_share(questions, shard)
    done = merge_journals(sorted(answers_dir.glob(ANSWER_GLOB)))
    todo = [q for q in mine if keys[q.id] not in done]
    logger.info(
        "answering %d of this process's %d questions (%d journaled)", len(todo), len(mine), len(mine) - len(todo)
    )
    if todo:
        model, processor = model_and_processor or load_vlm(model_path, revision, dtype)
        with Journal.open(shard_path(answers_dir / ANSWER_JOURNAL, index, count)) as journal:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                began = time.monotonic()
                texts = generate_answers(
                    model, processor, [decode_image(q.image) for q in batch], [q.text for q in batch], settings
                )
                elapsed = (time.monotonic() - began) / len(batch)
                for question, text in zip(batch, texts, strict=True):
                    journal.append(
                        CompletionResult(
                            key=keys[question.id], text=text, model=model_id, elapsed_s=elapsed, attempts=1
                        )
                    )
    if not shard:
        process_state().wait_for_everyone()
    done = merge_journals(sorted(answers_dir.glob(ANSWER_GLOB)))
    missing = [q.id for q in questions if keys[q.id] not in done]
    if missing:
        if shard:
            logger.info("shard %s answered; %d questions wait for other shards", shard, len(missing))
            return None
        raise RuntimeError(f"{len(missing)} question(s) have no journaled answer, e.g. {missing[0]}")
    return {q.id: Answer(done[keys[q.id]].text, model=model_id) for q in questions}


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints


def plan_answer_jobs(questions: Sequence[Question], model: str, settings: GenerationSettings) -> list:
    """One keyed job per question (model, question text, image, system prompt, sampling parameters)."""
    from vital.llm import request_key
    from vital.llm.jobs import Job

    params = settings.endpoint_params()
    jobs = []
    for index, question in enumerate(questions):
        extra = {
            "task": "answer",
            "id": question.id,
            "q": question.text,
            "image": image_sha(question.image),
            "system": settings.system_prompt,
        }
        key = request_key(model, [], params, extra)
        jobs.append(Job(key, index, question.id, "answer", params=tuple(sorted(params.items()))))
    return jobs


def build_answer_messages(question: Question, settings: GenerationSettings) -> list[dict[str, Any]]:
    """The chat request of one question: an optional system message, then the image and the question."""
    from vital.llm import image_to_data_url

    messages = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt else []
    url = image_to_data_url(decode_image(question.image))
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question.text}]
    return [*messages, {"role": "user", "content": content}]


def results_from_journals(jobs: Sequence, journal_dir: str | Path) -> dict[str, CompletionResult] | None:
    """Every job's result from the journals in ``journal_dir``, or None while some job has none."""
    from vital.llm.jobs import JOURNAL_GLOB

    done = merge_journals(sorted(Path(journal_dir).glob(JOURNAL_GLOB)))
    if any(job.key not in done for job in jobs):
        return None
    return {job.key: done[job.key] for job in jobs}


def answer_with_endpoint(
    questions: Sequence[Question],
    endpoint: EndpointConfig,
    settings: GenerationSettings,
    journal_dir: str | Path,
    shard: str | None = None,
) -> dict[str, Answer] | None:
    """Answer ``questions`` through an OpenAI-compatible endpoint with `run_jobs_sharded` (journaled, sharded).

    Every process gets every answer back (read from the merged journals after the run); None when ``shard`` is given
    and other shards are not done yet. A request that failed gives an `Answer` with ``error`` set.
    """
    from vital.llm.jobs import run_jobs_sharded

    jobs = plan_answer_jobs(questions, endpoint.model, settings)
    results = run_jobs_sharded(
        jobs, endpoint, lambda job: build_answer_messages(questions[job.index], settings), journal_dir, shard
    )
    if results is None:
        results = results_from_journals(jobs, journal_dir)
        if results is None:
            return None
    answers = {}
    for job in jobs:
        result = results[job.key]
        error = result.error or (f"refusal: {result.refusal}" if result.refusal else None)
        answers[job.record_id] = Answer(
            result.text if result.ok else "", error, result.model or endpoint.model, result.cost_usd
        )
    return answers


@dataclass
class AnsweredBy:
    """Who answered the questions: the lineage entry of the model (an `ArtifactRef` at its weights' commit, or a
    dict), how tables name it, and its local folder (None for an endpoint or a remote id)."""

    ref: Any
    label: str
    folder: Path | None = None


def answer_questions(
    hub,
    questions: Sequence[Question],
    settings: GenerationSettings,
    out: str | Path,
    *,
    model_name_or_path: str | None = None,
    model_revision: str = "main",
    model_label: str | None = None,
    endpoint_url: str | None = None,
    endpoint_model: str | None = None,
    endpoint_api_key_env: str = "VLLM_API_KEY",
    batch_size: int = 8,
    dtype: str = "auto",
    shard: str | None = None,
) -> tuple[dict[str, Answer] | None, AnsweredBy]:
    """Answer ``questions`` with a transformers model (batched, split across processes; journaled under
    ``out/answers``) or, with ``endpoint_url``, through an OpenAI-compatible endpoint (journaled under
    ``out/journals``). Returns the answers (None when this process has no merged result yet) and who answered."""
    out = Path(out)
    if endpoint_url:
        model = endpoint_model or "default"
        served = EndpointConfig("openai-compatible", model, endpoint_url, api_key_env=endpoint_api_key_env)
        by = AnsweredBy({"source": endpoint_url, "model": model}, model_label or model)
        return answer_with_endpoint(questions, served, settings, out / "journals", shard), by
    from vital.hub import ArtifactRef
    from vital.sft import display_name, resolve_model

    source = resolve_model(hub, model_name_or_path, model_revision)
    model_ref = source.lineage
    if isinstance(model_ref, ArtifactRef):  # the weights' commit: our own model-index updates do not count
        model_ref = dataclasses.replace(model_ref, commit=hub.content_commit(model_ref.repo_id, model_ref.commit))
    # Keyed by the weights, not the commit: the card the stage writes back makes a new commit, not a new model.
    folder = Path(source.path) if Path(source.path).is_dir() else None
    model_id = f"weights:{model_fingerprint(folder)}" if folder else f"{source.path}@{source.revision}"
    by = AnsweredBy(model_ref, model_label or display_name(source), folder)
    answers = answer_with_model(
        questions, source.path, model_id, settings, out / "answers", batch_size, source.revision, dtype, shard
    )
    return answers, by
