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

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.data.inputs import require_columns
from vital.data.schemas import check_columns
from vital.demos import (
    assign_clusters,
    cluster_assignments,
    cluster_pairs,
    cluster_table,
    drop_modalities,
    embed_pairs,
    review_sample,
)
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.curate_demos")


@dataclass
class CurateDemosArguments(HubArguments):
    """
    Arguments of the `curate_demos` stage: how the pairs are embedded and clustered, how many of each cluster the
    clinicians review, and the repos the clustering (and the demos' cluster ids) are pushed to.

    Parameters:
        > Parameters that control the inputs

        pairs_repo (`str`, *optional*, defaults to `"quickstart/pairs"`):
            Dataset repo of the pairs to cluster.
        pairs_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the pairs; resolved to a commit before reading.
        demos_repo (`str` or `None`, *optional*):
            If set, the approved demonstrations there get their `cluster` column from this clustering, pushed as a
            new commit of that repo.
        demos_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the demonstrations read.
        expected_pairs (`int` or `None`, *optional*):
            For `vital pipeline --dry_run` when the pairs repo cannot be read yet: how many pairs there will be.

        > Parameters that control the embedding and the clustering

        image_embedder (`str`, *optional*, defaults to `"pixels"`):
            `"pixels"` (offline), `"clip:<dir or hub id>"` (a CLIP-family model) or `"vit:<dir or hub id>"`.
        text_embedder (`str`, *optional*, defaults to `"hashing"`):
            `"hashing"` (offline), `"clip:<dir or id>"`, `"sentence:<dir or id>"` or `"openai:<model>"`.
        text_fields (`list[str]`, *optional*, defaults to `["caption", "mentions"]`):
            Pair columns embedded as text; `"first_mention"` is the first in-text mention alone.
        exclude_modalities (`list[str]`, *optional*, defaults to `[]`):
            Modalities left out of the clustering (the paper: gross, histology); their pairs are listed with
            cluster -1.
        image_weight (`float`, *optional*, defaults to `0.5`):
            Weight of the image features in [0, 1]; the text features get `1 - image_weight`.
        batch_size (`int`, *optional*, defaults to `32`):
            Pairs embedded per batch.
        num_clusters (`int`, *optional*, defaults to `60`):
            k of k-means (the paper: 60); clipped to the number of pairs.
        seed (`int`, *optional*, defaults to `0`):
            Seed of k-means and of the `"random"` review sample.

        > Parameters that control the review sample

        per_cluster (`int`, *optional*, defaults to `5`):
            Pairs per cluster in the review sample (config `review`).
        strategy (`str`, *optional*, defaults to `"nearest"`):
            `"nearest"` (the pairs nearest the centroid) or `"random"`.

        > Parameters that control the push (those of [`~vital.arguments.HubArguments`])

        clusters_repo (`str`, *optional*, defaults to `"quickstart/clusters"`):
            Dataset repo of the clustering: config `default` (each pair's cluster and distance) and config `review`.
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the clustering and the demos' cluster ids. `False` reads, embeds and clusters, and pushes nothing.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch of `clusters_repo` and `demos_repo` the outputs are pushed to (created from the default branch if
            missing). The inputs name their own revisions (`pairs_revision`, `demos_revision`).
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create the repos private (clinical data stays private). An existing repo keeps its visibility.
    """

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
    expected_pairs: int | None = field(
        default=None, metadata={"help": "For --dry_run when the pairs repo cannot be read: how many pairs there are."}
    )


def load_checked(hub, repo_id: str, revision: str, contract: str):
    """A dataset pinned to the commit ``revision`` points at now, checked against ``contract``; and its ref."""
    ref = hub.ref(repo_id, revision)
    dataset = hub.load_dataset(repo_id, revision=ref.commit, split="train")
    require_columns(dataset, "curate_demos", contract, ref)
    check_columns(dataset, contract)
    return dataset, ref


