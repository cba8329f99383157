"""Evaluation results: per-item VQA scores, the summary table every eval dataset carries, the model card's
``model-index`` entries, and the comparison table and chart across models.

Every eval dataset has a ``summary`` config with one row per number (`SUMMARY_FEATURES`): the model, the task
(``vqa``, ``chat``, ``win_rate``), the benchmark and split, the metric and mode (``legacy``/``strict`` for VQA), a
group (``type:conversation``, ``domain:ct_scan``, or empty for the whole set), the value, how many items it covers and
the benchmark's repo and commit. The model card entries, the card tables and the comparisons are all read from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Features, Value

from vital.evaluation.vqa_metrics import MODES, score_vqa


VQA_EVAL_FEATURES = Features(
    {
        "id": Value("string"),
        "benchmark": Value("string"),
        "split": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "answer_type": Value("string"),
        "prediction": Value("string"),
        "answer_error": Value("string"),  # set when no answer could be had (endpoint failure); scored as wrong
        "model": Value("string"),
        "legacy_score": Value("float32"),  # the closed hit (0/1) or the open recall (0-1), as LLaVA-Med scores it
        "strict_score": Value("float32"),
        "strict_unanswered": Value("bool"),  # a closed item whose prediction has no yes/no word
    }
)

SUMMARY_FEATURES = Features(
    {
        "model": Value("string"),
        "task": Value("string"),  # vqa | chat | win_rate
        "benchmark": Value("string"),  # a benchmark name, "overall" (pooled items) or "macro" (mean of benchmarks)
        "split": Value("string"),
        "metric": Value("string"),
        "mode": Value("string"),  # legacy | strict for VQA; "" otherwise
        "group": Value("string"),  # "" for the whole set, or "type:<t>" / "domain:<d>"
        "value": Value("float64"),  # null when no item was scored
        "n": Value("int64"),
        "dataset_repo": Value("string"),
        "dataset_revision": Value("string"),
    }
)

VQA_METRICS = ("closed_accuracy", "open_recall")
CHAT_METRICS = ("mean_of_ratios", "ratio_of_means")
WIN_METRICS = ("win_rate", "win_rate_excluding_ties")
METRIC_LABELS = {
    "closed_accuracy": "closed accuracy",
    "open_recall": "open recall",
    "mean_of_ratios": "relative score (mean of ratios)",
    "ratio_of_means": "relative score (ratio of means)",
    "win_rate": "win rate",
    "win_rate_excluding_ties": "win rate excluding ties",
}


# ---------------------------------------------------------------------------------------------------------------------
# VQA


def score_benchmark(dataset, answers: Mapping[str, Any], model: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-item rows (`VQA_EVAL_FEATURES`) and both metric modes for one benchmark.

    ``answers`` maps ``<benchmark>/<id>`` to an `Answer`; an answer with an error is scored as the empty string (a
    miss), and counted in ``n_answer_errors``. Returns ``(rows, {"legacy": ..., "strict": ..., "n": ...,
    "n_answer_errors": ...})`` where each mode holds `score_vqa`'s aggregates without the per-item lists.
    """
    text = dataset.select_columns(["id", "benchmark", "split", "question", "answer", "answer_type"])
    items = text.to_list()
    answered = [answers[f"{item['benchmark']}/{item['id']}"] for item in items]
    predictions = [a.prediction if a.error is None else "" for a in answered]
    references = [item["answer"] for item in items]
    kinds = [item["answer_type"] for item in items]
    scores = {mode: score_vqa(predictions, references, kinds, mode) for mode in MODES}
    rows = []
    for i, (item, answer) in enumerate(zip(items, answered, strict=True)):
        rows.append(
            {
                **item,
                "prediction": predictions[i],
                "answer_error": answer.error,
                "model": model,
                "legacy_score": scores["legacy"]["item_scores"][i],
                "strict_score": scores["strict"]["item_scores"][i],
                "strict_unanswered": scores["strict"]["item_unanswered"][i],
            }
        )
    metrics = {mode: _aggregates(scores[mode]) for mode in MODES}
    metrics.update(n=len(items), n_answer_errors=sum(a.error is not None for a in answered))
    return rows, metrics


def _aggregates(scores: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scores.items() if not k.startswith("item_")}


