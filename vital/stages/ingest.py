"""Stage 0 — ingest: push image–caption pairs, and the clinician demonstrations written on them, to the hub.

Usage:

    python recipes/ingest.py --config recipes/quickstart/ingest.yaml
    vital ingest --config recipes/quickstart/ingest.yaml --hub local:outputs/hub

Pairs come from the sample bundled with the package (real images from pip packages, see
`vital/data/sample/SOURCES.md`) or from LLaVA-Med figure-caption records (`pair_id`, `fig_caption`,
`in_text_mention`, `domain`) plus their image folder. Demonstrations are joined to the pairs *as read back from the
hub*, so the demos card records the pairs commit they were built on.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from vital.cards import Lineage, dataset_card
from vital.data.errors import Quarantine, push_quarantine
from vital.data.schemas import validate_dataset
from vital.hub import PushResult, get_hub, sha256_file
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.ingest")


@dataclass
class IngestArguments:
    hub: str | None = field(
        default=None,
        metadata={"help": "Where artifacts live: 'local:<dir>' or 'hf'. Default: $VITAL_HUB, else ~/.cache."},
    )
    pairs_source: str = field(
        default="sample",
        metadata={"help": "'sample' (bundled pairs) or 'llava-med' (figure-caption records at `records`)."},
    )
    records: str | None = field(
        default=None,
        metadata={"help": "LLaVA-Med figure-caption file: a JSON list, JSON lines, or a JSON {domain: [records]}."},
    )
    image_dir: str | None = field(default=None, metadata={"help": "Folder holding the records' images."})
    errors: str = field(
        default="raise",
        metadata={
            "help": "Bad records: 'raise' stops with the record and field; 'skip' pushes them to a `quarantine` config."
        },
    )
    pairs_repo: str = field(default="quickstart/pairs", metadata={"help": "Repo id the pairs are pushed to."})
    demos_source: str | None = field(
        default="sample", metadata={"help": "'sample' (bundled demos) or 'none' to push no demos."}
    )
    demos_repo: str = field(default="quickstart/demos", metadata={"help": "Repo id the demos are pushed to."})
    revision: str = field(default="main", metadata={"help": "Branch to push to (created from main if missing)."})
    private: bool = field(default=True, metadata={"help": "Create repos private (clinical data stays private)."})
    seed: int = field(default=0, metadata={"help": "Recorded in the lineage; ingest itself draws nothing at random."})


def load_pairs(args: IngestArguments):
    """The pairs dataset, its quarantine (possibly empty), the lineage inputs and the sources text for the card."""
    from vital.data import sample

    if args.pairs_source == "sample":
        pairs = sample.load_sample_pairs()
        inputs = [{"source": "biomed-vital sample data", "sha256": sample.sample_manifest_sha256()}]
        sources = (sample.sample_dir() / "SOURCES.md").read_text(encoding="utf-8")
        return pairs, None, inputs, sources
    if args.pairs_source == "llava-med":
        from vital.data.llava import llava_med_records_to_pairs

        if not args.records or not args.image_dir:
            raise ValueError("pairs_source 'llava-med' needs `records` and `image_dir`")
        result = llava_med_records_to_pairs(args.records, args.image_dir, errors=args.errors)
        inputs = [{"source": args.records, "sha256": sha256_file(args.records)}]
        return result.dataset, result.quarantine, inputs, "PubMed Central figures; see each row's `source`."
    raise ValueError(f"unknown pairs_source {args.pairs_source!r} (expected 'sample' or 'llava-med')")


def main(args: IngestArguments) -> list[PushResult]:
    setup_logging()
    hub = get_hub(args.hub)
    logger.info("hub: %r", hub)

    # 1. Pairs: load, check the contract, push with a card; every record left out goes to the `quarantine` config.
    pairs, quarantine, inputs, sources = load_pairs(args)
    pairs, more = validate_dataset(pairs, "pairs", errors=args.errors)
    quarantine = quarantine if quarantine is not None else Quarantine(args.errors)
    quarantine.extend(more)
    skipped = len(quarantine)
    by_reason = quarantine.counts_by_reason()
    if skipped:
        logger.warning(
            "%d pair record(s) quarantined, by reason: %s (rows in config 'quarantine' of %s)",
            skipped,
            quarantine.summary(),
            args.pairs_repo,
        )
    description = ""
    if skipped:
        reasons = ", ".join(f"{reason} {n}" for reason, n in by_reason.items())
        description = (
            f"{skipped} record(s) were quarantined during ingest ({reasons}). Each one's id, field, reason and raw "
            f'record are in the [`quarantine`](#quarantine) config: `load_dataset("{args.pairs_repo}", "quarantine")`.'
        )
    card = dataset_card(
        "pairs",
        lineage=Lineage(stage="ingest", inputs=inputs, config=args, seed=args.seed),
        pretty_name="BioMed-VITAL pairs" + (" (sample)" if args.pairs_source == "sample" else ""),
        description=description,
        repo_id=args.pairs_repo,
        revision=args.revision,
        num_rows=len(pairs),
        modalities=dict(sorted(Counter(pairs["modality"]).items())),
        sources=sources,
        quarantined=skipped,
    )
    if args.errors == "skip":
        push_quarantine(hub, quarantine, args.pairs_repo, args.revision, args.private)
    pushed = [hub.push_dataset(pairs, args.pairs_repo, revision=args.revision, card=card, private=args.private)]
    logger.info("pairs: %d rows -> %s", len(pairs), pushed[0].location)

    # 2. Demos: joined to the pairs as read back from the hub at the commit just made.
    if args.demos_source and args.demos_source.lower() != "none":
        from vital.data import sample

        if args.demos_source != "sample":
            raise ValueError(f"unknown demos_source {args.demos_source!r} (expected 'sample' or 'none')")
        pairs_ref = pushed[0].ref()
        hub_pairs = hub.load_dataset(args.pairs_repo, revision=pairs_ref.commit, split="train")
        demos, _ = validate_dataset(sample.load_sample_demos(hub_pairs), "demos")
        card = dataset_card(
            "demos",
            lineage=Lineage(stage="ingest", inputs=[pairs_ref], config=args, seed=args.seed),
            pretty_name="BioMed-VITAL demonstrations (sample)",
            description="Sample demonstrations written by the biomed-vital maintainers; not clinician-reviewed.",
            num_rows=len(demos),
            modalities=dict(sorted(Counter(demos["modality"]).items())),
            curators=sorted(set(demos["curated_by"])),
        )
        pushed.append(
            hub.push_dataset(demos, args.demos_repo, revision=args.revision, card=card, private=args.private)
        )
        logger.info("demos: %d rows -> %s", len(demos), pushed[1].location)

    print(artifact_table(pushed))
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = recipe_parser((IngestArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
