"""`vital pipeline --dry_run` prices every API stage online and through the Batch API, side by side."""

import pytest

from vital.runner import load_recipe


@pytest.mark.slow
def test_the_dry_run_prints_online_and_batch_cost_side_by_side(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # The shipped profile by name: its stage configs are read from its own folder, not the current one.
    estimates = load_recipe("pipeline").cli(
        ["--config", "biomed_vital", "--dry_run", "true", "--hub", f"local:{tmp_path}/hub"]
    )
    assert estimates and all(e.cost_usd > 0 for e in estimates)
    for e in estimates:  # gpt-4o through the Batch API: half the list price
        if e.stage == "curate_demos":  # the clustering's text embeddings have no batch mode: online price
            assert e.batch_cost_usd == pytest.approx(e.cost_usd)
        else:
            assert e.batch_cost_usd == pytest.approx(e.cost_usd / 2)
    assert {e.stage for e in estimates} >= {"generate", "rate", "curate_demos"}
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "online cost" in line)
    assert header.index("online cost") < header.index("batch cost")
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert f"${sum(e.cost_usd for e in estimates):,.2f}" in total
    assert f"${sum(e.batch_cost_usd for e in estimates):,.2f}" in total
