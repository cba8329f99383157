"""Selection: score every candidate with the selector and keep the top ratios (``docs/design.md``, Selector).

- :func:`score_candidates` streams the candidates from disk in batches (``Dataset.iter``: only one batch of rows and
  images is in memory at a time), scores every question–answer turn with :func:`score_image_turns` (each image
  preprocessed and encoded once per candidate, not once per turn; texts encoded in batches of even size) and
  aggregates a candidate's turn scores into one (``mean`` by default, or ``min`` / ``max``). Under ``accelerate launch`` each process scores a contiguous slice of the rows and the
  results are gathered on every process, in row order. A candidate whose image is missing or does not decode, or
  whose conversation is malformed, is **quarantined** with the reason: never scored, never dropped silently.
- :func:`rank_candidates` orders the scored candidates: score descending (as stored, float32), then candidate id
  ascending, so ties break the same way on every run and machine.
- :func:`select_top_ratios` keeps the best ``ceil(ratio * n)`` (or, as the official code, ``floor``) candidates for
  every ratio (``n``: the scored,
  not quarantined candidates), one dataset per ratio (``top10``, ``top40``, ...), best first, with ``selector_score``.
- :func:`build_mixture` merges a selection with other instruction sets (LLaVA-Med's in TRL format, an earlier
  selection) into one dataset with a ``provenance`` column naming each row's source at its commit.
- :func:`plot_score_histogram` draws the score histogram with each ratio's cut line.

Example::

    scored = score_candidates(selector, processor, candidates, batch_size=64, aggregate="mean")
    configs = select_top_ratios(candidates, scored, [0.1, 0.4, 0.8, 0.9])   # {"top10": Dataset, ...}
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, List, Value
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vital.data.errors import Quarantine, RecordError
from vital.data.schemas import SELECTED_FEATURES, validate_messages
from vital.selector.batched_inputs import pixel_values
from vital.selector.data import candidate_turn_text
from vital.selector.modeling import _pooled


logger = logging.getLogger(__name__)

__all__ = [
    "AGGREGATIONS",
    "MIXTURE_FEATURES",
    "CandidateScores",
    "aggregate_turn_scores",
    "build_mixture",
    "cut_scores",
    "kept_count",
    "parse_mixture_spec",
    "plot_score_histogram",
    "rank_candidates",
    "ratio_config_name",
    "PreparedTurns",
    "prepare_image_turns",
    "score_candidates",
    "score_image_turns",
    "score_prepared",
    "encode_prepared_images",
    "select_top_ratios",
]

AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": lambda scores: float(np.mean(scores)),
    "min": lambda scores: float(np.min(scores)),
    "max": lambda scores: float(np.max(scores)),
    "first": lambda scores: float(scores[0]),
}
"""How a candidate's turn scores become its score. ``first`` scores the first turn only (the official code: one text
per candidate, its first question-answer turn); the other turns are not scored at all."""

CUTS: dict[str, Callable[[float], int]] = {"ceil": math.ceil, "floor": math.floor}
"""How ``ratio * n`` becomes a count: ``ceil`` (ours, the fewest that make at least the ratio) or ``floor`` (the
official ``int()``)."""

TURN_SCORES = "selector_turn_scores"
MIXTURE_FEATURES = Features({**SELECTED_FEATURES, TURN_SCORES: List(Value("float32")), "provenance": Value("string")})
"""A mixture: the selected columns (null where a source lacks them, e.g. ``selector_score`` of LLaVA-Med rows), the
turn scores, and ``provenance`` (``repo@commit[:config]`` of the row's source)."""

_SCORED_COLUMNS = ("id", "images", "messages", "caption", "mentions")


def _float32(value: float) -> float:
    return float(np.float32(value))


def aggregate_turn_scores(turn_scores: Sequence[float], how: str = "mean") -> float:
    """One score from a candidate's turn scores (``mean``, ``min`` or ``max``), rounded to float32 as stored."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {sorted(AGGREGATIONS)}, got {how!r}")
    if not len(turn_scores):
        raise ValueError("no turn scores to aggregate")
    return _float32(AGGREGATIONS[how](turn_scores))


# ---------------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class CandidateScores:
    """Scores of the candidates that could be scored, in row order, and the quarantine of those that could not.

    ``indices[i]`` is the row of ``candidate_ids[i]`` in the scored dataset; ``scores[i]`` its aggregated score
    (float32), ``turn_scores[i]`` its per-turn scores.
    """

    candidate_ids: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    turn_scores: list[list[float]] = field(default_factory=list)
    quarantine: Quarantine = field(default_factory=lambda: Quarantine("skip"))

    def __len__(self) -> int:
        return len(self.scores)


def _open_images(row: Mapping[str, Any], rid: str) -> list[Any]:
    """Decode every image of a candidate (so a corrupt second image is caught too); RecordError with the reason."""
    cells = row.get("images")
    if not cells:
        raise RecordError(rid, "images", "missing image: the candidate has no image")
    images = []
    for i, cell in enumerate(cells):
        name = f"images[{i}]"
        if cell is None or (isinstance(cell, Mapping) and not cell.get("bytes") and not cell.get("path")):
            raise RecordError(rid, name, "missing image")
        try:
            image = _decode(cell)
        except FileNotFoundError as e:
            raise RecordError(rid, name, f"image file not found: {e.filename or cell}") from e
        except Exception as e:  # PIL raises many types for corrupt or truncated data
            raise RecordError(rid, name, f"corrupt image ({type(e).__name__}: {e})") from e
        images.append(image)
    return images


def _decode(cell: Any) -> Any:
    """A PIL RGB image from an ``Image(decode=False)`` cell (bytes, else path) or a PIL image, fully loaded."""
    from PIL import Image as PILImage

    if isinstance(cell, PILImage.Image):
        image = cell
    elif isinstance(cell, Mapping):
        data, path = cell.get("bytes"), cell.get("path")
        image = PILImage.open(io.BytesIO(data) if data else path)
    else:
        raise TypeError(f"expected an image cell, got {type(cell).__name__}")
    image.load()  # PIL opens lazily: a truncated file fails here, not in the processor
    return image if image.mode == "RGB" else image.convert("RGB")


def _summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the quarantine keeps of a candidate: its id and its image cells' names (not the bytes)."""
    cells = row.get("images") or []
    names = [c.get("path") if isinstance(c, Mapping) else None for c in cells]
    return {"id": row.get("id"), "images": names, "messages": row.get("messages")}


def _slice(n: int, batch_size: int, num_processes: int, process_index: int) -> tuple[int, int]:
    """The contiguous rows ``[start, end)`` of process ``process_index``, in whole batches of the global row order.

    Batches are cut from the whole dataset, then dealt out in contiguous runs (run sizes differ by at most one batch),
    so a batch holds the same rows whatever the number of processes and the same inputs are padded together.
    """
    n_batches = -(-n // batch_size)
    size, extra = divmod(n_batches, num_processes)
    first = process_index * size + min(process_index, extra)
    last = first + size + (1 if process_index < extra else 0)
    return min(first * batch_size, n), min(last * batch_size, n)


def _even_chunks(n: int, most: int) -> list[tuple[int, int]]:
    """``[start, end)`` runs covering ``range(n)``: as few as runs of at most ``most`` allow, sizes differing by <= 1."""
    if n == 0:
        return []
    count = -(-n // most)
    size, extra = divmod(n, count)
    bounds, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


@dataclass
class PreparedTurns:
    """Model inputs of some candidates, ready for the forward pass (see :func:`prepare_image_turns`).

    ``pixels``: image batches (one image per candidate); ``encodings``: tokenised text batches, texts sorted by length;
    ``order[i]``: the input position of the i-th sorted text; ``owners[j]``: the candidate of input text ``j``;
    ``image_features``: the pooled image features, once :func:`encode_prepared_images` has computed them;
    ``padding_side``: where the texts were padded (the tokenizer's side). From a DataLoader worker the pixels,
    encodings and owners are numpy arrays (see :meth:`_CandidateBatches.prepare`).
    """

    turns: list[list[str]]
    pixels: list[Any] = field(default_factory=list)
    encodings: list[Any] = field(default_factory=list)
    order: list[int] = field(default_factory=list)
    owners: Any = None
    image_features: Any = None
    padding_side: str = "right"


def prepare_image_turns(
    processor: Any,
    images: Sequence[Any],
    turns: Sequence[Sequence[str]],
    batch_size: int = 32,
    max_length: int | None = None,
    padding: bool | str = True,
) -> PreparedTurns:
    """Preprocess each image once and tokenise every text (no model involved, so it can run ahead in a thread).

    Images go in batches of even size (at most ``batch_size``), texts too, sorted by length so that texts of similar
    length share a batch. ``images`` are decoded RGB images, one per candidate; ``turns[i]`` the texts of image ``i``.
    """
    import torch

    if len(images) != len(turns):
        raise ValueError(f"{len(images)} images for {len(turns)} lists of texts")
    tokenizer, image_processor = processor.tokenizer, processor.image_processor
    prepared = PreparedTurns([list(group) for group in turns], padding_side=tokenizer.padding_side)
    texts = [text for group in turns for text in group]
    if not texts:
        return prepared
    limit = tokenizer.model_max_length if max_length is None else min(max_length, tokenizer.model_max_length)
    for start, end in _even_chunks(len(images), batch_size):
        # The images are RGB already (_decode converts them): the processor's own conversion is skipped.
        prepared.pixels.append(pixel_values(image_processor, images[start:end]))
    # Every text tokenised in one call, then sorted by its token count (not its characters: with a small vocabulary
    # they differ a lot), so that a batch is padded only to the longest of texts of nearly the same length: the text
    # encoder's cost follows the padded length (docs/design.md, Selector).
    ids = tokenizer(texts, truncation=True, max_length=limit, return_attention_mask=False)["input_ids"]
    prepared.order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    pad_to = limit if padding == "max_length" else None
    for start, end in _even_chunks(len(texts), batch_size):
        chunk = [ids[i] for i in prepared.order[start:end]]
        prepared.encodings.append(_pad(tokenizer, chunk, pad_to))
    prepared.owners = torch.tensor([i for i, group in enumerate(turns) for _ in group])
    return prepared


def _pad(tokenizer: Any, ids: Sequence[Sequence[int]], length: int | None) -> dict[str, Any]:
    """``input_ids`` and ``attention_mask`` tensors of token id lists padded to ``length`` (default: the longest)
    on the tokenizer's padding side with its pad token, as ``tokenizer(texts, padding=...)`` pads them."""
    import torch

    width = length or max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), tokenizer.pad_token_id or 0, dtype=np.int64)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)
    left = tokenizer.padding_side == "left"
    for i, row in enumerate(ids):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        input_ids[i, span] = row
        attention_mask[i, span] = 1
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}


