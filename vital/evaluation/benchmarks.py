"""The evaluation sets in one schema: VQA-RAD, SLAKE (English) and PathVQA, and LLaVA-Med's open visual chat questions.

VQA sets are read from Hub dataset repos through `Hub.load_dataset` (so a local hub works the same as the Hugging Face
Hub) and normalised into `VQA_FEATURES`:

    id, image, question, answer, answer_type ("open" | "closed"), split, benchmark

Each source needs its own care, decided by the columns it has, not by its name:

* ``flaviagiammarino/vqa-rad`` and ``flaviagiammarino/path-vqa`` (parquet: ``image``, ``question``, ``answer``) carry
  no answer type: an answer that is ``yes`` or ``no`` makes the item closed, anything else open. For PathVQA this is
  the dataset's own definition; for VQA-RAD it approximates the original labels (a few closed questions there have
  other answers, e.g. "left"), so VQA-RAD closed counts can differ slightly from papers that used the original JSON.
* ``BoKelvin/SLAKE`` (``train.json`` / ``validation.json`` / ``test.json`` plus ``imgs.zip``) has ``answer_type``
  (OPEN/CLOSED), ``q_lang`` (English and Chinese questions: only ``en`` is kept) and image file names
  (``img_name``) that resolve inside the repo's ``imgs.zip``; it is extracted once into a cache folder.

**Pin the revisions.** A benchmark is named ``name[=repo_id][@revision][:split]``; the default revision is ``main``,
which moves. Reported numbers must name a commit: the recipe resolves every revision to its commit and records it in
the eval card and in the model card's ``model-index`` (``dataset_revision``), and warns when a revision is a branch.

The open-chat questions use LLaVA-Med's question file (``llava_med_eval_qa50_qa.jsonl``) and an image folder, read
into `CHAT_FEATURES` (``domain`` becomes one name, LLaVA-Med's first true flag; ``in_text_mention`` a list of text).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Image, List, Value

from vital.data.inputs import require_columns
from vital.hub import ArtifactRef, Hub, HubError, parse_repo_ref


logger = logging.getLogger(__name__)

VQA_FEATURES = Features(
    {
        "id": Value("string"),
        "image": Image(),
        "question": Value("string"),
        "answer": Value("string"),
        "answer_type": Value("string"),  # "open" | "closed"
        "split": Value("string"),
        "benchmark": Value("string"),
    }
)

CHAT_FEATURES = Features(
    {
        "question_id": Value("string"),
        "image": Image(),
        "pair_id": Value("string"),
        "text": Value("string"),
        "gpt4_answer": Value("string"),
        "fig_caption": Value("string"),
        "in_text_mention": List(Value("string")),
        "domain": Value("string"),
        "type": Value("string"),  # LLaVA-Med: "conversation" or "detailed_description"
    }
)

ANSWER_TYPES = ("open", "closed")
# LLaVA-Med's summary takes the first true domain flag in this order.
CHAT_DOMAINS = ("chest_xray", "mri", "histology", "gross", "ct_scan")


@dataclass(frozen=True)
class KnownBenchmark:
    repo_id: str
    display_name: str
    split: str = "test"


KNOWN_BENCHMARKS: dict[str, KnownBenchmark] = {
    "vqa-rad": KnownBenchmark("flaviagiammarino/vqa-rad", "VQA-RAD"),
    "slake": KnownBenchmark("BoKelvin/SLAKE", "SLAKE"),
    "path-vqa": KnownBenchmark("flaviagiammarino/path-vqa", "PathVQA"),
}

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][\w.-]*)(?:=(?P<repo>[^@:]+))?(?:@(?P<rev>[^:]+))?(?::(?P<split>[\w.-]+))?$")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Which VQA set to evaluate on: a name (the config name in the eval dataset), a dataset repo, a revision (pin a
    commit) and a split."""

    name: str
    repo_id: str
    revision: str = "main"
    split: str = "test"

    @classmethod
    def parse(cls, spec: str) -> BenchmarkSpec:
        """``name[=repo_id][@revision][:split]``, e.g. ``vqa-rad``, ``slake@<commit>``,
        ``path-vqa=my-org/path-vqa-mirror@v1:validation``. A known name (`KNOWN_BENCHMARKS`) supplies the repo and
        split it leaves out; any other name must give a repo."""
        match = _SPEC.match(spec.strip())
        if not match:
            raise ValueError(f"bad benchmark spec {spec!r}: expected name[=repo_id][@revision][:split]")
        name, repo, rev, split = match.group("name", "repo", "rev", "split")
        known = KNOWN_BENCHMARKS.get(name)
        if repo is None and known is None:
            raise ValueError(f"benchmark {name!r} is not one of {sorted(KNOWN_BENCHMARKS)}: give its repo (name=repo)")
        repo_id, _ = parse_repo_ref(repo or known.repo_id)
        return cls(name, repo_id, rev or "main", split or (known.split if known else "test"))

    @property
    def display_name(self) -> str:
        known = KNOWN_BENCHMARKS.get(self.name)
        return known.display_name if known else self.name

    def __str__(self) -> str:
        return f"{self.name}={self.repo_id}@{self.revision}:{self.split}"


