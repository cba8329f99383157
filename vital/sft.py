"""The tuning stage's library: data for TRL's `SFTTrainer`, the model's provenance, freezing, run branches, callbacks.

`recipes/sft.py` reads top to bottom and calls these; everything that needs a test lives here.

Data. An SFT input is ``repo_id[@revision][:config[:weight]]`` on the hub (`DatasetSpec`). Its format is detected from
its columns and normalised to `SFT_FEATURES` (``id``, ``images``, ``messages``, ``source_dataset``):

* TRL conversational rows, ``messages`` + ``images`` (candidates, selected) or ``messages`` + ``image`` (demos);
* LLaVA / BioMed-VITAL rows, ``conversations`` (``from``/``value`` turns with ``<image>``) + ``image``, converted with
  `vital.data.llava.conversations_to_messages`;
* pairs (``image`` + ``caption``), turned into one-turn caption conversations (`pairs_to_caption_conversations`): the
  concept-alignment data of LLaVA-Med's first stage.

Every read is pinned: the revision is resolved to a commit first, and the `ArtifactRef` returned with the data is
what the model card records. `check_sft_rows` rejects, before any training step, rows whose image placeholders do
not match their images or whose assistant turns are empty, naming the row. `mix_datasets` draws a weighted mixture.

Example::

    hub = get_hub("local:outputs/hub")
    specs = parse_dataset_specs(["quickstart/selected@main:top40:1.0", "quickstart/demos:default:2"])
    train, refs = load_sft_mixture(hub, specs, seed=0)
    train, quarantine = check_sft_rows(train)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, Features, Image, List, Value, concatenate_datasets
from transformers import TrainerCallback
from trl import SFTTrainer

from vital.data.errors import ErrorMode, Quarantine, RecordError
from vital.data.inputs import require_columns
from vital.data.schemas import MESSAGES, image_part, text_part, validate_image, validate_messages
from vital.hub import ArtifactRef, Hub, HubError, parse_repo_ref, sha256_file
from vital.runs import FINGERPRINT_FILE, ExactResumeMixin


logger = logging.getLogger(__name__)

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
Freeze = Literal["none", "vision_tower", "all_but_projector"]
FREEZE_CHOICES = ("none", "vision_tower", "all_but_projector")

CAPTION_PROMPTS = (
    "Describe the figure.",
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Summarize the visual content of the image.",
    "Write a terse but informative caption for the figure.",
    "What does this figure show?",
)
"""Instructions of the caption conversations (LLaVA-Med's stage 1 samples brief-description prompts like these)."""

# Attribute names of the vision encoder and of the vision-to-text projector in transformers' VLMs: LLaVA and
# LLaVA-NeXT (vision_tower, multi_modal_projector), Idefics3 and SmolVLM (vision_model, connector), Qwen2-VL and
# Qwen2.5-VL (visual, with its projector visual.merger), Gemma 3 (vision_tower, multi_modal_projector).
VISION_TOWER_NAMES = ("vision_tower", "vision_model", "visual")
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger", "mm_projector")

# Files of a trainer's output_dir that are not part of the model artifact. TensorBoard's `runs/` is: the Hub shows the
# run's curves beside the model.
NOT_PUSHED = ("checkpoint-*", "training_args.bin", ".ipynb_checkpoints", FINGERPRINT_FILE)


# ----------------------------------------------------------------------------------------------------------------------
# Dataset specs
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """One SFT input: a dataset repo at a revision, a config, a split and a mixture weight."""

    repo_id: str
    revision: str = "main"
    config: str | None = None
    split: str = "train"
    weight: float = 1.0

    @classmethod
    def parse(
        cls, text: str, *, revision: str = "main", config: str | None = None, split: str = "train"
    ) -> DatasetSpec:
        """``"repo[@revision][:config[:weight]]"``; missing parts take the given defaults (weight 1).

        An empty config (``"repo@v1::0.5"``) means the default one. Branch names cannot hold ``:`` (git forbids
        it), so the separators are unambiguous.
        """
        head, *rest = text.strip().split(":")
        if len(rest) > 2:
            raise ValueError(f"dataset spec {text!r}: expected 'repo[@revision][:config[:weight]]'")
        repo_id, revision = parse_repo_ref(head, default_revision=revision)
        if rest and rest[0]:
            config = rest[0]
        weight = 1.0
        if len(rest) == 2:
            try:
                weight = float(rest[1])
            except ValueError as e:
                raise ValueError(f"dataset spec {text!r}: weight {rest[1]!r} is not a number") from e
        if not weight > 0:
            raise ValueError(f"dataset spec {text!r}: the weight must be positive, got {weight}")
        return cls(repo_id, revision, config, split, weight)

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}:{self.config or ''}:{self.weight:g}"


