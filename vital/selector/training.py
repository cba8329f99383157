"""What the ``train_selector`` and ``sweep_clinician_weight`` recipes share: backbone, data assembly, fit, metrics.

- :func:`resolve_backbone` / :func:`load_selector`: the backbone spec of a recipe (``hub:<repo>@<rev>`` on the
  recipe's hub, a local folder, a Hugging Face Hub id, or an open_clip name such as BiomedCLIP) -> a fresh selector
  and its processor, with the lineage record of the backbone.
- :func:`load_clinician_preferences`: clinician pairs from a preferences repo (the annotation app's export), a
  JSON / JSON lines / CSV file, or the bundled sample joined with the answer pairs.
- :func:`split_clinician_pairs`: held-out clinician pairs by figure (no image on both sides), or none when too few.
- :func:`as_judge_pair_features`: clinician rows in the judge-pair columns, so both kinds share one dataset.
- :func:`fit_selector`: train with :class:`~vital.selector.SelectorTrainer`, then evaluate every held-out set and
  summarise the paper's metrics (:func:`summarize_metrics`).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Image, List, concatenate_datasets

from vital.data.schemas import PREFERENCE_FEATURES
from vital.hub import ArtifactRef, Hub, parse_repo_ref, sha256_file
from vital.selector.data import JUDGE_PAIR_FEATURES, load_clinician_pairs


logger = logging.getLogger(__name__)

__all__ = [
    "BackboneSource",
    "as_judge_pair_features",
    "fit_selector",
    "folder_fingerprint",
    "load_clinician_preferences",
    "load_selector",
    "resolve_backbone",
    "split_clinician_pairs",
    "summarize_metrics",
]

_OPEN_CLIP_PREFIXES = ("open_clip:", "hf-hub:")


# ---------------------------------------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone is: ``path`` (folder, Hub id or open_clip name) to load, at ``revision``, and its lineage."""

    spec: str
    path: str
    revision: str | None
    lineage: ArtifactRef | dict[str, Any]

    @property
    def is_open_clip(self) -> bool:
        return self.path.startswith(_OPEN_CLIP_PREFIXES)

    @property
    def hub_id(self) -> str | None:
        """The Hugging Face Hub repo the weights come from (a model card's ``base_model``), if any."""
        if self.is_open_clip:
            name = self.path.removeprefix("open_clip:")
            return name.removeprefix("hf-hub:") if name.startswith("hf-hub:") else None
        return self.spec if isinstance(self.lineage, dict) and "repo_id" in self.lineage else None

    @property
    def repo_name(self) -> str:
        """How a saved selector's ``config.json`` names its backbone (``_name_or_path``): the repo id (a ``hub:``
        repo or a Hub id), never a folder on this machine (a local folder gives ``""``)."""
        if isinstance(self.lineage, ArtifactRef):
            return self.lineage.repo_id
        return self.hub_id or ""


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over the sorted (relative path, content sha256) of a folder's files: what a local model folder is."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(folder).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def resolve_backbone(hub: Hub, spec: str, revision: str = "main") -> BackboneSource:
    """Resolve a recipe's ``backbone``.

    * ``hub:<repo>[@<revision>]``: a model repo on the recipe's hub, read at a pinned commit (the quickstart's
      ``hub:quickstart/tiny-clip``, pushed by the ``tiny_models`` stage).
    * ``open_clip:<name>[@<tag>]`` or ``hf-hub:<repo>``: an open_clip model (BiomedCLIP:
      ``open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``; needs the ``biomedclip`` extra),
      or ``open_clip:local-dir:<folder>``, a folder in open_clip's Hub layout (lineage: its fingerprint).
    * an existing folder: used as is (lineage: its path and fingerprint).
    * anything else: a Hugging Face Hub id of a CLIP-family dual encoder (``openai/clip-vit-base-patch16``,
      ``google/siglip-base-patch16-224``, ...), loaded at ``revision``.
    """
    if spec.startswith("hub:"):
        repo_id, rev = parse_repo_ref(spec[len("hub:") :], default_revision=revision)
        ref = hub.ref(repo_id, rev, "model")
        return BackboneSource(spec, str(hub.snapshot(repo_id, ref.commit, "model")), None, ref)
    if spec.startswith(_OPEN_CLIP_PREFIXES):
        lineage = {"source": spec, "repo_type": "model", "library": "open_clip"}
        local = spec.removeprefix("open_clip:")
        if local.startswith("local-dir:"):  # a folder in open_clip's Hub layout: record what it holds
            lineage["sha256"] = folder_fingerprint(local.removeprefix("local-dir:").partition("@")[0])
        return BackboneSource(spec, spec, None, lineage)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return BackboneSource(
            spec, str(folder), None, {"source": str(folder.resolve()), "sha256": folder_fingerprint(folder)}
        )
    return BackboneSource(spec, spec, revision, {"repo_id": spec, "repo_type": "model", "revision": revision})


