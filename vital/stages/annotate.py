"""Clinician annotation — serve the annotation app for one task, or export what the clinicians saved.

Usage:

    # serve (http://127.0.0.1:7860, behind a login form). The first run without users creates the campaign lead
    # `lead` in <store>/users.json and prints its password once.
    vital annotate --task preference --dataset quickstart/answer-pairs@main --pairs quickstart/pairs@main \\
        --hub local:outputs/hub --store outputs/annotations
    vital annotate --task demos --dataset quickstart/clusters@main --candidates quickstart/candidates@main ...
    vital annotate --task rating --dataset quickstart/candidates@main ...

    # annotators (asks for the password; or set VITAL_ANNOTATE_PASSWORD); --roles annotator,campaign for a lead
    vital annotate --add_user alice --users outputs/annotations/users.json

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
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from vital.annotate.auth import ROLES, add_user, allowed_annotators, load_roles, load_users, on_space
from vital.annotate.export import build_export, default_output_repo, push_export
from vital.annotate.guidelines import load_guidelines
from vital.annotate.items import load_items
from vital.annotate.store import TASKS, AnnotationStore
from vital.annotate.tasks import SIDE_SALT, AnnotationTask
from vital.arguments import HubArguments
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging


logger = logging.getLogger("vital.annotate")
PASSWORD_ENV = "VITAL_ANNOTATE_PASSWORD"
CAMPAIGN_LEADS_ENV = "VITAL_CAMPAIGN_LEADS"
FIRST_USER = "lead"


@dataclass
class AnnotateArguments(HubArguments):
    """
    Arguments of `vital annotate`: serve the annotation app for one task, add a user, or export the saved annotations
    to the hub.

    Parameters:
        > Parameters that control the items

        task (`str` or `None`, *optional*):
            `"demos"`, `"preference"` or `"rating"`. Required to serve or export.
        dataset (`str` or `None`, *optional*):
            `repo@revision` of the items: the clusters repo (demos; its `review` config) or a demos dataset, the
            answer pairs (preference), the candidates (rating). The export joins each annotation to the commit it was
            made on, so there the revision is ignored.
        dataset_config (`str` or `None`, *optional*):
            Config of `dataset`. Default: `review` for demos when present, else the default config.
        candidates (`str` or `None`, *optional*):
            Demos: `repo@revision` of the candidates whose conversations are shown.
        pairs (`str` or `None`, *optional*):
            Preference: `repo@revision` of the figure-caption pairs, to show each figure's caption and in-text
            mentions with the question (the answer pairs do not carry them).
        guidelines (`str` or `None`, *optional*):
            The campaign's own guidelines (Markdown; the first line may be `version: ...`). Default: the task's
            built-in guidelines. Their version is recorded with every annotation.
        limit (`int` or `None`, *optional*):
            Show only the first N items.

        > Parameters that control the server and its users

        store (`str`, *optional*, defaults to `"outputs/annotations"`):
            Folder of the annotation files (one append-only JSONL file per annotator; keep it backed up).
        users (`str` or `None`, *optional*):
            JSON file of users (scrypt hashes, roles) for the login form. Default: `$VITAL_ANNOTATE_USERS`, else
            `<store>/users.json`, created on the first run with one campaign lead whose password is printed once.
        add_user (`str` or `None`, *optional*):
            Add this user to `users` (password from `$VITAL_ANNOTATE_PASSWORD` or a prompt) and stop.
        roles (`str`, *optional*, defaults to `"annotator"`):
            With `add_user`: comma-separated roles, `"annotator"` and/or `"campaign"` (the campaign view).
        host (`str`, *optional*, defaults to `"127.0.0.1"`):
            Address to serve on (`"0.0.0.0"` for the network).
        port (`int`, *optional*, defaults to `7860`):
            Port to serve on.
        side_salt (`str`, *optional*, defaults to `vital.annotate.tasks.SIDE_SALT`):
            Preference: mixed into the per-annotator draw of the A/B order.

        > Parameters that control the export (and its push: those of [`~vital.arguments.HubArguments`])

        export (`bool`, *optional*, defaults to `False`):
            Export the saved annotations instead of serving.
        output_repo (`str` or `None`, *optional*):
            Export target. Default: `<namespace>/preferences`, `<namespace>/demos` or `<namespace>/clinician-ratings`
            after the dataset's namespace.
        weight (`float`, *optional*, defaults to `1.0`):
            Preference export: the `weight` of every clinician pair (the selector can up-weight them).
        hub (`str` or `None`, *optional*):
            Where the items are read and the export is pushed: `"local:<dir>"` or `"hf"`. Default: `$VITAL_HUB`, else
            `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Export: push the export with its card. `False` builds it, reports its counts and agreement, and pushes
            nothing. Serving never pushes.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Export: branch of `output_repo` the export is pushed to (created from the default branch if missing). The
            items' revision is part of `dataset`.
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Export: create `output_repo` private (clinical data). An existing repo keeps its visibility.
    """

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
    pairs: str | None = field(
        default=None,
        metadata={
            "help": "preference: repo@revision of the figure-caption pairs, to show each figure's caption and "
            "in-text mentions with the question (the answer pairs do not carry them)."
        },
    )
    guidelines: str | None = field(
        default=None,
        metadata={
            "help": "The campaign's own guidelines (Markdown; first line may be 'version: ...'). Default: the "
            "task's built-in guidelines. Their version is recorded with every annotation."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Show only the first N items."})
    store: str = field(
        default="outputs/annotations", metadata={"help": "Folder of the annotation files (keep it backed up)."}
    )
    users: str | None = field(
        default=None,
        metadata={
            "help": "JSON file of users (scrypt hashes, roles) for the login form. Default: $VITAL_ANNOTATE_USERS, "
            "else <store>/users.json, created on the first run with one campaign lead."
        },
    )
    add_user: str | None = field(
        default=None, metadata={"help": f"Add this user to --users (password from ${PASSWORD_ENV} or a prompt)."}
    )
    roles: str = field(
        default="annotator",
        metadata={"help": "--add_user: comma-separated roles, 'annotator' and/or 'campaign' (the campaign view)."},
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


def main(args: AnnotateArguments) -> list[PushResult] | None:
    setup_logging()

    # 0. Users: hashed passwords only, written with owner-only permissions.
    if args.add_user:
        add_annotator(args)
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
        logger.info("%s export: %s", args.task, export.counts)
        agreement = export.agreement.to_dict()
        headline = f"{len(export.rows)} rows from {len(export.annotators)} annotator(s)"
        if agreement["pairs"]:
            headline += f", agreement {agreement['percent_agreement']:.0%}, kappa {agreement['mean_kappa']}"
        if not args.push_to_hub:
            print(f"push_to_hub is false, nothing pushed: {output_repo}: {headline}")
            return []
        push = (args.dataset, args.hub_revision, args.hub_private_repo)
        pushed = push_export(hub, export, output_repo, *push, config=args)
        print(artifact_table(pushed, {output_repo: headline}))
        return pushed

    # 2. Serve: items pinned to the commit the revision points at now; the login form in front.
    space = on_space()
    if not space and args.users and not Path(args.users).is_file():  # before the slow part: one line
        raise SystemExit(
            f"--users {args.users}: no such file. Create it with: vital annotate --add_user NAME --users {args.users}"
        )
    guidelines = load_guidelines(args.task, args.guidelines)
    guidelines.save(store.root)
    items = load_items(
        hub,
        args.task,
        args.dataset,
        args.dataset_config,
        candidates=args.candidates,
        limit=args.limit,
        pairs=args.pairs,
    )
    from vital.annotate.app import AnnotationApp

    users, roles = ({}, {}) if space else serving_users(args)  # the first run's password is printed last, to be seen
    leads = {n.strip() for n in os.environ.get(CAMPAIGN_LEADS_ENV, "").split(",") if n.strip()}
    task = AnnotationTask(items, store, args.side_salt, guidelines=guidelines)
    app = AnnotationApp(task, space=space, allowed=allowed_annotators(), roles=roles, campaign_leads=leads)
    logger.info("guidelines %s; serving %d items on http://%s:%d", guidelines.version, len(task), args.host, args.port)
    app.launch(users, host=args.host, port=args.port)
    return None


def add_annotator(args: AnnotateArguments) -> None:
    """Add ``args.add_user`` with ``args.roles`` to the users file (``--users``, else ``<store>/users.json``): the
    password from ``$VITAL_ANNOTATE_PASSWORD``, else asked twice; only its scrypt hash is written."""
    users_file = args.users or str(Path(args.store) / "users.json")
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if not roles or not set(roles) <= set(ROLES):
        raise SystemExit(f"--roles: choose among {', '.join(ROLES)} (got {args.roles!r})")
    password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for {args.add_user}: ")
    if not os.environ.get(PASSWORD_ENV) and getpass.getpass("again: ") != password:
        raise SystemExit("the passwords differ")
    Path(users_file).parent.mkdir(parents=True, exist_ok=True)
    add_user(users_file, args.add_user, password, roles)
    logger.info("user %s (%s) added to %s", args.add_user, ", ".join(roles), users_file)


def serving_users(args: AnnotateArguments) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The users of a local server: ``--users``, else ``$VITAL_ANNOTATE_USERS``, else ``<store>/users.json``, created
    on the first run with one campaign lead whose password is printed once (never logged). A missing or unreadable
    ``--users`` file stops with one line saying what to do."""
    if args.users:
        if not Path(args.users).is_file():
            raise SystemExit(
                f"--users {args.users}: no such file. Create it with: vital annotate --add_user NAME --users {args.users}"
            )
        source = args.users
    elif os.environ.get("VITAL_ANNOTATE_USERS"):
        source = None
    else:
        source = str(Path(args.store) / "users.json")
        if not Path(source).is_file():
            password = secrets.token_urlsafe(12)
            Path(source).parent.mkdir(parents=True, exist_ok=True)
            add_user(source, FIRST_USER, password, ROLES)
            print(
                f"First run: created the campaign lead {FIRST_USER!r} in {source}.\n"
                f"  Log in at http://{args.host}:{args.port} as {FIRST_USER} with password {password}"
                f" (shown only now).\n"
                f"  Add annotators with: vital annotate --add_user NAME --users {source}",
                flush=True,
            )
    try:
        users, roles = load_users(source), load_roles(source)
    except ValueError as error:
        raise SystemExit(f"users: {error}") from error
    if not users:
        raise SystemExit(
            "no users: add one with vital annotate --add_user NAME --users users.json, then pass --users users.json"
        )
    return users, roles


def cli(argv: list[str] | None = None) -> list[PushResult] | None:
    (args,) = recipe_parser((AnnotateArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