def parse_dataset_specs(
    datasets: str | Sequence[str], revision: str = "main", config: str | None = None, split: str = "train"
) -> list[DatasetSpec]:
    """Parse one spec or a mixture list (`DatasetSpec.parse`); ``revision`` / ``config`` / ``split`` are defaults."""
    items = [datasets] if isinstance(datasets, str) else list(datasets)
    if not items:
        raise ValueError("no dataset given")
    return [DatasetSpec.parse(item, revision=revision, config=config, split=split) for item in items]


# ----------------------------------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------------
# Loading, checking, mixing
# ----------------------------------------------------------------------------------------------------------------------
def source_name(ref: ArtifactRef) -> str:
    """The ``source_dataset`` value of rows read from ``ref``: ``repo@<12 hex>[:config]``."""
    return f"{ref.repo_id}@{ref.commit[:12]}" + (f":{ref.config}" if ref.config else "")


def load_sft_dataset(hub: Hub, spec: str | DatasetSpec, split: str | None = None) -> tuple[Dataset, ArtifactRef]:
    """Load one input at its pinned commit and normalise it to `SFT_FEATURES`.

    Args:
        hub: where the dataset lives.
        spec: a `DatasetSpec` or its text ``"repo[@revision][:config[:weight]]"`` (the weight is ignored here).
        split: overrides the spec's split.

    Returns:
        The rows and the lineage record (the commit the revision resolved to).
    """
    if isinstance(spec, str):
        spec = DatasetSpec.parse(spec)
    ref = hub.ref(spec.repo_id, spec.revision, "dataset", spec.config)
    dataset = hub.load_dataset(spec.repo_id, name=spec.config, revision=ref.commit, split=split or spec.split)
    require_columns(dataset, "sft", "train", ref)
    fmt = detect_format(dataset.column_names)
    logger.info("dataset %s (%s format): %d rows", ref, fmt, len(dataset))
    return to_sft_rows(dataset, source_name(ref), fmt), ref


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


def mix_datasets(parts: Sequence[tuple[Dataset, float]], seed: int = 0) -> Dataset:
    """A weighted mixture: ``round(weight * len(dataset))`` rows drawn from each part, then shuffled together.

    A weight below 1 subsamples (a seeded draw without replacement); above 1 it repeats the whole dataset
    ``floor(weight)`` times and draws the fraction that is left. Every row keeps its ``source_dataset``
    (``"#<part index>"`` when a part has none). A single part with weight 1 comes back unchanged.
    """
    if not parts:
        raise ValueError("nothing to mix")
    if len(parts) == 1 and parts[0][1] == 1:
        dataset = parts[0][0]
        return (
            dataset
            if "source_dataset" in dataset.column_names
            else dataset.add_column("source_dataset", ["#0"] * len(dataset))
        )
    rng = random.Random(seed)
    drawn = []
    for index, (dataset, weight) in enumerate(parts):
        if not weight > 0:
            raise ValueError(f"mixture part {index}: the weight must be positive, got {weight}")
        if "source_dataset" not in dataset.column_names:
            dataset = dataset.add_column("source_dataset", [f"#{index}"] * len(dataset))
        target = round(weight * len(dataset))
        repeats, rest = divmod(target, len(dataset)) if len(dataset) else (0, 0)
        indices = list(range(len(dataset))) * repeats + sorted(rng.sample(range(len(dataset)), rest))
        logger.info("mixture part %d: %d of %d rows (weight %g)", index, len(indices), len(dataset), weight)
        drawn.append(dataset.select(indices))
    features = drawn[0].features
    mixed = concatenate_datasets([d.cast(features) if d.features != features else d for d in drawn])
    return mixed.shuffle(seed=seed).flatten_indices()