def encode_prepared_images(model: Any, prepared: PreparedTurns) -> PreparedTurns:
    """Compute ``prepared.image_features`` (the image encoder over every image batch, without gradients) and return
    ``prepared``. The model must be in eval mode. :func:`score_candidates` calls it in its preparing thread, so the
    image encoder runs beside the text encoder of the previous batch (PyTorch releases the GIL inside operators)."""
    import torch

    if prepared.owners is not None and prepared.image_features is None:
        backbone, device, dtype = model.backbone, model.device, model.dtype
        with torch.no_grad():  # grad mode is per thread: this one is needed in a worker thread too
            prepared.image_features = torch.cat(
                [
                    _pooled(backbone.get_image_features(pixel_values=torch.as_tensor(px).to(device, dtype)))
                    for px in prepared.pixels
                ]
            )
    return prepared


CAUSAL_TEXT_TOWERS = frozenset({"clip"})
"""Backbones whose text tower attends causally and pools a token that comes before any right padding (CLIP: the
first end-of-text token, or the first highest id under its legacy ``eos_token_id``)."""


def _needs_padding_mask(model: Any, prepared: PreparedTurns) -> bool:
    """Whether the text tower needs the padding mask, or the causal mask alone gives the same features.

    In a causal tower with right padding a real token only attends to the tokens before it, none of them padding, so
    the padding mask hides nothing more from the real tokens; the pooled one is real, so the features are the same
    (bit for bit here), and attention without an explicit mask takes the faster causal kernel.
    """
    backbone_type = getattr(model.config, "backbone_model_type", None)
    return not (backbone_type in CAUSAL_TEXT_TOWERS and prepared.padding_side == "right")


