"""The reproduction profile (recipes/biomed_vital/) holds the official settings; the "ours" profile
(recipes/biomed_vital_plus/) is documented beside it; both dry runs print every setting; the README's "Paper vs ours"
table says what the configs say.

The official values below were read from mao1207/BioMed-VITAL (generate/instructions_generation.py,
generate/generate_vision_instructions_2_answers.py, generate/cluster.py, filter/gpt-4v_scoring.py, eval/win_rate.py,
eval/model_vqa_med.py); "paper" style values name our implementation of the official layout or prompt.
"""

import re
from pathlib import Path

import pytest
import yaml

from vital.llm.estimate import PROFILE_SETTINGS, UNSET
from vital.runner import load_recipe, recipe_parser


ROOT = Path(__file__).resolve().parents[2]
PAPER, OURS = ROOT / "recipes/biomed_vital", ROOT / "recipes/biomed_vital_plus"

OFFICIAL = {
    # generation: the final official prompt, text-only demos, one demo per domain flag, one demo for two answers
    ("generate", "prompt_style"): "paper",
    ("generate", "demo_images"): False,
    ("generate", "demo_modalities"): ["chest_xray", "mri", "ct", "histology", "gross"],
    ("generate", "demos_per_modality"): 1,
    ("generate", "answer_pair_demos"): 1,
    ("generate", "max_tokens"): 4096,
    # clustering: ViT-B/16 (ImageNet-21k) + ada-002 on caption + first mention, gross and histology out, k = 60
    ("curate_demos", "image_embedder"): "vit:google/vit-base-patch16-224-in21k",
    ("curate_demos", "text_embedder"): "openai:text-embedding-ada-002",
    ("curate_demos", "text_fields"): ["caption", "first_mention"],
    ("curate_demos", "exclude_modalities"): ["gross", "histology"],
    ("curate_demos", "num_clusters"): 60,
    # rating: the official system message and [Context] ... [System] layout (strict parsing kept)
    ("rate", "prompt_style"): "paper",
    # evaluation: sampled at 0.7 with up to 1024 new tokens, no yes/no hint; the win-rate judge sees the image and
    # begins with its verdict; LLaVA-Med's chat judge reads the caption
    ("evaluate", "do_sample"): True,
    ("evaluate", "sampling_temperature"): 0.7,
    ("evaluate", "max_new_tokens"): 1024,
    ("evaluate", "closed_hint"): None,
    ("evaluate", "win_rate_with_image"): True,
    ("evaluate", "win_rate_verdict_position"): "first",
    ("evaluate", "judge_with_image"): False,
}

OURS_VALUES = {
    ("generate", "prompt_style"): "ours",
    ("generate", "demo_images"): True,
    ("curate_demos", "image_embedder"): "clip:openai/clip-vit-base-patch16",
    ("curate_demos", "text_embedder"): "clip:openai/clip-vit-base-patch16",
    ("curate_demos", "exclude_modalities"): [],
    ("rate", "prompt_style"): "ours",
    ("evaluate", "do_sample"): False,
    ("evaluate", "max_new_tokens"): 512,
    ("evaluate", "win_rate_verdict_position"): "last",
}


def parsed(profile: Path, stage: str) -> dict:
    """The stage's arguments as its recipe parses the profile's YAML (every dataclass of its command line)."""
    from vital.evaluation.answering import GenerationSettings
    from vital.llm import EndpointConfig
    from vital.llm.batch import BatchConfig

    module = load_recipe(stage)
    classes = {
        "generate": ("GenerateArguments", EndpointConfig, BatchConfig),
        "curate_demos": ("CurateDemosArguments",),
        "rate": ("RateArguments", EndpointConfig, BatchConfig),
        "evaluate": ("EvaluateArguments", GenerationSettings, EndpointConfig, BatchConfig),
    }[stage]
    classes = tuple(getattr(module, c) if isinstance(c, str) else c for c in classes)
    out = {}
    for args in recipe_parser(classes).parse_args_and_config(["--config", str(profile / f"{stage}.yaml")]):
        out |= vars(args)
    return out


@pytest.mark.parametrize(("stage", "key"), sorted(OFFICIAL))
def test_paper_profile_has_the_official_value(stage, key):
    assert parsed(PAPER, stage)[key] == OFFICIAL[stage, key]
    assert key in yaml.safe_load((PAPER / f"{stage}.yaml").read_text())  # set on purpose, not inherited


@pytest.mark.parametrize(("stage", "key"), sorted(OURS_VALUES))
def test_ours_profile_differs_where_documented(stage, key):
    assert parsed(OURS, stage)[key] == OURS_VALUES[stage, key] != OFFICIAL[stage, key]


