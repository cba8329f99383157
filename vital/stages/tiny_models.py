"""Offline base models: push a tiny random vision-language model and a tiny CLIP dual encoder to the hub, so the
quickstart's tuning and selection stages start from hub repos like real runs do (`hub:quickstart/tiny-llava`).

Usage:

    vital tiny_models --config recipes/quickstart/tiny_models.yaml

The weights are random (seeded): these models exist to exercise the pipeline offline, not to be useful. The same
seed gives byte-identical files, so a rerun makes no new commit; a rerun with the same config, seed and stack versions
does not even rebuild them (the repo's card records the build's fingerprint).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vital.cards import Lineage, model_card
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging
from vital.runs import finished_fingerprint, run_fingerprint
from vital.testing.tiny_models import TINY_VLM_BUILDERS, build_tiny_clip


logger = logging.getLogger("vital.tiny_models")


@dataclass
class TinyModelsArguments:
    hub: str | None = field(default=None, metadata={"help": "'local:<dir>' or 'hf'. Default: $VITAL_HUB."})
    vlm: str = field(default="llava", metadata={"help": f"Tiny VLM architecture: {', '.join(TINY_VLM_BUILDERS)}."})
    vlm_repo: str = field(default="quickstart/tiny-llava", metadata={"help": "Model repo of the tiny VLM."})
    clip_repo: str = field(default="quickstart/tiny-clip", metadata={"help": "Model repo of the tiny CLIP."})
    revision: str = field(default="main", metadata={"help": "Branch to push to."})
    seed: int = field(default=0, metadata={"help": "Seeds the random weights."})
    private: bool = field(default=True, metadata={"help": "Create repos private."})


def main(args: TinyModelsArguments) -> list[PushResult]:
    setup_logging()
    hub = get_hub(args.hub)
    if args.vlm not in TINY_VLM_BUILDERS:
        raise ValueError(f"unknown tiny VLM {args.vlm!r}; choose one of {sorted(TINY_VLM_BUILDERS)}")
    builds = [
        (args.vlm_repo, TINY_VLM_BUILDERS[args.vlm], f"tiny random {args.vlm}", "image-text-to-text"),
        (args.clip_repo, build_tiny_clip, "tiny random CLIP dual encoder", "zero-shot-image-classification"),
    ]
    pushed = []
    for repo_id, build, what, task in builds:
        fingerprint = build_fingerprint(args, build.__name__)
        if finished_fingerprint(hub, repo_id, args.revision, "model", fingerprint) is not None:
            commit = hub.resolve(repo_id, args.revision, "model")
            logger.info(
                "%s@%s already holds this build (same config, seed and versions): skipped", repo_id, commit[:12]
            )
            location = str(hub.snapshot(repo_id, commit, "model"))
            pushed.append(PushResult(repo_id, "model", args.revision, commit, location, created=False))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            build(save_dir=Path(tmp), seed=args.seed)
            card = model_card(
                "model",
                lineage=Lineage(
                    stage="tiny_models",
                    config=args,
                    seed=args.seed,
                    extra={"builder": build.__name__, "run_fingerprint": fingerprint["sha256"]},
                ),
                model_name=repo_id.split("/")[-1],
                pipeline_tag=task,
                tags=["tiny", "random-weights", "testing"],
                description=f"A {what} with random weights, built offline by `vital.testing.tiny_models."
                f"{build.__name__}(seed={args.seed})` for the quickstart and tests. It knows nothing.",
                repo_id=repo_id,
            )
            pushed.append(hub.push_folder(tmp, repo_id, "model", args.revision, card=card, private=args.private))
    print(artifact_table(pushed))
    return pushed


def build_fingerprint(args: TinyModelsArguments, builder: str) -> dict:
    """The fingerprint of one build (`vital.runs.run_fingerprint`): builder, config and seed."""
    return run_fingerprint(
        stage="tiny_models",
        inputs=[{"builder": f"vital.testing.tiny_models.{builder}"}],
        config={"args": args},
        seed=args.seed,
        world_size=1,
        effective_batch=0,
    )


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = recipe_parser((TinyModelsArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
