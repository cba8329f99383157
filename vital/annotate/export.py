"""Annotations out of the store and into the datasets the next stages read, with cards, lineage and agreement.

======================== ================================================================================================
task                     exported ``default`` config
======================== ================================================================================================
``preference``           the ``preferences`` contract (``PREFERENCE_FEATURES``): one row per annotator and item,
                         ``chosen`` / ``rejected`` the answers the clinician preferred and did not, ``source =
                         "clinician"``, ``weight`` from ``--weight`` (default 1.0: the selector up-weights clinician
                         pairs itself, ``SelectorTrainingConfig.clinician_weight``). **Ties are left out** (a preference
                         pair needs a winner); the card counts them and the ``annotations`` config keeps them.
``demos``                the ``demos`` contract (``DEMO_FEATURES``): the accepted and edited conversations on their
                         pairs, ``curated_by`` = the annotator. Rejected pairs are left out (counted in the card).
``rating``               the ``ratings`` contract (``RATING_FEATURES``): ``judge.model = "clinician:<annotator>"``, the
                         comment as ``rationale``.
======================== ================================================================================================

Only each annotator's last annotation of an item counts (earlier clicks on it were changes of mind). When a campaign
lead adjudicated conflicts (`vital.annotate.campaign`), the repo also gets an ``adjudicated`` config: one row per
annotated item, the consensus label or the lead's decision (unresolved conflicts left out, counted on the card).
Every repo also gets an ``annotations`` config: one row per annotator and item with what was shown where, the choice, the label, the
comment and the time, ties and rejections included. Annotations are joined to the dataset *at the commit they were
made on* (recorded in each annotation), so a later commit of the dataset can never pair a choice with answers the
clinician did not see. The card's lineage lists those commits and the hash of the store files read
(`vital.annotate.store.store_sha256`), and reports inter-annotator agreement when items were annotated twice.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, Features, List, Value

from vital.annotate.agreement import AgreementReport, agreement_markdown, pairwise_agreement
from vital.annotate.items import TaskItems, load_items
from vital.annotate.store import Annotation, AnnotationStore, store_sha256
from vital.cards import Lineage, dataset_card
from vital.data.schemas import DEMO_FEATURES, PREFERENCE_FEATURES, RATING_FEATURES, SOURCE, rows_to_dataset, undecoded
from vital.hub import Hub, PushResult, parse_repo_ref
from vital.rating import rating_prompt_sha


logger = logging.getLogger(__name__)

ANNOTATION_FEATURES = Features(
    {
        "record_id": Value("string"),
        "item_id": Value("string"),
        "annotator": Value("string"),
        "time": Value("string"),
        "choice": Value("string"),
        "label": Value("string"),
        "score": Value("float32"),
        "comment": Value("string"),
        "shown": Value("string"),  # JSON: which column was A / B, or which candidate was shown
        "dataset": Value("string"),
        "commit": Value("string"),
        "guidelines": Value("string"),  # the version of the guidelines on screen (vital.annotate.guidelines)
    }
)
"""The ``annotations`` config: every annotator's last annotation of every item, as it was recorded."""

PREFERENCE_EXPORT_FEATURES = Features(
    {
        **PREFERENCE_FEATURES,
        "item_id": Value("string"),
        "pair_id": Value("string"),
        "question": Value("string"),
        "shown_as_a": Value("string"),  # answer_a or answer_b: the column shown first (left)
        "comment": Value("string"),
        "annotated_at": Value("string"),
    }
)
DEMO_EXPORT_FEATURES = Features(
    {
        **DEMO_FEATURES,
        "pair_id": Value("string"),
        "decision": Value("string"),  # accept | edit
        "conversation_from": Value("string"),  # the candidate (or demo) whose conversation was shown
        "comment": Value("string"),
        "annotated_at": Value("string"),
    }
)
ADJUDICATED_FEATURES = Features(
    {
        "item_id": Value("string"),
        "dataset": Value("string"),
        "annotators": List(Value("string")),
        "votes": Value("string"),  # JSON {annotator: label}
        "label": Value("string"),  # answer_a / answer_b / tie, keep / reject, or the score
        "score": Value("float32"),
        "decided_by": Value("string"),  # consensus | adjudication
        "adjudicator": Value("string"),
        "messages": Value("string"),  # demos: JSON of the conversation kept
    }
)
RATING_EXPORT_FEATURES = Features({**RATING_FEATURES, "annotator": Value("string"), "annotated_at": Value("string")})
DEFAULT_OUTPUT = {"preference": "preferences", "demos": "demos", "rating": "clinician-ratings"}
EMPTY_SOURCE = dict.fromkeys(SOURCE, "")


