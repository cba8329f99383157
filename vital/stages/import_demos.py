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

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.data.errors import push_quarantine
from vital.data.official_demos import demo_records_to_rows, read_demos_literal
from vital.hub import PushResult, get_hub, sha256_file
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.import_demos")


@dataclass
class ImportDemosArguments(HubArguments):
    """
    Arguments of `vital import-demos`: the Python file holding the official demonstrations literal, their images, and
    the `demos` repo they are pushed to.

    Parameters:
        > Parameters that control the inputs

        file (`str` or `None`, *optional*):
            Python file holding the demonstrations as a list literal; parsed with `ast`, never run. Required (also
            accepted as the first positional argument: `vital import-demos <file>`).
        variable (`str` or `None`, *optional*):
            Name the list is assigned to. Default: the first list of demonstrations in the file.
        image_dir (`str`, *optional*, defaults to `"data/demo_images"`):
            Folder holding the demonstrations' images.
        curated_by (`str`, *optional*, defaults to `"BioMed-VITAL clinicians"`):
            Recorded in every row's `curated_by`.
        errors (`str`, *optional*, defaults to `"raise"`):
            Bad demonstrations: `"raise"` names the demonstration and field; `"skip"` pushes them to the `quarantine`
            config of `repo` with the reason.

        > Parameters that control the push (those of [`~vital.arguments.HubArguments`])

        repo (`str`, *optional*, defaults to `"biomed-vital/demos"`):
            Dataset repo the demonstrations are pushed to.
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the demonstrations, their quarantine and the card. `False` reads and checks them and pushes nothing.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch of `repo` the demonstrations are pushed to (created from the default branch if missing).
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create `repo` private. An existing repo keeps its visibility.
    """

    file: str | None = field(default=None, metadata={"help": "Python file holding the demonstrations literal."})
    variable: str | None = field(
        default=None, metadata={"help": "Name the list is assigned to (default: the first list of demonstrations)."}
    )
    image_dir: str = field(default="data/demo_images", metadata={"help": "Folder holding the demos' images."})
    curated_by: str = field(default="BioMed-VITAL clinicians", metadata={"help": "Recorded in `curated_by`."})
    repo: str = field(default="biomed-vital/demos", metadata={"help": "Dataset repo to push to."})
    errors: str = field(
        default="raise",
        metadata={"help": "Bad demos: 'raise' names the demo and field; 'skip' pushes them to a `quarantine` config."},
    )


def demos_card(args: ImportDemosArguments, demos, quarantine, num_records: int):
    """The demos card: the file and its hash, the domain flags, and the refused demonstrations if any."""
    several = sum(len(m) > 1 for m in demos["modalities"])
    by_flag = Counter(m for ms in demos["modalities"] for m in ms)
    description = (
        f"Imported from `{args.file}` ({num_records} demonstrations in the literal; the file was parsed, never run). "
        f"{several} demonstration(s) carry more than one domain flag; by flag: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_flag.items()))
        + ". `modality` is the first flag (chest_xray, mri, ct, histology, gross); `modalities` lists them all."
    )
    if len(quarantine):
        description += (
            f" {len(quarantine)} demonstration(s) were refused; their rows are in the `quarantine` config "
            f'(`load_dataset("{args.repo}", "quarantine")`).'
        )
    return dataset_card(
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


def main(args: ImportDemosArguments) -> list[PushResult]:
    setup_logging()
    if not args.file:
        raise ValueError("give the Python file holding the demonstrations: vital import-demos <file>")

    # 1. The literal, read without running the file; each demonstration checked against the `demos` contract.
    records = read_demos_literal(args.file, args.variable)
    demos, quarantine = demo_records_to_rows(records, args.image_dir, args.curated_by, args.errors)
    if len(quarantine):
        logger.warning("%d demo(s) quarantined, by reason: %s", len(quarantine), quarantine.summary())
    if not args.push_to_hub:
        print(f"push_to_hub is false, nothing pushed: {len(demos)} demos, {len(quarantine)} quarantined")
        return []

    # 2. Push: the quarantine (or the removal of a stale one), then the demonstrations with their card.
    hub = get_hub(args.hub)
    card = demos_card(args, demos, quarantine, len(records))
    if args.errors == "skip":
        push_quarantine(hub, quarantine, args.repo, args.hub_revision, args.hub_private_repo)
    push = {"revision": args.hub_revision, "card": card, "private": args.hub_private_repo}
    pushed = [hub.push_dataset(demos, args.repo, **push)]
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
