"""Training runs that resume exactly and never ship what they did not train.

What the SFT and selector recipes share about a run's *identity* and its *weights*:

* `run_fingerprint`: a run is its inputs (at their commits), its config (minus where it writes and how it logs), its
  seed, its world size and its effective batch. The fingerprint is written into ``output_dir`` (`FINGERPRINT_FILE`)
  and into every checkpoint (`FingerprintCallback`).
* `prepare_output_dir`: a checkpoint is resumed only by the run it belongs to. An ``output_dir`` left by another run
  (a changed config, other inputs, another world size, or no fingerprint at all) is moved aside whole and the run
  starts fresh, saying what changed.
* `ExactResumeMixin` / `load_full_checkpoint`: the Trainer reloads a full checkpoint with a bare ``load_state_dict``,
  but ``save_pretrained`` writes the checkpoint in the model's original key naming (LLaVA's and Qwen2-VL's
  ``language_model.model.*``): the keys missed and the resumed run trained on from its initial weights. The mixin
  loads the checkpoint through transformers' own key conversion and refuses any key it cannot place.
* `check_not_base_weights`: a run that trained steps but whose weights equal the base model's is refused before push.
* `finished_fingerprint`: the commit of a finished run with the same fingerprint, so a rerun with nothing changed
  skips its work.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "vital_run.json"
"""The run fingerprint, in ``output_dir`` and in every ``checkpoint-N``."""

# Config fields that say where a run writes, how it logs or how fast it reads data: they cannot change the weights,
# so changing them does not make another run. Everything else does (learning rate, steps, schedule, data, ...).
NOT_FINGERPRINTED = frozenset(
    {
        # where the run writes and pushes
        "output_dir",
        "run_name",
        "hub",
        "output_repo",
        "pairs_repo",
        "revision",
        "run_branch",
        "overwrite_branch",
        "push",
        "private",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_token",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "resume_from_checkpoint",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "save_on_each_node",
        "save_only_model",
        # how it logs
        "report_to",
        "project",
        "trackio_space_id",
        "trackio_bucket_id",
        "trackio_static_space_id",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "disable_tqdm",
        "skip_memory_metrics",
        # per process, or speed only
        "local_rank",
        "torch_threads",
        "dataloader_num_workers",
        "dataloader_persistent_workers",
        "dataloader_pin_memory",
        "dataloader_prefetch_factor",
    }
)


class StaleCheckpointError(RuntimeError):
    """A checkpoint asked for by path belongs to another run."""


class BaseWeightsError(RuntimeError):
    """A run trained steps, yet its weights equal the base model's: pushing them would ship the base model."""


# ----------------------------------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------------------------------
def _input_record(item: Any) -> dict[str, Any]:
    record = item.to_dict() if hasattr(item, "to_dict") else dict(item)
    if record.get("commit"):
        record.pop("revision", None)  # "main" and the commit it resolved to are the same input
    return record