def load_selector(source: BackboneSource, seed: int | None = None, **config: Any) -> tuple[Any, Any]:
    """A fresh selector (backbone weights + a new head) and its processor.

    ``config`` holds :class:`~vital.selector.SelectorConfig` fields (``hidden_sizes``, ``text_fields``, ...). With
    ``seed`` the head is initialised under that torch seed (the caller's RNG state is left alone), so runs that differ
    only in their data or weights start from the same model.
    """
    import torch
    from transformers import AutoModel, AutoProcessor

    from vital.selector.modeling import SelectorModel

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if source.is_open_clip:
            model = SelectorModel.from_backbone(source.path, **config)
            return model, model.backbone.build_processor()
        kwargs = {"revision": source.revision} if source.revision else {}
        backbone = AutoModel.from_pretrained(source.path, **kwargs)
        processor = AutoProcessor.from_pretrained(source.path, **kwargs)
        backbone.config._name_or_path = source.repo_name  # loaded from a local snapshot: no path in the saved config
        commit = getattr(backbone.config, "_commit_hash", None)
        if commit and isinstance(source.lineage, dict) and "repo_id" in source.lineage:
            source.lineage["commit"] = commit  # a Hub id: record the commit transformers loaded
        return SelectorModel.from_backbone(backbone, **config), processor


