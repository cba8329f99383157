"""The sample data shipped inside the package: real biomedical images with captions and demonstrations.

* ``pairs.json`` + ``images/*.png``: image-caption pairs in the ``pairs`` contract (`PAIR_FEATURES`).
* ``demos.json``: demonstration conversations, one per modality, each naming the pair it is about (``pair_id``).
* ``SOURCES.md``: where every image comes from, its licence and how it was transformed
  (``python -m vital.data.sample.build_sample`` rebuilds the images and that table).

The images are real (bundled in pydicom, pydicom-data, nibabel and scikit-image); the captions, mentions and
conversations were written for this project and are not clinician-reviewed. They exist so that every stage can run and
be tested offline, end to end, on a small but genuine input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vital.data.errors import RecordError


if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["load_sample_demos", "load_sample_pairs", "sample_dir", "sample_manifest_sha256"]

PAIRS_FILE = "pairs.json"
DEMOS_FILE = "demos.json"
IMAGES_DIR = "images"


def sample_dir() -> Path:
    """The folder holding the sample files (inside the installed package)."""
    return Path(__file__).resolve().parent


def _read_records(name: str) -> list[dict[str, Any]]:
    records = json.loads((sample_dir() / name).read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ValueError(f"{name}: expected a JSON list of records")
    return records


def load_sample_pairs() -> Dataset:
    """The bundled image-caption pairs as a `datasets.Dataset` with exactly `PAIR_FEATURES`.

    Images are embedded as PNG bytes (with the bare file name as ``path``), so the dataset does not depend on where the
    package is installed and pushes to the Hub as is.
    """
    from datasets import Dataset

    from vital.data.schemas import PAIR_FEATURES

    rows = []
    for record in _read_records(PAIRS_FILE):
        record_id = record.get("id")
        name = record.get("image")
        path = sample_dir() / IMAGES_DIR / str(name)
        if not isinstance(name, str) or not path.is_file():
            raise RecordError(record_id, "image", f"bundled image not found: {name!r}")
        row = {key: record.get(key) for key in PAIR_FEATURES}
        row["image"] = {"bytes": path.read_bytes(), "path": name}
        rows.append(row)
    return Dataset.from_list(rows, features=PAIR_FEATURES)


def load_sample_demos(pairs: Dataset | None = None) -> Dataset:
    """The bundled demonstrations as a `datasets.Dataset` with exactly `DEMO_FEATURES`.

    Each demo is joined to its pair by ``pair_id``: the pair's columns (image, caption, mentions, modality, source, ...)
    come from ``pairs`` when given (a stage joins the demos to the pairs it loaded from the Hub) and from the bundled
    pairs otherwise. The demo keeps its own ``id``. Messages become TRL typed parts, with the image placeholder at the
    start of the first user turn.

    Raises:
        RecordError: naming the demo and field, when a demo's pair is missing or its messages are malformed.
    """
    from datasets import Dataset, Features, Image, Value

    from vital.data.schemas import DEMO_FEATURES, PAIR_FEATURES, check_columns

    if pairs is None:
        pairs = load_sample_pairs()
    check_columns(pairs, "pairs")
    demos = _read_records(DEMOS_FILE)
    index = {pair_id: i for i, pair_id in enumerate(pairs["id"])}
    wanted = []
    for demo in demos:
        pair_id = demo.get("pair_id")
        if pair_id not in index:
            raise RecordError(demo.get("id"), "pair_id", f"no pair with id {pair_id!r} among {len(pairs)} pairs")
        wanted.append(index[pair_id])
    # Keep image cells as stored (bytes and/or path) rather than decoding and re-encoding them.
    raw = pairs.select_columns(list(PAIR_FEATURES)).cast_column("image", Image(decode=False)).select(wanted)
    rows = []
    for demo, pair in zip(demos, raw, strict=True):
        row = dict(pair)
        row["image"] = _embedded(pair["image"], demo.get("id"))
        row["id"] = demo.get("id")
        row["pair_id"] = pair["id"]
        row["messages"] = _typed_messages(demo.get("messages"), demo.get("id"))
        row["cluster"] = demo.get("cluster", -1)
        row["curated_by"] = demo.get("curated_by")
        rows.append(row)
    return Dataset.from_list(rows, features=Features({**DEMO_FEATURES, "pair_id": Value("string")}))


def _embedded(cell: Mapping[str, Any], record_id: Any) -> dict[str, Any]:
    """An image cell with its bytes inline, reading a local path if that is all the cell has."""
    data, path = cell.get("bytes"), cell.get("path")
    if data is None:
        if not path or not Path(path).is_file():
            raise RecordError(record_id, "image", f"the pair's image has no bytes and no readable path ({path!r})")
        data = Path(path).read_bytes()
    return {"bytes": data, "path": Path(path).name if path else None}


def _typed_messages(messages: Any, record_id: Any) -> list[dict[str, Any]]:
    """``[{"role", "content": str}]`` -> TRL typed parts, the image part first in the first user turn."""
    from vital.data.schemas import image_part, text_part

    if not isinstance(messages, list) or not messages:
        raise RecordError(record_id, "messages", "expected a non-empty list of messages")
    typed, image_placed = [], False
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise RecordError(record_id, f"messages[{i}].content", "expected a message with string content")
        parts = [text_part(message["content"])]
        if message.get("role") == "user" and not image_placed:
            parts.insert(0, image_part())
            image_placed = True
        typed.append({"role": message.get("role"), "content": parts})
    return typed


def sample_manifest_sha256() -> str:
    """A sha256 over the sample's JSON files and images (sorted by path): the lineage of the sample data."""
    root = sample_dir()
    files = sorted([root / PAIRS_FILE, root / DEMOS_FILE, *(root / IMAGES_DIR).glob("*.png")])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