def score_prepared(model: Any, prepared: PreparedTurns) -> list[list[float]]:
    """The selector's scores of prepared inputs: each image encoded once, each text once, the head on every pair.

    The same computation as :meth:`vital.selector.SelectorModel.forward` (image features ‖ text features -> head),
    so the scores equal :func:`vital.selector.score_texts_images` on the pairs up to float32 rounding. Image features
    already computed by :func:`encode_prepared_images` are used as they are.
    """
    import torch

    if prepared.owners is None:
        return [[] for _ in prepared.turns]
    backbone, device, dtype = model.backbone, model.device, model.dtype
    was_training = model.training
    if was_training:  # (train() walks every module: not once per batch when the caller already set eval mode)
        model.eval()
    try:
        with torch.no_grad():
            image = encode_prepared_images(model, prepared).image_features
            masked = _needs_padding_mask(model, prepared)
            sorted_text = torch.cat(
                [
                    _pooled(
                        backbone.get_text_features(
                            input_ids=torch.as_tensor(enc["input_ids"]).to(device),
                            attention_mask=torch.as_tensor(enc["attention_mask"]).to(device) if masked else None,
                        )
                    )
                    for enc in prepared.encodings
                ]
            )
            text = torch.empty_like(sorted_text)
            text[torch.tensor(prepared.order, device=device)] = sorted_text
            image = image[torch.as_tensor(prepared.owners).to(device)]
            # As SelectorModel.features and forward combine them.
            if model.config.normalize_features:
                image = torch.nn.functional.normalize(image, dim=-1)
                text = torch.nn.functional.normalize(text, dim=-1)
            scores = model.head(torch.cat([image, text], dim=-1).to(dtype)).squeeze(-1).float().cpu().tolist()
    finally:
        if was_training:
            model.train()
    out, position = [], 0
    for group in prepared.turns:
        out.append(scores[position : position + len(group)])
        position += len(group)
    return out