def clusters_card(args: CurateDemosArguments, pairs_ref, assignments, clustered, clusters, review):
    """The clusters card: lineage, the embedders and weights, k, the per-cluster table and the review coverage."""
    modalities = list(clustered["modality"])
    excluded = set(args.exclude_modalities)
    review_modalities = Counter(review["modality"])
    return dataset_card(
        "clusters",
        lineage=Lineage(stage="curate_demos", inputs=[pairs_ref], config=args, seed=args.seed),
        pretty_name="BioMed-VITAL pair clusters",
        description="Clinicians review the `review` config in the annotation app; the demonstrations they pick go to "
        "the demos repo with the `cluster` they came from.",
        repo_id=args.clusters_repo,
        revision=args.hub_revision,
        pairs_ref=str(pairs_ref),
        num_rows=len(clustered),
        num_assignments=len(assignments),
        exclude_modalities=sorted(excluded),
        excluded_counts=dict(sorted(Counter(m for m in assignments["modality"] if m in excluded).items())),
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


def updated_demos_card(hub, args: CurateDemosArguments, demos, changed: int, k: int, refs: list):
    """The card of the demos with their new cluster ids: the previous card when nothing changed (so a rerun makes no
    new commit), else a new one whose lineage names the pairs, the clustering and the demos commit read."""
    pairs_ref, clusters_ref, demos_ref = refs
    previous = hub.read_card(args.demos_repo, demos_ref.commit)
    if changed == 0 and previous is not None:
        return previous
    return dataset_card(
        "demos",
        lineage=Lineage(stage="curate_demos", inputs=refs, config=args, seed=args.seed),
        pretty_name=(previous and getattr(previous.data, "pretty_name", None)) or "BioMed-VITAL demonstrations",
        description=f"The demonstrations of `{demos_ref}` with `cluster` set from the k={k} clustering "
        f"`{clusters_ref}`; the previous commit's card tells how they were written.",
        num_rows=len(demos),
        modalities=dict(sorted(Counter(demos["modality"]).items())),
        curators=sorted(set(demos["curated_by"])),
    )


def main(args: CurateDemosArguments) -> list[PushResult]:
    setup_logging()
    hub = get_hub(args.hub)
    logger.info("hub: %r", hub)

    # 1. Inputs, pinned to the commits their revisions point at now: the pairs, and the demos to re-cluster if any.
    pairs, pairs_ref = load_checked(hub, args.pairs_repo, args.pairs_revision, "pairs")
    logger.info("pairs: %d rows from %s", len(pairs), pairs_ref)
    if args.demos_repo:
        demos, demos_ref = load_checked(hub, args.demos_repo, args.demos_revision, "demos")

    # 2. Embed and cluster the pairs of the modalities kept; the others stay in the assignments with cluster -1.
    clustered = drop_modalities(pairs, args.exclude_modalities)
    embeddings = embed_pairs(
        clustered, args.image_embedder, args.text_embedder, args.text_fields, args.image_weight, args.batch_size
    )
    clusters = cluster_pairs(embeddings, args.num_clusters, args.seed)
    logger.info("%s: k=%d, inertia %.4f, sizes %s", clusters.algorithm, clusters.k, clusters.inertia, clusters.sizes())

    # 3. The assignments (`default`), the review sample (`review`), and the demos with their pair's cluster (a demo
    #    about a left-out modality keeps cluster -1, like its pair).
    assignments = cluster_assignments(pairs, clustered, clusters)
    review = review_sample(clustered, clusters, args.per_cluster, args.seed, args.strategy)
    headline = {args.clusters_repo: f"k={clusters.k}, {len(clustered)} pairs, {len(review)} to review"}
    if args.demos_repo:
        updated = assign_clusters(demos, assignments["id"], assignments["cluster"])
        changed = sum(a != b for a, b in zip(demos["cluster"], updated["cluster"], strict=True))
        headline[args.demos_repo] = f"{len(updated)} demos, {changed} cluster id(s) changed"
    if not args.push_to_hub:
        print("push_to_hub is false, nothing pushed: " + "; ".join(f"{r}: {h}" for r, h in headline.items()))
        return []

    # 4. Push the clusters repo (both configs and one card, one commit), then the demos as a new commit of theirs.
    card = clusters_card(args, pairs_ref, assignments, clustered, clusters, review)
    clustering = {"default": (assignments, "train"), "review": (review, "train")}
    push = (args.hub_revision, card, args.hub_private_repo, "Clustering")
    pushed = [hub.push_datasets(clustering, args.clusters_repo, *push)]
    if args.demos_repo:
        refs = [pairs_ref, pushed[-1].ref("default"), demos_ref]
        card = updated_demos_card(hub, args, updated, changed, clusters.k, refs)
        push = {"revision": args.hub_revision, "card": card, "private": args.hub_private_repo}
        pushed.append(hub.push_dataset(updated, args.demos_repo, **push))
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