def fingerprinted(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (one part of a run's config, as plain values) without the `NOT_FINGERPRINTED` settings, by name."""
    return {k: v for k, v in sorted(values.items()) if k not in NOT_FINGERPRINTED}


def run_fingerprint(
    *,
    stage: str,
    inputs: Sequence[Any],
    config: Mapping[str, Any],
    seed: int | None,
    world_size: int,
    effective_batch: int,
) -> dict[str, Any]:
    """What makes a run this run, and its sha256.

    Args:
        stage: the recipe (``sft``, ``train_selector``).
        inputs: lineage records (`vital.hub.ArtifactRef` or dicts) of every input, at its commit.
        config: ``{part: dataclass or dict}`` of the run's arguments; `NOT_FINGERPRINTED` fields are left out.
        seed: the training seed.
        world_size: the number of processes (a 1-process and a 2-process run are different runs).
        effective_batch: rows per optimizer step over all processes.

    Returns:
        ``{"sha256": ..., "stage": ..., "inputs": [...], "config": {...}, "seed": ..., "world_size": ...,
        "effective_batch": ...}``.
    """
    from vital.cards import _plain, redact_secrets

    parts = {}
    for part, values in config.items():
        plain = redact_secrets(_plain(values))
        parts[part] = fingerprinted(plain)
    body = {
        "stage": stage,
        "inputs": [_input_record(item) for item in inputs],
        "config": parts,
        "seed": seed,
        "world_size": int(world_size),
        "effective_batch": int(effective_batch),
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return {"sha256": digest, **body}


FINGERPRINT_KEYS = ("stage", "inputs", "seed", "world_size", "effective_batch")


def fingerprint_changes(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], keys: Sequence[str] = FINGERPRINT_KEYS
) -> list[str]:
    """What differs between two fingerprints, as readable names (``config.training.learning_rate``, ``world_size``):
    the top-level ``keys`` as a whole, ``config`` setting by setting."""
    if not old:
        return ["no fingerprint (made by another version or by hand)"]
    changed = []
    for key in keys:
        if old.get(key) != new.get(key):
            changed.append(key)
    old_config, new_config = old.get("config") or {}, new.get("config") or {}
    for part in sorted(set(old_config) | set(new_config)):
        a, b = old_config.get(part) or {}, new_config.get(part) or {}
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            changed += [f"config.{part}"] if a != b else []
            continue
        changed += [f"config.{part}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return changed


def read_fingerprint(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The fingerprint stored in ``folder``, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(folder) / FINGERPRINT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_fingerprint(folder: str | os.PathLike, fingerprint: Mapping[str, Any]) -> None:
    """Write ``fingerprint`` into ``folder`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{FINGERPRINT_FILE}.tmp"
    tmp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, folder / FINGERPRINT_FILE)


class FingerprintCallback(TrainerCallback):
    """Writes the run's fingerprint into every checkpoint the Trainer saves, so a checkpoint says which run it is."""

    def __init__(self, fingerprint: Mapping[str, Any]) -> None:
        self.fingerprint = dict(fingerprint)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if folder.is_dir():
                write_fingerprint(folder, self.fingerprint)


# ----------------------------------------------------------------------------------------------------------------------
# The output folder belongs to one run
# ----------------------------------------------------------------------------------------------------------------------
def _aside(output_dir: Path, old: Mapping[str, Any] | None) -> Path:
    tag = (old or {}).get("sha256", "unknown")[:12]
    target = output_dir.with_name(f"{output_dir.name}.superseded-{tag}")
    n = 2
    while target.exists():
        target = output_dir.with_name(f"{output_dir.name}.superseded-{tag}-{n}")
        n += 1
    return target


def prepare_output_dir(
    output_dir: str | os.PathLike,
    fingerprint: Mapping[str, Any],
    resume_from_checkpoint: str | bool | None = None,
    main_process: bool = True,
) -> str | None:
    """Bind ``output_dir`` to this run and return the checkpoint to resume from (None: start fresh).

    * ``output_dir`` holds this run's fingerprint: resume from its last checkpoint saved to the end
      (`vital.runner.last_complete_checkpoint`) whose own fingerprint, if it has one, matches too.
    * ``output_dir`` holds anything else (another run's files, or files without a fingerprint): the main process
      moves its content to ``<output_dir>.superseded-<old sha12>`` and logs what changed; the run starts fresh.
    * ``resume_from_checkpoint`` names a checkpoint: it is used only if its fingerprint matches (one without a
      fingerprint is used with a warning), else `StaleCheckpointError` says why (start a new run from its weights
      with ``model_name_or_path`` instead). ``output_dir`` is bound as above; a checkpoint inside a moved folder is
      resumed from where it was moved.

    Under ``accelerate launch`` call it on the main process first (``main_process=True``), then on the others: they
    only read the folder.
    """
    from vital.runner import last_complete_checkpoint

    output_dir = Path(output_dir)
    explicit = Path(resume_from_checkpoint) if isinstance(resume_from_checkpoint, str) else None
    if explicit is not None:
        stored = read_fingerprint(explicit)
        if stored is None:
            logger.warning("%s holds no run fingerprint: resuming from it unverified", explicit)
        elif stored.get("sha256") != fingerprint["sha256"]:
            raise StaleCheckpointError(
                f"{explicit} belongs to another run (it differs in "
                f"{', '.join(fingerprint_changes(stored, fingerprint))}); resuming it would mix two runs. Start a new "
                "run from its weights with `model_name_or_path` instead."
            )

    stored = read_fingerprint(output_dir)
    occupied = output_dir.is_dir() and any(output_dir.iterdir())
    if occupied and (stored is None or stored.get("sha256") != fingerprint["sha256"]):
        if not main_process:
            raise StaleCheckpointError(f"{output_dir} holds another run and the main process did not move it aside")
        target = _aside(output_dir, stored)
        target.mkdir(parents=True)
        for child in sorted(output_dir.iterdir()):
            os.replace(child, target / child.name)
        if explicit is not None and explicit.resolve().is_relative_to(output_dir.resolve()):
            explicit = target / explicit.resolve().relative_to(output_dir.resolve())  # moved with the rest
        logger.warning(
            "%s held another run (differs in %s): moved it to %s and starting fresh",
            output_dir,
            ", ".join(fingerprint_changes(stored, fingerprint)),
            target,
        )
    if main_process:
        write_fingerprint(output_dir, fingerprint)
    if explicit is not None:
        return str(explicit)

    checkpoint = last_complete_checkpoint(output_dir)
    while checkpoint is not None:
        own = read_fingerprint(checkpoint)
        if own is None or own.get("sha256") == fingerprint["sha256"]:
            break
        logger.warning("skipping %s: it belongs to another run", checkpoint)
        checkpoint = last_complete_checkpoint(output_dir, before=checkpoint)
    return checkpoint


# ----------------------------------------------------------------------------------------------------------------------
# Loading a full checkpoint exactly
# ----------------------------------------------------------------------------------------------------------------------
def read_checkpoint_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The tensors of a full-weights checkpoint (``model.safetensors``, sharded safetensors or ``pytorch_model.bin``),
    on the CPU; None if the folder holds no full weights (an adapter checkpoint)."""
    import torch
    from safetensors.torch import load_file
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    folder = Path(folder)
    if (folder / SAFE_WEIGHTS_NAME).is_file():
        return load_file(folder / SAFE_WEIGHTS_NAME, device="cpu")
    if (folder / SAFE_WEIGHTS_INDEX_NAME).is_file():
        index = json.loads((folder / SAFE_WEIGHTS_INDEX_NAME).read_text())
        state: dict[str, Any] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(folder / shard, device="cpu"))
        return state
    files = []
    if (folder / WEIGHTS_NAME).is_file():
        files = [folder / WEIGHTS_NAME]
    elif (folder / WEIGHTS_INDEX_NAME).is_file():
        index = json.loads((folder / WEIGHTS_INDEX_NAME).read_text())
        files = [folder / shard for shard in sorted(set(index["weight_map"].values()))]
    if not files:
        return None
    state = {}
    for file in files:
        state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def saved_key_map(model: Any) -> dict[str, str] | None:
    """``{key as save_pretrained writes it: key in model.state_dict()}``, from transformers' own weight conversion of
    this model; None when the conversion does more than rename (then the keys cannot be mapped one to one)."""
    from transformers.core_model_loading import revert_weight_conversion

    own = model.state_dict()
    by_id = {id(tensor): key for key, tensor in own.items()}
    reverted = revert_weight_conversion(model, dict(own))
    mapping = {}
    for saved, tensor in reverted.items():
        key = by_id.get(id(tensor))
        if key is None:
            return None
        mapping[saved] = key
    return mapping


def load_full_checkpoint(model: Any, folder: str | os.PathLike) -> None:
    """Load a full-weights checkpoint into ``model`` tensor for tensor, mapping the saved key names to the model's as
    ``from_pretrained`` does. Keys of the checkpoint that fit nowhere, or parameters it does not hold (other than
    tied ones), raise `RuntimeError` naming them."""
    state = read_checkpoint_state(folder)
    if state is None:
        raise FileNotFoundError(f"{folder} holds no full model weights")
    own = model.state_dict()
    mapping = saved_key_map(model)
    if mapping is None:  # weights are split or fused on save: let from_pretrained convert them
        logger.info("%s: loading through from_pretrained (its weight conversion is not a renaming)", folder)
        loaded = type(model).from_pretrained(folder, config=model.config, dtype=next(iter(own.values())).dtype)
        state, mapping = loaded.state_dict(), {}
    mapped, unexpected = {}, []
    for key, tensor in state.items():
        target = key if key in own else mapping.get(key)
        if target is None:
            unexpected.append(key)
        else:
            mapped[target] = tensor
    result = model.load_state_dict(mapped, strict=False)
    loaded_storage = {own[k].data_ptr() for k in mapped}
    missing = [k for k in result.missing_keys if own[k].data_ptr() not in loaded_storage]  # tied weights are loaded
    if unexpected or missing or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {folder} does not fit {type(model).__name__}: "
            f"{len(unexpected) + len(result.unexpected_keys)} key(s) fit nowhere "
            f"({', '.join((unexpected + list(result.unexpected_keys))[:5])}), {len(missing)} parameter(s) not in it "
            f"({', '.join(missing[:5])})"
        )
    logger.info("loaded %d tensors of %s into %s", len(mapped), folder, type(model).__name__)


class ExactResumeMixin:
    """For a `transformers.Trainer` subclass: resume full fine-tunes with `load_full_checkpoint` (the checkpoint's
    tensors, every one, under the model's key names). Adapters, DeepSpeed and FSDP checkpoints keep the Trainer's
    own loaders (they save and load in one naming)."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from transformers import PreTrainedModel

        target = self.model if model is None else model
        plain = not (self.is_deepspeed_enabled or self.is_fsdp_enabled) and isinstance(target, PreTrainedModel)
        if plain and has_full_weights(resume_from_checkpoint):
            load_full_checkpoint(target, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)


class HubLayerPushMixin:
    """For a `transformers.Trainer` subclass whose stage pushes through `vital.hub` (local or Hugging Face backend): the
    Trainer itself never pushes. ``push_to_hub``, ``hub_model_id``, ``hub_revision`` and ``hub_private_repo`` keep
    the meaning the user gave them in the stage's config (and its lineage records them), but the trainer works on a
    copy of the arguments with ``push_to_hub`` off, so that neither ``init_hf_repo`` at construction nor the
    checkpoint and ``save_model`` pushes reach the Hugging Face Hub behind the hub layer's back (they would also fail
    offline); `push_to_hub` is refused. (docs/design.md, Hub layer.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "args" in kwargs:
            kwargs["args"] = _without_push(kwargs["args"])
        elif len(args) > 1:
            args = (args[0], _without_push(args[1]), *args[2:])
        super().__init__(*args, **kwargs)

    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{type(self).__name__} does not push by itself: the stage pushes its output through vital.hub "
            "(push_to_hub, hub_model_id, hub_revision, hub_private_repo in its config)"
        )


def _without_push(training_args: Any) -> Any:
    if training_args is None or not getattr(training_args, "push_to_hub", False):
        return training_args
    training_args = copy.copy(training_args)
    training_args.push_to_hub = False
    return training_args


def has_full_weights(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds full model weights (not only an adapter)."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    names = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
    return any((Path(folder) / name).is_file() for name in names)


# ----------------------------------------------------------------------------------------------------------------------
# Never push the base model as a trained one
# ----------------------------------------------------------------------------------------------------------------------
def _safetensors_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith("adapter_"))


def _iter_tensors(files: Iterable[Path]):
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                yield key, f.get_tensor(key)


def weights_equal(folder: str | os.PathLike, base_folder: str | os.PathLike) -> bool:
    """Whether every weight tensor of ``folder`` equals the base model's (by name, else by content and shape).

    Stops at the first tensor that differs, so a trained model answers after reading a tensor or two."""
    import torch
    from safetensors import safe_open

    files, base_files = _safetensors_files(Path(folder)), _safetensors_files(Path(base_folder))
    if not files or not base_files:
        raise FileNotFoundError(f"no safetensors weights in {folder if not files else base_folder}")
    where = {}
    for file in base_files:
        with safe_open(str(file), framework="pt") as f:
            where.update(dict.fromkeys(f.keys(), file))  # noqa: SIM118
    by_shape: dict[tuple, list[str]] | None = None
    for key, tensor in _iter_tensors(files):
        if key in where:
            with safe_open(str(where[key]), framework="pt") as f:
                if not torch.equal(tensor, f.get_tensor(key)):
                    return False
            continue
        if by_shape is None:  # named differently: compare with every base tensor of the same shape and dtype
            by_shape = {}
            for base_key, base in _iter_tensors(base_files):
                by_shape.setdefault((tuple(base.shape), base.dtype), []).append(base_key)
        candidates = by_shape.get((tuple(tensor.shape), tensor.dtype), [])
        if not any(torch.equal(tensor, _tensor(where[c], c)) for c in candidates):
            return False
    return True


def _tensor(file: Path, key: str):
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return f.get_tensor(key)


def adapter_is_identity(folder: str | os.PathLike) -> bool | None:
    """Whether a LoRA adapter leaves the base model unchanged (every ``lora_B`` is zero, as peft initialises it);
    None when the folder holds no LoRA B matrices to tell."""
    import torch
    from safetensors.torch import load_file

    file = Path(folder) / "adapter_model.safetensors"
    if not file.is_file():
        return None
    tensors = load_file(file)
    b = [t for k, t in tensors.items() if "lora_B" in k or "lora_embedding_B" in k]
    others = [k for k in tensors if "lora_" not in k]  # modules_to_save: trained copies of base modules
    if not b or others:
        return None
    return all(not torch.any(t != 0) for t in b)


def check_not_base_weights(
    output_dir: str | os.PathLike, base_folder: str | os.PathLike | None, steps: int, adapter: bool
) -> None:
    """Refuse (`BaseWeightsError`) a run that trained ``steps`` > 0 but whose saved weights equal the base model's.

    ``output_dir`` holds the saved model (full weights) or adapter; ``base_folder`` the base model's files (None when
    they are not on disk: the check is then skipped with a warning).
    """
    if steps <= 0:
        return
    if adapter:
        same = adapter_is_identity(output_dir)
        if same is None:
            logger.warning("%s: cannot tell whether the adapter changes the base model; not checked", output_dir)
            return
    else:
        if base_folder is None or not _safetensors_files(Path(base_folder)):
            logger.warning("the base model's weights are not on disk: not checked against %s", output_dir)
            return
        same = weights_equal(output_dir, base_folder)
    if same:
        what = "the adapter is a no-op (every LoRA B matrix is zero)" if adapter else "every tensor equals the base's"
        raise BaseWeightsError(
            f"refusing to push {output_dir}: the run reports {steps} step(s) but {what}, so this would ship the base "
            "model as a trained one. A resumed checkpoint whose weights were not restored, or a learning rate of 0, "
            "does this; rerun with a fresh output_dir."
        )


# ----------------------------------------------------------------------------------------------------------------------
# Figures of the run, and finished runs
# ----------------------------------------------------------------------------------------------------------------------
def run_figures(log_history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Figures of the whole run from the trainer state's log history (a resumed run's history starts at step 1):
    ``train_loss`` (mean of the logged losses), ``final_loss`` (the last), ``logged_steps``."""
    losses = [float(entry["loss"]) for entry in log_history if "loss" in entry]
    if not losses:
        return {}
    return {"train_loss": sum(losses) / len(losses), "final_loss": losses[-1], "logged_steps": len(losses)}


def card_lineage(hub: Any, repo_id: str, revision: str, repo_type: str) -> dict[str, Any] | None:
    """The lineage block of the card on ``repo_id@revision``, or None where there is no such repo, revision or card
    (either backend)."""
    from vital.cards import lineage_of
    from vital.hub import HubError

    try:
        return lineage_of(hub.read_card(repo_id, revision, repo_type))
    except HubError:
        return None
    except Exception as error:  # the Hugging Face backend: repository or revision not found
        if type(error).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"):
            return None
        raise


def finished_fingerprint(hub: Any, repo_id: str, revision: str, repo_type: str, fingerprint: Mapping[str, Any]):
    """The lineage of the artifact on ``repo_id@revision`` if its card records this run fingerprint (and the same
    stack versions), else None: the work is done already."""
    from vital.cards import stack_versions

    lineage = card_lineage(hub, repo_id, revision, repo_type)
    if not lineage or (lineage.get("extra") or {}).get("run_fingerprint") != fingerprint["sha256"]:
        return None
    if lineage.get("versions") != stack_versions():
        return None
    return lineage


__all__ = [
    "FINGERPRINT_FILE",
    "NOT_FINGERPRINTED",
    "BaseWeightsError",
    "ExactResumeMixin",
    "FingerprintCallback",
    "StaleCheckpointError",
    "adapter_is_identity",
    "check_not_base_weights",
    "finished_fingerprint",
    "fingerprint_changes",
    "load_full_checkpoint",
    "prepare_output_dir",
    "read_checkpoint_state",
    "read_fingerprint",
    "run_figures",
    "run_fingerprint",
    "saved_key_map",
    "weights_equal",
    "write_fingerprint",
]


def log_not_pushed(what: str, folder: str | os.PathLike, repo_id: str) -> None:
    """Say that ``push_to_hub`` is false: the run pushed nothing, and where what it made is instead."""
    logger.info("push_to_hub is false: nothing was pushed to %s; %s is in %s", repo_id, what, Path(folder).resolve())
