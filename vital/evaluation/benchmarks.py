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
from vital.hub import ArtifactRef, Hub, HubError, parse_repo_ref, sha256_file


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
ANSWER_TYPE_MAP = {"open": "open", "closed": "closed", "close": "closed"}
"""Source ``answer_type`` values (compared lower-cased and stripped) -> ours. ``CLOSED``/``OPEN`` are SLAKE's and
LLaVA-Med's, ``CLOSE`` is what BioMed-VITAL's evaluation scripts write. Anything else is refused, naming the item. The
mapping a load applied (raw value -> ours, with counts) is logged and kept in the dataset's ``info.description``."""
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
    text = hub.read_file(spec.repo_id, json_file, ref.commit, "dataset")
    if text is not None:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{ref}: {json_file}: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg})") from e
        raw = vqa_records_to_raw(records, f"{spec.name} ({json_file})")
    else:
        raw = hub.load_dataset(spec.repo_id, revision=ref.commit, split=spec.split)
    require_columns(raw, "evaluate", "benchmark", ref)
    image_root = None
    if "image" not in raw.column_names or _is_name_column(raw, "image"):
        image_root = _image_root(hub, ref, Path(cache_dir) if cache_dir else default_cache_dir())
    return normalize_vqa(raw, spec.name, spec.split, image_root=image_root, limit=limit), ref


