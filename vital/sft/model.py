"""The model an SFT run starts from: where it comes from (and what the card records about it), how it is loaded,
and what trains (freezing the vision tower or all but the projector)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vital.hub import ArtifactRef, Hub, parse_repo_ref, sha256_file


logger = logging.getLogger(__name__)

Freeze = Literal["none", "vision_tower", "all_but_projector"]
FREEZE_CHOICES = ("none", "vision_tower", "all_but_projector")

# Attribute names of the vision encoder and of the vision-to-text projector in transformers' VLMs: LLaVA and
# LLaVA-NeXT (vision_tower, multi_modal_projector), Idefics3 and SmolVLM (vision_model, connector), Qwen2-VL and
# Qwen2.5-VL (visual, with its projector visual.merger), Gemma 3 (vision_tower, multi_modal_projector).
VISION_TOWER_NAMES = ("vision_tower", "vision_model", "visual")
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger", "mm_projector")


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


def chat_template_input(chat_template_path: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The lineage record of ``SFTConfig.chat_template_path`` and the file to read it from.

    TRL reads a ``.jinja`` / ``.j2`` path that exists as a file and otherwise takes the value for a model id to clone
    a template from. A template path that is not a file here but names one shipped with the package (the paper
    profiles' ``recipes/biomed_vital/sft/llava15_training.jinja``) is read from the shipped copy, so the paper configs
    run from any folder, not only from a checkout. The record (the path as configured and the file's sha256) goes
    into the run's inputs, so a run is fingerprinted by the template's content: an edited template is a new run, and
    the same template read from a checkout or from an installed package is the same run. ``(None, None)`` without a
    template file (unset, or a model id for TRL to clone from).
    """
    from vital.resources import config_file

    path = chat_template_path
    if not path or not str(path).endswith((".jinja", ".j2")):
        return None, None
    try:
        found = config_file(path)  # the path as given when it is a file, else the shipped copy
    except FileNotFoundError:
        raise FileNotFoundError(f"chat_template_path {path!r}: no such file, nor one shipped with vital") from None
    return {"source": str(path), "repo_type": "chat_template", "sha256": sha256_file(Path(found))}, found


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


def load_model(hub: Hub, model_args: Any, training_args: Any, freeze: str = "none") -> tuple[ModelSource, Any, Any]:
    """The processor and the model of a run (`trl.ModelConfig` + `trl.SFTConfig`): from a local folder, a Hugging Face
    Hub id or ``hub:<repo>@<revision>`` (`resolve_model`), optionally quantized for QLoRA (each process holds its
    quantized copy on its own GPU), optionally partly frozen (`freeze_modules`). Consumes
    ``training_args.model_init_kwargs`` (the trainer would warn that it ignores them)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import get_quantization_config

    if not model_args.model_name_or_path:
        raise ValueError("no `model_name_or_path` given")
    if freeze != "none" and model_args.use_peft:
        raise ValueError("freeze is for full fine-tuning; with LoRA choose modules with lora_target_modules")
    source = resolve_model(hub, model_args.model_name_or_path, model_args.model_revision)
    trust = training_args.trust_remote_code
    processor = AutoProcessor.from_pretrained(source.path, revision=source.revision, trust_remote_code=trust)
    quantization_config = get_quantization_config(model_args)
    model_kwargs = {
        "revision": source.revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": trust,
        "quantization_config": quantization_config,
        "device_map": {"": training_args.local_process_index} if quantization_config is not None else None,
        **(training_args.model_init_kwargs or {}),
    }
    training_args.model_init_kwargs = None
    model = AutoModelForImageTextToText.from_pretrained(source.path, **model_kwargs)
    freeze_modules(model, freeze)
    return source, model, processor
