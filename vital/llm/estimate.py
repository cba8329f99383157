"""What an API stage will cost before it runs: requests, tokens and dollars, from representative requests built
offline and the endpoint's price table (``vital pipeline --dry_run``). Nothing is sent anywhere. Every stage is priced
both online and through the Batch API (``--mode batch``), side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vital.llm.client import EndpointConfig
from vital.llm.limits import estimate_prompt_tokens
from vital.llm.pricing import cost_usd


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    task: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    basis: str  # where the request count came from
    batch_cost_usd: float = 0.0  # the same requests through the Batch API (--mode batch)

    def row(self) -> tuple[str, ...]:
        return (
            self.stage,
            self.task,
            self.model,
            f"{self.requests:,}",
            f"{self.prompt_tokens:,}",
            f"{self.completion_tokens:,}",
            f"${self.cost_usd:,.2f}",
            f"${self.batch_cost_usd:,.2f}",
            self.basis,
        )


def estimate_requests(
    stage: str,
    task: str,
    endpoint: EndpointConfig,
    samples: Sequence[list[dict[str, Any]]],
    requests: int,
    completion_tokens_each: int,
    basis: str,
) -> StageEstimate:
    """Scale the mean prompt size of ``samples`` (representative requests) to ``requests`` requests.

    Completion tokens are an expectation per request (capped by the endpoint's ``max_tokens``), since a reply's length
    is not known before it is written.
    """
    mean_prompt = sum(estimate_prompt_tokens(m) for m in samples) / max(1, len(samples))
    completion = min(completion_tokens_each, endpoint.max_tokens or completion_tokens_each)
    prompt_total, completion_total = round(mean_prompt * requests), completion * requests
    price = {"model": endpoint.model, "prices": endpoint.price_table, "provider": endpoint.provider}
    cost = cost_usd(prompt_total, completion_total, **price)
    batch_cost = cost_usd(prompt_total, completion_total, **price, batch=True)
    return StageEstimate(
        stage, task, endpoint.model, requests, prompt_total, completion_total, cost, basis, batch_cost
    )


def estimate_table(estimates: Sequence[StageEstimate]) -> str:
    header = ("stage", "task", "model", "requests", "prompt tokens", "completion tokens", "online cost", "batch cost",
              "basis")  # fmt: skip
    total = (
        "total",
        "",
        "",
        f"{sum(e.requests for e in estimates):,}",
        f"{sum(e.prompt_tokens for e in estimates):,}",
        f"{sum(e.completion_tokens for e in estimates):,}",
        f"${sum(e.cost_usd for e in estimates):,.2f}",
        f"${sum(e.batch_cost_usd for e in estimates):,.2f}",
        "",
    )
    from vital.runner import format_table

    return format_table(header, [e.row() for e in estimates], footer=total)


def count_rows(hub, repo_id: str, revision: str, config: str = "default") -> int | None:
    """Rows of a dataset config as its card records them (no data download), or None if it cannot be read."""
    try:
        card = hub.read_card(repo_id, revision, "dataset")
    except Exception:  # an unreachable or missing repo: the caller falls back to its expected count
        return None
    if card is None:
        return None
    infos = card.data.to_dict().get("dataset_info") or []
    for info in [infos] if isinstance(infos, dict) else infos:
        if info.get("config_name", "default") == config:
            return sum(s.get("num_examples", 0) for s in info.get("splits", []))
    return None


# ----------------------------------------------------------------------------------------------------------------------
# The settings a profile decides (README: "Paper vs ours"), printed by the dry run
# ----------------------------------------------------------------------------------------------------------------------
PROFILE_SETTINGS: dict[str, tuple[str, ...]] = {
    "curate_demos": (
        "image_embedder", "text_embedder", "text_fields", "image_weight", "exclude_modalities", "num_clusters",
    ),
    "generate": (
        "model", "max_tokens", "prompt_style", "demo_images", "demo_modalities", "demos_per_modality",
        "answer_pair_demos", "samples_per_pair",
    ),
    "rate": ("model", "temperature", "prompt_style", "judge_retries"),
    "train_selector": (
        "backbone", "text_template", "text_fields", "head_activation", "head_dropout", "normalize_features",
        "optim", "weight_decay", "learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs",
        "per_device_train_batch_size", "max_grad_norm", "bf16", "loss_type", "margin", "weight_normalization",
        "pair_sampling", "judge_turns", "judge_heldout_fraction", "clinician_weight", "clinician_train_limit",
        "clinician_heldout_preferences", "mean_rank",
    ),
    "select": ("ratios", "aggregate", "cut"),
    "evaluate": (
        "do_sample", "sampling_temperature", "top_p", "max_new_tokens", "closed_hint", "judge_with_image",
        "win_rate_with_image", "win_rate_verdict_position", "model",
    ),
}  # fmt: skip
"""Stage -> the config keys shown in the dry run's settings table (a recipe module may name its own in
``PROFILE_SETTINGS``)."""

UNSET = "(not set: the recipe's default)"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def settings_rows(stages: Sequence[tuple[str, str | None]], keys: Mapping[str, Sequence[str]] | None = None) -> list:
    """(stage, setting, value) for the profile settings of each stage, read from the stage's YAML config as written
    (a key the YAML leaves out shows `UNSET`: a profile should set every one on purpose)."""
    from pathlib import Path

    import yaml

    keys = PROFILE_SETTINGS if keys is None else keys
    rows = []
    for stage, config in stages:
        if stage not in keys:
            continue
        values = yaml.safe_load(Path(config).read_text()) or {} if config else {}
        for key in keys[stage]:
            rows.append((stage, key, _show(values[key]) if key in values else UNSET))
    return rows


def settings_table(rows: Sequence[tuple[str, str, str]]) -> str:
    from vital.runner import format_table

    return format_table(("stage", "setting", "value"), rows)
