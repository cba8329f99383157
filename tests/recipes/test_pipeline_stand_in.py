"""`vital pipeline` with a `stand_in:` key serves the stand-in endpoint for the run, points the API stages (and only
them) at it, and stops it at the end of the run, also when a stage fails."""

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.stages import pipeline


ROOT = Path(__file__).resolve().parents[2]


def test_stand_in_options():
    assert pipeline.stand_in_options(None) is None and pipeline.stand_in_options(False) is None
    assert pipeline.stand_in_options(True) == {} and pipeline.stand_in_options("true") == {}
    assert pipeline.stand_in_options("false") is None
    assert pipeline.stand_in_options({"faults": 0.1}) == {"faults": 0.1}
    assert pipeline.stand_in_options('{"latency_ms": 5}') == {"latency_ms": 5}  # from the command line
    with pytest.raises(ValueError, match="stand_in must be"):
        pipeline.stand_in_options("maybe")


def test_only_api_stages_are_pointed_at_the_stand_in():
    url = "http://127.0.0.1:1/v1"
    for name in ("generate", "rate", "evaluate"):
        argv = pipeline.endpoint_argv(name, url)
        assert argv[argv.index("--base_url") + 1] == url and argv[argv.index("--model") + 1] == "vital-stand-in"
        assert argv[argv.index("--provider") + 1] == "openai-compatible"
    assert pipeline.endpoint_argv("ingest", url) == [] and pipeline.endpoint_argv("select", url) == []
    assert pipeline.endpoint_argv("generate", None) == []


def is_serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2):
            return True
    except urllib.error.URLError:
        return False


@pytest.fixture
def served(monkeypatch):
    """The URLs of the stand-ins the pipeline starts (each checked to serve while the run holds it)."""
    urls = []
    original = pipeline.serve_stand_in

    def recording(options, *args, **kwargs):
        with original(options, *args, **kwargs) as url:
            assert is_serving(url)
            urls.append(url)
            yield url

    monkeypatch.setattr(pipeline, "serve_stand_in", pipeline.contextlib.contextmanager(recording))
    return urls


def write_pipeline(tmp_path, stages, **extra) -> str:
    config = {"hub": f"local:{tmp_path}/hub", "stages": stages, **extra}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_pipeline_serves_the_stand_in_for_its_run(tmp_path, monkeypatch, served):
    monkeypatch.chdir(tmp_path)  # the stage YAMLs' outputs/ paths land here
    stages = [f"ingest={ROOT}/recipes/quickstart/ingest.yaml", f"generate={ROOT}/recipes/quickstart/generate.yaml"]
    config = write_pipeline(tmp_path, stages, stand_in={"faults": 0.0, "seed": 1})
    load_recipe("pipeline").cli(["--config", config, "--report_dir", str(tmp_path / "report")])
    assert len(served) == 1 and not is_serving(served[0])  # stopped after the run
    hub = LocalHub(tmp_path / "hub")
    candidates = hub.load_dataset("quickstart/candidates", split="train")
    assert len(candidates) == 15 and all(
        g["stand_in"] and g["endpoint"] == "stand-in" for g in candidates["generation"]
    )
    card = hub.read_card("quickstart/candidates")
    assert card.data.pretty_name == "BioMed-VITAL candidates (stand-in)"
    assert served[0] not in card.text  # the lineage names no port of this run
    assert "vital stand-in (loopback)" in card.text


def test_the_stand_in_stops_when_a_stage_fails(tmp_path, monkeypatch, served):
    monkeypatch.chdir(tmp_path)
    rate = tmp_path / "rate.yaml"
    rate.write_text(yaml.safe_dump({"candidates_repo": "missing/candidates", "journal_dir": str(tmp_path / "j")}))
    config = write_pipeline(tmp_path, [f"rate={rate}"], stand_in=True)
    with pytest.raises(Exception, match="missing/candidates"):
        load_recipe("pipeline").cli(["--config", config])
    assert len(served) == 1 and not is_serving(served[0])


def test_without_a_stand_in_key_nothing_is_served(tmp_path, monkeypatch, served):
    monkeypatch.chdir(tmp_path)
    config = write_pipeline(tmp_path, [f"ingest={ROOT}/recipes/quickstart/ingest.yaml"])
    load_recipe("pipeline").cli(["--config", config, "--report_dir", str(tmp_path / "report")])
    assert served == []
