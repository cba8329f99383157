"""Import the official clinician demonstrations from a Python file, without running it, as a ``demos`` dataset.

Usage:

    vital import-demos generate/doctor_few_shot_examples.py --image_dir data/demo_images \\
        --repo your-org/biomed-vital-demos --hub hf

BioMed-VITAL keeps its demonstrations as a list literal in its generation code. The file is parsed with `ast` and
only that literal is evaluated (`ast.literal_eval`), so a user's copy never executes. Each demonstration keeps every
domain flag it carries (`modalities`); `modality` is the first, in LLaVA-Med's flag order.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from vital.cards import Lineage, dataset_card
from vital.data.errors import push_quarantine
from vital.data.official_demos import demo_records_to_rows, read_demos_literal
from vital.hub import PushResult, get_hub, sha256_file
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.import_demos")


@dataclass
class ImportDemosArguments:
    file: str | None = field(default=None, metadata={"help": "Python file holding the demonstrations literal."})
    variable: str | None = field(
        default=None, metadata={"help": "Name the list is assigned to (default: the first list of demonstrations)."}
    )
    image_dir: str = field(default="data/demo_images", metadata={"help": "Folder holding the demos' images."})
    curated_by: str = field(default="BioMed-VITAL clinicians", metadata={"help": "Recorded in `curated_by`."})
    repo: str = field(default="biomed-vital/demos", metadata={"help": "Dataset repo to push to."})
    hub: str | None = field(default=None, metadata={"help": "'local:<dir>' or 'hf'. Default: $VITAL_HUB."})
    revision: str = field(default="main", metadata={"help": "Branch to push to."})
    private: bool = field(default=True, metadata={"help": "Create the repo private."})
    errors: str = field(
        default="raise",
        metadata={"help": "Bad demos: 'raise' names the demo and field; 'skip' pushes them to a `quarantine` config."},
    )


def main(args: ImportDemosArguments) -> list[PushResult]:
    setup_logging()
    if not args.file:
        raise ValueError("give the Python file holding the demonstrations: vital import-demos <file>")
    hub = get_hub(args.hub)
    records = read_demos_literal(args.file, args.variable)
    demos, quarantine = demo_records_to_rows(records, args.image_dir, args.curated_by, args.errors)
    if len(quarantine):
        logger.warning("%d demo(s) quarantined, by reason: %s", len(quarantine), quarantine.summary())
    several = sum(len(m) > 1 for m in demos["modalities"])
    by_flag = Counter(m for ms in demos["modalities"] for m in ms)
    description = (
        f"Imported from `{args.file}` ({len(records)} demonstrations in the literal; the file was parsed, never run). "
        f"{several} demonstration(s) carry more than one domain flag; by flag: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_flag.items()))
        + ". `modality` is the first flag (chest_xray, mri, ct, histology, gross); `modalities` lists them all."
    )
    if len(quarantine):
        description += (
            f" {len(quarantine)} demonstration(s) were refused; their rows are in the `quarantine` config "
            f'(`load_dataset("{args.repo}", "quarantine")`).'
        )
    card = dataset_card(
        "demos",
        lineage=Lineage(
            stage="import_demos", inputs=[{"source": args.file, "sha256": sha256_file(args.file)}], config=args
        ),
        pretty_name="BioMed-VITAL clinician demonstrations",
        description=description,
        num_rows=len(demos),
        modalities=dict(sorted(Counter(demos["modality"]).items())),
        curators=sorted(set(demos["curated_by"])),
    )
    pushed = []
    if args.errors == "skip":
        push_quarantine(hub, quarantine, args.repo, args.revision, args.private)
    pushed.append(hub.push_dataset(demos, args.repo, revision=args.revision, card=card, private=args.private))
    print(artifact_table(pushed))
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    argv = list(argv or [])
    if argv and not argv[0].startswith("-"):  # `vital import-demos <file> ...`
        argv = ["--file", argv[0], *argv[1:]]
    (args,) = recipe_parser((ImportDemosArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    import sys

    cli(sys.argv[1:])
