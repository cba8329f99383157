"""The data of an SFT run: one dataset or a weighted mixture, each read from the hub at a pinned commit.

The configuration has TRL's shape (`trl.scripts.utils.DatasetMixtureConfig`, a ``datasets:`` list of
`DatasetConfig`-like entries), with a ``revision`` per dataset and our ``weight`` (the share of that dataset's rows
drawn; above 1 repeats it). TRL's ``fraction`` (a share of the final mixture, normalised over the datasets) is refused
with a message rather than read as a weight. A single dataset is named by the script arguments instead, as in TRL's
``sft.py`` (``dataset_name``, ``dataset_config``, ``dataset_revision``, ``dataset_train_split``).

Every read is pinned: the revision is resolved to a commit first, and the `ArtifactRef` returned with the data is
what the model card records (`mixture_record`). Example::

    hub = get_hub("local:outputs/hub")
    mixture = SFTDatasetMixtureConfig(
        datasets=[{"path": "quickstart/selected", "name": "top40"}, {"path": "quickstart/demos", "weight": 2.0}]
    )
    data = load_sft_data(hub, mixture.datasets, seed=0)
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, concatenate_datasets

from vital.data.errors import ErrorMode, Quarantine
from vital.data.inputs import require_columns
from vital.hub import ArtifactRef, Hub, parse_repo_ref
from vital.sft.data import check_sft_rows, detect_format, source_name, to_sft_rows


logger = logging.getLogger(__name__)


@dataclass
class SFTDatasetConfig:
    """
    One dataset of an SFT mixture: TRL's `DatasetConfig` read from the recipe's hub at a pinned revision, with a
    mixture weight.

    Parameters:
        path (`str`):
            Dataset repo id on the recipe's hub.
        name (`str`, *optional*):
            Dataset configuration name (the `name` argument of `datasets.load_dataset`). Unset: the default one.
        revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit read. It is resolved to a commit before loading, and the card records that commit.
        split (`str`, *optional*, defaults to `"train"`):
            Split trained on.
        weight (`float`, *optional*, defaults to `1.0`):
            Share of this dataset's own rows drawn into the mixture: `0.5` draws half of them (seeded, without
            replacement), `2.5` repeats them twice and draws half once more. Not TRL's `fraction` (a share of the final
            mixture, normalised over the datasets), which is refused.
    """

    path: str
    name: str | None = None
    revision: str = "main"
    split: str = "train"
    weight: float = 1.0

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"dataset {self.path!r}: `path` must be a dataset repo id")
        try:
            self.weight = float(self.weight)
        except (TypeError, ValueError) as e:
            raise ValueError(f"dataset {self.path}: weight {self.weight!r} is not a number") from e
        if not self.weight > 0:
            raise ValueError(f"dataset {self.path}: the weight must be positive, got {self.weight:g}")

    @classmethod
    def from_dict(cls, entry: Any, index: int = 0) -> SFTDatasetConfig:
        """An entry of a YAML ``datasets:`` list; unknown keys are refused, TRL's ``fraction`` with the reason."""
        if isinstance(entry, cls):
            return entry
        if isinstance(entry, str):  # `--datasets org/a org/b` on the command line
            return cls(entry)
        if not isinstance(entry, dict):
            raise ValueError(f"datasets[{index}]: expected a mapping with `path`, got {type(entry).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if "fraction" in entry:
            raise ValueError(
                f"datasets[{index}] ({entry.get('path')}): `fraction` (TRL's share of the final mixture, normalised "
                "over the datasets) is not supported; use `weight`, the share of this dataset's own rows drawn "
                "(above 1 repeats them)"
            )
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(
                f"datasets[{index}] ({entry.get('path')}): unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        if "path" not in entry:
            raise ValueError(f"datasets[{index}]: no `path` (the dataset repo id)")
        return cls(**entry)

    def __str__(self) -> str:
        return f"{self.path}@{self.revision}" + (f":{self.name}" if self.name else "") + f" x{self.weight:g}"


@dataclass
class SFTDatasetMixtureConfig:
    """
    A mixture of SFT datasets, in the shape of TRL's `DatasetMixtureConfig` (a `datasets:` list in the recipe's YAML).

    Parameters:
        datasets (`list[SFTDatasetConfig]`, *optional*, defaults to `[]`):
            The datasets mixed, each with `path`, `name`, `revision`, `split` and `weight` (see `SFTDatasetConfig`).
            When set, the script's `dataset_name` must be unset.

    Usage:

    ```yaml
    datasets:
      - path: quickstart/selected
        name: top40
        revision: main
        weight: 1.0
      - path: quickstart/demos
        weight: 2.0
    ```
    """

    datasets: list[SFTDatasetConfig] = field(
        default_factory=list,
        metadata={
            "help": "Datasets mixed: a YAML list of {path, name, revision, split, weight} (weight: the share of the "
            "dataset's rows drawn; above 1 repeats them)."
        },
    )

    def __post_init__(self):
        self.datasets = [SFTDatasetConfig.from_dict(entry, i) for i, entry in enumerate(self.datasets or [])]


def training_datasets(script_args: Any, mixture: SFTDatasetMixtureConfig) -> list[SFTDatasetConfig]:
    """The datasets a run trains on: the mixture's ``datasets``, or the one the script arguments name
    (``dataset_name`` at ``dataset_revision``, config ``dataset_config``, split ``dataset_train_split``)."""
    if mixture.datasets and script_args.dataset_name:
        raise ValueError("both `dataset_name` and `datasets` are set: name one dataset, or list a mixture, not both")
    if mixture.datasets:
        return list(mixture.datasets)
    if not script_args.dataset_name:
        raise ValueError("no data: set `dataset_name` (one dataset) or `datasets` (a mixture)")
    return [
        SFTDatasetConfig(
            script_args.dataset_name,
            script_args.dataset_config,
            script_args.dataset_revision,
            script_args.dataset_train_split,
        )
    ]


def load_sft_dataset(
    hub: Hub, dataset: str | SFTDatasetConfig, split: str | None = None
) -> tuple[Dataset, ArtifactRef]:
    """Load one input at its pinned commit and normalise it to `vital.sft.data.SFT_FEATURES`.

    Args:
        hub: where the dataset lives.
        dataset: an `SFTDatasetConfig`, or a repo id ``"repo[@revision]"`` (default config, split ``train``).
        split: overrides the dataset's split.

    Returns:
        The rows and the lineage record (the commit the revision resolved to).
    """
    if isinstance(dataset, str):
        repo_id, revision = parse_repo_ref(dataset)
        dataset = SFTDatasetConfig(repo_id, revision=revision)
    ref = hub.ref(dataset.path, dataset.revision, "dataset", dataset.name)
    rows = hub.load_dataset(dataset.path, name=dataset.name, revision=ref.commit, split=split or dataset.split)
    require_columns(rows, "sft", "train", ref)
    fmt = detect_format(rows.column_names)
    logger.info("dataset %s (%s format): %d rows", ref, fmt, len(rows))
    return to_sft_rows(rows, source_name(ref), fmt), ref


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
    hub: Hub, datasets: Sequence[SFTDatasetConfig], seed: int = 0, split: str | None = None, weighted: bool = True
) -> tuple[Dataset, list[ArtifactRef]]:
    """Load every input (`load_sft_dataset`) and mix them (`mix_datasets`; all weights 1 when not ``weighted``)."""
    loaded = [load_sft_dataset(hub, dataset, split) for dataset in datasets]
    parts = [(rows, d.weight if weighted else 1.0) for (rows, _), d in zip(loaded, datasets, strict=True)]
    return mix_datasets(parts, seed), [ref for _, ref in loaded]


@dataclass
class SFTData:
    """What `load_sft_data` returns: the checked training rows, the evaluation rows (or None), the lineage of every
    input, the rows skip mode dropped, and the mixture as the card lists it."""

    train: Dataset
    eval: Dataset | None
    refs: list[ArtifactRef]
    quarantine: Quarantine
    mixture: list[dict[str, Any]]


def load_sft_data(
    hub: Hub,
    datasets: Sequence[SFTDatasetConfig],
    seed: int = 0,
    test_split: str | None = None,
    errors: ErrorMode = "raise",
) -> SFTData:
    """The training mixture (weighted) and, with ``test_split``, the same datasets' ``test_split`` (unweighted), each at
    a pinned commit and checked row by row (`check_sft_rows`: ``errors="raise"`` stops naming the row, ``"skip"``
    drops it into the quarantine)."""
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    train, refs = load_sft_mixture(hub, datasets, seed=seed)
    train, quarantine = check_sft_rows(train, errors)
    evaluation = None
    if test_split:
        evaluation, _ = load_sft_mixture(hub, datasets, seed, test_split, weighted=False)
        evaluation, eval_quarantine = check_sft_rows(evaluation, errors)
        quarantine.extend(eval_quarantine)
    if len(quarantine):
        logger.warning("%d row(s) skipped, by reason: %s", len(quarantine), quarantine.summary())
    logger.info("training on %d rows from %s", len(train), ", ".join(map(str, refs)))
    return SFTData(train, evaluation, refs, quarantine, mixture_record(datasets, refs))


def mixture_record(datasets: Sequence[SFTDatasetConfig], refs: Sequence[ArtifactRef]) -> list[dict[str, Any]]:
    """The mixture as the card's lineage lists it: each dataset with the revision asked for and the commit read."""
    return [
        {
            "path": d.path,
            "name": d.name,
            "revision": d.revision,
            "commit": ref.commit,
            "split": d.split,
            "weight": d.weight,
        }
        for d, ref in zip(datasets, refs, strict=True)
    ]
