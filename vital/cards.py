"""Dataset and model cards from the Jinja templates in ``dataset_cards/`` and ``model_cards/``, with a lineage block.

Every push writes a card (``docs/design.md``, Artifacts and schemas). The card's metadata carries the Hub fields
(licence, task categories, tags, base model, datasets) and a machine-readable ``lineage`` entry: each input at its
commit, the stage's config (secrets redacted), the seed and the versions of the stack. The text repeats the lineage as
a table for people.

Example::

    card = dataset_card(
        "pairs",
        lineage=Lineage(stage="ingest", inputs=[...], config=asdict(script_args), seed=0),
        pretty_name="Sample pairs",
        num_rows=len(pairs),
    )
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, is_dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

from vital import __version__
from vital.hub import ArtifactRef
from vital.resources import resource_dir


# The templates stay at the repository's top level; a wheel carries copies (vital.resources decides which is read).
TEMPLATE_DIRS = {"dataset": resource_dir("dataset_cards"), "model": resource_dir("model_cards")}
STACK = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "huggingface_hub", "openai", "evaluate")
REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|passwd|authorization|credential)", re.IGNORECASE)
_TOKEN_WORD = re.compile(r"(?:^|[^a-z0-9])token(?:$|[^a-z0-9])")  # the word, not "tokens" or "tokenizer"
_TOKENIZER_TOKEN = re.compile(r"(bos|eos|pad|unk|sep|cls|mask|image|video|audio|boi|eoi)_token")
"""A tokenizer's special token (``eos_token``, ``pad_token``, ...): not a credential, and needed to rebuild a run."""
_SECRET_ENV = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VITAL_API_KEY")


@dataclass
class Lineage:
    """Where an artifact came from: enough to rebuild it."""

    stage: str
    inputs: list[ArtifactRef | dict[str, Any]] = field(default_factory=list)
    config: Any = None  # a dataclass, a dict or a list of them; secrets are redacted on the way out
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"stand_in": True} or a source manifest hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "inputs": [i.to_dict() if isinstance(i, ArtifactRef) else dict(i) for i in self.inputs],
            "config": redact_secrets(_plain(self.config)),
            "seed": self.seed,
            "versions": stack_versions(),
            **({"extra": redact_secrets(_plain(self.extra))} if self.extra else {}),
        }


def stack_versions() -> dict[str, str]:
    """``biomed-vital`` and the stack's versions, as recorded in every lineage block."""
    out = {"biomed-vital": __version__}
    for name in STACK:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _secret_key(key: str) -> bool:
    """Whether a setting's name says it holds a credential: an API key, a secret or password, or a token
    (``token``, ``hub_token``, ``hubToken``) other than a tokenizer's special tokens (``eos_token``); settings about
    counting tokens (``include_num_input_tokens_seen``, ``max_new_tokens``) are not credentials."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    if _SECRET_KEY.search(words):
        return True
    return bool(_TOKEN_WORD.search(words)) and not _TOKENIZER_TOKEN.fullmatch(words)


def redact_secrets(obj: Any) -> Any:
    """Replace values under secret-looking keys (:func:`_secret_key`), and any value equal to, or holding, a secret
    in the environment."""
    secrets = {os.environ[k] for k in _SECRET_ENV if os.environ.get(k)}

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, key) for v in value]
        if isinstance(value, str) and value and (_secret_key(key) or value in secrets):
            return REDACTED
        if isinstance(value, str) and any(s in value for s in secrets):
            for s in secrets:
                value = value.replace(s, REDACTED)
        return value

    return walk(obj)


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        # TrainingArguments-style objects hold many fields; to_dict() where available knows how to serialise them.
        return _plain(obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


@cache
def _environment() -> jinja2.Environment:
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(d)) for d in TEMPLATE_DIRS.values()])
    return jinja2.Environment(loader=loader, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def _render(kind: str, template: str, card_data, lineage: Lineage, context: dict[str, Any]) -> str:
    path = TEMPLATE_DIRS[kind] / f"{template}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} card template {path}")
    lineage_dict = lineage.to_dict()
    card_data.lineage = lineage_dict
    body = _environment().get_template(f"{template}.md").render(lineage=lineage_dict, **context)
    return f"---\n{card_data.to_yaml()}\n---\n\n{body.lstrip()}"


DEFAULT_LICENSE = "other"
DEFAULT_LICENSE_NAME = "per-source-licenses"
"""Artifacts built from PMC figures carry each source's own licence (recorded per record in ``source.license``), so
cards default to ``license: other`` with this ``license_name``; pass ``license``/``license_name``/``license_link``
to state yours."""

_SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
_SIZE_BUCKETS += ((10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


def size_category(num_rows: int) -> str:
    """The Hub's ``size_categories`` bucket of a dataset with ``num_rows`` rows (``"n<1K"``, ``"1K<n<10K"``, ...)."""
    for limit, name in _SIZE_BUCKETS:
        if num_rows < limit:
            return name
    return "n>1B"