def test_both_profiles_set_every_setting_of_these_stages():
    for profile in (PAPER, OURS):
        for stage in ("curate_demos", "generate", "rate", "evaluate"):
            values = yaml.safe_load((profile / f"{stage}.yaml").read_text())
            missing = [k for k in PROFILE_SETTINGS[stage] if k not in values]
            assert not missing, f"{profile.name}/{stage}.yaml leaves {missing} to the recipe's default"


def test_plus_pipeline_names_its_own_stage_configs():
    stages = yaml.safe_load((OURS / "pipeline.yaml").read_text())["stages"]
    configs = dict(s.split("=", 1) for s in stages)
    for name in ("train_selector", "select", "sweep_clinician_weight", "generate", "rate", "evaluate"):
        assert configs[name] == f"{name}.yaml"  # read from the pipeline YAML's own folder
    for config in configs.values():
        assert (OURS / config).is_file(), config


def _show(value) -> str:
    from vital.llm.estimate import _show

    return _show(value)


def readme_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Paper vs ours: generation, clustering, rating, evaluation", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]  # this table only (the selector's has its own test)
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_readme_table_says_what_the_profiles_set():
    rows = readme_rows()
    assert len(rows) >= 20 and all(len(r) == 5 for r in rows)
    keyed = 0
    for setting, paper, ours, _why, _profile in rows:
        match = re.fullmatch(r"`(\w+): (\w+)`", setting)
        if not match:
            continue
        keyed += 1
        stage, key = match.groups()
        for profile, cell in ((PAPER, paper), (OURS, ours)):
            shown = re.match(r"`([^`]*)`", cell)
            assert shown, f"{setting}: the cell {cell!r} does not start with the value"
            value = yaml.safe_load((profile / f"{stage}.yaml").read_text())[key]
            assert shown.group(1) == _show(value), f"README {setting} ({profile.name}) says {shown.group(1)}"
    documented = {tuple(m.groups()) for r in rows if (m := re.fullmatch(r"`(\w+): (\w+)`", r[0]))}
    assert set(OFFICIAL) <= documented and keyed == len(documented)


@pytest.mark.parametrize("profile", ["biomed_vital", "biomed_vital_plus"])
def test_dry_run_prints_the_settings_table(profile, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written here
    estimates = load_recipe("pipeline").cli(  # the shipped profile by name
        ["--config", profile, "--dry_run", "true", "--hub", f"local:{tmp_path}/hub"]
    )
    out = capsys.readouterr().out
    assert "Settings of this profile" in out and "Dry run: nothing was sent" in out
    table = out.split("Settings of this profile", 1)[1].split("Dry run", 1)[0]
    expected = OFFICIAL if profile == "biomed_vital" else {**OFFICIAL, **OURS_VALUES}
    for (stage, key), value in expected.items():
        if profile == "biomed_vital_plus" and (stage, key) not in OURS_VALUES:
            value = yaml.safe_load((ROOT / f"recipes/{profile}/{stage}.yaml").read_text())[key]
        assert re.search(rf"^{stage}\s+{key}\s+{re.escape(_show(value))}\s*$", table, re.MULTILINE), (stage, key)
    for stage in ("curate_demos", "generate", "rate", "evaluate"):
        assert not re.search(rf"^{stage}\s+\w+\s+{re.escape(UNSET)}", table, re.MULTILINE)
    tasks = {(e.stage, e.task) for e in estimates}
    assert (("curate_demos", "text embeddings") in tasks) == (profile == "biomed_vital")  # ada-002 costs requests
    assert list(tmp_path.iterdir()) == []


def test_plus_sft_config_trains_on_the_plus_selection():
    from trl import ModelConfig, SFTConfig

    sft = load_recipe("sft")
    from vital.sft import SFTDatasetMixtureConfig

    dataclasses = (sft.ScriptArguments, SFTConfig, ModelConfig, SFTDatasetMixtureConfig)
    plus, training, _, _ = recipe_parser(dataclasses).parse_args_and_config(
        ["--config", str(OURS / "sft/config_llava15_7b.yaml"), "--use_cpu", "true"]
    )
    paper, paper_training, _, _ = recipe_parser(dataclasses).parse_args_and_config(
        ["--config", str(PAPER / "sft/config_llava15_7b.yaml"), "--use_cpu", "true"]
    )
    selected = {p: yaml.safe_load((p / "select.yaml").read_text())["selected_repo"] for p in (PAPER, OURS)}
    evaluated = {p: yaml.safe_load((p / "evaluate.yaml").read_text())["model_name_or_path"] for p in (PAPER, OURS)}
    assert (paper.dataset_name, plus.dataset_name) == (selected[PAPER], selected[OURS])
    assert evaluated[PAPER] == f"hub:{paper_training.hub_model_id}@main"
    assert evaluated[OURS] == f"hub:{training.hub_model_id}@main"
    assert (ROOT / training.chat_template_path).is_file()