@dataclass
class Export:
    """What an export holds before it is pushed."""

    task: str
    rows: Dataset  # the default config, in the task's contract
    annotations: Dataset  # the annotations config
    counts: dict[str, int] = field(default_factory=dict)
    agreement: AgreementReport | None = None
    inputs: list[Any] = field(default_factory=list)  # ArtifactRefs of the commits joined, and the store hash
    store_hash: str = ""
    annotators: list[str] = field(default_factory=list)
    adjudicated: Dataset | None = None  # the adjudicated config, when a campaign lead decided any conflict


def final_annotations(store: AnnotationStore, task: str, dataset: str) -> list[Annotation]:
    """Every annotator's last annotation of each item, ordered by item id then annotator."""
    out = [a for per_item in store.all_latest(task, dataset).values() for a in per_item.values()]
    return sorted(out, key=lambda a: (a.item_id, a.annotator))


def agreement_label(annotation: Annotation):
    """The label compared between annotators: the preferred column (or tie), keep/reject, or the integer score."""
    if annotation.task == "demos":
        return "reject" if annotation.label == "reject" else "keep"
    if annotation.task == "rating":
        return round(annotation.score)
    return annotation.label


def build_export(
    hub: Hub,
    task: str,
    dataset: str,
    store: AnnotationStore,
    config: str | None = None,
    weight: float = 1.0,
) -> Export:
    """Join the store's annotations of ``dataset`` (a repo id; a ``@revision`` is ignored: each annotation is joined
    to the commit it was made on) to the dataset rows and build the exported datasets (see the module docstring)."""
    if not weight > 0:
        raise ValueError(f"weight must be positive, got {weight}")
    repo_id, _ = parse_repo_ref(dataset)
    files = store.files(task, repo_id)
    annotations = final_annotations(store, task, repo_id)
    if not annotations:
        raise ValueError(f"no {task} annotations of {repo_id} in {store.root}")
    store_hash = store_sha256(files, store.root)

    # The dataset at every commit annotations were made on.
    by_commit: dict[str, TaskItems] = {}
    for commit in sorted({a.commit for a in annotations}):
        by_commit[commit] = load_items(hub, task, f"{repo_id}@{commit}", config=config, warn=False)
    raw = {commit: undecoded(items.dataset) for commit, items in by_commit.items()}
    joined, unknown = [], 0
    for annotation in annotations:
        items = by_commit[annotation.commit]
        if annotation.item_id in items.index:
            joined.append((annotation, items, raw[annotation.commit]))
        else:
            unknown += 1
            logger.warning("annotation %s names item %r, absent from %s", annotation.id, annotation.item_id, items.ref)
    joined.sort(key=lambda j: (j[1].index[j[0].item_id], j[0].annotator))  # dataset order, then annotator

    counts: Counter = Counter(annotations=len(annotations), unknown_items=unknown)
    if task == "preference":
        rows = _preference_rows(joined, weight, counts)
        features = PREFERENCE_EXPORT_FEATURES
    elif task == "demos":
        rows = _demo_rows(joined, counts)
        features = DEMO_EXPORT_FEATURES
    elif task == "rating":
        rows = _rating_rows(joined, counts)
        features = RATING_EXPORT_FEATURES
    else:
        raise ValueError(f"unknown task {task!r}")
    counts["exported"] = len(rows)
    counts["items"] = len({a.item_id for a, _, _ in joined})

    labels: dict[str, dict[str, Any]] = {}
    for annotation, _, _ in joined:
        labels.setdefault(annotation.annotator, {})[annotation.item_id] = agreement_label(annotation)
    report = pairwise_agreement(labels, weights="quadratic" if task == "rating" else None)

    table = [
        {
            "record_id": a.id,
            "item_id": a.item_id,
            "annotator": a.annotator,
            "time": a.time,
            "choice": a.choice,
            "label": a.label,
            "score": a.score,
            "comment": a.comment,
            "shown": json.dumps(a.shown, sort_keys=True),
            "dataset": a.dataset,
            "commit": a.commit,
            "guidelines": a.guidelines,
        }
        for a, _, _ in joined
    ]
    adjudicated = None
    if store.files(task, repo_id, adjudication=True):
        from vital.annotate.campaign import Campaign
        from vital.annotate.tasks import AnnotationTask

        newest = by_commit[max(annotations, key=lambda a: a.time).commit]
        adjudicated_rows, adjudication_counts = Campaign(AnnotationTask(newest, store)).adjudicated_set()
        adjudicated = rows_to_dataset(adjudicated_rows, ADJUDICATED_FEATURES)
        counts.update({f"adjudicated_set_{k}": v for k, v in adjudication_counts.items()})
        store_hash = store_sha256(files + store.files(task, repo_id, adjudication=True), store.root)
    inputs = [items.ref for items in by_commit.values()]
    inputs.append({"source": f"annotation store ({task}/{repo_id})", "sha256": store_hash})
    return Export(
        task=task,
        rows=rows_to_dataset(rows, features),
        annotations=rows_to_dataset(table, ANNOTATION_FEATURES),
        counts=dict(counts),
        agreement=report,
        inputs=inputs,
        store_hash=store_hash,
        annotators=sorted(labels),
        adjudicated=adjudicated,
    )