def _is_name_column(raw: Dataset, column: str) -> bool:
    feature = raw.features.get(column)
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def _text(value: Any) -> str | None:
    """A question / answer / id cell as text: integers and floats (``3``, ``2.5``) as written; None stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def vqa_records_to_raw(records: Any, where: str) -> Dataset:
    """VQA records from a JSON file as a raw dataset of text columns (``qid``, ``question``, ``answer``,
    ``answer_type``, ``img_name``, ``q_lang``) for `normalize_vqa`. Two layouts:

    * LLaVA-Med / BioMed-VITAL evaluation files: ``{"id", "image", "conversations": [{"from": "human", "value":
      "<image>\\nQ"}, {"from": "gpt", "value": "A"}], "answer_type"}`` (BioMed-VITAL's scripts also read the misspelt
      ``conversatons``): the question is the first human turn without ``<image>``, the answer the first gpt turn.
    * SLAKE: ``{"qid", "img_name", "question", "answer", "answer_type", "q_lang", ...}``.

    Integer ids and answers are read as text. A record that fits neither raises ValueError naming its id.
    """
    if not isinstance(records, list):
        raise ValueError(f"{where}: expected a JSON list of questions, got {type(records).__name__}")
    columns: dict[str, list[Any]] = {k: [] for k in ("qid", "question", "answer", "answer_type", "img_name", "q_lang")}
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"{where}: item #{index}: expected a JSON object, got {type(record).__name__}")
        turns = record.get("conversations", record.get("conversatons"))
        qid = record.get("id", record.get("qid", record.get("question_id")))
        name = f"{where}: item {qid if qid is not None else f'#{index}'}"
        if turns is not None:
            if not isinstance(turns, list) or not all(isinstance(t, Mapping) for t in turns):
                raise ValueError(f"{name}: 'conversations' must be a list of turns")
            human = next((t.get("value") for t in turns if t.get("from") == "human"), None)
            gpt = next((t.get("value") for t in turns if t.get("from") == "gpt"), None)
            question = None if human is None else _text(human).replace("<image>", "").strip()
            answer, image = _text(gpt), record.get("image")
        else:
            question, answer = _text(record.get("question")), _text(record.get("answer"))
            image = record.get("img_name", record.get("image_name", record.get("image")))
        columns["qid"].append(_text(qid))
        columns["question"].append(question)
        columns["answer"].append(answer)
        columns["answer_type"].append(_text(record.get("answer_type")))
        columns["img_name"].append(_text(image))
        columns["q_lang"].append(_text(record.get("q_lang")))
    if all(v is None for v in columns["q_lang"]):
        del columns["q_lang"]
    if all(v is None for v in columns["answer_type"]):
        del columns["answer_type"]
    if all(v is None for v in columns["qid"]):
        del columns["qid"]
    return Dataset.from_dict(columns, features=Features({k: Value("string") for k in columns}))


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
    id_column = next((c for c in ("qid", "id", "question_id") if c in raw.column_names), None)
    qids = [_text(q) for q in raw[id_column]] if id_column else [None] * len(raw)
    # every item is named by its own id: the source's, else its position in the split as read (before filtering)
    names = [q if q is not None else f"{positions[i]:05d}" for i, q in enumerate(qids)]
    ids = [f"{benchmark}-{split}-{name}" for name in names]
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if repeated:
        raise ValueError(f"{benchmark}: item ids are not unique: {', '.join(repeated[:10])} repeat")
    types = raw["answer_type"] if "answer_type" in raw.column_names else [None] * len(raw)

    name_column = next((c for c in ("img_name", "image_name") if c in raw.column_names), None)
    if name_column is None and "image" in raw.column_names and _is_name_column(raw, "image"):
        name_column = "image"
    if name_column is not None:
        if image_root is None:
            raise ValueError(f"{benchmark}: images are named by {name_column!r} but no image folder was given")
        root = Path(image_root)
        cells = []
        for item, name in zip(ids, raw[name_column], strict=True):
            path = root / str(name)
            if name is None or not path.is_file():
                raise ValueError(f"{benchmark}: item {item}: image {name!r} not found under {root}")
            cells.append({"bytes": None, "path": str(path)})
        images = Dataset.from_dict({"image": cells}, features=Features({"image": Image(decode=False)}))
    elif "image" in raw.column_names:
        images = raw.cast_column("image", Image(decode=False)).select_columns(["image"])
    else:
        raise ValueError(f"{benchmark}: no image column ('image', 'img_name') in {raw.column_names}")
    for item, cell in zip(ids, images["image"], strict=True):
        _check_image(cell, f"{benchmark}: item {item}")

    questions, answers, answer_types = [], [], []
    mapping: dict[str, dict[str, Any]] = {}
    for item, question, answer, answer_type in zip(ids, raw["question"], raw["answer"], types, strict=True):
        question, answer = _text(question), _text(answer)
        if question is None or not question.strip():
            raise ValueError(f"{benchmark}: item {item}: empty question")
        if answer is None or not answer.strip():
            raise ValueError(f"{benchmark}: item {item}: empty answer")
        answer = answer.strip()
        if answer_type is None:
            kind = "closed" if answer.lower().strip(" .") in ("yes", "no") else "open"
            source = "(none: yes/no answer)" if kind == "closed" else "(none: other answer)"
        else:
            source = str(answer_type)
            kind = ANSWER_TYPE_MAP.get(source.strip().lower())
            if kind is None:
                raise ValueError(
                    f"{benchmark}: item {item}: answer_type {answer_type!r} is not one of "
                    f"{sorted(ANSWER_TYPE_MAP)} (any case)"
                )
        entry = mapping.setdefault(source, {"to": kind, "items": 0})
        entry["items"] += 1
        questions.append(question.strip())
        answers.append(answer)
        answer_types.append(kind)
    logger.info("%s/%s: answer_type mapping %s", benchmark, split, json.dumps(mapping, ensure_ascii=False))
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
    out = merged.select_columns(list(VQA_FEATURES)).cast_column("image", Image())
    out.info.description = json.dumps({"answer_type_mapping": mapping}, ensure_ascii=False)
    return out


def answer_type_mapping(dataset: Dataset) -> dict[str, dict[str, Any]]:
    """The answer-type mapping `normalize_vqa` applied to ``dataset``: source value -> ``{"to", "items"}``."""
    try:
        return json.loads(dataset.info.description or "{}").get("answer_type_mapping", {})
    except (ValueError, AttributeError):
        return {}


def _check_image(cell: Any, name: str) -> None:
    """Decode an image cell in full (a truncated file fails here, named, not later in answering)."""
    import io

    from PIL import Image as PILImage

    data, path = (cell.get("bytes"), cell.get("path")) if isinstance(cell, Mapping) else (None, None)
    if data is None and path is None:
        raise ValueError(f"{name}: no image")
    try:
        with PILImage.open(io.BytesIO(data) if data else path) as im:
            im.load()
    except Exception as e:  # PIL raises many types for corrupt or truncated data
        raise ValueError(
            f"{name}: image {path or ''} does not decode ({type(e).__name__}: {e})".replace("  ", " ")
        ) from e


def _image_root(hub: Hub, ref: ArtifactRef, cache_dir: Path) -> Path:
    """The folder that image names resolve in: the repo's ``imgs`` folder, or its ``imgs.zip`` extracted once."""
    snapshot = hub.snapshot(ref.repo_id, ref.commit, "dataset")
    for folder in (snapshot / "imgs", snapshot / "images"):
        if folder.is_dir():
            return folder
    archive = snapshot / "imgs.zip"
    if not archive.is_file():
        raise HubError(f"{ref}: the rows name image files but the repo has no imgs/ folder or imgs.zip")
    # Keyed by the archive's content (which the hub has just verified), never by repo@commit alone: another hub with
    # the same repo id and commit id but other bytes must not reuse this extraction.
    target = cache_dir / sha256_file(archive)[:32]
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
        _check_image({"bytes": None, "path": str(path)}, f"open chat question {qid}")
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
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["question_id"]] = counts.get(row["question_id"], 0) + 1
    repeated = [qid for qid, n in counts.items() if n > 1]
    if repeated:
        raise ValueError(
            "open chat question ids are not unique: " + ", ".join(f"{q} ({counts[q]} times)" for q in repeated[:20])
        )
    return Dataset.from_list(rows, features=CHAT_FEATURES)


