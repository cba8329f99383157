"""Clinician annotation — serve the annotation app for one task, or export what the clinicians saved.

Usage:

    # once: a users file with hashed passwords (asks for the password; or set VITAL_ANNOTATE_PASSWORD)
    vital annotate --add_user alice --users outputs/annotate-users.json

    # serve (http://127.0.0.1:7860, behind a login form)
    vital annotate --task preference --dataset quickstart/answer-pairs@main --hub local:outputs/hub \\
        --store outputs/annotations --users outputs/annotate-users.json
    vital annotate --task demos --dataset quickstart/clusters@main --candidates quickstart/candidates@main ...
    vital annotate --task rating --dataset quickstart/candidates@main ...

    # export: preferences (clinician pairs for the selector), demos (for the generator), clinician ratings
    vital annotate --export --task preference --dataset quickstart/answer-pairs --hub local:outputs/hub \\
        --store outputs/annotations --output_repo quickstart/preferences --weight 1.0

BioMed-VITAL's clinicians picked the demonstrations and gave the pairwise preferences that align the data selector; the
app records each click durably (one append-only JSONL file per annotator, see `vital.annotate.store`), resumes every
annotator where they stopped, and the export writes the ``demos``, ``preferences`` or ``ratings`` contract through the
hub with a card: lineage (the dataset commits annotated, the store's hash) and inter-annotator agreement. On a Hugging
Face Space the same app signs clinicians in with their Hugging Face account (``vital/annotate/space/``).
"""

from __future__ import annotations

import getpass
import logging
import os
from dataclasses import dataclass, field

from vital.annotate.auth import add_user, allowed_annotators, load_users, on_space
from vital.annotate.export import build_export, default_output_repo, push_export
from vital.annotate.items import load_items
from vital.annotate.store import TASKS, AnnotationStore
from vital.annotate.tasks import SIDE_SALT, AnnotationTask
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.annotate")
PASSWORD_ENV = "VITAL_ANNOTATE_PASSWORD"


@dataclass
class AnnotateArguments:
    task: str | None = field(default=None, metadata={"help": "demos, preference or rating."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "repo@revision of the items: the clusters repo (demos; its `review` config) or a demos dataset, "
            "the answer pairs (preference), the candidates (rating). The export joins each annotation to the commit "
            "it was made on, so there the revision is ignored."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Config of the dataset (default: `review` for demos when present)."}
    )
    candidates: str | None = field(
        default=None, metadata={"help": "demos: repo@revision of the candidates whose conversations are shown."}
    )
    limit: int | None = field(default=None, metadata={"help": "Show only the first N items."})
    hub: str | None = field(
        default=None,
        metadata={"help": "Where artifacts live: 'local:<dir>' or 'hf'. Default: $VITAL_HUB, else ~/.cache."},
    )
    store: str = field(
        default="outputs/annotations", metadata={"help": "Folder of the annotation files (keep it backed up)."}
    )
    users: str | None = field(
        default=None,
        metadata={"help": "JSON file {username: scrypt hash} for the login form (else $VITAL_ANNOTATE_USERS)."},
    )
    add_user: str | None = field(
        default=None, metadata={"help": f"Add this user to --users (password from ${PASSWORD_ENV} or a prompt)."}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0 for the network)."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    side_salt: str = field(
        default=SIDE_SALT, metadata={"help": "Preference: mixed into the per-annotator A/B order draw."}
    )
    export: bool = field(default=False, metadata={"help": "Export the saved annotations instead of serving."})
    output_repo: str | None = field(
        default=None,
        metadata={"help": "Export target (default: <namespace>/preferences, /demos or /clinician-ratings)."},
    )
    weight: float = field(
        default=1.0,
        metadata={"help": "Preference export: `weight` of every clinician pair (the selector can up-weight itself)."},
    )
    revision: str = field(default="main", metadata={"help": "Export: branch to push to (created from main)."})
    private: bool = field(default=True, metadata={"help": "Export: create repos private (clinical data)."})


def main(args: AnnotateArguments) -> list[PushResult] | None:
    setup_logging()

    # 0. Users: hashed passwords only, written with owner-only permissions.
    if args.add_user:
        if not args.users:
            raise SystemExit("--add_user needs --users <file>")
        password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for {args.add_user}: ")
        if not os.environ.get(PASSWORD_ENV) and getpass.getpass("again: ") != password:
            raise SystemExit("the passwords differ")
        add_user(args.users, args.add_user, password)
        logger.info("user %s added to %s", args.add_user, args.users)
        return None

    if args.task not in TASKS or not args.dataset:
        raise SystemExit(f"--task ({' | '.join(TASKS)}) and --dataset repo@revision are required")
    hub = get_hub(args.hub)
    store = AnnotationStore(args.store)
    logger.info("hub: %r, store: %s", hub, store.root)

    # 1. Export: the last annotation of every annotator and item, joined to the commits they were made on.
    if args.export:
        export = build_export(hub, args.task, args.dataset, store, args.dataset_config, args.weight)
        output_repo = args.output_repo or default_output_repo(args.dataset, args.task)
        pushed = push_export(hub, export, output_repo, args.dataset, args.revision, args.private, config=args)
        logger.info("%s export: %s", args.task, export.counts)
        agreement = export.agreement.to_dict()
        headline = f"{len(export.rows)} rows from {len(export.annotators)} annotator(s)"
        if agreement["pairs"]:
            headline += f", agreement {agreement['percent_agreement']:.0%}, kappa {agreement['mean_kappa']}"
        print(artifact_table(pushed, {output_repo: headline}))
        return pushed

    # 2. Serve: items pinned to the commit the revision points at now; the login form in front.
    items = load_items(hub, args.task, args.dataset, args.dataset_config, candidates=args.candidates, limit=args.limit)
    from vital.annotate.app import AnnotationApp

    space = on_space()
    app = AnnotationApp(AnnotationTask(items, store, args.side_salt), space=space, allowed=allowed_annotators())
    users = None if space else load_users(args.users)
    app.launch(users, host=args.host, port=args.port)
    return None


def cli(argv: list[str] | None = None) -> list[PushResult] | None:
    (args,) = recipe_parser((AnnotateArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
