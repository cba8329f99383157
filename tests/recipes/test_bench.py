"""`vital bench`: benchmark scripts run as subprocesses, their figures gathered into one results table."""

import pytest

from vital.runner import load_recipe


bench = load_recipe("bench")


def test_metrics_benchmark_lands_in_the_results_table(tmp_path):
    (run,) = bench.cli(["--only", "metrics", "--metrics_n", "2000", "--output_dir", str(tmp_path)])
    assert run["exit_code"] == 0 and [r["figure"] for r in run["rows"]] == [
        "legacy items/s (2,000 items)",
        "strict items/s (2,000 items)",
    ]
    assert "2,000 items" in (tmp_path / "metrics.txt").read_text()  # the script's own stdout, kept whole
    table = (tmp_path / "results.md").read_text()
    assert "| benchmark | figure | value | baseline/target | ratio |" in table
    assert (
        "| metrics | legacy items/s (2,000 items) |" in table and "| metrics | strict items/s (2,000 items) |" in table
    )


def test_a_failing_benchmark_is_reported_with_its_exit_code(tmp_path, monkeypatch):
    script = tmp_path / "bench_broken.py"
    script.write_text("import sys\nprint('about to fail')\nsys.exit(3)\n")
    monkeypatch.setitem(bench.BENCHMARKS, "metrics", (str(script), [], []))
    (run,) = bench.cli(["--only", "metrics", "--output_dir", str(tmp_path / "out")])
    assert run["exit_code"] == 3
    assert "| metrics | **FAILED** (exit code 3" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "metrics.txt").read_text() == "about to fail\n"


def test_without_the_benchmark_scripts_the_error_says_a_checkout_is_needed(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "REPO_ROOT", tmp_path)  # an installed wheel: no benchmarks/ beside the package
    with pytest.raises(FileNotFoundError, match=r"benchmarks/bench_metrics.py.*a wheel has none"):
        bench.cli(["--only", "metrics", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written
