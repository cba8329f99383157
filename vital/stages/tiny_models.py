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

from vital.arguments import HubArguments
from vital.cards import Lineage, model_card
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging
from vital.runs import finished_fingerprint, run_fingerprint
from vital.tiny_models import TINY_VLM_BUILDERS, build_tiny_clip


logger = logging.getLogger("vital.tiny_models")


@dataclass
class TinyModelsArguments(HubArguments):
    """
    Arguments of the `tiny_models` stage: which tiny random models to build and where to push them.

    Parameters:
        vlm (`str`, *optional*, defaults to `"llava"`):
            Architecture of the tiny vision-language model: a key of `vital.tiny_models.TINY_VLM_BUILDERS`
            (`"llava"`, `"idefics3"`).
        vlm_repo (`str`, *optional*, defaults to `"quickstart/tiny-llava"`):
            Model repo the tiny vision-language model is pushed to.
        clip_repo (`str`, *optional*, defaults to `"quickstart/tiny-clip"`):
            Model repo the tiny CLIP dual encoder (the selector's backbone) is pushed to.
        seed (`int`, *optional*, defaults to `0`):
            Seeds the random weights: the same seed gives byte-identical files.
    """

    vlm: str = field(default="llava", metadata={"help": f"Tiny VLM architecture: {', '.join(TINY_VLM_BUILDERS)}."})
    vlm_repo: str = field(default="quickstart/tiny-llava", metadata={"help": "Model repo of the tiny VLM."})
    clip_repo: str = field(default="quickstart/tiny-clip", metadata={"help": "Model repo of the tiny CLIP."})
    seed: int = field(default=0, metadata={"help": "Seeds the random weights."})


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
        if (
            args.push_to_hub
            and finished_fingerprint(hub, repo_id, args.hub_revision, "model", fingerprint) is not None
        ):
            pushed.append(unchanged_build(hub, repo_id, args.hub_revision))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            build(save_dir=Path(tmp), seed=args.seed)
            if not args.push_to_hub:
                logger.info("built %s (%s); push_to_hub is false: nothing pushed", repo_id, what)
                continue
            card = build_card(args, repo_id, build.__name__, what, task, fingerprint)
            pushed.append(
                hub.push_folder(tmp, repo_id, "model", args.hub_revision, card=card, private=args.hub_private_repo)
            )
    print(artifact_table(pushed))
    return pushed


def unchanged_build(hub, repo_id: str, revision: str) -> PushResult:
    """The push result of a repo that already holds this build (nothing rebuilt, nothing committed)."""
    commit = hub.resolve(repo_id, revision, "model")
    logger.info("%s@%s already holds this build (same config, seed and versions): skipped", repo_id, commit[:12])
    return PushResult(repo_id, "model", revision, commit, str(hub.snapshot(repo_id, commit, "model")), created=False)


def build_card(args: TinyModelsArguments, repo_id: str, builder: str, what: str, task: str, fingerprint: dict):
    """The model card of one tiny model: random weights, its builder and seed, and the build's fingerprint."""
    return model_card(
        "model",
        lineage=Lineage(
            stage="tiny_models",
            config=args,
            seed=args.seed,
            extra={"builder": builder, "run_fingerprint": fingerprint["sha256"]},
        ),
        model_name=repo_id.split("/")[-1],
        pipeline_tag=task,
        tags=["tiny", "random-weights", "testing"],
        description=f"A {what} with random weights, built offline by `vital.tiny_models.{builder}(seed={args.seed})` "
        "for the quickstart and tests. It knows nothing.",
        repo_id=repo_id,
    )


def build_fingerprint(args: TinyModelsArguments, builder: str) -> dict:
    """The fingerprint of one build (`vital.runs.run_fingerprint`): builder, config and seed."""
    return run_fingerprint(
        stage="tiny_models",
        inputs=[{"builder": f"vital.tiny_models.{builder}"}],
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
