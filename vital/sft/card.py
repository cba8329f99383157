"""What an SFT run leaves on its branch: the model card's text, the skipped rows, and the files pushed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from vital.cards import Lineage, model_card
from vital.data.errors import Quarantine
from vital.hub import Hub, PushResult
from vital.runs import FINGERPRINT_FILE
from vital.sft.model import ModelSource, base_reference


# Files of a trainer's output_dir that are not part of the model artifact. TensorBoard's `runs/` is: the Hub shows the
# run's curves beside the model.
NOT_PUSHED = ("checkpoint-*", "training_args.bin", ".ipynb_checkpoints", FINGERPRINT_FILE)


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


def sft_card(
    planned: Lineage,
    target: Any,
    source: ModelSource,
    model: Any,
    data: Any,
    metrics: Mapping[str, Any],
    extra: Mapping[str, Any],
    adapter: bool,
    resumed_from: str | None = None,
) -> Any:
    """The model card of a finished run: the planned lineage (inputs at their commits, the config the user set) with
    the run's figures, the mixture with its commits, the branch, and the base model as loaders name it."""
    lineage = Lineage(
        stage="sft",
        inputs=planned.inputs,  # the base model, the data at their commits, a chat template file by its sha256
        config=planned.config,
        seed=planned.seed,
        extra={
            "run_branch": target.branch,
            **extra,
            "resumed_from": resumed_from,
            "mixture": data.mixture,
            "adapter": adapter,
            "skipped_rows": len(data.quarantine),
            "metrics": {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
        },
    )
    description = describe_run(source.base_model or source.path, adapter, metrics, len(data.train), resumed_from)
    return model_card(
        "model",
        lineage=lineage,
        model_name=target.repo_id.split("/")[-1],
        base_model=source.base_model,
        datasets=sorted({ref.repo_id for ref in data.refs}),
        pipeline_tag="image-text-to-text",
        tags=["sft", "trl", *(["lora"] if adapter else [])],
        description=description + skipped_rows_note(data.quarantine),
        repo_id=target.repo_id,
        revision=target.branch,
        adapter=adapter,
        **dict(zip(("base_model_path", "base_revision"), base_reference(source, model))),
    )


def push_run(hub: Hub, target: Any, output_dir: str | os.PathLike, final_loss: float) -> PushResult:
    """Push the model artifact of ``output_dir`` (`stage_output`: no checkpoints, no pickled arguments) to the run's
    branch as one commit; the branch then holds exactly this run."""
    import tempfile

    with tempfile.TemporaryDirectory() as staging:
        stage_output(output_dir, staging)
        return hub.push_folder(
            staging,
            target.repo_id,
            "model",
            revision=target.branch,
            private=target.private,
            commit_message=f"SFT run {target.branch}: final loss {final_loss:.4f}",
            delete_patterns=["*"],
        )