def load_sft_mixture(
    hub: Hub, specs: Sequence[DatasetSpec], seed: int = 0, split: str | None = None, weighted: bool = True
) -> tuple[Dataset, list[ArtifactRef]]:
    """Load every input (`load_sft_dataset`) and mix them (`mix_datasets`; all weights 1 when not ``weighted``)."""
    loaded = [load_sft_dataset(hub, spec, split) for spec in specs]
    parts = [(dataset, spec.weight if weighted else 1.0) for (dataset, _), spec in zip(loaded, specs, strict=True)]
    return mix_datasets(parts, seed), [ref for _, ref in loaded]


# ----------------------------------------------------------------------------------------------------------------------
# The model: where it comes from, what trains
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class ModelSource:
    """What ``from_pretrained`` receives, and what the card records about it."""

    path: str  # a local folder or a Hugging Face Hub id
    revision: str | None  # for a Hub id; None for folders (a hub snapshot is already one commit)
    base_model: str | None  # the repo id for the card's `base_model`; None for a bare local folder
    lineage: ArtifactRef | dict[str, Any]


def resolve_model(hub: Hub, name_or_path: str, revision: str = "main") -> ModelSource:
    """Where the base model is.

    * ``hub:<repo>[@<revision>]``: a model repo on the recipe's hub (local or Hugging Face), e.g. the output of an
      earlier run (``hub:biomed-vital/llava15-7b-stage1@stage1``); resolved to a commit and read from its snapshot.
      Without ``@``, ``revision`` is used.
    * an existing local folder: used as is; the card records its path and a fingerprint of its files.
    * anything else: a Hugging Face Hub id (``HF_ENDPOINT`` honoured) loaded at ``revision``; the commit is read from
      the loaded config afterwards (`model_lineage`).
    """
    if name_or_path.startswith("hub:"):
        repo_id, rev = parse_repo_ref(name_or_path[len("hub:") :], default_revision=revision)
        ref = hub.ref(repo_id, rev, "model")
        return ModelSource(str(hub.snapshot(repo_id, ref.commit, "model")), None, repo_id, ref)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        lineage = {"source": str(folder.resolve()), "repo_type": "model", "sha256": folder_fingerprint(folder)}
        return ModelSource(str(folder), None, None, lineage)
    lineage = {"repo_id": name_or_path, "repo_type": "model", "revision": revision}
    return ModelSource(name_or_path, revision, name_or_path, lineage)


def model_lineage(source: ModelSource, model: Any = None) -> ArtifactRef | dict[str, Any]:
    """The lineage record of the base model; for a Hub id, with the commit transformers loaded (when it knows it)."""
    if isinstance(source.lineage, ArtifactRef) or model is None:
        return source.lineage
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return {**source.lineage, "commit": commit} if commit and "repo_id" in source.lineage else source.lineage


def base_model_folder(source: ModelSource) -> Path | None:
    """The folder holding the base model's weight files: the local folder or hub snapshot, or the Hugging Face cache's
    snapshot of a Hub id (already downloaded by ``from_pretrained``); None if it is not on disk."""
    if source.revision is None:
        return Path(source.path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source.path, revision=source.revision, local_files_only=True))
    except Exception as error:  # not cached, or offline without it
        logger.warning("the base model %s@%s is not in the local cache: %s", source.path, source.revision, error)
        return None


def base_reference(source: ModelSource, model: Any = None) -> tuple[str, str | None]:
    """The base model as a loader names it: its repo id and commit (a Hub id or a ``hub:`` repo), or a bare local
    folder's path and None."""
    lineage = model_lineage(source, model)
    if source.base_model is None:
        return source.path, None
    if isinstance(lineage, ArtifactRef):
        return source.base_model, lineage.commit
    return source.base_model, lineage.get("commit") or source.revision


def display_name(source: ModelSource) -> str:
    """How tables and charts name a model: ``repo_id@revision`` for a hub or Hub model (the revision asked for: a
    run branch, a tag or a commit), a bare local folder's name (never a path on this machine)."""
    if isinstance(source.lineage, ArtifactRef):
        return f"{source.lineage.repo_id}@{source.lineage.revision}"
    if source.base_model:
        return f"{source.base_model}@{source.revision}" if source.revision else source.base_model
    return Path(source.path).name


