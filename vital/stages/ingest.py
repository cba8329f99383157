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

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.data.errors import Quarantine, push_quarantine
from vital.data.schemas import validate_dataset
from vital.hub import PushResult, get_hub, sha256_file
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.ingest")


@dataclass
class IngestArguments(HubArguments):
    """
    Arguments of the `ingest` stage: where the image–caption pairs (and the demonstrations written on them) come
    from, and the repos they are pushed to.

    Parameters:
        > Parameters that control the inputs

        pairs_source (`str`, *optional*, defaults to `"sample"`):
            `"sample"` (the pairs bundled with the package) or `"llava-med"` (LLaVA-Med figure-caption records read
            from `records`, images from `image_dir`).
        records (`str` or `None`, *optional*):
            LLaVA-Med figure-caption file (`pair_id`, `fig_caption`, `in_text_mention`, `domain`): a JSON list, JSON
            lines, or a JSON object `{domain: [records]}`. Required when `pairs_source="llava-med"`.
        image_dir (`str` or `None`, *optional*):
            Folder holding the records' images. Required when `pairs_source="llava-med"`.
        errors (`str`, *optional*, defaults to `"raise"`):
            Bad records: `"raise"` stops with the record and field; `"skip"` pushes them to the `quarantine` config of
            `pairs_repo` with the reason.
        pairs_repo (`str`, *optional*, defaults to `"quickstart/pairs"`):
            Dataset repo the pairs are pushed to.
        demos_source (`str` or `None`, *optional*, defaults to `"sample"`):
            `"sample"` (the bundled demonstrations, joined to the pairs as read back from the hub) or `"none"` to
            push no demonstrations.
        demos_repo (`str`, *optional*, defaults to `"quickstart/demos"`):
            Dataset repo the demonstrations are pushed to.
        seed (`int`, *optional*, defaults to `0`):
            Recorded in the lineage; ingest itself draws nothing at random.

        > Parameters that control the push (those of [`~vital.arguments.HubArguments`])

        hub (`str` or `None`, *optional*):
            `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the pairs, their quarantine and the demos with their cards. `False` loads and checks them and pushes
            nothing (the demos are then joined to the pairs in memory).
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch of `pairs_repo` and `demos_repo` the outputs are pushed to (created from the default branch if
            missing).
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create the repos private (clinical data stays private). An existing repo keeps its visibility.
    """

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
    seed: int = field(default=0, metadata={"help": "Recorded in the lineage; ingest itself draws nothing at random."})


def load_pairs(args: IngestArguments):
    """The pairs dataset, its quarantine (possibly empty), the lineage inputs and the sources text for the card."""
    from vital.data import sample

    if args.pairs_source == "sample":
        pairs = sample.load_sample_pairs()
        inputs = [{"source": "biomed-vital sample data", "sha256": sample.sample_manifest_sha256()}]
        sources = (sample.sample_dir() / "SOURCES.md").read_text(encoding="utf-8")
        return pairs, Quarantine(args.errors), inputs, sources
    if args.pairs_source == "llava-med":
        from vital.data.llava import llava_med_records_to_pairs

        if not args.records or not args.image_dir:
            raise ValueError("pairs_source 'llava-med' needs `records` and `image_dir`")
        result = llava_med_records_to_pairs(args.records, args.image_dir, errors=args.errors)
        inputs = [{"source": args.records, "sha256": sha256_file(args.records)}]
        return result.dataset, result.quarantine, inputs, "PubMed Central figures; see each row's `source`."
    raise ValueError(f"unknown pairs_source {args.pairs_source!r} (expected 'sample' or 'llava-med')")


def check_pairs(pairs, quarantine: Quarantine, args: IngestArguments):
    """The pairs that meet the `pairs` contract; every record left out joins ``quarantine`` (logged by reason)."""
    pairs, more = validate_dataset(pairs, "pairs", errors=args.errors)
    quarantine.extend(more)
    if len(quarantine):
        logger.warning(
            "%d pair record(s) quarantined, by reason: %s (rows in config 'quarantine' of %s)",
            len(quarantine),
            quarantine.summary(),
            args.pairs_repo,
        )
    return pairs, quarantine


