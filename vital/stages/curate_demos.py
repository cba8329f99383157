"""Stage 1 — curate demos: embed and cluster the pairs, and put a few pairs of each cluster before the clinicians.

Usage:

    python recipes/curate_demos.py --config recipes/quickstart/curate_demos.yaml
    vital curate_demos --config recipes/biomed_vital/curate_demos.yaml --hub hf

BioMed-VITAL clusters the PMC pairs with k-means (k = 60) for diversity and lets clinicians pick demonstrations from
each cluster. This stage writes the clusters repo: config ``default`` (each pair's cluster and distance to the
centroid, no images) and config ``review`` (the pairs nearest each centroid, with images, for the annotation app).
Given ``demos_repo``, the approved demos there get their ``cluster`` column from this clustering, in a new commit.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from datasets import Dataset

from vital.cards import Lineage, dataset_card
from vital.data.inputs import require_columns
from vital.data.schemas import check_columns
from vital.demos import (
    CLUSTER_FEATURES,
    assign_clusters,
    cluster_pairs,
    cluster_table,
    embed_pairs,
    review_sample,
)
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.curate_demos")


@dataclass
class CurateDemosArguments:
    hub: str | None = field(
        default=None,
        metadata={"help": "Where artifacts live: 'local:<dir>' or 'hf'. Default: $VITAL_HUB, else ~/.cache."},
    )
    pairs_repo: str = field(default="quickstart/pairs", metadata={"help": "Repo id of the pairs to cluster."})
    pairs_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the pairs."})
    image_embedder: str = field(
        default="pixels",
        metadata={"help": "'pixels' (offline), 'clip:<dir or hub id>' (a CLIP-family model) or 'vit:<dir or id>'."},
    )
    text_embedder: str = field(
        default="hashing",
        metadata={"help": "'hashing' (offline), 'clip:<dir or id>', 'sentence:<dir or id>' or 'openai:<model>'."},
    )
    text_fields: list[str] = field(
        default_factory=lambda: ["caption", "mentions"],
        metadata={"help": "Pair columns embedded as text; 'first_mention' is the first in-text mention alone."},
    )
    exclude_modalities: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Modalities left out of the clustering (the paper: gross, histology); listed with cluster -1."
        },
    )
    image_weight: float = field(
        default=0.5, metadata={"help": "Weight of the image features in [0, 1]; the text gets 1 - image_weight."}
    )
    batch_size: int = field(default=32, metadata={"help": "Pairs embedded per batch."})
    num_clusters: int = field(default=60, metadata={"help": "k of k-means (the paper: 60); clipped to the pairs."})
    per_cluster: int = field(default=5, metadata={"help": "Pairs per cluster in the review sample."})
    strategy: str = field(
        default="nearest", metadata={"help": "Review sample: 'nearest' (to the centroid) or 'random'."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of k-means and of the 'random' review sample."})
    clusters_repo: str = field(default="quickstart/clusters", metadata={"help": "Repo id the clusters go to."})
    demos_repo: str | None = field(
        default=None, metadata={"help": "If set, the demos there get their `cluster` column set (a new commit)."}
    )
    demos_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the demos read."})
    revision: str = field(default="main", metadata={"help": "Branch to push to (created from main if missing)."})
    private: bool = field(default=True, metadata={"help": "Create repos private (clinical data stays private)."})
    expected_pairs: int | None = field(
        default=None, metadata={"help": "For --dry_run when the pairs repo cannot be read: how many pairs there are."}
    )


def main(args: CurateDemosArguments) -> list[PushResult]:
    setup_logging()
    hub = get_hub(args.hub)
    logger.info("hub: %r", hub)

    # 1. Pairs, pinned to the commit the revision points at now.
    pairs_ref = hub.ref(args.pairs_repo, args.pairs_revision)
    pairs = hub.load_dataset(args.pairs_repo, revision=pairs_ref.commit, split="train")
    require_columns(pairs, "curate_demos", "pairs", pairs_ref)
    check_columns(pairs, "pairs")
    logger.info("pairs: %d rows from %s", len(pairs), pairs_ref)

    # 2. Embed and cluster the pairs of the modalities kept; the others stay in the assignments with cluster -1.
    all_ids, all_modalities = list(pairs["id"]), list(pairs["modality"])
    excluded = set(args.exclude_modalities)
    kept = [i for i, m in enumerate(all_modalities) if m not in excluded]
    if not kept:
        raise ValueError(f"every pair's modality is in exclude_modalities {sorted(excluded)}: nothing to cluster")
    if len(kept) < len(pairs):
        pairs = pairs.select(kept)
        logger.info("left out %d pair(s) of modalities %s", len(all_ids) - len(kept), sorted(excluded))
    embeddings = embed_pairs(
        pairs, args.image_embedder, args.text_embedder, args.text_fields, args.image_weight, args.batch_size
    )
    clusters = cluster_pairs(embeddings, args.num_clusters, args.seed)
    logger.info("%s: k=%d, inertia %.4f, sizes %s", clusters.algorithm, clusters.k, clusters.inertia, clusters.sizes())

    # 3. The clusters repo: assignments (`default`) and the review sample (`review`), one card for both.
    modalities = list(pairs["modality"])
    label_of = dict(zip(pairs["id"], clusters.labels.tolist(), strict=True))
    distance_of = dict(zip(pairs["id"], clusters.distances.tolist(), strict=True))
    assignments = Dataset.from_dict(
        {
            "id": all_ids,
            "modality": all_modalities,
            "cluster": [label_of.get(i, -1) for i in all_ids],
            "distance": [distance_of.get(i, float("nan")) for i in all_ids],
        },
        features=CLUSTER_FEATURES,
    )
    excluded_counts = dict(sorted(Counter(m for m in all_modalities if m in excluded).items()))
    review = review_sample(pairs, clusters, args.per_cluster, args.seed, args.strategy)
    review_modalities = Counter(review["modality"])
    card = dataset_card(
        "clusters",
        lineage=Lineage(stage="curate_demos", inputs=[pairs_ref], config=args, seed=args.seed),
        pretty_name="BioMed-VITAL pair clusters",
        description="Clinicians review the `review` config in the annotation app; the demonstrations they pick go to "
        "the demos repo with the `cluster` they came from.",
        repo_id=args.clusters_repo,
        revision=args.revision,
        pairs_ref=str(pairs_ref),
        num_rows=len(pairs),
        num_assignments=len(all_ids),
        exclude_modalities=sorted(excluded),
        excluded_counts=excluded_counts,
        k=clusters.k,
        k_requested=args.num_clusters,
        algorithm=clusters.algorithm,
        seed=args.seed,
        image_embedder=args.image_embedder if args.image_weight > 0 else "none",
        text_embedder=args.text_embedder if args.image_weight < 1 else "none",
        text_fields=args.text_fields,
        image_weight=args.image_weight,
        text_weight=round(1 - args.image_weight, 6),
        per_cluster=args.per_cluster,
        strategy=args.strategy,
        review_rows=len(review),
        clusters=cluster_table(modalities, clusters),
        modalities=sorted(set(modalities)),
        modality_totals=Counter(modalities),
        review_modalities=dict(sorted(review_modalities.items())),
        missing_modalities=sorted(set(modalities) - set(review_modalities)),
    )
    clustering = {"default": (assignments, "train"), "review": (review, "train")}
    pushed = [hub.push_datasets(clustering, args.clusters_repo, args.revision, card, args.private, "Clustering")]
    clusters_ref = pushed[-1].ref("default")
    headline = {args.clusters_repo: f"k={clusters.k}, {len(pairs)} pairs, {len(review)} to review"}

    # 4. Approved demos: set their cluster from this clustering, as a new commit of the demos repo.
    if args.demos_repo:
        demos_ref = hub.ref(args.demos_repo, args.demos_revision)
        demos = hub.load_dataset(args.demos_repo, revision=demos_ref.commit, split="train")
        require_columns(demos, "curate_demos", "demos", demos_ref)
        check_columns(demos, "demos")
        # A demo about a left-out modality (e.g. histology) keeps cluster -1, like its pair.
        updated = assign_clusters(demos, all_ids, assignments["cluster"])
        changed = sum(a != b for a, b in zip(demos["cluster"], updated["cluster"], strict=True))
        previous = hub.read_card(args.demos_repo, demos_ref.commit)
        if changed == 0 and previous is not None:
            # Nothing to record: the same rows with the card they have make no new commit.
            demo_card = previous
        else:
            demo_card = dataset_card(
                "demos",
                lineage=Lineage(
                    stage="curate_demos", inputs=[pairs_ref, clusters_ref, demos_ref], config=args, seed=args.seed
                ),
                pretty_name=(previous and getattr(previous.data, "pretty_name", None))
                or "BioMed-VITAL demonstrations",
                description=f"The demonstrations of `{demos_ref}` with `cluster` set from the k={clusters.k} "
                f"clustering `{clusters_ref}`; the previous commit's card tells how they were written.",
                num_rows=len(updated),
                modalities=dict(sorted(Counter(updated["modality"]).items())),
                curators=sorted(set(updated["curated_by"])),
            )
        pushed.append(
            hub.push_dataset(updated, args.demos_repo, revision=args.revision, card=demo_card, private=args.private)
        )
        headline[args.demos_repo] = f"{len(updated)} demos, {changed} cluster id(s) changed"
        logger.info("demos: %d rows, %d cluster id(s) changed -> %s", len(updated), changed, pushed[-1].location)

    print(artifact_table(pushed, headline))
    return pushed


def estimate(argv: list[str] | None = None) -> list:
    """Requests, tokens and cost of an ``openai:`` text embedder (`vital pipeline --dry_run`); local embedders make no
    API request. Every pair is counted (the modalities left out are not known before the pairs are read)."""
    import math

    from vital.data.sample import load_sample_pairs
    from vital.demos import OpenAITextEmbedder, pair_text
    from vital.llm.estimate import StageEstimate, count_rows
    from vital.llm.limits import estimate_prompt_tokens
    from vital.llm.pricing import cost_usd

    (args,) = recipe_parser((CurateDemosArguments,)).parse_args_and_config(argv)
    kind, _, model = args.text_embedder.partition(":")
    if kind != "openai" or args.image_weight >= 1:
        logger.info("curate_demos: the %s text embedder makes no API request", args.text_embedder)
        return []
    pairs, basis = count_rows(get_hub(args.hub), args.pairs_repo, args.pairs_revision), f"{args.pairs_repo} card"
    if pairs is None:
        if args.expected_pairs is None:
            raise ValueError(f"cannot read {args.pairs_repo}; set expected_pairs for a dry run")
        pairs, basis = args.expected_pairs, "expected_pairs"
    sample = load_sample_pairs()
    texts = [pair_text(row, args.text_fields) for row in sample.select_columns(["caption", "mentions"])]
    mean = sum(estimate_prompt_tokens([{"role": "user", "content": t}]) for t in texts) / max(1, len(texts))
    tokens = round(mean * pairs)
    requests = math.ceil(pairs / OpenAITextEmbedder.BATCH_SIZE)
    cost = cost_usd(tokens, 0, model=model)
    # The embedding requests have no Batch API mode here: they cost the online price either way.
    return [
        StageEstimate("curate_demos", "text embeddings", model, requests, tokens, 0, cost, basis, batch_cost_usd=cost)
    ]


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = recipe_parser((CurateDemosArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
