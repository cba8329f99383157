"""`vital pipeline --config`: a shipped profile by name from any folder, and stage configs read from the pipeline
YAML's own folder (from the current folder when `--stages` is given on the command line)."""

import shutil
from pathlib import Path

import pytest

from vital.resources import PROFILES, pipeline_config, profile_dir
from vital.runner import load_recipe


ROOT = Path(__file__).resolve().parents[2]
pipeline = load_recipe("pipeline")


def test_every_profile_names_stage_configs_that_exist_beside_it():
    for profile in PROFILES:
        path = Path(pipeline_config(profile))
        assert path == profile_dir(profile) / "pipeline.yaml" and path.is_file()
        argv, base = pipeline.resolve_config(["--config", profile])
        assert argv == ["--config", str(path)] and base == path.parent
        stages = [pipeline.parse_stage(s, base) for s in pipeline.recipe_parser((pipeline.PipelineArguments,))
                  .parse_args_and_config(argv)[0].stages]  # fmt: skip
        assert stages and all(config and Path(config).is_file() for _, config in stages), stages


def test_stage_configs_are_read_from_the_pipeline_yaml_folder(tmp_path, monkeypatch):
    profile = tmp_path / "profile"
    profile.mkdir()
    shutil.copy(ROOT / "recipes/quickstart/ingest.yaml", profile / "my_ingest.yaml")
    (profile / "pipeline.yaml").write_text(f"hub: local:{tmp_path}/hub\nstages:\n  - ingest=my_ingest.yaml\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pushed = pipeline.cli(["--config", "../profile/pipeline.yaml", "--report_dir", "report"])
    assert [p.repo_id for p in pushed] == ["quickstart/pairs", "quickstart/demos"]
    assert all(p.created for p in pushed) and (elsewhere / "report" / "artifacts.json").is_file()

    # --stages on the command line replaces the YAML's: its paths are read from the current folder.
    with pytest.raises(FileNotFoundError, match="config my_ingest.yaml not found"):
        pipeline.cli(["--config", "../profile/pipeline.yaml", "--stages", "ingest=my_ingest.yaml"])
    shutil.copy(profile / "my_ingest.yaml", elsewhere / "my_ingest.yaml")
    again = pipeline.cli(["--config", "../profile/pipeline.yaml", "--stages", "ingest=my_ingest.yaml"])
    assert [p.commit for p in again] == [p.commit for p in pushed] and not any(p.created for p in again)


def test_an_unknown_profile_names_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a file nor a shipped profile.*quickstart, biomed_vital"):
        pipeline.cli(["--config", "quickstrat"])