def pairs_card(args: IngestArguments, pairs, quarantine: Quarantine, inputs: list, sources: str):
    """The pairs card: lineage (the source file or the bundled sample), modalities, sources, and the quarantine."""
    skipped = len(quarantine)
    description = ""
    if skipped:
        reasons = ", ".join(f"{reason} {n}" for reason, n in quarantine.counts_by_reason().items())
        description = (
            f"{skipped} record(s) were quarantined during ingest ({reasons}). Each one's id, field, reason and raw "
            f'record are in the [`quarantine`](#quarantine) config: `load_dataset("{args.pairs_repo}", "quarantine")`.'
        )
    return dataset_card(
        "pairs",
        lineage=Lineage(stage="ingest", inputs=inputs, config=args, seed=args.seed),
        pretty_name="BioMed-VITAL pairs" + (" (sample)" if args.pairs_source == "sample" else ""),
        description=description,
        repo_id=args.pairs_repo,
        revision=args.hub_revision,
        num_rows=len(pairs),
        modalities=dict(sorted(Counter(pairs["modality"]).items())),
        sources=sources,
        quarantined=skipped,
    )


def wants_demos(args: IngestArguments) -> bool:
    """Whether the run writes demonstrations; an unknown ``demos_source`` stops before anything is pushed."""
    if not args.demos_source or args.demos_source.lower() == "none":
        return False
    if args.demos_source != "sample":
        raise ValueError(f"unknown demos_source {args.demos_source!r} (expected 'sample' or 'none')")
    return True


def load_demos(pairs):
    """The bundled demonstrations joined to ``pairs`` (their images are the pairs' images), checked."""
    from vital.data import sample

    demos, _ = validate_dataset(sample.load_sample_demos(pairs), "demos")
    return demos


def demos_card(args: IngestArguments, demos, pairs_ref):
    """The demos card: lineage names the pairs commit the demonstrations were joined to."""
    return dataset_card(
        "demos",
        lineage=Lineage(stage="ingest", inputs=[pairs_ref], config=args, seed=args.seed),
        pretty_name="BioMed-VITAL demonstrations (sample)",
        description="Sample demonstrations written by the biomed-vital maintainers; not clinician-reviewed.",
        num_rows=len(demos),
        modalities=dict(sorted(Counter(demos["modality"]).items())),
        curators=sorted(set(demos["curated_by"])),
    )


def main(args: IngestArguments) -> list[PushResult]:
    setup_logging()

    # 1. Pairs: load and check the contract; every record left out goes to the quarantine.
    wants_demos(args)  # an unknown demos_source stops here
    pairs, quarantine, inputs, sources = load_pairs(args)
    pairs, quarantine = check_pairs(pairs, quarantine, args)
    if not args.push_to_hub:  # the demos are joined to the pairs in memory; nothing is written
        demo_rows = f", {len(load_demos(pairs))} demos" if wants_demos(args) else ""
        print(f"push_to_hub is false, nothing pushed: {len(pairs)} pairs, {len(quarantine)} quarantined{demo_rows}")
        return []

    # 2. Push the pairs with their card; the quarantine goes to the `quarantine` config (or a stale one is removed).
    hub = get_hub(args.hub)
    logger.info("hub: %r", hub)
    card = pairs_card(args, pairs, quarantine, inputs, sources)
    if args.errors == "skip":
        push_quarantine(hub, quarantine, args.pairs_repo, args.hub_revision, args.hub_private_repo)
    pushed = [
        hub.push_dataset(pairs, args.pairs_repo, revision=args.hub_revision, card=card, private=args.hub_private_repo)
    ]
    logger.info("pairs: %d rows -> %s", len(pairs), pushed[0].location)

    # 3. Demos: joined to the pairs as read back from the hub at the commit just made.
    if wants_demos(args):
        pairs_ref = pushed[0].ref()
        demos = load_demos(hub.load_dataset(args.pairs_repo, revision=pairs_ref.commit, split="train"))
        card = demos_card(args, demos, pairs_ref)
        push = {"revision": args.hub_revision, "card": card, "private": args.hub_private_repo}
        pushed.append(hub.push_dataset(demos, args.demos_repo, **push))
        logger.info("demos: %d rows -> %s", len(demos), pushed[1].location)

    print(artifact_table(pushed))
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = recipe_parser((IngestArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
