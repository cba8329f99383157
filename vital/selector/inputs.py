"""The selector's training data: judge pairs from the judge's ratings of the candidates and clinician pairs (training
and held out), every input read at a pinned commit (`prepare_data`)."""

from __future__ import annotations

import logging
from typing import Any

from vital.data.inputs import require_columns
from vital.hub import Hub
from vital.selector.arguments import SelectorScriptArguments
from vital.selector.data import build_judge_pairs
from vital.selector.training import load_clinician_preferences, split_clinician_pairs


logger = logging.getLogger(__name__)


def prepare_data(args: SelectorScriptArguments, training_args: Any, hub: Hub) -> dict[str, Any]:
    """Judge pairs, clinician pairs (train / held out) and the lineage of every input, at pinned commits.

    Returns a dict: ``judge`` (``train`` / ``heldout`` judge pairs), ``clinician_train``, ``clinician_heldout``,
    ``clinician_set`` (the evaluation set clinician alignment is measured on: ``"clinician"`` held out,
    ``"clinician_train"`` when too few to hold out, or None), ``eval_sets``, ``inputs`` (lineage), ``weight`` (the
    clinician weight), ``stand_in`` and ``sample_preferences`` (what the cards flag)."""
    candidates_ref = hub.ref(args.candidates_repo, args.candidates_revision)
    ratings_ref = hub.ref(args.ratings_repo, args.ratings_revision)
    candidates = hub.load_dataset(args.candidates_repo, revision=candidates_ref.commit, split="train")
    ratings = hub.load_dataset(args.ratings_repo, revision=ratings_ref.commit, split="train")
    require_columns(candidates, "train_selector", "candidates", candidates_ref)
    require_columns(ratings, "train_selector", "ratings", ratings_ref)
    judge = build_judge_pairs(
        ratings,
        candidates,
        args.n_train_pairs,
        args.n_heldout_pairs,
        args.min_score_gap,
        args.pairs_seed,
        heldout_fraction=args.judge_heldout_fraction,
        sampling=args.pair_sampling,
        turns=args.judge_turns,
    )
    weight = training_args.clinician_weight or 1.0
    clinician, clinician_inputs = load_clinician_preferences(
        hub,
        args.clinician_preferences,
        weight,
        args.answer_pairs_repo,
        args.answer_pairs_revision,
        args.clinician_image_root,
    )
    clinician_train, clinician_heldout = None, None
    if args.clinician_heldout_preferences:
        # Separate files, as in the official code: train on one, measure alignment on the other.
        clinician_train = clinician
        clinician_heldout, heldout_inputs = load_clinician_preferences(
            hub,
            args.clinician_heldout_preferences,
            weight,
            args.answer_pairs_repo,
            args.answer_pairs_revision,
            args.clinician_image_root,
        )
        clinician_inputs = [*clinician_inputs, *heldout_inputs]
    elif clinician is not None:
        clinician_train, clinician_heldout = split_clinician_pairs(
            clinician, args.clinician_heldout_fraction, args.min_clinician_heldout, args.pairs_seed
        )
    if clinician_train is not None and args.clinician_train_limit is not None:
        if len(clinician_train) > args.clinician_train_limit:
            logger.info(
                "training on the first %d of %d clinician pairs (clinician_train_limit)",
                args.clinician_train_limit,
                len(clinician_train),
            )
        clinician_train = clinician_train.select(range(min(args.clinician_train_limit, len(clinician_train))))
    # Clinician alignment is measured on held-out clinician pairs when there are enough, else on the training ones.
    eval_sets, clinician_set = {"judge": judge["heldout"]}, None
    if clinician_heldout is not None:
        clinician_set, eval_sets["clinician"] = "clinician", clinician_heldout
    elif clinician_train is not None:
        clinician_set, eval_sets["clinician_train"] = "clinician_train", clinician_train
    return {
        "judge": judge,
        "clinician_train": clinician_train,
        "clinician_heldout": clinician_heldout,
        "clinician_set": clinician_set,
        "eval_sets": eval_sets,
        "inputs": [candidates_ref, ratings_ref, *clinician_inputs],
        "weight": weight,
        "stand_in": bool(len(candidates)) and bool((candidates[0].get("generation") or {}).get("stand_in")),
        "sample_preferences": args.clinician_preferences == "sample",
    }