def pooled_vqa(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Both modes over the items of every benchmark together (``overall``)."""
    predictions = [r["prediction"] for r in rows]
    references = [r["answer"] for r in rows]
    kinds = [r["answer_type"] for r in rows]
    return {mode: _aggregates(score_vqa(predictions, references, kinds, mode)) for mode in MODES}


def _row(model, task, benchmark, split, metric, mode, value, n, repo="", revision="", group="") -> dict[str, Any]:
    value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    return {
        "model": model,
        "task": task,
        "benchmark": benchmark,
        "split": split,
        "metric": metric,
        "mode": mode,
        "group": group,
        "value": value,
        "n": int(n),
        "dataset_repo": repo,
        "dataset_revision": revision,
    }


def vqa_summary_rows(
    model: str, per_benchmark: Mapping[str, tuple[tuple[str, str, str], dict]], pooled: dict | None = None
) -> list:
    """Summary rows of the VQA metrics: ``per_benchmark`` maps a benchmark name to ``((repo, commit, split),
    metrics)``; the pooled (``overall``) and mean-of-benchmarks (``macro``) rows follow."""
    rows = []
    for name, ((repo, commit, split), metrics) in per_benchmark.items():
        for mode in MODES:
            m = metrics[mode]
            for metric, n in (("closed_accuracy", m["n_closed"]), ("open_recall", m["n_open"])):
                rows.append(_row(model, "vqa", name, split, metric, mode, m[metric], n, repo, commit))
    if pooled is not None and len(per_benchmark) > 1:
        for mode in MODES:
            m = pooled[mode]
            rows.append(
                _row(model, "vqa", "overall", "", "closed_accuracy", mode, m["closed_accuracy"], m["n_closed"])
            )
            rows.append(_row(model, "vqa", "overall", "", "open_recall", mode, m["open_recall"], m["n_open"]))
            for metric in VQA_METRICS:
                values = [metrics[mode][metric] for _, metrics in per_benchmark.values()]
                values = [v for v in values if v is not None]
                mean = sum(values) / len(values) if values else None
                rows.append(_row(model, "vqa", "macro", "", metric, mode, mean, len(values)))
    return rows


def chat_summary_rows(model: str, repo: str, revision: str, scores: Mapping[str, Any], split: str = "test") -> list:
    """Summary rows of the open-chat relative scores (questions from ``repo`` at ``revision``): overall, by type and
    by domain, both definitions."""
    rows = []
    groups = [("", scores["overall"])]
    groups += [(f"type:{k}", v) for k, v in scores["by_type"].items()]
    groups += [(f"domain:{k}", v) for k, v in scores["by_domain"].items()]
    for group, values in groups:
        for metric in CHAT_METRICS:
            rows.append(
                _row(
                    model, "chat", "chat", split, metric, "", values[metric], values["n_scored"], repo, revision, group
                )
            )
    return rows


def win_summary_rows(model: str, summary: Mapping[str, Any], sources: Mapping[str, tuple[str, str, str]]) -> list:
    """Summary rows of the win rate, per benchmark and overall; ``sources`` maps a benchmark name to its
    ``(repo, commit, split)``."""
    rows = []
    for name, values in [*summary["by_benchmark"].items(), ("overall", summary["overall"])]:
        repo, commit, split = sources.get(name, ("", "", ""))
        for metric in WIN_METRICS:
            rows.append(
                _row(model, "win_rate", name, split, metric, "", values[metric], values["n_judged"], repo, commit)
            )
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# the model card


def eval_results(
    summary: Sequence[Mapping[str, Any]],
    display_names: Mapping[str, str],
    judge: str | None = None,
    other_model: str | None = None,
    source_name: str | None = None,
    source_url: str | None = None,
) -> list:
    """``huggingface_hub.EvalResult`` s for the model card: every VQA number per benchmark (both modes), the open-chat
    relative scores (whole set) and the win rates per benchmark. Pooled and macro rows stay in the eval dataset."""
    from huggingface_hub import EvalResult

    from vital.cards import web_url

    source_url = web_url(source_url)  # a local hub's folder is no URL: the card names no path on this machine
    source_name = source_name if source_url else None  # the Hub's schema wants both or neither
    out = []
    for row in summary:
        if row["value"] is None or row["group"] or row["benchmark"] in ("overall", "macro"):
            continue
        name = METRIC_LABELS.get(row["metric"], row["metric"])
        if row["task"] == "vqa":
            # Legacy and strict scoring are different metrics: distinct types, so the Hub never ranks them together.
            metric_type = f"vqa_{row['mode']}_{row['metric']}"  # e.g. vqa_strict_closed_accuracy
            metric_name = f"{name} ({row['mode']})"
            task_name = "Medical visual question answering"
        elif row["task"] == "chat":
            metric_type, metric_name = "relative_score", f"{name}, judge {judge}"
            task_name = "Open visual chat (judge)"
        else:
            metric_type, metric_name = row["metric"], f"{name} vs {other_model}, judge {judge}"
            task_name = "Pairwise win rate (judge)"
        out.append(
            EvalResult(
                task_type="visual-question-answering",
                task_name=task_name,
                dataset_type=row["dataset_repo"] or row["benchmark"],
                dataset_name=display_names.get(row["benchmark"], row["benchmark"]),
                dataset_split=row["split"] or None,
                dataset_revision=row["dataset_revision"] or None,
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=round(row["value"], 2),
                source_name=source_name,
                source_url=source_url,
            )
        )
    return out


def _result_key(result) -> tuple:
    return (result.task_type, result.dataset_type, result.dataset_split, result.metric_type, result.metric_name)


def update_model_card(card_text: str | None, results: Sequence, model_name: str):
    """A `ModelCard` with ``results`` in its ``model-index``: entries with the same task, dataset, split, metric type
    and metric name are replaced, all others kept. ``card_text`` None starts a minimal card."""
    from huggingface_hub import ModelCard

    card = ModelCard(card_text or f"---\nlicense: other\n---\n\n# {model_name}\n")
    new = {_result_key(r): r for r in results}
    current = {_result_key(r): r for r in card.data.eval_results or []}
    if new.keys() <= current.keys() and all(current[k].metric_value == r.metric_value for k, r in new.items()):
        # The same numbers are already there: keep the card (and the eval commit it cites) as it is, so a rerun
        # makes no commit, and the next evaluation's lineage still names the same model commit.
        return card
    kept = [r for r in (card.data.eval_results or []) if _result_key(r) not in new]
    card.data.eval_results = [*kept, *results] or None
    card.data.model_name = card.data.model_name or model_name
    return card


# ---------------------------------------------------------------------------------------------------------------------
# comparisons across models


def headline_columns(summaries: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[tuple[str, str, str, str]]:
    """The (task, benchmark, metric, mode) columns of a comparison: VQA in both modes per benchmark, the chat relative
    scores and the overall win rates, in a stable order, as present in any of the summaries."""
    seen: dict[tuple[str, str, str, str], None] = {}
    order = {"vqa": 0, "chat": 1, "win_rate": 2}
    for rows in summaries.values():
        for r in rows:
            if r["group"] or (r["task"] == "win_rate" and r["benchmark"] != "overall"):
                continue
            seen[(r["task"], r["benchmark"], r["metric"], r["mode"])] = None
    bench_order = {"overall": 1, "macro": 2}
    return sorted(
        seen, key=lambda c: (order.get(c[0], 9), bench_order.get(c[1], 0), c[1], c[3] != "legacy", c[3], c[2])
    )


def _value(rows, column) -> float | None:
    task, benchmark, metric, mode = column
    for r in rows:
        if (r["task"], r["benchmark"], r["metric"], r["mode"], r["group"]) == (task, benchmark, metric, mode, ""):
            return r["value"]
    return None


def column_label(column: tuple[str, str, str, str]) -> str:
    task, benchmark, metric, mode = column
    name = METRIC_LABELS.get(metric, metric)
    return f"{benchmark} {name}" + (f" ({mode})" if mode else "") if task != "chat" else f"chat {name}"


def comparison_table(summaries: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """A markdown table: one row per headline number (`headline_columns`), one column per model."""
    models = list(summaries)
    lines = ["| metric | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for column in headline_columns(summaries):
        cells = [_value(summaries[model], column) for model in models]
        lines.append(
            f"| {column_label(column)} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in cells) + " |"
        )
    return "\n".join(lines)


def comparison_figure(summaries: Mapping[str, Sequence[Mapping[str, Any]]], mode: str = "legacy"):
    """The comparison chart as a matplotlib ``Figure``: grouped bars of the headline numbers, one bar per model, VQA
    in ``mode``, chat, win rate. Every bar carries its value on top, so a zero bar reads "0" (not an empty slot) and
    a number a model lacks reads "n/a". Models are named by their keys in ``summaries`` (the legend)."""
    from matplotlib.figure import Figure

    columns = [c for c in headline_columns(summaries) if c[3] in (mode, "")]
    models = list(summaries)
    width = 0.8 / max(1, len(models))
    figure = Figure(figsize=(max(6.0, 0.9 * len(columns) + 2), 4.5), dpi=100)
    axes = figure.add_subplot()
    for k, model in enumerate(models):
        values = [_value(summaries[model], c) for c in columns]
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(columns))]
        bars = axes.bar(xs, [0 if v is None else v for v in values], width=width, label=model)
        labels = ["n/a" if v is None else f"{v:.1f}".removesuffix(".0") for v in values]
        axes.bar_label(bars, labels=labels, padding=2, fontsize=7)
        zero = [x for x, v in zip(xs, values) if not v]  # zero or missing: a marker on the axis, in the bar's colour
        axes.plot(zero, [0] * len(zero), "_", markersize=14, markeredgewidth=3, color=bars.patches[0].get_facecolor())
    axes.set_xticks(range(len(columns)), [column_label(c) for c in columns], rotation=35, ha="right", fontsize=8)
    axes.set_ylabel("score (0-100)")
    axes.set_ylim(bottom=0, top=max(axes.get_ylim()[1], 1.0) * 1.08)  # room for the value labels
    axes.set_title(f"biomed-vital evaluation ({mode} VQA metric)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def comparison_chart(summaries: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, mode: str = "legacy"):
    """:func:`comparison_figure` drawn to a PNG at ``path`` with matplotlib's Agg canvas (no pyplot, no display
    needed). Returns the path."""
    figure = comparison_figure(summaries, mode)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def load_summary(hub, spec: str) -> tuple[list[dict[str, Any]], Any]:
    """The ``summary`` config of an eval dataset (``repo@revision``) and the commit it was read at."""
    from vital.hub import parse_repo_ref

    repo_id, revision = parse_repo_ref(spec)
    ref = hub.ref(repo_id, revision, "dataset", config="summary")
    return hub.load_dataset(repo_id, "summary", revision=ref.commit, split="test").to_list(), ref


def model_card_target(model_ref, override: str | None = None) -> tuple[str, str] | None:
    """Which hub model repo and branch get the results: ``override`` (``repo[@branch]``), else the evaluated model's
    repo when it came from the hub (on the branch it was read from; ``main`` if it was pinned to a commit)."""
    from vital.evaluation.benchmarks import is_pinned
    from vital.hub import ArtifactRef, parse_repo_ref

    if override:
        return parse_repo_ref(override)
    if not isinstance(model_ref, ArtifactRef):
        return None
    return model_ref.repo_id, "main" if is_pinned(model_ref.revision) else model_ref.revision


def push_model_card_results(hub, repo_id: str, branch: str, results: Sequence, message: str):
    """Add ``results`` to the ``model-index`` of a hub model repo's card and push just ``README.md`` as a new commit
    on ``branch``. Returns the `PushResult`."""
    from vital.hub import CARD_FILE, PushResult

    current = hub.read_file(repo_id, CARD_FILE, branch, "model")
    card = update_model_card(current, results, repo_id.split("/")[-1])
    if current is not None and str(card) == current:
        commit = hub.resolve(repo_id, branch, "model")
        return PushResult(repo_id, "model", branch, commit, str(hub.snapshot(repo_id, commit, "model")), created=False)
    # Read, modified and written against the same head: a concurrent push to the model repo is never undone.
    name = repo_id.split("/")[-1]
    return hub.update_card(repo_id, lambda text: str(update_model_card(text, results, name)), branch, "model", message)


def load_comparisons(hub, specs: Sequence[str], label: str, summary: list) -> tuple[dict[str, list], list]:
    """The summaries to compare: ours under ``label``, then each eval dataset of ``specs`` (``repo@revision``)
    under its model's name (with its commit when two share a name). Returns the summaries and the refs read."""
    summaries, refs = {label: summary}, []
    for spec in specs:
        rows, ref = load_summary(hub, spec)
        name = rows[0]["model"] if rows else ref.repo_id
        summaries[name if name not in summaries else f"{name} ({ref.commit[:7]})"] = rows
        refs.append(ref)
    return summaries, refs


