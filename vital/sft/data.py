"""SFT rows: the formats an SFT input may come in, their normalisation to `SFT_FEATURES`, and the row checks.

Its format is detected from its columns and normalised to `SFT_FEATURES` (``id``, ``images``, ``messages``,
``source_dataset``):

* TRL conversational rows, ``messages`` + ``images`` (candidates, selected) or ``messages`` + ``image`` (demos);
* LLaVA / BioMed-VITAL rows, ``conversations`` (``from``/``value`` turns with ``<image>``) + ``image``, converted with
  `vital.data.llava.conversations_to_messages`;
* pairs (``image`` + ``caption``), turned into one-turn caption conversations (`pairs_to_caption_conversations`): the
  concept-alignment data of LLaVA-Med's first stage.

`check_sft_rows` rejects, before any training step, rows whose image placeholders do not match their images or whose
assistant turns are empty, naming the row. Reading from the hub and mixing: `vital.sft.mixture`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from datasets import Dataset, Features, Image, List, Value

from vital.data.errors import ErrorMode, Quarantine, RecordError
from vital.data.schemas import MESSAGES, image_part, text_part, validate_image, validate_messages
from vital.hub import ArtifactRef


SFT_FEATURES = Features(
    {
        "id": Value("string"),
        "images": List(Image()),
        "messages": MESSAGES,
        "source_dataset": Value("string"),  # provenance: "repo@commit12[:config]" of the input the row came from
    }
)
"""The columns every SFT input is normalised to (the trainer reads ``messages`` and ``images``)."""

SftFormat = Literal["messages", "llava", "pairs"]

CAPTION_PROMPTS = (
    "Describe the figure.",
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Summarize the visual content of the image.",
    "Write a terse but informative caption for the figure.",
    "What does this figure show?",
)
"""Instructions of the caption conversations (LLaVA-Med's stage 1 samples brief-description prompts like these)."""


def detect_format(column_names: Sequence[str]) -> SftFormat:
    """``messages`` (TRL), ``llava`` (``conversations``) or ``pairs`` (``image`` + ``caption``)."""
    columns = set(column_names)
    if "messages" in columns:
        return "messages"
    if "conversations" in columns:
        return "llava"
    if {"image", "caption"} <= columns:
        return "pairs"
    raise ValueError(
        f"cannot tell the format of a dataset with columns {sorted(columns)}: expected 'messages' (+ 'images' or "
        "'image'), LLaVA 'conversations' (+ 'image'), or pairs ('image' + 'caption')"
    )


def _row_id(row: Mapping[str, Any], index: int) -> str:
    rid = row.get("id")
    return str(rid) if rid not in (None, "") else f"#{index}"


def _undecoded(dataset: Dataset, column: str) -> Dataset:
    """Keep image bytes as stored: conversion and checks never need the pixels."""
    feature = dataset.features[column]
    if isinstance(feature, Image):
        return dataset.cast_column(column, Image(decode=False))
    if isinstance(feature, List) and isinstance(feature.feature, Image):
        return dataset.cast_column(column, List(Image(decode=False)))
    if isinstance(feature, Value) and feature.dtype == "string":
        raise ValueError(
            f"column {column!r} holds file names, not images: convert the records with "
            "vital.data.llava.llava_to_messages (which embeds the image files) and push that dataset"
        )
    return dataset


def to_sft_rows(dataset: Dataset, source: str = "", fmt: SftFormat | None = None) -> Dataset:
    """Normalise a dataset in any supported format to `SFT_FEATURES`, with ``source_dataset = source``.

    LLaVA conversations that cannot be read at all (unknown speakers, turns out of order) raise `RecordError` here;
    placeholder / image mismatches and empty answers are left to `check_sft_rows`, which can quarantine them.
    """
    from vital.data.llava import conversations_to_messages

    fmt = fmt or detect_format(dataset.column_names)
    if fmt == "pairs":
        dataset = pairs_to_caption_conversations(dataset)
        fmt = "messages"
    image_column = (
        "images" if "images" in dataset.column_names else "image" if "image" in dataset.column_names else None
    )
    if image_column is not None:
        dataset = _undecoded(dataset, image_column)

    def convert(row: dict[str, Any], index: int) -> dict[str, Any]:
        rid = _row_id(row, index)
        image = row.get(image_column) if image_column else None
        images = (image or []) if image_column == "images" else ([image] if image is not None else [])
        if fmt == "llava":
            messages = conversations_to_messages(row["conversations"], rid)
        else:
            messages = _typed_messages(row["messages"], len(images))
        return {"id": rid, "images": images, "messages": messages, "source_dataset": source}

    features = Features({**SFT_FEATURES, "images": List(Image(decode=False))})
    converted = dataset.map(
        convert,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=features,
        desc=f"SFT rows from {source or 'dataset'}",
    )
    return converted.cast(SFT_FEATURES)


def _typed_messages(messages: Any, n_images: int) -> Any:
    """Plain-string contents as typed parts. A conversation written all in strings gets its images' placeholders at
    the start of the first user turn, as TRL does for such data; typed conversations are left as they are, so that a
    missing placeholder is caught by `check_sft_rows`."""
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        return messages
    if not any(isinstance(m.get("content"), str) for m in messages):
        return messages
    all_strings = all(isinstance(m.get("content"), str) for m in messages)
    out = []
    for m in messages:
        content = m.get("content")
        out.append({**m, "content": [text_part(content)] if isinstance(content, str) else content})
    if all_strings and n_images:
        first_user = next((i for i, m in enumerate(out) if m.get("role") == "user"), None)
        if first_user is not None:
            out[first_user]["content"] = [image_part() for _ in range(n_images)] + out[first_user]["content"]
    return out


def pairs_to_caption_conversations(pairs: Dataset, prompts: Sequence[str] = CAPTION_PROMPTS, seed: int = 0) -> Dataset:
    """Pairs (``id``, ``image``, ``caption``) as one-turn conversations: an instruction -> the caption.

    The concept-alignment data of LLaVA-Med's first stage: the model learns to name what a biomedical figure shows.
    Each row's instruction is drawn from ``prompts`` by a generator seeded with ``seed`` and the row's id, so it does
    not depend on the row's position. Keeps ``id`` and, if present, ``modality``.
    """
    if not prompts:
        raise ValueError("no caption prompts given")
    pairs = _undecoded(pairs, "image")
    keep = [c for c in ("id", "modality") if c in pairs.column_names]

    def convert(row: dict[str, Any], index: int) -> dict[str, Any]:
        rid = _row_id(row, index)
        prompt = prompts[random.Random(f"{seed}:{rid}").randrange(len(prompts))]
        caption = row["caption"] or ""
        return {
            "id": rid,
            "images": [row["image"]] if row["image"] is not None else [],
            "messages": [
                {
                    "role": "user",
                    "content": [image_part(), text_part(prompt)] if row["image"] is not None else [text_part(prompt)],
                },
                {"role": "assistant", "content": [text_part(caption.strip())]},
            ],
            **({"modality": row["modality"]} if "modality" in keep else {}),
        }

    features = {"id": Value("string"), "images": List(Image(decode=False)), "messages": MESSAGES}
    if "modality" in keep:
        features["modality"] = Value("string")
    out = pairs.map(
        convert,
        with_indices=True,
        remove_columns=pairs.column_names,
        features=Features(features),
        desc="caption conversations",
    )
    return out.cast_column("images", List(Image()))


def source_name(ref: ArtifactRef) -> str:
    """The ``source_dataset`` value of rows read from ``ref``: ``repo@<12 hex>[:config]``."""
    return f"{ref.repo_id}@{ref.commit[:12]}" + (f":{ref.config}" if ref.config else "")


def check_sft_rows(dataset: Dataset, errors: ErrorMode = "raise") -> tuple[Dataset, Quarantine]:
    """Reject rows that would train badly, before any training step.

    A row is rejected when its conversation breaks the contract (`vital.data.schemas.validate_messages` with
    ``n_images``: as many image placeholders as images, all in the first user turn; no empty assistant turn; user and
    assistant alternating) or an image does not decode. ``errors="raise"`` raises `RecordError` naming the row id
    (and ``source_dataset`` when there is one); ``"skip"`` returns the good rows and the quarantine.
    """
    quarantine = Quarantine(errors)
    image_column = (
        "images" if "images" in dataset.column_names else "image" if "image" in dataset.column_names else None
    )
    raw = _undecoded(dataset, image_column) if image_column else dataset
    keep = []
    for index, row in enumerate(raw):
        rid = _row_id(row, index)
        if row.get("source_dataset"):
            rid = f"{rid} (from {row['source_dataset']})"
        images = row.get(image_column) if image_column else None
        images = (images or []) if image_column == "images" else ([images] if images is not None else [])
        try:
            validate_messages(row.get("messages"), rid, "messages", n_images=len(images))
            for i, image in enumerate(images):
                validate_image(image, rid, f"{image_column}[{i}]")
        except RecordError as error:
            quarantine.add(error, {"id": row.get("id"), "messages": row.get("messages")})
        else:
            keep.append(index)
    if len(keep) == len(dataset):
        return dataset, quarantine
    return dataset.select(keep), quarantine
