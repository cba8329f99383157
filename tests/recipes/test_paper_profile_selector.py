"""The paper profile's selector and selection settings against the official code's values, and "ours" beside them.

``OFFICIAL`` is read off mao1207/BioMed-VITAL (``filter/train_clip_filter.py`` trains the selector, ``filter/filter.py``
selects): every value of ``recipes/biomed_vital/{train_selector,sweep_clinician_weight,select}.yaml`` that decides the
result is compared with it, and ``OURS`` pins the documented differences of ``recipes/biomed_vital_plus/``. The tests
after the tables check that the settings act as the official code does: the optimiser and schedule the Trainer builds,
the loss of a batch, the scored text, the head's output range, the pair sampling, the mean rank and the cut.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from vital.runner import load_recipe
from vital.selection import kept_count
from vital.selector import OFFICIAL_TEXT_TEMPLATE, SelectorTrainingConfig, official_mean_rank, pairwise_loss
from vital.selector.data import build_judge_pairs, candidate_turn_text, preference_side


ROOT = Path(__file__).resolve().parents[2]
PAPER, PLUS = ROOT / "recipes" / "biomed_vital", ROOT / "recipes" / "biomed_vital_plus"

# The official values (filter/train_clip_filter.py, filter/filter.py).
OFFICIAL_TRAIN = {
    # optim.Adam(model.parameters(), lr=0.00001): torch's Adam, no weight decay, betas (0.9, 0.999), eps 1e-8
    "optim": "adamw_torch",  # with weight_decay 0, AdamW is Adam
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "learning_rate": 1e-5,
    "lr_scheduler_type": "constant",  # no scheduler
    "warmup_steps": 0,
    "num_train_epochs": 6,
    "per_device_train_batch_size": 64,  # DataLoader(train_dataset, batch_size=64, shuffle=True)
    "max_grad_norm": 0.0,  # loss.backward(); optimizer.step(): no clipping
    "bf16": False,  # fp32
    "loss_type": "hinge",
    "margin": 1.0,  # hinge_loss(..., margin=1)
    "weight_normalization": "none",  # (hinge * weight).mean()
    "text_template": "{caption}{mentions}Question:{question}Answer:{answer}",
    "text_fields": ["caption", "mentions", "question", "answer"],
    "head_activation": "sigmoid",  # nn.Sigmoid() ends the MLP
    "hidden_sizes": [512, 512, 512],  # 1024 -> 512 -> 512 -> 512 -> 1
    "head_dropout": 0.0,  # no dropout in the MLP
    "normalize_features": True,  # open_clip's CLIP.forward returns normalised features
    "freeze_backbone": False,  # the optimiser holds every parameter
    "use_lora": False,
    "backbone": "open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    "n_train_pairs": 30000,  # split_data(rank_data, 30000, 10000)
    "n_heldout_pairs": 10000,
    "pair_sampling": "score_levels",  # random.sample(score_levels, 2), then random.choice within each
    "judge_turns": "first",  # conversations[0] and [1] only
    "judge_heldout_fraction": 0.2,  # [: len * 4 // 5] train, the rest test, per level
    "clinician_train_limit": 50,  # json.load(train.json)[:50]
    "mean_rank": "official",  # 0-based ranks / n, on the alignment (clinician) pairs
}
OFFICIAL_SWEEP_WEIGHTS = [1, 10, 100, 200, 300, 400]  # weights = [1, 10, 100, 200, 300, 400]
OFFICIAL_SELECT = {"aggregate": "first", "cut": "floor", "ratios": [0.1, 0.4, 0.8, 0.9]}  # int(0.1 * len(...)), ...

# Ours: where recipes/biomed_vital_plus differs (the README's "Paper vs ours" table gives the reasons).
OURS_TRAIN = {
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 32,
    "bf16": True,
    "weight_normalization": "training_set",
    "text_template": None,
    "text_fields": ["question", "answer"],
    "head_activation": None,
    "pair_sampling": "uniform_pairs",
    "judge_turns": "all",
    "judge_heldout_fraction": None,
    "clinician_train_limit": None,
    "clinician_heldout_preferences": None,
    "mean_rank": "ours",
}
OURS_SELECT = {"aggregate": "mean", "cut": "ceil"}


def _config(folder: Path, name: str) -> dict:
    return yaml.safe_load((folder / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", ["train_selector", "sweep_clinician_weight"])
def test_paper_profile_selector_settings_are_the_official_ones(name):
    config = _config(PAPER, name)
    for key, official in OFFICIAL_TRAIN.items():
        assert key in config, f"{name}.yaml does not set {key} (official: {official!r})"
        assert config[key] == official, f"{name}.yaml: {key} = {config[key]!r}, official {official!r}"
    assert config["clinician_heldout_preferences"], "the official alignment pairs are a separate file"
    assert config["clinician_preferences"] != config["clinician_heldout_preferences"]
    assert OFFICIAL_TRAIN["text_template"] == OFFICIAL_TEXT_TEMPLATE
    if name == "sweep_clinician_weight":
        assert config["weights"] == OFFICIAL_SWEEP_WEIGHTS


def test_paper_profile_selection_settings_are_the_official_ones():
    config = _config(PAPER, "select")
    for key, official in OFFICIAL_SELECT.items():
        assert config[key] == official, f"select.yaml: {key} = {config[key]!r}, official {official!r}"


@pytest.mark.parametrize("name", ["train_selector", "sweep_clinician_weight"])
def test_ours_differs_where_documented_and_nowhere_else(name):
    paper, ours = _config(PAPER, name), _config(PLUS, name)
    for key, value in OURS_TRAIN.items():
        assert ours.get(key, "unset") == value, f"biomed_vital_plus/{name}.yaml: {key} = {ours.get(key)!r}"
    # ours reads its own profile's candidates and ratings and pushes to its own repos
    repos = {"hub_model_id", "pairs_repo", "results_repo", "output_dir", "candidates_repo", "ratings_repo"}
    repos.add("per_device_eval_batch_size")  # speed only: evaluation does not train
    undocumented = {
        key
        for key in paper.keys() | ours.keys()
        if key not in OURS_TRAIN and key not in repos and paper.get(key, "unset") != ours.get(key, "unset")
    }
    # held out by figure instead of a separate file
    assert undocumented <= {"clinician_heldout_fraction", "min_clinician_heldout"}, undocumented
    assert ours["max_grad_norm"] == 0.0, "ours must not clip either: clipping stops the clinician weight acting"


def test_ours_selection_settings():
    ours = _config(PLUS, "select")
    for key, value in OURS_SELECT.items():
        assert ours[key] == value


@pytest.mark.parametrize("folder", [PAPER, PLUS], ids=["paper", "ours"])
def test_profiles_parse_into_the_recipe_arguments(folder):
    recipe = load_recipe("train_selector")
    from trl import TrlParser

    for name in ("train_selector", "sweep_clinician_weight"):
        cls = recipe.ScriptArguments if name == "train_selector" else load_recipe(name).SweepArguments
        parser = TrlParser((cls, SelectorTrainingConfig))
        args, training = parser.parse_args_and_config(["--config", str(folder / f"{name}.yaml"), "--use_cpu", "true"])
        assert args.backbone.startswith("open_clip:hf-hub:microsoft/BiomedCLIP")
        if folder == PAPER:
            assert training.max_grad_norm == 0.0 and training.weight_normalization == "none"


# ---- the settings act as the official code's ------------------------------------------------------------------------
def _paper_training_args(tmp_path) -> tuple:
    from trl import TrlParser

    recipe = load_recipe("train_selector")
    parser = TrlParser((recipe.ScriptArguments, SelectorTrainingConfig))
    return parser.parse_args_and_config(
        ["--config", str(PAPER / "train_selector.yaml"), "--use_cpu", "true", "--output_dir", str(tmp_path)]
    )


def test_paper_optimizer_is_adam_at_a_constant_rate_without_clipping(tmp_path):
    from transformers import Trainer

    _, args = _paper_training_args(tmp_path)
    args.max_steps = 100
    args.push_to_hub = False  # a bare Trainer would push itself (SelectorTrainer never does: the stage pushes)
    model = torch.nn.Linear(4, 1)
    trainer = Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    reference = torch.optim.Adam(model.parameters(), lr=1e-5)
    for group in optimizer.param_groups:
        assert group["weight_decay"] == 0.0  # AdamW with no decay is Adam
        assert group["betas"] == reference.defaults["betas"] and group["eps"] == reference.defaults["eps"]
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == [1e-5] * 100
    assert not args.max_grad_norm  # Trainer clips only when max_grad_norm > 0


def test_paper_loss_is_the_batch_mean_of_weight_times_hinge():
    chosen, rejected = torch.tensor([0.9, 0.2, 0.6]), torch.tensor([0.1, 0.7, 0.6])
    weights = torch.tensor([1.0, 400.0, 1.0])
    hinge = torch.clamp(1.0 - (chosen - rejected), min=0)
    official = (hinge * weights).mean()
    # weight_normalization "none" makes the trainer pass mean_weight 1.0
    assert pairwise_loss(chosen, rejected, weights, "hinge", 1.0, mean_weight=1.0).item() == pytest.approx(
        official.item()
    )
    # ours divides by the training set's mean weight instead
    assert pairwise_loss(chosen, rejected, weights, "hinge", 1.0, mean_weight=134.0).item() == pytest.approx(
        official.item() / 134.0
    )


CANDIDATE = {
    "id": "c1",
    "caption": "Chest CT. ",
    "mentions": ["Fig. 1 shows an effusion."],
    "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is seen?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "An effusion."}]},
        {"role": "user", "content": [{"type": "text", "text": "Which side?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Left."}]},
    ],
}


def test_paper_scored_text_is_caption_mention_question_answer_of_the_first_turn():
    fields = OFFICIAL_TRAIN["text_fields"]
    text = candidate_turn_text(CANDIDATE, 0, fields, OFFICIAL_TRAIN["text_template"])
    # fig_caption + in_text_mention + "Question:" + question + "Answer:" + answer
    assert (
        text == "Chest CT. " + "Fig. 1 shows an effusion." + "Question:" + "What is seen?" + "Answer:" + "An effusion."
    )
    # a clinician pair has no caption: the official code scores its training pairs as "Question:...Answer:..."
    row = {
        "id": "p",
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}],
        "images": [{"bytes": b"x", "path": None}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "A."}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "B."}]}],
    }
    assert preference_side(row, "chosen", fields, OFFICIAL_TRAIN["text_template"])[1] == "Question:Q?Answer:A."


def test_paper_head_ends_in_a_sigmoid_so_the_margin_is_never_met():
    from vital.selector import SelectorConfig, SelectorModel

    config = SelectorConfig(
        backbone_config={"model_type": "open_clip", "model_name": "x", "model_cfg": {"embed_dim": 4}},
        hidden_sizes=[8],
        head_activation="sigmoid",
    )
    model = SelectorModel(config, backbone=torch.nn.Identity())
    scores = model.head(torch.randn(256, 8) * 5)
    assert scores.min() > 0 and scores.max() < 1
    hinge = torch.clamp(1.0 - (scores[:128] - scores[128:]), min=0)
    assert (hinge > 0).all()  # a hinge margin of 1 is never met


def _rated(levels: dict[int, int]):
    candidates, ratings, n = [], [], 0
    for score, count in levels.items():
        for _ in range(count):
            cid = f"c{n}"
            n += 1
            candidates.append({**CANDIDATE, "id": cid, "images": []})
            for turn in (0, 1):
                ratings.append(
                    {
                        "candidate_id": cid,
                        "turn": turn,
                        "score": float(score if turn == 0 else 10 - score),
                        "judge": {},
                    }
                )
    return candidates, ratings


def test_paper_judge_pairs_draw_a_score_level_first_and_split_each_level_80_20():
    # Level 9 holds 5 candidates, levels 5 and 1 hold 95 each: drawn by level, 2 pairs in 3 touch level 9.
    candidates, ratings = _rated({9: 5, 5: 95, 1: 95})
    pairs = build_judge_pairs(
        ratings, candidates, 60, 10, 1.0, seed=0, heldout_fraction=0.2, sampling="score_levels", turns="first"
    )
    train, heldout = pairs["train"], pairs["heldout"]
    assert set(train["chosen_turn"]) == set(train["rejected_turn"]) == {0}  # first turns only
    sides = [*train["chosen_score"], *train["rejected_score"]]
    # each of the 3 levels is in 2 of the 3 level pairs: about 2/3 of the pairs touch level 9 (5% of the items)
    share_9 = sum(s == 9 for s in sides) / len(train)
    assert 0.45 < share_9 < 0.9
    # per level, 80% train and 20% held out; no candidate on both sides
    train_ids = {*train["chosen_id"], *train["rejected_id"]}
    heldout_ids = {*heldout["chosen_id"], *heldout["rejected_id"]}
    assert not train_ids & heldout_ids
    level_9 = {f"c{i}" for i in range(5)}
    assert len(level_9 & train_ids) <= 4 and len(level_9 & heldout_ids) <= 1
    # ours: uniform over pairs, so level 9 appears in about its share of pairs with a gap, much less often
    ours = build_judge_pairs(ratings, candidates, 60, 10, 1.0, seed=0, sampling="uniform_pairs", turns="first")
    ours_sides = [*ours["train"]["chosen_score"], *ours["train"]["rejected_score"]]
    assert sum(s == 9 for s in ours_sides) / len(ours["train"]) < share_9 / 2


def test_paper_mean_rank_is_zero_based_over_n():
    scores, labels = [0.9, 0.8, 0.2, 0.1], [1, 0, 1, 0]
    # sorted descending, the positives sit at 0-based positions 0 and 2: mean 1, over n = 4
    assert official_mean_rank(scores, labels) == pytest.approx(1 / 4)


def test_paper_selection_cuts_with_int_and_ours_with_ceil():
    n = 15
    for ratio in OFFICIAL_SELECT["ratios"]:
        assert kept_count(n, ratio, OFFICIAL_SELECT["cut"]) == int(ratio * n)
        assert kept_count(n, ratio, OURS_SELECT["cut"]) == math.ceil(round(ratio * n, 9))
    assert kept_count(15, 0.1, "floor") == 1 and kept_count(15, 0.1, "ceil") == 2


def test_paper_selection_scores_only_the_first_turn():
    from vital.selection import aggregate_turn_scores

    assert aggregate_turn_scores([0.2, 0.9, 0.7], "first") == pytest.approx(0.2)
    assert aggregate_turn_scores([0.2, 0.9, 0.7], "mean") == pytest.approx(0.6)