def _preference_rows(joined, weight: float, counts: Counter) -> list[dict[str, Any]]:
    rows = []
    for annotation, items, raw in joined:
        if annotation.label == "tie":
            counts["ties"] += 1
            continue
        row = raw[items.rows[items.index[annotation.item_id]]]
        chosen = annotation.label
        rejected = "answer_b" if chosen == "answer_a" else "answer_a"
        rows.append(
            {
                "id": f"{annotation.item_id}-{annotation.annotator}",
                "prompt": row["prompt"],
                "images": row["images"],
                "chosen": row[chosen],
                "rejected": row[rejected],
                "source": "clinician",
                "annotator": annotation.annotator,
                "weight": float(weight),
                "item_id": annotation.item_id,
                "pair_id": row.get("pair_id") or "",
                "question": row.get("question") or "",
                "shown_as_a": annotation.shown.get("A", ""),
                "comment": annotation.comment,
                "annotated_at": annotation.time,
            }
        )
    return rows


def demo_id(item_id: str, annotator: str) -> str:
    """The id of an exported demonstration: one per pair (or reviewed demo) and annotator."""
    base = item_id if item_id.startswith("demo-") else f"demo-{item_id}"
    return f"{base}-{annotator}"


def _demo_rows(joined, counts: Counter) -> list[dict[str, Any]]:
    rows = []
    for annotation, items, raw in joined:
        if annotation.label == "reject":
            counts["rejected"] += 1
            continue
        counts["edited" if annotation.label == "edit" else "accepted"] += 1
        row = raw[items.rows[items.index[annotation.item_id]]]
        cluster = row.get("cluster")
        rows.append(
            {
                "id": demo_id(annotation.item_id, annotation.annotator),
                "image": row["image"],
                "caption": row["caption"],
                "fig_label": row.get("fig_label") or "",
                "mentions": row.get("mentions") or [],
                "modality": row.get("modality") or "other",
                "source": row.get("source") or EMPTY_SOURCE,
                "messages": annotation.messages,
                "cluster": -1 if cluster is None else int(cluster),
                "curated_by": annotation.annotator,
                "pair_id": items.pair_ids[items.index[annotation.item_id]],
                "decision": annotation.label,
                "conversation_from": annotation.shown.get("conversation_from") or "",
                "comment": annotation.comment,
                "annotated_at": annotation.time,
            }
        )
    return rows