# ---------------------------------------------------------------------------------------------------------------------
# Clinician pairs
# ---------------------------------------------------------------------------------------------------------------------
def load_clinician_preferences(
    hub: Hub,
    spec: str | None,
    weight: float = 1.0,
    answer_pairs_repo: str | None = None,
    answer_pairs_revision: str = "main",
    image_root: str | None = None,
) -> tuple[Dataset | None, list[ArtifactRef | dict[str, Any]]]:
    """Clinician pairs (``preferences`` rows, ``source="clinician"``, the given ``weight``) and their lineage.

    ``spec``:

    * ``None`` / ``"none"``: no clinician pairs.
    * ``"sample"``: the bundled sample judgements (``vital.data.sample_preferences``; written by the maintainers,
      not clinicians) joined with the answer pairs at ``answer_pairs_repo@answer_pairs_revision``.
    * a ``.json`` / ``.jsonl`` / ``.csv`` file: flat rows (question, chosen, rejected, image, annotator) or
      preference rows, read by :func:`vital.selector.load_clinician_pairs`.
    * ``repo[@revision]``: a preferences dataset on the hub, e.g. the annotation app's export (split ``train``;
      rows whose ``source`` is ``model`` are left out).
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return None, []
    if spec == "sample":
        from vital.data.sample_preferences import load_sample_preferences, sample_preferences_sha256

        if not answer_pairs_repo:
            raise ValueError("clinician_preferences 'sample' joins the sample judgements with answer_pairs_repo")
        ref = hub.ref(answer_pairs_repo, answer_pairs_revision)
        answer_pairs = hub.load_dataset(answer_pairs_repo, revision=ref.commit, split="train")
        pairs = load_sample_preferences(answer_pairs, weight=weight)
        if not len(pairs):
            raise ValueError(
                f"no sample judgement matches a question of {ref}: the sample covers the stand-in's answer pairs only"
            )
        sample = {"source": "biomed-vital sample clinician preferences", "sha256": sample_preferences_sha256()}
        return pairs, [ref, sample]
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".json", ".jsonl", ".csv"):
        if not path.is_file():
            raise FileNotFoundError(f"clinician preferences file {path} not found")
        return load_clinician_pairs(path, weight=weight, image_root=image_root), [
            {"source": str(path), "sha256": sha256_file(path)}
        ]
    repo_id, revision = parse_repo_ref(spec)
    ref = hub.ref(repo_id, revision)
    rows = hub.load_dataset(repo_id, revision=ref.commit, split="train")
    if "images" in rows.column_names:
        rows = rows.cast_column("images", List(Image(decode=False)))
    if "source" in rows.column_names:
        kept = rows.filter(lambda source: source != "model", input_columns="source")
        if len(kept) < len(rows):
            logger.info("%s: %d model-preference row(s) left out", ref, len(rows) - len(kept))
        rows = kept
    return load_clinician_pairs(rows, weight=weight), [ref]


def _image_key(images: Any) -> str:
    cell = (images or [None])[0]
    if isinstance(cell, Mapping):
        data = cell.get("bytes") or (cell.get("path") or "").encode()
    elif hasattr(cell, "save"):
        buffer = io.BytesIO()
        cell.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        data = repr(cell).encode()
    return hashlib.sha256(data).hexdigest()


def split_clinician_pairs(
    pairs: Dataset, heldout_fraction: float, min_heldout: int, seed: int = 0
) -> tuple[Dataset, Dataset | None]:
    """``(train, heldout)`` clinician pairs, split by figure so no image is on both sides.

    Figures (the first image's bytes) are ordered by a hash of ``(seed, image)`` and held out in that order until at
    least ``heldout_fraction`` of the pairs are. If that holds fewer than ``min_heldout`` pairs, or would leave no
    training pair, nothing is held out: ``(pairs, None)``, and the caller reports clinician alignment on the training
    pairs, saying so.
    """
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction}")
    if heldout_fraction == 0 or not len(pairs):
        return pairs, None
    raw = pairs.cast_column("images", List(Image(decode=False)))
    keys = [_image_key(images) for images in raw["images"]]
    order = sorted(set(keys), key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    wanted, held = heldout_fraction * len(pairs), set()
    for key in order:
        if sum(k in held for k in keys) >= wanted:
            break
        held.add(key)
    heldout = [i for i, k in enumerate(keys) if k in held]
    if len(heldout) < max(min_heldout, 1) or len(heldout) == len(pairs):
        return pairs, None
    train = [i for i, k in enumerate(keys) if k not in held]
    return pairs.select(train), pairs.select(heldout)


def as_judge_pair_features(pairs: Dataset) -> Dataset:
    """Preference rows in :data:`~vital.selector.JUDGE_PAIR_FEATURES`: the per-side columns are null (a clinician
    pair shares its prompt and image), so clinician and judge pairs concatenate into one dataset."""
    if pairs.features == JUDGE_PAIR_FEATURES:
        return pairs
    pairs = pairs.select_columns(list(PREFERENCE_FEATURES))
    for name, feature in JUDGE_PAIR_FEATURES.items():
        if name not in pairs.column_names:
            pairs = pairs.add_column(name, [None] * len(pairs), feature=feature)
    return pairs.cast(JUDGE_PAIR_FEATURES)


def training_pairs(judge_pairs: Dataset, clinician_pairs: Dataset | None) -> Dataset:
    """Judge and clinician pairs as one dataset in :data:`~vital.selector.JUDGE_PAIR_FEATURES`."""
    parts = [as_judge_pair_features(judge_pairs)]
    if clinician_pairs is not None and len(clinician_pairs):
        parts.append(as_judge_pair_features(clinician_pairs))
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------------------------------------------------------------
# Fit and evaluate
# ---------------------------------------------------------------------------------------------------------------------
def fit_selector(
    model: Any,
    processor: Any,
    args: Any,
    train_dataset: Dataset,
    eval_sets: Mapping[str, Dataset],
    peft_config: Any = None,
    resume_from_checkpoint: str | None = None,
    callbacks: list[Any] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Train a selector, then evaluate it on every non-empty set of ``eval_sets`` (``judge``, ``clinician``, ...).

    Returns the trainer and the metrics: ``train_loss`` and friends, and ``<set>_<metric>`` for every evaluation set
    (``judge_pair_accuracy``, ``judge_auc``, ``clinician_pair_accuracy``, ...). A resumed full fine-tune reloads
    every tensor of its checkpoint (`vital.runs.ExactResumeMixin`); ``callbacks`` go to the trainer.
    """
    from vital.runs import ExactResumeMixin
    from vital.selector.trainer import SelectorTrainer

    trainer_class = type("ResumableSelectorTrainer", (ExactResumeMixin, SelectorTrainer), {})
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = dict(result.metrics)
    for name, dataset in eval_sets.items():
        if dataset is not None and len(dataset):
            metrics.update(trainer.evaluate(eval_dataset=dataset, metric_key_prefix=name))
    return trainer, metrics


def summarize_metrics(
    metrics: Mapping[str, float], clinician_set: str | None, n_clinician: int = 0, mean_rank: str = "ours"
) -> dict[str, Any]:
    """The headline figures of a fit: held-out judge accuracy, AUC, normalised mean rank and MAP, and clinician
    alignment, AUC, MAP and mean rank with where they were measured (``heldout``, or ``train (not held out)`` when
    too few clinician pairs).

    ``mean_rank="ours"``: ``mean_rank`` is the 1-based mean rank over n on the held-out judge pairs;
    ``"official"``: the official code's 0-based mean rank over n on the clinician pairs (``mean_rank_on`` says which).
    """
    if mean_rank not in ("ours", "official"):
        raise ValueError(f"mean_rank must be 'ours' or 'official', got {mean_rank!r}")
    out: dict[str, Any] = {}
    for key, name in (("pair_accuracy", "judge_accuracy"), ("auc", "auc"), ("map", "map")):
        if f"judge_{key}" in metrics:
            out[name] = float(metrics[f"judge_{key}"])
    if mean_rank == "ours" and "judge_mean_rank" in metrics:
        out["mean_rank"], out["mean_rank_on"] = float(metrics["judge_mean_rank"]), "judge, 1-based over n"
    if clinician_set is not None and f"{clinician_set}_pair_accuracy" in metrics:
        out["clinician_alignment"] = float(metrics[f"{clinician_set}_pair_accuracy"])
        for key in ("auc", "map"):
            if f"{clinician_set}_{key}" in metrics:
                out[f"clinician_{key}"] = float(metrics[f"{clinician_set}_{key}"])
        if mean_rank == "official" and f"{clinician_set}_mean_rank_0based" in metrics:
            out["mean_rank"] = float(metrics[f"{clinician_set}_mean_rank_0based"])
            out["mean_rank_on"] = "clinician, 0-based over n (official)"
        out["clinician_alignment_n"] = int(n_clinician)
        out["clinician_alignment_on"] = (
            f"heldout ({n_clinician} pairs)"
            if clinician_set == "clinician"
            else f"train, not held out ({n_clinician} pairs; too few to hold any out)"
        )
    if "train_loss" in metrics:
        out["train_loss"] = float(metrics["train_loss"])
    return out
