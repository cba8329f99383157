"""Import the released BioMed-VITAL / LLaVA-Med instruction data: JSON files + images -> one dataset repo, one config
per file, images embedded, so that a user writes `load_dataset(repo, "80k")`.

Usage:

    vital import --files 80k=BioMed-VITAL-80K.json 150k=BioMed-VITAL-150K.json --image_dir data/images \\
        --repo your-org/biomed-vital-released --hub hf
    vital import --files 60k=llava_med_instruct_60k.json --url_list llava_med_image_urls.jsonl \\
        --image_dir data/images --repo your-org/llava-med-60k

With `url_list` (JSONL or CSV: `image` file name, `url`), missing images are downloaded first: retried with backoff,
dead links skipped and listed in `download_manifest.jsonl` (pushed with the data), and an interrupted import resumes
(images already on disk are not fetched again). Records whose image is missing or corrupt are quarantined and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vital.arguments import HubArguments
from vital.cards import Lineage, dataset_card
from vital.data.importer import MANIFEST, ImportedFiles, convert_released_files, fetch_missing_images
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.import")


@dataclass
class ImportArguments(HubArguments):
    """
    Arguments of `vital import`: the released instruction files, where their images are (or come from), and the
    dataset repo they are pushed to, one config per file.

    Parameters:
        > Parameters that control the inputs

        files (`list[str]`, *optional*, defaults to `[]`):
            Released JSON / JSONL files as `config=path` (e.g. `80k=BioMed-VITAL-80K.json`); each becomes a config of
            `repo`. `quarantine` is reserved for the refused records.
        image_dir (`str`, *optional*, defaults to `"data/images"`):
            Folder of the images; downloads land here.
        url_list (`str` or `None`, *optional*):
            JSONL / CSV of `image` file names and `url`s, or LLaVA-Med's JSONL of `pair_id`, `image_file_path`,
            `pmc_tar_url` (figures extracted from PMC article tarballs as `<pair_id>.jpg`). Images missing from
            `image_dir` are downloaded first; `None` expects them all on disk.
        errors (`str`, *optional*, defaults to `"skip"`):
            Bad records: `"skip"` pushes them to the `quarantine` config with the reason; `"raise"` stops at the first
            one, naming the record and field.
        image_placement (`str`, *optional*, defaults to `"first_turn"`):
            Image records whose conversation has no `<image>` placeholder (BioMed-VITAL's generator output):
            `"first_turn"` puts the image before the first human turn's text, as LLaVA's training code does, and
            exports them back without a placeholder; `"require"` quarantines them.

        > Parameters that control the downloads

        workers (`int`, *optional*, defaults to `8`):
            Parallel downloads.
        retries (`int`, *optional*, defaults to `4`):
            Retries of a failing download, with exponential backoff (HTTP 404 / 410 are final).
        backoff_s (`float`, *optional*, defaults to `1.0`):
            Backoff base of the download retries, in seconds.
        retry_dead (`bool`, *optional*, defaults to `False`):
            Try the links the manifest lists as dead again.

        > Parameters that control the push (those of [`~vital.arguments.HubArguments`])

        repo (`str`, *optional*, defaults to `"biomed-vital/released"`):
            Dataset repo the configs, the quarantine, the download manifest and the card are pushed to (one commit).
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the import. `False` downloads and converts (images land in `image_dir`) and pushes nothing.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch of `repo` the import is pushed to (created from the default branch if missing).
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create `repo` private. An existing repo keeps its visibility.
    """

    files: list[str] = field(
        default_factory=list,
        metadata={"help": "Released JSON/JSONL files as 'config=path' (e.g. 80k=BioMed-VITAL-80K.json)."},
    )
    image_dir: str = field(default="data/images", metadata={"help": "Folder of the images (downloads land here)."})
    url_list: str | None = field(
        default=None,
        metadata={
            "help": "JSONL/CSV of `image` file names and `url`s, or LLaVA-Med's JSONL of `pair_id`, `image_file_path`, "
            "`pmc_tar_url` (figures extracted from PMC article tarballs as <pair_id>.jpg)."
        },
    )
    repo: str = field(default="biomed-vital/released", metadata={"help": "Dataset repo to push to."})
    errors: str = field(
        default="skip",
        metadata={"help": "Bad records: 'skip' (pushed to the `quarantine` config with the reason) or 'raise'."},
    )
    image_placement: str = field(
        default="first_turn",
        metadata={
            "help": "Image records whose conversation has no <image> placeholder (BioMed-VITAL's generator output): "
            "'first_turn' puts the image before the first human turn's text, as LLaVA's training code does, and "
            "exports them back without a placeholder; 'require' quarantines them."
        },
    )
    workers: int = field(default=8, metadata={"help": "Parallel downloads."})
    retries: int = field(default=4, metadata={"help": "Retries of a failing download (404/410 are final)."})
    backoff_s: float = field(default=1.0, metadata={"help": "Backoff base of download retries, in seconds."})
    retry_dead: bool = field(default=False, metadata={"help": "Try links the manifest lists as dead again."})


def import_card(args: ImportArguments, imported: ImportedFiles, dead: int):
    """The card of the released repo: one row per config (rows, quarantined, placeholders inserted), dead links."""
    return dataset_card(
        "released",
        lineage=Lineage(stage="import_released", inputs=imported.inputs, config=args),
        pretty_name="BioMed-VITAL released instruction data",
        repo_id=args.repo,
        revision=args.hub_revision,
        configs=list(imported.datasets),
        configs_table=imported.table,
        dead=dead,
        image_placement=args.image_placement,
        quarantined=sum(t["quarantined"] for t in imported.table),
    )


def main(args: ImportArguments) -> list[PushResult]:
    setup_logging()
    files = dict(spec.split("=", 1) for spec in args.files)
    if not files:
        raise ValueError("no `files` given (config=path ...)")

    # 1. Images: download what is missing (resumable), keeping a manifest of what could not be had.
    download = (args.workers, args.retries, args.backoff_s, args.retry_dead)
    dead = fetch_missing_images(args.url_list, args.image_dir, *download)

    # 2. One config per file; bad records quarantined (a dead link's record names its missing image file).
    imported = convert_released_files(files, args.image_dir, args.errors, args.image_placement)
    headline = ", ".join(f"{t['config']} {t['rows']}" for t in imported.table)
    if not args.push_to_hub:
        print(f"push_to_hub is false, nothing pushed: {headline}; {len(imported.quarantine)} quarantined")
        return []

    # 3. One commit: every config, the quarantine (or the removal of a stale one), the download manifest and the card.
    hub = get_hub(args.hub)
    configs = {config: (dataset, "train") for config, dataset in imported.datasets.items()}
    stale = []
    if args.errors == "skip" and len(imported.quarantine):
        configs["quarantine"] = (imported.quarantine, "train")
    elif args.errors == "skip":
        stale.append("quarantine")  # a clean rerun removes the last run's quarantine
    manifest = {"download_manifest.jsonl": Path(args.image_dir) / MANIFEST} if args.url_list else None
    card = import_card(args, imported, dead)
    push = {"delete_configs": stale, "files": manifest}
    pushed = [hub.push_datasets(configs, args.repo, args.hub_revision, card, args.hub_private_repo, "Import", **push)]
    print(artifact_table(pushed, {args.repo: headline}))
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = recipe_parser((ImportArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