def web_url(location: str | os.PathLike | None) -> str | None:
    """``location`` when it is an http(s) URL (a Hub page), else None: a local hub's folder is not shown on cards."""
    text = str(location) if location is not None else ""
    return text if text.startswith(("https://", "http://")) else None


def _license_fields(license: str, license_name: str | None, license_link: str | None) -> dict[str, str]:
    if license != "other":
        if license_name or license_link:
            raise ValueError(f"license_name/license_link describe a licence 'other', not {license!r}")
        return {"license": license}
    fields = {"license": "other", "license_name": license_name or DEFAULT_LICENSE_NAME}
    if license_link:
        fields["license_link"] = license_link
    return fields


def dataset_card(
    template: str,
    *,
    lineage: Lineage,
    pretty_name: str,
    license: str = DEFAULT_LICENSE,
    license_name: str | None = None,
    license_link: str | None = None,
    size_categories: list[str] | None = None,
    task_categories: list[str] | None = None,
    tags: list[str] | None = None,
    revision: str = "main",
    **context: Any,
) -> DatasetCard:
    """Render ``dataset_cards/<template>.md``. ``context`` holds the template's own variables.

    ``license`` is a Hub licence id; with ``"other"``, ``license_name`` (default :data:`DEFAULT_LICENSE_NAME`) and
    ``license_link`` name it. ``size_categories`` defaults to the bucket of a ``num_rows`` context value.
    ``revision`` is the branch or tag the card's loading snippet names.
    """
    if size_categories is None and isinstance(context.get("num_rows"), int):
        size_categories = [size_category(context["num_rows"])]
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        **_license_fields(license, license_name, license_link),
        size_categories=size_categories,
        task_categories=task_categories or ["visual-question-answering", "image-text-to-text"],
        language=["en"],
        tags=["biomedical", "biomed-vital", *(tags or [])],
    )
    context = {"pretty_name": pretty_name, "revision": revision, **context}
    return DatasetCard(_render("dataset", template, card_data, lineage, context))


def model_card(
    template: str,
    *,
    lineage: Lineage,
    model_name: str,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str = DEFAULT_LICENSE,
    license_name: str | None = None,
    license_link: str | None = None,
    pipeline_tag: str | None = None,
    tags: list[str] | None = None,
    eval_results: list | None = None,
    revision: str = "main",
    **context: Any,
) -> ModelCard:
    """Render ``model_cards/<template>.md``; ``eval_results`` become the card's ``model-index``.

    ``license``/``license_name``/``license_link`` as for :func:`dataset_card`; ``revision`` is the branch or tag the
    card's loading snippet names.
    """
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        datasets=datasets,
        **_license_fields(license, license_name, license_link),
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["biomedical", "biomed-vital", *(tags or [])],
        eval_results=eval_results,
    )
    context = {
        "model_name": model_name,
        "base_model": base_model,
        "datasets": datasets or [],
        "revision": revision,
        **context,
    }
    return ModelCard(_render("model", template, card_data, lineage, context))


def lineage_of(card) -> dict[str, Any] | None:
    """The lineage block of a card read back from a hub, or None."""
    if card is None:
        return None
    return card.data.to_dict().get("lineage")