def score_image_turns(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    turns: Sequence[Sequence[str]],
    batch_size: int = 32,
    max_length: int | None = None,
) -> list[list[float]]:
    """Score every text of ``turns[i]`` with ``images[i]``: each image preprocessed and encoded once, however many
    texts it has (:func:`prepare_image_turns`, then :func:`score_prepared`). One list of scores per image.

    Args:
        model: a :class:`vital.selector.SelectorModel` (or a ``PeftModel`` around one).
        processor: its processor (``tokenizer`` and ``image_processor``).
        images: decoded RGB images, one per candidate.
        turns: the texts to score with each image.
        batch_size: at most this many images, or texts, per forward pass.
        max_length: token limit per text (default the tokenizer's ``model_max_length``).
    """
    padding = getattr(model.config, "text_padding", True)
    return score_prepared(model, prepare_image_turns(processor, images, turns, batch_size, max_length, padding))


def _as_is(item: Any) -> Any:
    """The DataLoader's collate function here: the dataset yields whole prepared batches."""
    return item


def _quiet_tokenizers(worker_id: int) -> None:
    """A DataLoader worker tokenises on its own: the fast tokenizer's thread pool would only contend with the model
    (and, forked after the parent used it, warns and disables itself anyway)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


class _CandidateBatches(IterableDataset):
    """The rows of ``part`` in batches of ``batch_size``, each read, checked, decoded, preprocessed and tokenised: one
    ``(owners, rejected, PreparedTurns)`` per batch, where ``owners`` are the ``(row index, id)`` of the candidates
    prepared and ``rejected`` the ``(RecordError, summary)`` of those quarantined.

    With DataLoader workers, worker ``k`` of ``n`` prepares batches ``k, k + n, ...``; the loader takes them from the
    workers in turn, so they arrive in row order. Picklable, so that workers also start under ``spawn``."""

    def __init__(self, part, first, batch_size, processor, fields, template, aggregate, max_length, padding):
        self.part, self.first, self.batch_size, self.processor = part, first, batch_size, processor
        self.fields, self.template, self.aggregate = fields, template, aggregate
        self.max_length, self.padding = max_length, padding

    def __iter__(self):
        worker = get_worker_info()
        k, n = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for b, batch in enumerate(self.part.with_format("arrow").iter(batch_size=self.batch_size)):
            if b % n == k:
                yield self.prepare(batch, self.first + b * self.batch_size)

    def prepare(self, batch: Any, first: int) -> tuple[list[tuple[int, str]], list[tuple[RecordError, dict]], Any]:
        images, texts, owners, rejected = [], [], [], []  # one image and one list of turn texts per candidate
        for offset, row in enumerate(batch.to_pylist()):
            rid = str(row.get("id"))
            try:
                opened = _open_images(row, rid)
                validate_messages(row.get("messages"), rid, "messages", n_images=len(opened))
                n_turns = _n_turns(row)
                n_scored = 1 if self.aggregate == "first" else n_turns
                turns = [
                    candidate_turn_text(row, t, self.fields, self.template) for t in range(min(n_scored, n_turns))
                ]
                if not turns:
                    raise RecordError(rid, "messages", "no question-answer turn to score")
            except RecordError as error:
                rejected.append((error, _summary(row)))
            else:
                owners.append((first + offset, rid))
                images.append(opened[0])
                texts.append(turns)
        prepared = prepare_image_turns(
            self.processor, images, texts, self.batch_size, self.max_length, self.padding
        )  # fmt: skip
        if get_worker_info() is not None and prepared.owners is not None:
            # Everything leaves a worker as numpy arrays, copied into the one pickled message. A tensor would leave as
            # a shared-memory handle: a segment made, filled, passed and mapped per tensor, a round trip to the worker
            # each, which measured dearer than copying even the image batches (1.29 against 1.20 s of CPU per 2,000
            # candidates of the tiny CLIP; docs/design.md, Selector).
            prepared.pixels = [t.numpy() for t in prepared.pixels]
            prepared.encodings = [{name: t.numpy() for name, t in enc.items()} for enc in prepared.encodings]
            prepared.owners = prepared.owners.numpy()
        return owners, rejected, prepared


def score_candidates(
    model: Any,
    processor: Any,
    candidates: Dataset,
    *,
    batch_size: int = 32,
    aggregate: str = "mean",
    text_fields: Sequence[str] | None = None,
    max_length: int | None = None,
    state: Any = None,
    log_every: int | None = None,
    num_workers: int = 1,
) -> CandidateScores:
    """Score every candidate (the aggregate of its turn scores), streaming the rows from disk in batches.

    Args:
        model: a :class:`vital.selector.SelectorModel` (or a ``PeftModel`` around one).
        processor: its processor (``AutoProcessor.from_pretrained(selector_folder)``).
        candidates: the candidates (``id``, ``images``, ``messages``, and ``caption`` / ``mentions`` when the
            selector's ``text_fields`` name them). Images may be decoded or not; they are read per batch.
        batch_size: candidates read per step, and (image, text) inputs per forward pass.
        aggregate: ``mean``, ``min`` or ``max`` of the turn scores, or ``first`` (only the first turn is scored).
        text_fields: the texts joined for scoring; default the model's ``config.text_fields``.
        max_length: token limit per text (default the tokenizer's ``model_max_length``).
        state: an ``accelerate.PartialState``; with several processes each scores a contiguous run of whole batches
            and the results are gathered (every process gets all of them). Batches are cut from the global row order,
            so every process count pads the same inputs together.
        log_every: log progress every this many candidates (this process's).
        num_workers: DataLoader worker processes that read, decode, preprocess and tokenise the batches ahead of the
            model (``0``: in this process, in the thread that also runs the image encoder). Processes, unlike
            threads, do not share the GIL with the forward pass. The scores do not depend on it.

    Scores are reproducible bit for bit for the same model, data, ``batch_size``, process count and torch threads on
    the same hardware. Changing any of those can move a score by a float32 rounding step (about 1e-8 here: CPU
    matrix kernels vary their summation order), which reorders candidates only where scores tie to that precision.

    Returns:
        :class:`CandidateScores` in row order, with the quarantine (mode ``skip``) of the rows not scored.
    """
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {sorted(AGGREGATIONS)}, got {aggregate!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
    fields = list(text_fields or getattr(model.config, "text_fields", None) or ("question", "answer"))
    template = getattr(model.config, "text_template", None) if text_fields is None else None
    # Arrow batches: image cells stay as stored bytes (decoded below, one batch at a time) and nothing is copied; a cast
    # of the list-of-images column to decode=False would rewrite the whole dataset first.
    raw = candidates.select_columns([c for c in _SCORED_COLUMNS if c in candidates.column_names])
    num_processes = getattr(state, "num_processes", 1) or 1
    start, end = _slice(len(raw), batch_size, num_processes, getattr(state, "process_index", 0))
    part = raw.select(range(start, end)) if num_processes > 1 else raw

    results: list[tuple[int, str, float, list[float]]] = []
    quarantine = Quarantine("skip")
    padding = getattr(model.config, "text_padding", True)
    batches = _CandidateBatches(
        part, start, batch_size, processor, fields, template, aggregate, max_length, padding
    )  # fmt: skip
    loader = DataLoader(
        batches,
        batch_size=None,  # the dataset yields whole prepared batches
        collate_fn=_as_is,
        num_workers=num_workers,
        worker_init_fn=_quiet_tokenizers if num_workers else None,
    )

    def consume(owners, rejected, prepared) -> None:
        for error, summary in rejected:
            quarantine.add(error, summary)
        scores = score_prepared(model, prepared)
        for (row_index, rid), candidate_scores in zip(owners, scores, strict=True):
            turn_scores = [_float32(s) for s in candidate_scores]
            if any(math.isnan(s) for s in turn_scores):
                raise ValueError(f"the selector scored candidate {rid!r} NaN: check the model")
            results.append((row_index, rid, aggregate_turn_scores(turn_scores, aggregate), turn_scores))

    def take(prepared_batches: Any) -> Any:
        """The next prepared batch with its images encoded, or None at the end (run in the helper thread)."""
        following = next(prepared_batches, None)
        if following is None:
            return None
        owners, rejected, prepared = following
        return owners, rejected, encode_prepared_images(model, prepared)

    # Batches are read, checked, decoded, preprocessed and tokenised by `num_workers` DataLoader worker processes
    # (in the loader's own iteration with none); a helper thread takes each one and runs the image encoder on it
    # while this thread runs the text encoder and head on the batch before (PyTorch releases the GIL inside
    # operators). The model stays in eval mode throughout, as the helper thread uses it too.
    index, next_log = start, start + (log_every or 0)
    was_training = model.training
    model.eval()
    try:
        prepared_batches = iter(loader)  # the workers start here, before the helper thread exists
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vital-select-prepare") as pool:
            ahead = pool.submit(take, prepared_batches)
            while (current := ahead.result()) is not None:
                ahead = pool.submit(take, prepared_batches)
                consume(*current)
                index += len(current[0]) + len(current[1])
                if log_every and index >= next_log:
                    logger.info("scored %d / %d candidates (this process)", index - start, end - start)
                    next_log += log_every
    finally:
        model.train(was_training)

    quarantined = quarantine.records
    if num_processes > 1:
        from accelerate.utils import gather_object

        results = gather_object(results)
        quarantined = gather_object(quarantined)
    results.sort(key=lambda r: r[0])
    out = CandidateScores(quarantine=Quarantine("skip", list(quarantined)))
    for row_index, rid, score, turn_scores in results:
        out.indices.append(row_index)
        out.candidate_ids.append(rid)
        out.scores.append(score)
        out.turn_scores.append(turn_scores)
    return out


def _n_turns(row: Mapping[str, Any]) -> int:
    from vital.data.schemas import qa_turns

    return len(qa_turns(row["messages"]))


# ---------------------------------------------------------------------------------------------------------------------
# Ranking and the top ratios
# ---------------------------------------------------------------------------------------------------------------------
def rank_candidates(candidate_ids: Sequence[str], scores: Sequence[float]) -> list[int]:
    """Positions of the candidates, best first: score descending (compared as float32), ties by id ascending."""
    if len(candidate_ids) != len(scores):
        raise ValueError(f"{len(candidate_ids)} ids for {len(scores)} scores")
    stored = [_float32(s) for s in scores]
    if any(math.isnan(s) for s in stored):
        raise ValueError("cannot rank NaN scores")
    return sorted(range(len(stored)), key=lambda i: (-stored[i], candidate_ids[i]))


def kept_count(n: int, ratio: float, cut: str = "ceil") -> int:
    """How many of ``n`` candidates a ratio keeps: ``ceil(ratio * n)``, the fewest that make at least ``ratio``
    (``cut="ceil"``, ours), or ``floor(ratio * n)``, the official ``int()`` (``cut="floor"``)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"a kept ratio must lie in (0, 1], got {ratio}")
    if cut not in CUTS:
        raise ValueError(f"cut must be one of {sorted(CUTS)}, got {cut!r}")
    return min(n, CUTS[cut](round(ratio * n, 9)))


def ratio_config_name(ratio: float) -> str:
    """``0.1`` -> ``top10``, ``0.125`` -> ``top12_5``."""
    percent = round(ratio * 100, 6)
    return "top" + f"{percent:g}".replace(".", "_")


def cut_scores(scored: CandidateScores, ratios: Sequence[float], cut: str = "ceil") -> dict[str, float]:
    """The lowest kept score of every ratio's config (where the histogram draws its cut line)."""
    order = rank_candidates(scored.candidate_ids, scored.scores)
    out = {}
    for ratio in sorted(ratios):
        k = kept_count(len(order), ratio, cut)
        if k:
            out[ratio_config_name(ratio)] = scored.scores[order[k - 1]]
    return out


def select_top_ratios(
    candidates: Dataset, scored: CandidateScores, ratios: Sequence[float], turn_scores: bool = True, cut: str = "ceil"
) -> dict[str, Dataset]:
    """One dataset per ratio (``top10``, ...): the best ``ceil(ratio * n)`` scored candidates (``floor`` with
    ``cut="floor"``), best first.

    Each holds the candidates' columns plus ``selector_score`` (float32) and, with ``turn_scores``,
    ``selector_turn_scores``. ``n`` counts the scored candidates only: quarantined ones are neither kept nor counted.
    """
    names = [ratio_config_name(r) for r in ratios]
    if len(set(names)) != len(names):
        raise ValueError(f"ratios give duplicate config names: {names}")
    order = rank_candidates(scored.candidate_ids, scored.scores)
    out = {}
    for ratio in sorted(ratios):
        keep = order[: kept_count(len(order), ratio, cut)]
        subset = candidates.select([scored.indices[p] for p in keep])
        subset = subset.add_column("selector_score", [scored.scores[p] for p in keep], feature=Value("float32"))
        if turn_scores:
            subset = subset.add_column(
                TURN_SCORES, [scored.turn_scores[p] for p in keep], feature=List(Value("float32"))
            )
        out[ratio_config_name(ratio)] = subset
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Mixtures
# ---------------------------------------------------------------------------------------------------------------------
_MIXTURE_RE = re.compile(r"^\s*(?P<name>[A-Za-z0-9][\w-]*)\s*=\s*(?P<parts>.+)$")


def parse_mixture_spec(spec: str) -> tuple[str, list[str]]:
    """``"mix150k=top80+org/llava-med-10k@main+org/llava-med-60k"`` -> ``("mix150k", ["top80", ...])``.

    A part is a config of this selection (``top80``) or another instruction set, ``repo[@revision][:config]``.
    """
    match = _MIXTURE_RE.match(spec)
    if not match:
        raise ValueError(f"mixture {spec!r}: expected 'name=part+part+...'")
    parts = [p.strip() for p in match["parts"].split("+") if p.strip()]
    if not parts:
        raise ValueError(f"mixture {spec!r} has no parts")
    return match["name"], parts


def build_mixture(parts: Sequence[tuple[Dataset, str]]) -> Dataset:
    """Concatenate ``(dataset, provenance)`` parts into :data:`MIXTURE_FEATURES`, in order.

    A part needs TRL's ``messages`` and ``images`` (or one ``image``, as demos have); the other selected columns are kept where the part has them and
    null otherwise (``modality`` defaults to ``other``). Images are carried as stored, without decoding.

    Raises:
        ValueError: a part lacks ``messages`` or ``images`` (LLaVA JSON converts with
            ``vital.data.llava.llava_to_messages``).
    """
    from datasets import concatenate_datasets

    converted = []
    for dataset, provenance in parts:
        single = "images" not in dataset.column_names and "image" in dataset.column_names  # demos / pairs schema
        missing = [
            c for c in ("messages", "images") if c not in dataset.column_names and not (c == "images" and single)
        ]
        if missing:
            raise ValueError(
                f"{provenance}: not in TRL format, missing {missing} (convert LLaVA JSON with "
                "vital.data.llava.llava_to_messages first)"
            )

        def to_rows(table, provenance=provenance, single=single):
            # Arrow batches: image cells pass through as stored bytes, never decoded and re-encoded.
            rows = table.to_pylist()
            out = {name: [row.get(name) for row in rows] for name in MIXTURE_FEATURES}
            if single:
                out["images"] = [[row["image"]] for row in rows]
            out["modality"] = [m or "other" for m in out["modality"]]
            out["provenance"] = [provenance] * len(rows)
            return out

        arrow = dataset.with_format("arrow")
        mixed = arrow.map(to_rows, batched=True, remove_columns=arrow.column_names, features=MIXTURE_FEATURES)
        converted.append(mixed.with_format(None))
    return concatenate_datasets(converted)


# ---------------------------------------------------------------------------------------------------------------------
# The histogram
# ---------------------------------------------------------------------------------------------------------------------
def plot_score_histogram(
    scores: Sequence[float], cuts: Mapping[str, float], path: str | Path, bins: int = 40, title: str | None = None
) -> Path:
    """Save a PNG histogram of ``scores`` with a dashed line at each config's cut score (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.hist(np.asarray(scores, dtype=np.float64), bins=bins, color="#4c72b0", alpha=0.85)
    colors = plt.get_cmap("autumn")(np.linspace(0, 0.8, max(len(cuts), 1)))
    for (name, cut), color in zip(sorted(cuts.items(), key=lambda kv: -kv[1]), colors):
        ax.axvline(cut, color=color, linestyle="--", linewidth=1.5, label=f"{name} cut ({cut:.3g})")
    ax.set_xlabel("selector score (aggregated over turns)")
    ax.set_ylabel("candidates")
    ax.set_title(title or f"Selector scores of {len(scores)} candidates")
    if cuts:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Mixtures read from a hub (the select stage)
# ---------------------------------------------------------------------------------------------------------------------
def load_mixtures(
    hub: Any, specs: Sequence[str], configs: Mapping[str, Dataset], candidates_ref: Any
) -> tuple[dict[str, Dataset], list[dict[str, Any]], list[Any]]:
    """The mixtures of ``specs`` (``name=top80+repo[@revision][:config]+...``, see `parse_mixture_spec`): a part named
    like one of ``configs`` is that selection; any other part is read from ``hub`` at the commit its revision points
    at now. Returns the mixtures by name, one card row per mixture (name, rows, parts with provenance and rows) and
    the refs of the datasets read, for the lineage."""
    from vital.hub import parse_repo_ref

    mixtures: dict[str, Dataset] = {}
    rows: list[dict[str, Any]] = []
    inputs: list[Any] = []
    for spec in specs:
        name, parts = parse_mixture_spec(spec)
        loaded = []
        for part in parts:
            if part in configs:
                loaded.append((configs[part], f"{candidates_ref.repo_id}@{candidates_ref.commit}:{part}"))
                continue
            repo_spec, _, config = part.partition(":")
            repo_id, revision = parse_repo_ref(repo_spec)
            ref = hub.ref(repo_id, revision, config=config or None)
            inputs.append(ref)
            dataset = hub.load_dataset(repo_id, config or None, revision=ref.commit, split="train")
            loaded.append((dataset, f"{repo_id}@{ref.commit}" + (f":{config}" if config else "")))
        mixtures[name] = build_mixture(loaded)
        parts_rows = [{"provenance": p, "rows": len(d)} for d, p in loaded]
        rows.append({"name": name, "rows": len(mixtures[name]), "parts": parts_rows})
    return mixtures, rows, inputs
