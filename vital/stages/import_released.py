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

from vital.cards import Lineage, dataset_card
from vital.data.importer import (
    MANIFEST,
    download_images,
    download_pmc_figures,
    is_pmc_url_list,
    read_pmc_url_list,
    read_url_list,
)
from vital.data.llava import llava_to_messages
from vital.hub import PushResult, get_hub, sha256_file
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.import")


@dataclass
class ImportArguments:
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
    hub: str | None = field(default=None, metadata={"help": "'local:<dir>' or 'hf'. Default: $VITAL_HUB."})
    revision: str = field(default="main", metadata={"help": "Branch to push to."})
    private: bool = field(default=True, metadata={"help": "Create the repo private."})
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


def main(args: ImportArguments) -> list[PushResult]:
    setup_logging()
    hub = get_hub(args.hub)
    files = dict(spec.split("=", 1) for spec in args.files)
    if not files:
        raise ValueError("no `files` given (config=path ...)")

    # 1. Images: download what is missing (resumable), keeping a manifest of what could not be had.
    dead = 0
    if args.url_list and is_pmc_url_list(args.url_list):  # LLaVA-Med: figures inside PMC article tarballs
        outcomes = download_pmc_figures(
            read_pmc_url_list(args.url_list),
            args.image_dir,
            args.workers,
            args.retries,
            args.backoff_s,
            args.retry_dead,
        )
        dead = sum(o.status != "ok" for o in outcomes.values())
    elif args.url_list:
        outcomes = download_images(
            read_url_list(args.url_list), args.image_dir, args.workers, args.retries, args.backoff_s, args.retry_dead
        )
        dead = sum(o.status != "ok" for o in outcomes.values())

    # 2. One config per file; bad records quarantined (a dead link's record names its missing image file).
    inputs, table, pushed = [], [], []
    converted, quarantined = {}, []
    for config, path in files.items():
        if config == "quarantine":
            raise ValueError("'quarantine' is the config of the refused records: name the file's config otherwise")
        result = llava_to_messages(path, args.image_dir, errors=args.errors, image_placement=args.image_placement)
        if len(result.quarantine):
            logger.warning(
                "%s: %d record(s) quarantined, by reason: %s (rows in config 'quarantine' of %s)",
                config,
                len(result.quarantine),
                result.quarantine.summary(),
                args.repo,
            )
        quarantined.append(result.quarantine.to_dataset(config=config))
        converted[config] = result.dataset
        inserted = sum(p == "inserted" for p in result.dataset["image_placeholder"])
        inputs.append({"source": str(path), "sha256": sha256_file(Path(path)), "config": config})
        table.append(
            {
                "config": config,
                "file": Path(path).name,
                "rows": len(result.dataset),
                "quarantined": len(result.quarantine),
                "inserted": inserted,
                "reasons": result.quarantine.counts_by_reason(),
            }
        )

    card = dataset_card(
        "released",
        lineage=Lineage(stage="import_released", inputs=inputs, config=args),
        pretty_name="BioMed-VITAL released instruction data",
        repo_id=args.repo,
        revision=args.revision,
        configs=list(files),
        configs_table=table,
        dead=dead,
        image_placement=args.image_placement,
        quarantined=sum(t["quarantined"] for t in table),
    )
    files = {"download_manifest.jsonl": Path(args.image_dir) / MANIFEST} if args.url_list else None
    configs = {config: (dataset, "train") for config, dataset in converted.items()}
    stale = []
    if args.errors == "skip":
        from datasets import concatenate_datasets

        refused = concatenate_datasets(quarantined)
        if len(refused):
            configs["quarantine"] = (refused, "train")
        else:
            stale.append("quarantine")  # a clean rerun removes the last run's quarantine
    # One commit: every config, the quarantine, the manifest and the card.
    pushed.append(
        hub.push_datasets(
            configs, args.repo, args.revision, card, args.private, "Import", delete_configs=stale, files=files
        )
    )
    print(artifact_table(pushed[-1:], {args.repo: ", ".join(f"{t['config']} {t['rows']}" for t in table)}))
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = recipe_parser((ImportArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
