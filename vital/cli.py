"""The ``vital`` command: a thin front for the recipes' ``main()`` functions, plus hub inspection.

    vital pipeline --config quickstart                        # a shipped profile, from any folder (or a YAML path)
    vital ingest --config recipes/quickstart/ingest.yaml --hub local:outputs/hub
    vital hub refs quickstart/pairs --hub local:outputs/hub
    vital hub log quickstart/pairs --hub local:outputs/hub
    vital hub fsck quickstart/pairs --hub local:outputs/hub   # verify every commit's bytes; gc reclaims leftovers
    vital hub migrate --hub local:outputs/hub                 # convert a hub of the old layout to the HF cache one
    vital stand-in --port 8123                                # the offline stand-in endpoint, until killed

``vital stand-in`` serves the bundled stand-in endpoint (`vital.testing.serve`); this module is the only production
module that imports `vital.testing`, and only when that command runs.

``vital <stage> ...`` runs ``recipes/<stage>.py`` with the same arguments, so the command and the script never differ.
"""

from __future__ import annotations

import argparse
import json
import sys

from vital import __version__


ALIASES = {"import": "import_released"}  # `vital import` runs recipes/import_released.py


def _hub_command(argv: list[str]) -> int:
    from vital.hub import HubError, LocalHub, get_hub

    parser = argparse.ArgumentParser(
        prog="vital hub", description="Inspect, verify and clean a hub's repos.", allow_abbrev=False
    )
    parser.add_argument("action", choices=["resolve", "refs", "log", "path", "fsck", "gc", "migrate"])
    parser.add_argument("repo", nargs="?", help="repo id, optionally with @revision (every action but migrate)")
    parser.add_argument("--hub", default=None, help="local:<dir> or hf (default: $VITAL_HUB or ~/.cache/vital/hub)")
    parser.add_argument(
        "--repo-type", "--repo_type", dest="repo_type", default="dataset", choices=["dataset", "model"]
    )
    args = parser.parse_args(argv)
    from vital.hub import parse_repo_ref

    hub = get_hub(args.hub)
    if args.action == "migrate":
        if not isinstance(hub, LocalHub):
            raise SystemExit("'vital hub migrate' converts a local hub (--hub local:<dir>)")
        try:
            converted = hub.migrate()
        except HubError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for name in converted:
            print(f"migrated {name}")
        print(f"{hub.root}: {len(converted)} repo(s) migrated to the Hugging Face cache layout")
        return 0
    if not args.repo:
        parser.error(f"'vital hub {args.action}' needs a repo id")
    try:
        repo_id, revision = parse_repo_ref(args.repo)
        if args.action == "resolve":
            print(hub.resolve(repo_id, revision, args.repo_type))
        elif args.action == "path":
            print(hub.snapshot(repo_id, revision, args.repo_type))
        elif not isinstance(hub, LocalHub):
            raise SystemExit(f"'vital hub {args.action}' reads a local hub; for the Hugging Face Hub use its web UI")
        elif args.action == "refs":
            print(json.dumps(hub.list_refs(repo_id, args.repo_type), indent=2))
        elif args.action == "fsck":
            problems = hub.fsck(repo_id, args.repo_type)
            for problem in problems:
                print(problem)
            print(f"{repo_id}: {len(problems)} problem(s)" if problems else f"{repo_id}: ok")
            return 1 if problems else 0
        elif args.action == "gc":
            print(json.dumps(hub.gc(repo_id, args.repo_type)))
        else:
            for info in hub.history(repo_id, revision, args.repo_type):
                print(f"{info['sha'][:12]}  {info['message']}")
    except HubError as e:
        print(f"error: {e}{_other_type_hint(hub, args.repo, args.repo_type)}", file=sys.stderr)
        return 1
    return 0


def _other_type_hint(hub, repo: str, repo_type: str) -> str:
    """``" (a model repo of that name exists: --repo-type model)"`` when the repo exists as the other type."""
    from vital.hub import HubError, LocalHub

    other = "model" if repo_type == "dataset" else "dataset"
    try:  # the repo id only: the revision may be what was refused
        exists = isinstance(hub, LocalHub) and (hub.repo_dir(repo.split("@", 1)[0], other) / "refs").is_dir()
    except HubError:
        exists = False
    return f" (a {other} repo of that name exists: --repo-type {other})" if exists else ""


def main(argv: list[str] | None = None) -> int:
    from vital.runner import available_recipes, load_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        stages = ", ".join(available_recipes())
        usage = "vital <stage> [--config YAML] [--key value ...] | vital hub ... | vital stand-in ..."
        aliases = ", ".join(f"`vital {alias}` = {stage}" for alias, stage in ALIASES.items())
        print(
            f"usage: {usage}\n\nstages: {stages}, hub, stand-in\n"
            f"(`-` and `_` are the same in a stage's name: `vital import-demos` = import_demos; {aliases})\n"
            "`vital <stage> --help` lists a stage's arguments; `--config` takes a YAML of them (or a shipped one, "
            "e.g. quickstart/generate.yaml)"
        )
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    command = ALIASES.get(command, command)
    if command == "hub":
        return _hub_command(rest)
    if command in ("stand-in", "stand_in"):
        from vital.testing.serve import main as serve_stand_in

        return serve_stand_in(rest)
    from vital.runner import _COMMAND

    _COMMAND.append(f"vital {argv[0]}")
    try:
        load_recipe(command).cli(rest)
    finally:
        _COMMAND.pop()
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that say what the user should change (a missing repo or config, a bad record, a taken run branch, a
    stale checkpoint, a push that would ship base weights): the command prints their message, not a traceback."""
    from vital.data.errors import RecordError
    from vital.data.inputs import MissingColumnsError
    from vital.hub import HubError
    from vital.runs import BaseWeightsError, StaleCheckpointError
    from vital.sft.runs import RunBranchError

    return (
        HubError,
        RecordError,
        MissingColumnsError,
        RunBranchError,
        StaleCheckpointError,
        BaseWeightsError,
        FileNotFoundError,
    )


def console(argv: list[str] | None = None) -> int:
    """The ``vital`` console script: :func:`main`, with the errors a user fixes printed as one ``error:`` line (exit
    status 1) instead of a traceback. ``VITAL_TRACEBACK=1`` shows the traceback too."""
    import os

    try:
        return main(argv)
    except _user_errors() as error:
        if os.environ.get("VITAL_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(console())
