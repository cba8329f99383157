"""The selector stages' own arguments: the data (judge and clinician pairs), the model (backbone, head, LoRA) and the
pairs' repo, shared by `train_selector` and `sweep_clinician_weight`; the push options are the trainer config's
(`vital.selector.SelectorTrainingConfig`, TRL's names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vital.arguments import HubLocation


@dataclass
class SelectorScriptArguments(HubLocation):
    """
    The selector's data, model and output arguments (`train_selector` and `sweep_clinician_weight`). Where the
    selector is pushed is `SelectorTrainingConfig`'s (TRL's) `hub_model_id`, `hub_revision`, `hub_private_repo` and
    `push_to_hub`; its training pairs go to `pairs_repo` on the same branch.

    Parameters:
        hub (`str`, *optional*):
            `"local:<dir>"` or `"hf"`: where the inputs and outputs live. Default: `$VITAL_HUB`, else
            `~/.cache/vital/hub`.
        candidates_repo (`str`, *optional*, defaults to `"quickstart/candidates"`):
            Candidates the judge rated.
        candidates_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the candidates (resolved to a commit, recorded in the card).
        ratings_repo (`str`, *optional*, defaults to `"quickstart/ratings"`):
            The judge's ratings of the candidates' turns.
        ratings_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the ratings.
        n_train_pairs (`int`, *optional*, defaults to `30000`):
            Judge pairs to train on (paper: 30,000).
        n_heldout_pairs (`int`, *optional*, defaults to `10000`):
            Held-out judge pairs (paper: 10,000).
        min_score_gap (`float`, *optional*, defaults to `1.0`):
            Smallest judge-score difference that makes a pair.
        pair_sampling (`str`, *optional*, defaults to `"uniform_pairs"`):
            `"uniform_pairs"` (ours: uniform over pairs with a large enough gap, candidates split first) or
            `"score_levels"` (official: two score levels uniformly, then an item in each; 80/20 split per level).
        judge_turns (`str`, *optional*, defaults to `"all"`):
            Rated turns that make judge pairs: `"all"` (ours) or `"first"` (official: first turn only).
        judge_heldout_fraction (`float`, *optional*):
            Share held out (of candidates, or of each level's items with `score_levels`; official 0.2). Unset:
            `n_heldout_pairs / (n_train_pairs + n_heldout_pairs)`.
        pairs_seed (`int`, *optional*, defaults to `0`):
            Seeds the candidate split and the pair sampling.
        clinician_preferences (`str`, *optional*):
            Clinician pairs: a preferences repo `repo[@revision]` (the annotation app's export), a .json / .jsonl /
            .csv file, `"sample"` (the bundled sample judgements, not clinicians', joined with `answer_pairs_repo`)
            or `"none"`. Their weight is the trainer's `clinician_weight`.
        answer_pairs_repo (`str`, *optional*, defaults to `"quickstart/answer-pairs"`):
            Answer pairs the sample judgements are joined with.
        answer_pairs_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of the answer pairs.
        clinician_image_root (`str`, *optional*):
            Folder that relative image paths of a clinician file start from.
        clinician_heldout_preferences (`str`, *optional*):
            A separate set of held-out clinician pairs to measure alignment on (same forms as
            `clinician_preferences`). Unset: hold out part of `clinician_preferences` (`clinician_heldout_fraction`).
        clinician_train_limit (`int`, *optional*):
            Train on the first N clinician pairs only (official: 50). Unset: all.
        clinician_heldout_fraction (`float`, *optional*, defaults to `0.2`):
            Share of clinician pairs held out (by figure) to measure alignment.
        min_clinician_heldout (`int`, *optional*, defaults to `20`):
            Hold clinician pairs out only if at least this many would be; otherwise train on all and report alignment
            on the training pairs, labelled as such.
        backbone (`str`, *optional*, defaults to `"hub:quickstart/tiny-clip"`):
            Dual encoder: `hub:<repo>[@<rev>]` on the recipe's hub, a folder, a Hub id (CLIP / SigLIP /
            VisionTextDualEncoder) or `open_clip:<name>` (BiomedCLIP, extra `biomedclip`).
        backbone_revision (`str`, *optional*, defaults to `"main"`):
            Revision of the backbone (Hub id or `hub:` repo).
        hidden_sizes (`list[int]`, *optional*, defaults to `[512, 512, 512]`):
            Hidden sizes of the MLP head (paper: 512, 512, 512).
        text_fields (`list[str]`, *optional*, defaults to `["question", "answer"]`):
            Texts of a turn joined for scoring: `question`, `answer`, `caption`, `mentions`.
        text_template (`str`, *optional*):
            Fill the scored text from a template instead of joining `text_fields` with newlines; official:
            `"{caption}{mentions}Question:{question}Answer:{answer}"`.
        head_activation (`str`, *optional*):
            `"sigmoid"` ends the head in a sigmoid (official); unset: raw scores (ours).
        mean_rank (`str`, *optional*, defaults to `"ours"`):
            Which mean rank the card headlines: `"ours"` (1-based over n, held-out judge pairs) or `"official"`
            (0-based over n, clinician pairs).
        head_dropout (`float`, *optional*, defaults to `0.1`):
            Dropout in the head (TRL disables dropout by default).
        normalize_features (`bool`, *optional*, defaults to `False`):
            L2-normalise the features before the head.
        freeze_backbone (`bool`, *optional*, defaults to `False`):
            Train the head only.
        use_lora (`bool`, *optional*, defaults to `False`):
            LoRA on the backbone's attention; the head trains fully. The pushed selector is merged.
        lora_r (`int`, *optional*, defaults to `8`):
            LoRA rank.
        lora_alpha (`int`, *optional*, defaults to `16`):
            LoRA alpha.
        lora_dropout (`float`, *optional*, defaults to `0.0`):
            LoRA dropout.
        lora_target_modules (`list[str]`, *optional*, defaults to `["q_proj", "v_proj"]`):
            Backbone modules LoRA wraps.
        pairs_repo (`str`, *optional*, defaults to `"quickstart/selector-pairs"`):
            Dataset repo the training pairs (`train` and `heldout` splits) are pushed to, on `hub_revision`.
        torch_threads (`int`, *optional*):
            CPU threads per process for torch (tiny models on shared CPUs run faster on 1). Unset: torch's.
    """

    # Judge pairs
    candidates_repo: str = field(default="quickstart/candidates", metadata={"help": "Candidates the judge rated."})
    candidates_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the candidates."})
    ratings_repo: str = field(default="quickstart/ratings", metadata={"help": "The judge's ratings of the turns."})
    ratings_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the ratings."})
    n_train_pairs: int = field(default=30000, metadata={"help": "Judge pairs to train on (paper: 30,000)."})
    n_heldout_pairs: int = field(default=10000, metadata={"help": "Held-out judge pairs (paper: 10,000)."})
    min_score_gap: float = field(default=1.0, metadata={"help": "Smallest judge-score difference that makes a pair."})
    pair_sampling: str = field(
        default="uniform_pairs",
        metadata={
            "help": "'uniform_pairs' (ours: uniform over pairs with a large enough gap, candidates split first) or "
            "'score_levels' (official: two score levels uniformly, then an item in each; 80/20 split per level).",
            "choices": ["uniform_pairs", "score_levels"],
        },
    )
    judge_turns: str = field(
        default="all",
        metadata={
            "help": "Rated turns that make judge pairs: 'all' (ours) or 'first' (official: first turn only).",
            "choices": ["all", "first"],
        },
    )
    judge_heldout_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Share held out (of candidates, or of each level's items with score_levels; official 0.2); "
            "unset: n_heldout_pairs / (n_train_pairs + n_heldout_pairs)."
        },
    )
    pairs_seed: int = field(default=0, metadata={"help": "Seeds the candidate split and the pair sampling."})
    # Clinician pairs
    clinician_preferences: str | None = field(
        default=None,
        metadata={
            "help": "Clinician pairs: a preferences repo 'repo[@revision]' (annotation-app export), a .json/.jsonl/"
            ".csv file, 'sample' (bundled sample judgements, not clinicians', joined with answer_pairs_repo) or "
            "'none'. Their weight is the trainer's `clinician_weight` (paper sweeps 1, 10, 100, 200, 300, 400)."
        },
    )
    answer_pairs_repo: str = field(
        default="quickstart/answer-pairs", metadata={"help": "Answer pairs the sample judgements are joined with."}
    )
    answer_pairs_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the answer pairs."})
    clinician_image_root: str | None = field(
        default=None, metadata={"help": "Folder that relative image paths of a clinician file start from."}
    )
    clinician_heldout_preferences: str | None = field(
        default=None,
        metadata={
            "help": "A separate set of held-out clinician pairs to measure alignment on (same forms as "
            "clinician_preferences; the official code keeps training and alignment pairs in separate files). Unset: "
            "hold out part of clinician_preferences (clinician_heldout_fraction)."
        },
    )
    clinician_train_limit: int | None = field(
        default=None,
        metadata={"help": "Train on the first N clinician pairs only (official: 50); unset: all."},
    )
    clinician_heldout_fraction: float = field(
        default=0.2, metadata={"help": "Share of clinician pairs held out (by figure) to measure alignment."}
    )
    min_clinician_heldout: int = field(
        default=20,
        metadata={
            "help": "Hold clinician pairs out only if at least this many would be; otherwise train on all and report "
            "alignment on the training pairs, labelled as such."
        },
    )
    # Model
    backbone: str = field(
        default="hub:quickstart/tiny-clip",
        metadata={
            "help": "Dual encoder: 'hub:<repo>[@<rev>]' on the recipe's hub (quickstart: the tiny random CLIP of the "
            "tiny_models stage), a folder, a Hub id (CLIP / SigLIP / VisionTextDualEncoder) or 'open_clip:<name>' "
            "(BiomedCLIP: open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224, extra "
            "'biomedclip')."
        },
    )
    backbone_revision: str = field(default="main", metadata={"help": "Revision of the backbone (Hub or hub: repo)."})
    hidden_sizes: list[int] = field(
        default_factory=lambda: [512, 512, 512], metadata={"help": "MLP head hidden sizes (paper: 512, 512, 512)."}
    )
    text_fields: list[str] = field(
        default_factory=lambda: ["question", "answer"],
        metadata={"help": "Texts of a turn joined for scoring: question, answer, caption, mentions."},
    )
    text_template: str | None = field(
        default=None,
        metadata={
            "help": "Fill the scored text from a template instead of joining text_fields with newlines; official: "
            "'{caption}{mentions}Question:{question}Answer:{answer}'."
        },
    )
    head_activation: str | None = field(
        default=None,
        metadata={
            "help": "'sigmoid' ends the head in a sigmoid (official; a hinge margin of 1 can then never be met); "
            "unset: raw scores (ours)."
        },
    )
    mean_rank: str = field(
        default="ours",
        metadata={
            "help": "Which mean rank the card headlines: 'ours' (1-based over n, held-out judge pairs) or 'official' "
            "(0-based over n, clinician pairs).",
            "choices": ["ours", "official"],
        },
    )
    head_dropout: float = field(default=0.1, metadata={"help": "Dropout in the head (TRL disables it by default)."})
    normalize_features: bool = field(default=False, metadata={"help": "L2-normalise features before the head."})
    freeze_backbone: bool = field(default=False, metadata={"help": "Train the head only."})
    # LoRA on the backbone
    use_lora: bool = field(
        default=False, metadata={"help": "LoRA on the backbone's attention; the head trains fully."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "Backbone modules LoRA wraps."}
    )
    # Output
    pairs_repo: str = field(default="quickstart/selector-pairs", metadata={"help": "Dataset repo of the pairs."})
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads per process for torch (tiny models on shared CPUs run faster on 1); unset: torch's."
        },
    )


def selector_config(args: SelectorScriptArguments) -> dict[str, Any]:
    """The head and text settings of a fresh selector (`vital.selector.training.load_selector`'s keywords)."""
    return {
        "hidden_sizes": args.hidden_sizes,
        "text_fields": args.text_fields,
        "dropout": args.head_dropout,
        "normalize_features": args.normalize_features,
        "freeze_backbone": args.freeze_backbone,
        "text_template": args.text_template,
        "head_activation": args.head_activation,
    }