def _rating_rows(joined, counts: Counter) -> list[dict[str, Any]]:
    rows = []
    sha = rating_prompt_sha()  # what records made before the guidelines were recorded showed: the judge's rubric
    for annotation, _, _ in joined:
        rows.append(
            {
                "candidate_id": annotation.shown["candidate_id"],
                "turn": int(annotation.shown["turn"]),
                "score": annotation.score,
                "error": None,
                "rationale": annotation.comment,
                "judge": {"model": f"clinician:{annotation.annotator}", "prompt_sha": annotation.guidelines or sha},
                "annotator": annotation.annotator,
                "annotated_at": annotation.time,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------------------------
def export_card(export: Export, dataset: str, config: Any = None, pretty_name: str | None = None):
    """The card of an export, from ``dataset_cards/`` (``demos``, ``clinician_preferences``, ``clinician_ratings``)."""
    counts = export.counts
    extra = {"store_sha256": export.store_hash, "agreement": export.agreement.to_dict(), "counts": counts}
    lineage = Lineage(stage="annotate", inputs=export.inputs, config=config, extra=extra)
    agreement = agreement_markdown(export.agreement, _agreement_what(export.task))
    per_annotator = dict(sorted(Counter(export.annotations["annotator"]).items()))
    common = {
        "num_rows": len(export.rows),
        "num_annotations": counts["annotations"],
        "num_items": counts["items"],
        "per_annotator": per_annotator,
        "unknown_items": counts.get("unknown_items", 0),
        "agreement": agreement,
        "dataset": dataset,
        "store_sha256": export.store_hash,
        "adjudicated": _adjudicated_line(counts),
        "guidelines": ", ".join(f"`{v}`" for v in sorted(set(export.annotations["guidelines"])) if v)
        or "not recorded",
    }
    if export.task == "preference":
        return dataset_card(
            "clinician_preferences",
            lineage=lineage,
            pretty_name=pretty_name or "BioMed-VITAL clinician preferences",
            tags=["preference", "clinician-annotations"],
            num_ties=counts.get("ties", 0),
            weight=float(export.rows["weight"][0]) if len(export.rows) else 1.0,
            **common,
        )
    if export.task == "rating":
        return dataset_card(
            "clinician_ratings",
            lineage=lineage,
            pretty_name=pretty_name or "BioMed-VITAL clinician ratings",
            tags=["clinician-annotations"],
            **common,
        )
    lines = [
        f"Written in the biomed-vital annotation app from `{dataset}`: {counts.get('accepted', 0)} conversation(s) "
        f"accepted as shown, {counts.get('edited', 0)} edited, {counts.get('rejected', 0)} pair(s) rejected "
        f"(left out). One row per annotator and pair; the `annotations` config holds every decision.",
        "",
        "### Inter-annotator agreement",
        "",
        agreement,
        "",
        _adjudicated_line(counts),
    ]
    return dataset_card(
        "demos",
        lineage=lineage,
        pretty_name=pretty_name or "BioMed-VITAL demonstrations (clinician-curated)",
        tags=["clinician-annotations"],
        description="\n".join(lines),
        num_rows=len(export.rows),
        modalities=dict(sorted(Counter(export.rows["modality"]).items())),
        curators=sorted(set(export.rows["curated_by"])),
    )


def _adjudicated_line(counts: dict[str, int]) -> str:
    """The card's sentence on the adjudicated config ("" when no conflict was adjudicated)."""
    if "adjudicated_set_items" not in counts:
        return ""
    return (
        f"The `adjudicated` config holds one decision per item: {counts['adjudicated_set_consensus']} by consensus of "
        f"the annotators, {counts['adjudicated_set_adjudicated']} decided by a campaign lead; "
        f"{counts['adjudicated_set_unresolved']} conflict(s) still open are left out."
    )


def _agreement_what(task: str) -> str:
    return {
        "preference": "labels: answer_a, answer_b or tie, whatever side each annotator saw them on",
        "demos": "labels: keep (accepted or edited) or reject",
        "rating": "labels: integer scores 0-10; weighted kappa with quadratic weights",
    }[task]


def push_export(
    hub: Hub,
    export: Export,
    output_repo: str,
    dataset: str,
    revision: str = "main",
    private: bool = True,
    config: Any = None,
) -> list[PushResult]:
    """Push the export's ``default`` and ``annotations`` configs (and ``adjudicated``, when any conflict was
    adjudicated) with one card."""
    if len(export.rows) == 0:
        raise ValueError(
            f"nothing to export as {export.task}: {export.counts} (a dataset config cannot be empty on the hub)"
        )
    card = export_card(export, dataset, config)
    message = f"Export {export.task} annotations ({len(export.rows)} rows, store {export.store_hash[:12]})"
    configs = {"default": export.rows, "annotations": export.annotations}  # all configs and the card: one commit
    if export.adjudicated is not None and len(export.adjudicated):
        configs["adjudicated"] = export.adjudicated
    return [hub.push_datasets(configs, output_repo, revision, card, private, message)]


def default_output_repo(dataset: str, task: str) -> str:
    """``<namespace>/preferences`` (``demos``, ``clinician-ratings``) next to the annotated dataset."""
    repo_id, _ = parse_repo_ref(dataset)
    namespace = repo_id.split("/")[0] + "/" if "/" in repo_id else ""
    return f"{namespace}{DEFAULT_OUTPUT[task]}"
