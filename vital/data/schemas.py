"""The data contracts between stages as `datasets.Features`, with row validators (``docs/design.md``, Artifacts and
schemas).

Conversations are TRL's conversational format with typed content parts, the form `SFTTrainer` reads for vision data::

    [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is shown?"}]},
     {"role": "assistant", "content": [{"type": "text", "text": "An axial CT slice ..."}]}]

Images are an ``Image()`` feature (``image`` for one, ``images`` for a list), embedded in parquet on push.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from datasets import Dataset, Features, Image, List, Value

from vital.data.errors import ErrorMode, Quarantine, RecordError


MODALITIES = ("chest_xray", "mri", "ct", "histology", "gross", "other")
"""Imaging modalities of the pairs; the first five are the paper's PMC domains, everything else is ``other``."""

ROLES = ("system", "user", "assistant")
PREFERENCE_SOURCES = ("clinician", "model")

CONTENT_PART = {"type": Value("string"), "text": Value("string")}
MESSAGE = {"role": Value("string"), "content": List(CONTENT_PART)}
MESSAGES = List(MESSAGE)

SOURCE = {
    "origin": Value("string"),  # where the record came from: a PMC article, a package's bundled file, ...
    "pmid": Value("string"),
    "url": Value("string"),
    "license": Value("string"),
    "citation": Value("string"),
}

PAIR_FEATURES = Features(
    {
        "id": Value("string"),
        "image": Image(),
        "caption": Value("string"),
        "fig_label": Value("string"),
        "mentions": List(Value("string")),
        "modality": Value("string"),
        "source": SOURCE,
    }
)

DEMO_FEATURES = Features(
    {
        **PAIR_FEATURES,
        "messages": MESSAGES,
        "cluster": Value("int32"),
        "curated_by": Value("string"),
    }
)

GENERATION = {
    "model": Value("string"),
    "endpoint": Value("string"),  # openai | azure | vllm | transformers-serve | stand-in | ...
    "prompt_sha": Value("string"),
    "demo_ids": List(Value("string")),
    "prompt_tokens": Value("int64"),
    "completion_tokens": Value("int64"),
    "cost_usd": Value("float64"),
    "stand_in": Value("bool"),  # True when the reply came from the bundled stand-in server, not a real model
}

CANDIDATE_FEATURES = Features(
    {
        "id": Value("string"),
        "pair_id": Value("string"),
        "images": List(Image()),
        "messages": MESSAGES,
        "modality": Value("string"),
        "caption": Value("string"),
        "mentions": List(Value("string")),
        "generation": GENERATION,
    }
)

RATING_FEATURES = Features(
    {
        "candidate_id": Value("string"),
        "turn": Value("int32"),  # index of the question-answer pair within the conversation, from 0
        "score": Value("float32"),  # 0-10, or null with `error` set
        "error": Value("string"),
        "rationale": Value("string"),
        "judge": {"model": Value("string"), "prompt_sha": Value("string")},
    }
)

PREFERENCE_FEATURES = Features(
    {
        "id": Value("string"),
        "prompt": MESSAGES,
        "images": List(Image()),
        "chosen": MESSAGES,
        "rejected": MESSAGES,
        "source": Value("string"),  # clinician | model
        "annotator": Value("string"),
        "weight": Value("float32"),
    }
)

SELECTED_FEATURES = Features({**CANDIDATE_FEATURES, "selector_score": Value("float32")})

QUARANTINE_FEATURES = Features(
    {"record_id": Value("string"), "field": Value("string"), "reason": Value("string"), "record": Value("string")}
)


# --------------------------------------------------------------------------------------------------------------------
# Message helpers
# --------------------------------------------------------------------------------------------------------------------
def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part() -> dict[str, Any]:
    return {"type": "image", "text": None}


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one message, its text parts joined (image parts contribute nothing)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] or "" for part in content if part["type"] == "text")


def count_image_parts(messages: Iterable[Mapping[str, Any]]) -> int:
    return sum(
        1 for m in messages if not isinstance(m["content"], str) for part in m["content"] if part["type"] == "image"
    )


