"""Card metadata the Hub reads (licence, size category, model-index types, result sources) and the dataset cards' "use"
snippets, executed against a local hub."""

import re
from pathlib import Path

import jinja2
import pytest
from datasets import Dataset, DatasetDict
from huggingface_hub import DatasetCard, ModelCard

from vital.cards import TEMPLATE_DIRS, Lineage, dataset_card, model_card, size_category
from vital.evaluation.results import eval_results
from vital.hub import LocalHub
from vital.testing.card_snippets import python_blocks, run_on_local_hub


def _card(**kw) -> dict:
    card = dataset_card("selected", lineage=Lineage(stage="t"), pretty_name="P", **_SELECTED_CONTEXT, **kw)
    return DatasetCard(str(card)).data.to_dict()


_SELECTED_CONTEXT = {
    "repo_id": "org/selected",
    "description": "",
    "configs": [],
    "stand_in": False,
    "sample_preferences": False,
    "num_candidates": 3,
    "num_turns": 3,
    "quarantined": 0,
    "scores_table": "",
}


@pytest.fixture(scope="module")
def selected_context():
    """The variables templates/selected.md needs (read from its own undefined-variable errors)."""
    context = dict(_SELECTED_CONTEXT)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIRS["dataset"])), undefined=jinja2.StrictUndefined
    )
    for _ in range(40):
        try:
            env.get_template("selected.md").render(
                lineage=Lineage(stage="t").to_dict(), revision="main", pretty_name="P", **context
            )
            break
        except jinja2.UndefinedError as e:
            name = re.search(r"'(\w+)' is undefined", str(e))[1]
            context[name] = [] if name.endswith("s") else ""
    _SELECTED_CONTEXT.update(context)
    return context


def test_licence_is_configurable_and_other_is_named(selected_context):
    default = _card()
    assert default["license"] == "other" and default["license_name"] == "per-source-licenses"
    assert "license_link" not in default
    named = _card(license_name="pmc-oa-subset", license_link="https://www.ncbi.nlm.nih.gov/pmc/tools/openftlist/")
    assert named["license_name"] == "pmc-oa-subset" and named["license_link"].startswith("https://www.ncbi")
    open_ = _card(license="cc-by-4.0")
    assert open_["license"] == "cc-by-4.0" and "license_name" not in open_
    with pytest.raises(ValueError, match="license_name"):
        _card(license="cc-by-4.0", license_name="x")
    card = model_card(
        "model", lineage=Lineage(stage="sft"), model_name="m", description="", repo_id="o/m", license="apache-2.0"
    )
    assert ModelCard(str(card)).data.license == "apache-2.0"


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (60_000, "10K<n<100K"), (2_000_000, "1M<n<10M")],
)
def test_size_category_buckets(rows, bucket):
    assert size_category(rows) == bucket


def test_dataset_cards_carry_size_categories(selected_context):
    assert _card(num_rows=60_000)["size_categories"] == ["10K<n<100K"]
    assert _card(size_categories=["1K<n<10K"])["size_categories"] == ["1K<n<10K"]


def _summary_rows() -> list[dict]:
    rows = []
    for mode, closed in (("legacy", 62.0), ("strict", 55.0)):
        for metric, value in (("closed_accuracy", closed), ("open_recall", closed / 2)):
            rows.append(
                {
                    "model": "org/m@main",
                    "task": "vqa",
                    "benchmark": "vqa-rad",
                    "split": "test",
                    "metric": metric,
                    "mode": mode,
                    "group": "",
                    "value": value,
                    "n": 10,
                    "dataset_repo": "org/vqa-rad",
                    "dataset_revision": "a" * 40,
                }  # fmt: skip
            )
    return rows


def test_legacy_and_strict_are_distinct_metric_types():
    results = eval_results(_summary_rows(), {"vqa-rad": "VQA-RAD"}, source_name="eval", source_url=None)
    types = {(r.metric_type, r.metric_value) for r in results}
    assert types == {
        ("vqa_legacy_closed_accuracy", 62.0),
        ("vqa_strict_closed_accuracy", 55.0),
        ("vqa_legacy_open_recall", 31.0),
        ("vqa_strict_open_recall", 27.5),
    }
    card = ModelCard(f"---\n{ModelCard.from_template(ModelCard('').data).data.to_yaml()}\n---\n")
    card.data.eval_results, card.data.model_name = results, "m"
    reread = ModelCard(str(card)).data.eval_results  # the Hub's parser keeps them apart
    assert len({r.metric_type for r in reread}) == 4


def test_result_sources_never_name_a_local_path(tmp_path):
    local = eval_results(_summary_rows(), {}, source_name="eval", source_url=str(tmp_path / "hub" / "snapshots" / "x"))
    assert all(r.source_url is None for r in local)
    card = ModelCard("---\nlicense: other\n---\n")
    card.data.eval_results, card.data.model_name = local, "m"
    assert str(tmp_path) not in str(card)
    url = "https://huggingface.co/datasets/org/eval/tree/" + "b" * 40
    assert {r.source_url for r in eval_results(_summary_rows(), {}, source_name="eval", source_url=url)} == {url}


# ---------------------------------------------------------------------------------------------------------------------
# Every dataset card's "use" snippet runs
# ---------------------------------------------------------------------------------------------------------------------
SNIPPET_CONTEXT = {"repo_id": "org/data", "revision": "run-1", "configs": [{"name": "top10"}]}
TEMPLATE_CONTEXT = {
    "released": {"configs": ["instruct_60k"]},  # a list of config names there
    "candidates": {"num_failures": 1},  # its snippet loads the failures config only when there is one
}


def _context(template: Path) -> dict:
    return {**SNIPPET_CONTEXT, **TEMPLATE_CONTEXT.get(template.stem, {})}


def _templates_with_snippets() -> list[Path]:
    return sorted(p for p in TEMPLATE_DIRS["dataset"].glob("*.md") if "```python" in p.read_text())


@pytest.fixture(scope="module")
def data_hub(tmp_path_factory):
    """``org/data`` on branch ``run-1``: a default config with train and heldout splits, and every other config a
    snippet names (failures, quarantine, review, top10, ...) with a train split."""
    hub = LocalHub(tmp_path_factory.mktemp("snippets") / "hub")
    rows = Dataset.from_list([{"id": "a", "x": 1}, {"id": "b", "x": 2}])
    hub.push_dataset(DatasetDict({"train": rows, "heldout": rows.select([0])}), "org/data", revision="run-1")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    configs = set()
    for template in _templates_with_snippets():
        for block in python_blocks(template.read_text()):
            code = env.from_string(block).render(**_context(template))
            configs |= set(re.findall(r'load_dataset\("org/data", "(\w+)"', code))
    for config in sorted(configs - {"default"}):
        hub.push_dataset(rows, "org/data", config_name=config, revision="run-1")
    return hub


@pytest.mark.parametrize("template", _templates_with_snippets(), ids=lambda p: p.stem)
def test_dataset_card_snippet_runs(template, data_hub):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    blocks = [env.from_string(b).render(**_context(template)) for b in python_blocks(template.read_text())]
    assert blocks
    scope: dict = {}
    for code in blocks:  # later blocks may use names (load_dataset) the first imported
        assert "<commit>" not in code
        scope = run_on_local_hub(code, data_hub, "dataset", scope)
    loaded = [v for k, v in scope.items() if not k.startswith("__") and isinstance(v, Dataset | DatasetDict)]
    assert loaded and all(len(d) for d in loaded)