def is_pinned(revision: str) -> bool:
    """True when ``revision`` is a full commit hash (a branch or tag can move)."""
    return bool(_COMMIT.match(revision))


def default_cache_dir() -> Path:
    """Where extracted benchmark images live: ``$VITAL_CACHE/benchmarks`` or ``~/.cache/vital/benchmarks``."""
    return Path(os.environ.get("VITAL_CACHE") or Path.home() / ".cache" / "vital") / "benchmarks"


# ---------------------------------------------------------------------------------------------------------------------
# VQA sets


def load_benchmark(
    hub: Hub, spec: BenchmarkSpec | str, cache_dir: str | Path | None = None, limit: int | None = None
) -> tuple[Dataset, ArtifactRef]:
    """Load one VQA set at its revision, normalised to `VQA_FEATURES`; returns it and the commit it was read at.

    A repo holding ``<split>.json`` files (SLAKE's layout) is read from that file, and image names resolve in the
    repo's image folder or ``imgs.zip`` (extracted once under ``cache_dir``). ``limit`` keeps the first N items
    (after the English filter), for smoke runs.
    """
    spec = BenchmarkSpec.parse(spec) if isinstance(spec, str) else spec
    if not is_pinned(spec.revision):
        logger.warning(
            "benchmark %s is read at %r, a moving revision: pin a commit for reported numbers",
            spec.name,
            spec.revision,
        )
    ref = hub.ref(spec.repo_id, spec.revision, "dataset")
    json_file = f"{spec.split}.json"
    if hub.read_file(spec.repo_id, json_file, ref.commit, "dataset") is not None:
        raw = hub.load_dataset(spec.repo_id, revision=ref.commit, split=spec.split, data_files={spec.split: json_file})
    else:
        raw = hub.load_dataset(spec.repo_id, revision=ref.commit, split=spec.split)
    require_columns(raw, "evaluate", "benchmark", ref)
    image_root = None
    if "image" not in raw.column_names:
        image_root = _image_root(hub, ref, Path(cache_dir) if cache_dir else default_cache_dir())
    return normalize_vqa(raw, spec.name, spec.split, image_root=image_root, limit=limit), ref


def normalize_vqa(
    raw: Dataset, benchmark: str, split: str, image_root: str | Path | None = None, limit: int | None = None
) -> Dataset:
    """One VQA source's rows in `VQA_FEATURES`.

    * ``q_lang``: only English rows are kept.
    * ``answer_type`` (any case) is used when present; without it an answer of ``yes``/``no`` is closed, any other
      open.
    * ids: ``<benchmark>-<split>-<qid>`` from a ``qid`` column, else from the row's position in the split (stable for
      a pinned commit).
    * images: an ``image`` column as is, else ``img_name`` (or ``image_name``) resolved under ``image_root``.

    Raises:
        ValueError: a question or answer column is missing, an unknown answer type, or an image that is not there.
    """
    for column in ("question", "answer"):
        if column not in raw.column_names:
            raise ValueError(f"{benchmark}: no {column!r} column in {raw.column_names}")
    positions = list(range(len(raw)))
    if "q_lang" in raw.column_names:
        positions = [i for i, lang in enumerate(raw["q_lang"]) if str(lang).strip().lower() == "en"]
    if limit is not None:
        positions = positions[:limit]
    raw = raw.select(positions) if len(positions) != len(raw) else raw
    qids = raw["qid"] if "qid" in raw.column_names else [None] * len(raw)
    types = raw["answer_type"] if "answer_type" in raw.column_names else [None] * len(raw)

    name_column = next((c for c in ("img_name", "image_name") if c in raw.column_names), None)
    if "image" in raw.column_names:
        images = raw.cast_column("image", Image(decode=False)).select_columns(["image"])
    elif name_column is not None:
        if image_root is None:
            raise ValueError(f"{benchmark}: images are named by {name_column!r} but no image folder was given")
        root = Path(image_root)
        cells = []
        for index, name in enumerate(raw[name_column]):
            path = root / str(name)
            if not path.is_file():
                raise ValueError(f"{benchmark}: item {index}: image {name!r} not found under {root}")
            cells.append({"bytes": None, "path": str(path)})
        images = Dataset.from_dict({"image": cells}, features=Features({"image": Image(decode=False)}))
    else:
        raise ValueError(f"{benchmark}: no image column ('image', 'img_name') in {raw.column_names}")

    ids, questions, answers, answer_types = [], [], [], []
    for index, (question, answer, qid, answer_type) in enumerate(zip(raw["question"], raw["answer"], qids, types)):
        answer = str(answer).strip()
        if answer_type is None:
            kind = "closed" if answer.lower().strip(" .") in ("yes", "no") else "open"
        else:
            kind = str(answer_type).strip().lower()
            if kind not in ANSWER_TYPES:
                raise ValueError(f"{benchmark}: item {index}: answer_type {answer_type!r} is not OPEN or CLOSED")
        ids.append(f"{benchmark}-{split}-{qid if qid is not None else f'{positions[index]:05d}'}")
        questions.append(str(question).strip())
        answers.append(answer)
        answer_types.append(kind)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{benchmark}: item ids are not unique")
    columns = {
        "id": ids,
        "question": questions,
        "answer": answers,
        "answer_type": answer_types,
        "split": [split] * len(ids),
        "benchmark": [benchmark] * len(ids),
    }
    text = Dataset.from_dict(columns, features=Features({k: v for k, v in VQA_FEATURES.items() if k != "image"}))
    from datasets import concatenate_datasets

    merged = concatenate_datasets([text, images.cast_column("image", Image(decode=False))], axis=1)
    return merged.select_columns(list(VQA_FEATURES)).cast_column("image", Image())