def record_adapter_base(model: Any, source: ModelSource, output_dir: str | os.PathLike) -> None:
    """Rewrite the ``adapter_config.json`` a PEFT model saved in ``output_dir`` so that it names its base by repo id
    (``base_model_name_or_path``) and commit (``revision``) instead of the local snapshot folder it was loaded from;
    ``PeftModel``/``AutoPeftModel`` then find the base anywhere. (Done after saving: peft's save reads the base's
    config from that name to decide whether to save the embeddings.)"""
    name, commit = base_reference(source, model)
    for adapter, config in (getattr(model, "peft_config", None) or {}).items():
        config.base_model_name_or_path = name
        config.revision = commit
        config.save_pretrained(Path(output_dir) if adapter == "default" else Path(output_dir, adapter))


def folder_fingerprint(folder: str | os.PathLike, max_file_bytes: int = 256 << 20) -> str:
    """sha256 over the sorted (path, content sha256) of the folder's files; files over ``max_file_bytes`` (weight
    shards of big models) contribute their size instead of their content, so a 7B folder fingerprints in seconds."""
    digest = hashlib.sha256()
    folder = Path(folder)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = file.stat().st_size
        content = sha256_file(file) if size <= max_file_bytes else f"size:{size}"
        digest.update(f"{file.relative_to(folder).as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


def _top_modules(model: Any, names: Sequence[str]) -> dict[str, Any]:
    """Modules whose attribute name is in ``names``, outermost only (``a.visual``, not ``a.visual.merger`` too)."""
    found: dict[str, Any] = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in names and not any(name.startswith(f"{outer}.") for outer in found):
            found[name] = module
    return found


def freeze_modules(model: Any, freeze: str) -> dict[str, int]:
    """Set what trains, before the trainer (and peft) see the model.

    * ``none``: everything trains (or what LoRA chooses).
    * ``vision_tower``: the vision encoder is frozen; the projector and the language model train (LLaVA-1.5's and
      LLaVA-Med's instruction stage).
    * ``all_but_projector``: only the vision-to-text projector trains (LLaVA-Med's concept-alignment stage).

    The projector is found by name (``multi_modal_projector``, ``connector``, ``merger``, ``mm_projector``), the
    vision encoder likewise (``vision_tower``, ``vision_model``, ``visual``); Qwen2-VL's projector sits inside its
    vision module and stays trainable under ``vision_tower``. Returns ``{"trainable": n, "total": n}`` parameters.
    """
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    if freeze != "none":
        projectors = _top_modules(model, PROJECTOR_NAMES)
        if not projectors:
            raise ValueError(
                f"freeze={freeze!r}: no projector module ({', '.join(PROJECTOR_NAMES)}) in {type(model).__name__}"
            )
        if freeze == "vision_tower":
            towers = _top_modules(model, VISION_TOWER_NAMES)
            if not towers:
                raise ValueError(
                    f"freeze='vision_tower': no vision module ({', '.join(VISION_TOWER_NAMES)}) in {type(model).__name__}"
                )
            for module in towers.values():
                module.requires_grad_(False)
        else:
            model.requires_grad_(False)
        for module in projectors.values():
            module.requires_grad_(True)
        logger.info("freeze=%s: projector %s trains", freeze, ", ".join(projectors))
    return count_parameters(model)


def count_parameters(model: Any) -> dict[str, int]:
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


# ----------------------------------------------------------------------------------------------------------------------
# Runs on the hub: one branch per run
# ----------------------------------------------------------------------------------------------------------------------
class RunBranchError(RuntimeError):
    """The run's branch already holds a finished run, and overwriting was not asked for."""


def default_run_branch(output_dir: str | os.PathLike) -> str:
    """The branch a run pushes to when none is given: the output folder's name, made a valid ref name."""
    name = re.sub(r"[^\w.-]+", "-", Path(output_dir).resolve().name).strip("-.") or "run"
    return name


def finished_run(hub: Hub, repo_id: str, branch: str) -> dict[str, Any] | None:
    """The lineage of the finished SFT run on ``branch`` (its card says stage ``sft`` and this branch), else None."""
    from vital.cards import lineage_of

    try:
        lineage = lineage_of(hub.read_card(repo_id, branch, "model"))
    except HubError:
        return None
    except Exception as error:  # the Hugging Face backend: repository or revision not found
        if type(error).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"):
            return None
        raise
    if lineage and lineage.get("stage") == "sft" and (lineage.get("extra") or {}).get("run_branch") == branch:
        return lineage
    return None


def same_finished_run(hub: Hub, repo_id: str, branch: str, lineage, world_size: int) -> str | None:
    """The commit of the finished run on ``branch`` if it was made from the same inputs (at the same commits), config,
    seed and stack versions as ``lineage`` (a `vital.cards.Lineage`), by as many processes (``world_size``; a
    1-process and a 2-process run differ in batches and reductions): rerunning it would change nothing."""
    finished = finished_run(hub, repo_id, branch)
    if finished is None:
        return None
    planned = lineage.to_dict()
    changed = [key for key in ("inputs", "config", "seed", "versions") if finished.get(key) != planned.get(key)]
    finished_world = (finished.get("extra") or {}).get("world_size")
    if finished_world != world_size:
        changed.append(f"world_size ({finished_world} -> {world_size})")
    if changed:
        if "config" in changed:
            for part, values in planned["config"].items():
                diff = sorted(k for k in values if values[k] != finished["config"].get(part, {}).get(k))
                changed += [f"{part}.{k}" for k in diff]
        logger.info("the finished run on %s@%s differs in %s: running again", repo_id, branch, ", ".join(changed))
        return None
    return hub.resolve(repo_id, branch, "model")


def check_run_branch(hub: Hub, repo_id: str, branch: str, overwrite: bool = False) -> None:
    """Refuse to start a run whose branch already holds a finished run (unless ``overwrite``), as open-r1 does.

    A killed run never wrote its card, so it can be rerun (and resumes from its last checkpoint).
    """
    lineage = finished_run(hub, repo_id, branch)
    if lineage is None:
        return
    if not overwrite:
        raise RunBranchError(
            f"{repo_id}@{branch} already holds a finished SFT run; choose another `run_branch` or set "
            "`overwrite_branch: true` to replace it"
        )
    logger.warning("overwriting the finished run on %s@%s", repo_id, branch)


SKIPPED_ROWS_FILE = "skipped_rows.jsonl"


def write_skipped_rows(quarantine: Quarantine, output_dir: str | os.PathLike) -> Path | None:
    """Write the rows that skip mode dropped (record_id, field, reason, the record) as JSON lines into ``output_dir``,
    so they are pushed with the weights; removes a stale file of an earlier run when nothing was skipped."""
    path = Path(output_dir) / SKIPPED_ROWS_FILE
    if not len(quarantine):
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in quarantine.to_rows():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def skipped_rows_note(quarantine: Quarantine) -> str:
    """The card's sentence on skipped rows ("" when none were skipped)."""
    if not len(quarantine):
        return ""
    return (
        f"\n\n**{len(quarantine)} row(s) of the data were skipped** (`errors: skip`), by reason: {quarantine.summary()}. "
        f"Each is listed with its reason in [`{SKIPPED_ROWS_FILE}`]({SKIPPED_ROWS_FILE})."
    )


def stage_output(
    output_dir: str | os.PathLike, staging: str | os.PathLike, exclude: Sequence[str] = NOT_PUSHED
) -> Path:
    """Hard-link (or copy) the model artifact files of ``output_dir`` into ``staging``: everything but checkpoints and
    the pickled training arguments (TensorBoard's ``runs/`` event files go with the model)."""
    output_dir, staging = Path(output_dir), Path(staging)
    for file in sorted(p for p in output_dir.rglob("*") if p.is_file()):
        rel = file.relative_to(output_dir)
        if any(fnmatch(part, pattern) for part in rel.parts for pattern in exclude):
            continue
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, target)
        except OSError:
            shutil.copyfile(file, target)
    return staging