def qa_turns(messages: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The conversation as (question, answer) text pairs, the unit that ratings score."""
    turns = [m for m in messages if m["role"] != "system"]
    return [(message_text(q), message_text(a)) for q, a in zip(turns[0::2], turns[1::2], strict=False)]


# --------------------------------------------------------------------------------------------------------------------
# Validators. Each takes one row and raises RecordError naming the row's id and the field.
# --------------------------------------------------------------------------------------------------------------------
def validate_messages(
    messages: Any, record_id: Any, field: str = "messages", n_images: int | None = None, *, complete: bool = True
) -> None:
    """Check a TRL conversation: typed parts, user/assistant alternation, non-empty answers, images where declared.

    Args:
        messages: the conversation.
        record_id: used in the error message.
        field: the column name, used in the error message.
        n_images: if given, the number of image parts must equal it, and they must all sit in the first user turn.
        complete: if True the conversation must start with a user turn and end with an assistant turn; set False for
            the `prompt` / `chosen` / `rejected` fragments of preference rows.
    """
    if not isinstance(messages, list) or not messages:
        raise RecordError(record_id, field, f"expected a non-empty list of messages, got {_describe(messages)}")
    roles = []
    first_user = None
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(message, Mapping):
            raise RecordError(record_id, where, f"expected a message object, got {_describe(message)}")
        role = message.get("role")
        if role not in ROLES:
            raise RecordError(
                record_id, f"{where}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})"
            )
        content = message.get("content")
        if not isinstance(content, list):
            raise RecordError(
                record_id, f"{where}.content", f"expected a list of content parts, got {_describe(content)}"
            )
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") not in ("text", "image"):
                raise RecordError(record_id, f"{where}.content[{j}]", "expected a part of type 'text' or 'image'")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise RecordError(record_id, f"{where}.content[{j}].text", "text part without a string")
        if role == "assistant" and not message_text(message).strip():
            raise RecordError(record_id, f"{where}.content", "empty assistant turn")
        if role == "user" and first_user is None:
            first_user = i
        if role != "system":
            roles.append((i, role))
    if complete:
        if not roles or roles[0][1] != "user":
            raise RecordError(record_id, field, "the conversation must start with a user turn")
        if roles[-1][1] != "assistant":
            raise RecordError(record_id, field, "the conversation must end with an assistant turn")
    for (_, previous), (i, role) in zip(roles, roles[1:], strict=False):
        if role == previous:
            raise RecordError(record_id, f"{field}[{i}].role", f"turns out of order: two {role!r} turns in a row")
    if any(m["role"] == "system" for m in messages[1:]):
        raise RecordError(record_id, field, "a system message may only come first")
    if n_images is not None:
        found = count_image_parts(messages)
        if found != n_images:
            raise RecordError(record_id, field, f"{found} image placeholder(s) for {n_images} image(s)")
        if found and count_image_parts([messages[first_user]]) != found:
            raise RecordError(record_id, field, "images must be attached to the first user turn")


def validate_image(image: Any, record_id: Any, field: str = "image") -> None:
    """An image cell must decode; PIL images pass, so do `{"bytes": ...}` / `{"path": ...}` cells that open."""
    import io

    from PIL import Image as PILImage

    if image is None:
        raise RecordError(record_id, field, "missing image")
    if isinstance(image, PILImage.Image):
        return
    if isinstance(image, Mapping):
        data, path = image.get("bytes"), image.get("path")
        try:
            with PILImage.open(io.BytesIO(data) if data else path) as im:
                im.verify()
        except FileNotFoundError as e:
            raise RecordError(record_id, field, f"image file not found: {path}") from e
        except Exception as e:  # PIL raises many types for corrupt data
            raise RecordError(record_id, field, f"corrupt image ({type(e).__name__}: {e})") from e
        return
    raise RecordError(record_id, field, f"expected an image, got {_describe(image)}")


def _require_str(row: Mapping[str, Any], key: str, record_id: Any, *, allow_empty: bool = False) -> None:
    value = row.get(key)
    if not isinstance(value, str):
        raise RecordError(record_id, key, f"expected a string, got {_describe(value)}")
    if not allow_empty and not value.strip():
        raise RecordError(record_id, key, "empty string")


def _require_modality(row: Mapping[str, Any], record_id: Any) -> None:
    if row.get("modality") not in MODALITIES:
        raise RecordError(
            record_id, "modality", f"unknown modality {row.get('modality')!r} (expected one of {MODALITIES})"
        )


def validate_pair(row: Mapping[str, Any]) -> None:
    rid = row.get("id")
    _require_str(row, "id", rid)
    validate_image(row.get("image"), rid, "image")
    _require_str(row, "caption", rid)
    _require_str(row, "fig_label", rid, allow_empty=True)
    mentions = row.get("mentions")
    if not isinstance(mentions, list) or not all(isinstance(m, str) for m in mentions):
        raise RecordError(rid, "mentions", f"expected a list of strings, got {_describe(mentions)}")
    _require_modality(row, rid)


def validate_demo(row: Mapping[str, Any]) -> None:
    validate_pair(row)
    validate_messages(row.get("messages"), row.get("id"), "messages")


def validate_candidate(row: Mapping[str, Any]) -> None:
    rid = row.get("id")
    _require_str(row, "id", rid)
    _require_str(row, "pair_id", rid)
    images = row.get("images")
    if not isinstance(images, list) or not images:
        raise RecordError(rid, "images", f"expected a non-empty list of images, got {_describe(images)}")
    for i, image in enumerate(images):
        validate_image(image, rid, f"images[{i}]")
    validate_messages(row.get("messages"), rid, "messages", n_images=len(images))
    _require_modality(row, rid)


def validate_selected(row: Mapping[str, Any]) -> None:
    validate_candidate(row)
    if not isinstance(row.get("selector_score"), int | float):
        raise RecordError(
            row.get("id"), "selector_score", f"expected a number, got {_describe(row.get('selector_score'))}"
        )


def validate_rating(row: Mapping[str, Any]) -> None:
    rid = row.get("candidate_id")
    _require_str(row, "candidate_id", rid)
    turn = row.get("turn")
    if not isinstance(turn, int) or turn < 0:
        raise RecordError(rid, "turn", f"expected a non-negative integer, got {_describe(turn)}")
    score = row.get("score")
    if score is None:
        if not row.get("error"):
            raise RecordError(rid, "error", "a null score must carry the error that caused it")
    elif not isinstance(score, int | float) or not 0 <= score <= 10:
        raise RecordError(rid, "score", f"expected a number in [0, 10] or null, got {_describe(score)}")


def validate_preference(row: Mapping[str, Any]) -> None:
    rid = row.get("id")
    _require_str(row, "id", rid)
    images = row.get("images") or []
    for i, image in enumerate(images):
        validate_image(image, rid, f"images[{i}]")
    validate_messages(row.get("prompt"), rid, "prompt", n_images=len(images), complete=False)
    for side in ("chosen", "rejected"):
        validate_messages(row.get(side), rid, side, complete=False)
        if any(m["role"] != "assistant" for m in row[side]):
            raise RecordError(rid, side, "must hold assistant messages only")
    if row.get("source") not in PREFERENCE_SOURCES:
        raise RecordError(rid, "source", f"expected one of {PREFERENCE_SOURCES}, got {row.get('source')!r}")
    weight = row.get("weight")
    if not isinstance(weight, int | float) or weight <= 0:
        raise RecordError(rid, "weight", f"expected a positive number, got {_describe(weight)}")


ARTIFACTS: dict[str, tuple[Features, Callable[[Mapping[str, Any]], None]]] = {
    "pairs": (PAIR_FEATURES, validate_pair),
    "demos": (DEMO_FEATURES, validate_demo),
    "candidates": (CANDIDATE_FEATURES, validate_candidate),
    "ratings": (RATING_FEATURES, validate_rating),
    "preferences": (PREFERENCE_FEATURES, validate_preference),
    "selected": (SELECTED_FEATURES, validate_selected),
}
"""Artifact name -> (features, row validator)."""


def check_columns(dataset: Dataset, artifact: str) -> None:
    """Raise if ``dataset`` lacks a contract column or holds it with another type (extra columns are fine)."""
    features, _ = ARTIFACTS[artifact]
    for name, feature in features.items():
        if name not in dataset.features:
            raise RecordError("<dataset>", name, f"column missing from the {artifact} dataset")
        if dataset.features[name] != feature:
            raise RecordError(
                "<dataset>",
                name,
                f"column type {dataset.features[name]} differs from the {artifact} contract {feature}",
            )


def validate_dataset(dataset: Dataset, artifact: str, errors: ErrorMode = "raise") -> tuple[Dataset, Quarantine]:
    """Validate every row of ``dataset`` against the ``artifact`` contract.

    Returns the dataset of valid rows and the quarantine. In ``raise`` mode the first bad row raises `RecordError`.
    Images are checked without decoding the whole dataset into memory.
    """
    check_columns(dataset, artifact)
    _, validate = ARTIFACTS[artifact]
    quarantine = Quarantine(errors)
    # Check image bytes as stored rather than decoded PIL objects: cheaper, and corrupt bytes fail to open.
    raw = undecoded(dataset)
    keep = []
    for index, row in enumerate(raw):
        try:
            validate(row)
        except RecordError as error:
            quarantine.add(error, row)
        else:
            keep.append(index)
    if len(keep) == len(dataset):
        return dataset, quarantine
    return dataset.select(keep), quarantine


def undecoded(dataset: Dataset) -> Dataset:
    """``dataset`` with every image (``Image``, lists and structs of them) read as its stored bytes/path cell:
    nothing decoded, nothing re-encoded. Rows are checked or copied as stored."""
    return dataset.cast(_undecoded(dataset.features))


def _undecoded(features: Features) -> Features:
    def undecode(feature):
        if isinstance(feature, Image):
            return Image(decode=False)
        if isinstance(feature, List):
            return List(undecode(feature.feature), length=feature.length)
        if isinstance(feature, dict):
            return {k: undecode(v) for k, v in feature.items()}
        return feature

    return Features({k: undecode(v) for k, v in features.items()})


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def rows_to_dataset(rows: list[Mapping[str, Any]], features: Features) -> Dataset:
    """``Dataset.from_list`` that also works for no rows (an empty dataset with the right columns)."""
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)