def _image_root(hub: Hub, ref: ArtifactRef, cache_dir: Path) -> Path:
    """The folder that image names resolve in: the repo's ``imgs`` folder, or its ``imgs.zip`` extracted once."""
    snapshot = hub.snapshot(ref.repo_id, ref.commit, "dataset")
    for folder in (snapshot / "imgs", snapshot / "images"):
        if folder.is_dir():
            return folder
    archive = snapshot / "imgs.zip"
    if not archive.is_file():
        raise HubError(f"{ref}: the rows name image files but the repo has no imgs/ folder or imgs.zip")
    target = cache_dir / hashlib.sha256(f"{ref.repo_id}@{ref.commit}".encode()).hexdigest()[:16]
    done = target / ".extracted"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse paths that would land outside the target
                if member.startswith("/") or ".." in Path(member).parts:
                    raise HubError(f"{archive}: unsafe member {member!r}")
            zf.extractall(target)
        done.write_text(ref.commit)
    return target / "imgs" if (target / "imgs").is_dir() else target


# ---------------------------------------------------------------------------------------------------------------------
# Open visual chat (LLaVA-Med's question format)


def chat_domain(domain: Any) -> str:
    """LLaVA-Med's domain of a question: the first true flag of ``chest_xray, mri, histology, gross, ct_scan``;
    a string is kept; none true is ``other``."""
    if isinstance(domain, Mapping):
        return next((name for name in CHAT_DOMAINS if domain.get(name)), "other")
    return str(domain) if domain else "other"


def _mentions(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    out = []
    for mention in value:
        text = mention.get("tokens") if isinstance(mention, Mapping) else mention
        if text:
            out.append(str(text))
    return out


def chat_rows(records: Sequence[Mapping[str, Any]], image_dir: str | Path) -> Dataset:
    """LLaVA-Med question records (``question_id``, ``image`` file name, ``text``, ``gpt4_answer``, ``fig_caption``,
    ``in_text_mention``, ``domain``, ``type``, ``pair_id``) as a `CHAT_FEATURES` dataset, images read from
    ``image_dir``."""
    image_dir = Path(image_dir)
    rows = []
    for index, record in enumerate(records):
        qid = record.get("question_id", index)
        path = image_dir / str(record.get("image"))
        if not path.is_file():
            raise ValueError(f"open chat question {qid}: image {record.get('image')!r} not found in {image_dir}")
        for field in ("text", "gpt4_answer"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise ValueError(f"open chat question {qid}: {field!r} must be non-empty text")
        rows.append(
            {
                "question_id": str(qid),
                "image": {"bytes": None, "path": str(path)},
                "pair_id": str(record.get("pair_id") or ""),
                "text": record["text"].replace("<image>", "").strip(),
                "gpt4_answer": record["gpt4_answer"].strip(),
                "fig_caption": str(record.get("fig_caption") or ""),
                "in_text_mention": _mentions(record.get("in_text_mention")),
                "domain": chat_domain(record.get("domain")),
                "type": str(record.get("type") or "conversation"),
            }
        )
    if len({row["question_id"] for row in rows}) != len(rows):
        raise ValueError("open chat question ids are not unique")
    return Dataset.from_list(rows, features=CHAT_FEATURES)


def read_open_chat(questions: str | Path, image_dir: str | Path, limit: int | None = None) -> Dataset:
    """Read a LLaVA-Med question JSONL and its image folder (`chat_rows`)."""
    with open(questions, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return chat_rows(records[:limit] if limit else records, image_dir)


def load_open_chat(
    hub: Hub,
    repo_spec: str,
    questions_file: str = "questions.jsonl",
    images_dir: str = "images",
    limit: int | None = None,
) -> tuple[Dataset, ArtifactRef]:
    """Open-chat questions from a dataset repo (``repo@revision``) holding the JSONL and the image folder."""
    repo_id, revision = parse_repo_ref(repo_spec)
    ref = hub.ref(repo_id, revision, "dataset")
    snapshot = hub.snapshot(repo_id, ref.commit, "dataset")
    if not (snapshot / questions_file).is_file():
        raise HubError(f"{ref}: no {questions_file}")
    return read_open_chat(snapshot / questions_file, snapshot / images_dir, limit), ref