def describe_run(
    base: str, adapter: bool, metrics: Mapping[str, Any], rows: int, resumed_from: str | None = None
) -> str:
    """The model card's opening paragraph and a table of the run's figures (all from the run that made the weights:
    losses and steps from its trainer state; runtime and speeds from the last session when it was resumed)."""
    kind = "A LoRA adapter for" if adapter else "A full fine-tune of"
    lines = [f"{kind} `{base}`, trained with TRL's `SFTTrainer` (assistant-only loss) on {rows} conversation(s)."]
    if resumed_from:
        lines.append(
            f"The run was resumed from its own `{resumed_from}` (same run fingerprint; weights, optimizer and data "
            "order restored): losses and steps cover the whole run, runtime and speeds the last session only."
        )
    lines += ["", "| metric | value |", "|---|---|"]
    for key, value in sorted(metrics.items()):
        lines.append(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    if adapter:
        lines += ["", "Load with `peft.PeftModel.from_pretrained(base_model, <this repo>, revision=<commit>)`."]
    return "\n".join(lines)


class SFTRunTrainer(ExactResumeMixin, SFTTrainer):
    """TRL's `SFTTrainer` that resumes a full fine-tune with every tensor of its checkpoint
    (`vital.runs.ExactResumeMixin`): the plain Trainer misses LLaVA's and Qwen2-VL's saved key names."""


# ----------------------------------------------------------------------------------------------------------------------
# Launch checks and callbacks
# ----------------------------------------------------------------------------------------------------------------------
def check_cpu_launch(use_cpu: bool) -> None:
    """Refuse the silent trap of ``accelerate launch`` with a MULTI_GPU config on a machine without a GPU: unless the
    trainer is told ``use_cpu: true``, each process runs alone and all write the same output."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not use_cpu and not torch.cuda.is_available():
        raise RuntimeError(
            f"launched as {world_size} processes but no GPU is available and `use_cpu` is false: each process would "
            "train alone and overwrite the others' output. Set `use_cpu: true` in the recipe (two gloo processes)."
        )


class ThroughputCallback(TrainerCallback):
    """Adds ``tokens_per_second`` and ``samples_per_second`` (since the previous log, all processes together) to each
    training log, and keeps a run summary (``train_tokens``, ``train_tokens_per_second``) in `summary`.

    Tokens are what `SFTTrainer` counts in its ``num_tokens`` metric: every non-padding input token (prompt, image
    tokens and answers).
    """

    def __init__(self) -> None:
        self.summary: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._last = time.perf_counter()
        self._last_step = state.global_step
        self._tokens = 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "num_tokens" not in logs or "loss" not in logs:
            return
        now = time.perf_counter()
        elapsed = max(now - self._last, 1e-9)
        samples = (state.global_step - self._last_step) * args.train_batch_size * args.gradient_accumulation_steps
        samples *= args.world_size
        added = {
            "tokens_per_second": round((logs["num_tokens"] - self._tokens) / elapsed, 2),
            "samples_per_second": round(samples / elapsed, 3),
        }
        self._tokens, self._last, self._last_step = logs["num_tokens"], now, state.global_step
        logs.update(added)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(added)

    def on_train_end(self, args, state, control, **kwargs):
        # Tokens as of the last log: with logging_steps 1 (the recipes' setting) that is every step.
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self.summary = {"train_tokens": self._tokens, "train_tokens_per_second": round(self._tokens / elapsed, 2)}


__all__ = [
    "CAPTION_PROMPTS",
    "FREEZE_CHOICES",
    "SFT_FEATURES",
    "DatasetSpec",
    "ModelSource",
    "RunBranchError",
    "SFTRunTrainer",
    "ThroughputCallback",
    "check_cpu_launch",
    "check_run_branch",
    "check_sft_rows",
    "count_parameters",
    "base_model_folder",
    "default_run_branch",
    "describe_run",
    "detect_format",
    "finished_run",
    "folder_fingerprint",
    "freeze_modules",
    "load_sft_dataset",
    "load_sft_mixture",
    "mix_datasets",
    "model_lineage",
    "same_finished_run",
    "pairs_to_caption_conversations",
    "parse_dataset_specs",
    "resolve_model",
    "source_name",
    "stage_output",
]