def read_open_chat(questions: str | Path, image_dir: str | Path, limit: int | None = None) -> Dataset:
    """Read a LLaVA-Med question JSONL and its image folder (`chat_rows`)."""
    records = []
    with open(questions, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    records.append(json.loads(line))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{questions}: line {line_no}: {type(e).__name__}: {e}") from e
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


def load_eval_inputs(
    hub: Hub,
    benchmarks: Sequence[str],
    cache_dir: str | None = None,
    limit: int | None = None,
    chat_questions: str | None = None,
    chat_images: str | None = None,
    chat_questions_file: str = "questions.jsonl",
    chat_images_dir: str = "images",
) -> tuple[list[BenchmarkSpec], dict[str, tuple], dict[str, tuple[str, str, str]], Any, Any]:
    """The evaluation's inputs at pinned commits: the VQA sets named by ``benchmarks`` and the open-chat questions
    (a local JSONL file, or a hub repo ``repo@revision``; None: no chat).

    Returns ``(specs, sets, sources, chat, chat_ref)``: ``sets`` maps a benchmark name to ``(dataset, ref)``,
    ``sources`` a benchmark name (and ``"chat"``) to ``(repo or file, commit or sha256, split)``.
    """
    specs = [BenchmarkSpec.parse(s) for s in benchmarks]
    sets = {s.name: load_benchmark(hub, s, cache_dir, limit) for s in specs}
    sources = {s.name: (s.repo_id, sets[s.name][1].commit, s.split) for s in specs}
    chat, chat_ref = None, None
    if chat_questions and Path(chat_questions).is_file():
        questions_file = Path(chat_questions)
        chat = read_open_chat(questions_file, chat_images or questions_file.parent, limit)
        chat_ref = {"source": str(questions_file.resolve()), "sha256": sha256_file(questions_file)}
        sources["chat"] = (chat_ref["source"], chat_ref["sha256"], "test")
    elif chat_questions:
        chat, chat_ref = load_open_chat(hub, chat_questions, chat_questions_file, chat_images_dir, limit)
        sources["chat"] = (chat_ref.repo_id, chat_ref.commit, "test")
    return specs, sets, sources, chat, chat_ref