def push_eval_dataset(hub, configs: Mapping, summaries: Mapping, repo_id: str, card, args: Any, label: str):
    """Push every config, the comparison chart (``figures/comparison.png``) and the card as one commit, to
    ``args.hub_revision`` (created private when ``args.hub_private_repo``). Returns the `PushResult`."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        comparison_chart(summaries, Path(tmp, "comparison.png"))
        return hub.push_datasets(
            configs,
            repo_id,
            args.hub_revision,
            card,
            args.hub_private_repo,
            f"Evaluate {label}",
            files={"figures/comparison.png": Path(tmp, "comparison.png")},
        )


def record_model_card_results(hub, model_ref, override: str | None, entries: Sequence, label: str, source_name: str,
                              model_folder: Path | None, out: str | Path):  # fmt: skip
    """Write ``entries`` into the evaluated model's card: a new README commit of its hub repo (or of ``override``,
    ``repo[@branch]``), or, for a model that is not a hub repo, ``out/model_card/README.md`` (its own card updated).
    Returns the `PushResult` of a hub push, else None."""
    import logging

    target = model_card_target(model_ref, override)
    if target:
        return push_model_card_results(hub, *target, entries, f"Evaluation results ({source_name})")
    readme = model_folder / "README.md" if model_folder else None
    text = readme.read_text(encoding="utf-8") if readme and readme.is_file() else None
    card_path = Path(out) / "model_card" / "README.md"
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.write_text(str(update_model_card(text, entries, label)), encoding="utf-8")
    logging.getLogger("vital.evaluate").info(
        "the model is not a hub repo: its card with the results is in %s", card_path
    )
    return None


def score_benchmarks(sets: Mapping[str, tuple], answers: Mapping[str, Any], model: str) -> tuple[dict, dict]:
    """`score_benchmark` over every set of ``sets`` (name -> ``(dataset, ref)``): per-item rows and metrics by name."""
    rows, metrics = {}, {}
    for name, (dataset, _) in sets.items():
        rows[name], metrics[name] = score_benchmark(dataset, answers, model)
    return rows, metrics


def eval_configs(label: str, sources: Mapping, vqa_rows: Mapping, vqa_metrics: Mapping, judged: Mapping) -> tuple:
    """The eval dataset's configs and its summary rows: one config per benchmark (its split), the judges' ``chat``
    and ``win_rate`` configs (``judged``, from `vital.evaluation.judges.judge_tables`) and ``summary``."""
    from vital.data.schemas import rows_to_dataset

    pooled = pooled_vqa([r for rows in vqa_rows.values() for r in rows])
    summary = vqa_summary_rows(label, {n: (sources[n], m) for n, m in vqa_metrics.items()}, pooled)
    configs = {n: (rows_to_dataset(rows, VQA_EVAL_FEATURES), sources[n][2]) for n, rows in vqa_rows.items()}
    for name, (rows, features) in judged["configs"].items():
        configs[name] = (rows_to_dataset(rows, features), "test")
    if judged["chat_scores"] is not None:
        summary += chat_summary_rows(label, *sources["chat"][:2], judged["chat_scores"])
    if judged["win_summary"] is not None:
        summary += win_summary_rows(label, judged["win_summary"], sources)
    configs["summary"] = (rows_to_dataset(summary, SUMMARY_FEATURES), "test")
    return configs, summary


def headline(summary: Sequence[Mapping[str, Any]], first_benchmark: str) -> str:
    """The artifact table's one-line result: the first two legacy-mode VQA numbers (overall, or the only set)."""
    overall = [r for r in summary if r["task"] == "vqa" and r["benchmark"] in ("overall", first_benchmark)]
    return ", ".join(
        f"{r['metric']} {r['value']:.1f}" for r in overall[:2] if r["mode"] == "legacy" and r["value"] is not None
    )
