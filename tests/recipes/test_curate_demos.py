"""The curate_demos stage end to end on a local hub: clusters repo with two configs, demos with cluster ids, lineage."""

from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, Features, Value
from PIL import Image as PILImage
from trl import TrlParser

from vital.cards import lineage_of
from vital.data.errors import RecordError
from vital.data.schemas import DEMO_FEATURES, PAIR_FEATURES
from vital.hub import LocalHub
from vital.runner import load_recipe


RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


recipe = load_recipe("curate_demos")
SOURCE = {"origin": "synthetic", "pmid": "", "url": "", "license": "CC0", "citation": ""}
MESSAGES = [
    {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Describe the image."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A synthetic figure."}]},
]


def synthetic_pairs(n_per_group: int = 5) -> Dataset:
    """Dark striped 'radiographs' and bright graded 'sections', interleaved, with captions to match."""
    rows = []
    for i in range(2 * n_per_group):
        group = i % 2
        noise = np.random.RandomState(i).randint(-8, 9, (20, 20))
        array = np.full((20, 20), 25.0) if group == 0 else np.tile(np.linspace(245, 110, 20), (20, 1))
        if group == 0:
            array[::5] = 230
        rows.append(
            {
                "id": f"pmc-{i:03d}",
                "image": PILImage.fromarray(np.clip(array + noise, 0, 255).astype(np.uint8)),
                "caption": ["Chest radiograph with a lobar opacity", "Stained tissue section with glands"][group]
                + f", case {i}.",
                "fig_label": "Figure 1",
                "mentions": [f"Case {i} is shown in Figure 1."],
                "modality": ["chest_xray", "histology"][group],
                "source": SOURCE,
            }
        )
    return Dataset.from_list(rows, features=PAIR_FEATURES)


def synthetic_demos(pairs: Dataset, pair_ids: list[str]) -> Dataset:
    index = {pair_id: i for i, pair_id in enumerate(pairs["id"])}
    rows = []
    for n, pair_id in enumerate(pair_ids):
        row = dict(pairs[index[pair_id]]) if pair_id in index else dict(pairs[0], modality="ct")
        rows.append(
            {
                **row,
                "id": f"demo-{n}",
                "pair_id": pair_id,
                "messages": MESSAGES,
                "cluster": -1,
                "curated_by": "dr-test",
            }
        )
    return Dataset.from_list(rows, features=Features({**DEMO_FEATURES, "pair_id": Value("string")}))


@pytest.fixture
def hub(tmp_path):
    hub = LocalHub(tmp_path / "hub")
    pairs = synthetic_pairs()
    pushed_pairs = hub.push_dataset(pairs, "t/pairs")
    pushed_demos = hub.push_dataset(synthetic_demos(pairs, ["pmc-000", "pmc-003", "pmc-004"]), "t/demos")
    hub.initial = {"pairs": pushed_pairs, "demos": pushed_demos}
    return hub


def arguments(hub, **overrides):
    values = {
        "hub": f"local:{hub.root}",
        "pairs_repo": "t/pairs",
        "clusters_repo": "t/clusters",
        "demos_repo": "t/demos",
        "num_clusters": 2,
        "per_cluster": 2,
        **overrides,
    }
    return recipe.CurateDemosArguments(**values)


def test_curate_demos_end_to_end(hub, capsys):
    results = recipe.main(arguments(hub))
    assert [r.repo_id for r in results] == ["t/clusters", "t/demos"]
    assert all(r.created for r in results)
    assert len(hub.history("t/clusters")) == 1  # both configs and the card: one commit
    assert "k=2, 10 pairs, 4 to review" in capsys.readouterr().out  # the artifact table

    # The clusters repo: `default` without images, `review` with them; both configs in the last commit.
    assignments = hub.load_dataset("t/clusters", "default", split="train")
    assert assignments.column_names == ["id", "modality", "cluster", "distance"]
    assert assignments.features["cluster"] == Value("int32")
    groups = [i % 2 for i in range(10)]
    assert list(assignments["cluster"]) == groups  # the two synthetic groups, recovered exactly
    review = hub.load_dataset("t/clusters", "review", split="train")
    assert len(review) == 4 and list(review["cluster"]) == [0, 0, 1, 1]
    assert isinstance(review[0]["image"], PILImage.Image) and "rank_in_cluster" in review.column_names

    card = hub.read_card("t/clusters")
    lineage = lineage_of(card)
    pairs_commit = hub.initial["pairs"].commit
    assert lineage["stage"] == "curate_demos" and lineage["seed"] == 0
    assert lineage["inputs"] == [
        {"repo_id": "t/pairs", "repo_type": "dataset", "revision": "main", "commit": pairs_commit}
    ]
    assert lineage["config"]["num_clusters"] == 2 and lineage["config"]["image_embedder"] == "pixels"
    assert "k = 2" in card.text and "`pixels`" in card.text and "| 0 | 5 |" in card.text
    assert {c["config_name"] for c in card.data.to_dict()["configs"]} == {"default", "review"}

    # The demos got the cluster of their pair, in a new commit whose lineage names pairs, clusters and old demos.
    demos = hub.load_dataset("t/demos", split="train")
    assert list(demos["cluster"]) == [0, 1, 0]
    assert demos.features == hub.load_dataset("t/demos", revision=hub.initial["demos"].commit, split="train").features
    demo_inputs = {i["repo_id"]: i for i in lineage_of(hub.read_card("t/demos"))["inputs"]}
    assert demo_inputs["t/pairs"]["commit"] == pairs_commit
    assert demo_inputs["t/clusters"]["commit"] == results[0].commit
    assert demo_inputs["t/clusters"]["config"] == "default"
    assert demo_inputs["t/demos"]["commit"] == hub.initial["demos"].commit

    # A rerun finds everything in place: no new commit anywhere.
    again = recipe.main(arguments(hub))
    assert [r.created for r in again] == [False, False]
    assert [r.commit for r in again] == [results[0].commit, results[1].commit]


def test_demo_without_its_pair_is_named(hub):
    pairs = hub.load_dataset("t/pairs", split="train")
    hub.push_dataset(synthetic_demos(pairs, ["pmc-001", "pmc-999"]), "t/demos")
    with pytest.raises(RecordError, match="pmc-999") as error:
        recipe.main(arguments(hub))
    assert error.value.record_id == "demo-1" and error.value.field == "pair_id"


@pytest.mark.parametrize("family", ["quickstart", "biomed_vital", "biomed_vital_plus"])
def test_recipe_configs_parse(family):
    path = RECIPES_DIR / family / "curate_demos.yaml"
    (args,) = TrlParser((recipe.CurateDemosArguments,)).parse_args_and_config(["--config", str(path)])
    # the paper: caption + first mention, ViT + ada-002 (tests/recipes/test_paper_profile.py); ours: CLIP for both
    assert args.text_fields == (["caption", "first_mention"] if family == "biomed_vital" else ["caption", "mentions"])
    assert args.num_clusters == {"quickstart": 4, "biomed_vital": 60, "biomed_vital_plus": 60}[family]
    if family == "biomed_vital_plus":
        assert args.image_embedder.startswith("clip:") and args.image_embedder == args.text_embedder


def test_quickstart_config_on_the_sample_pairs(tmp_path):
    sample = pytest.importorskip("vital.data.sample")
    if not hasattr(sample, "load_sample_pairs"):
        pytest.skip("the sample loader is not there yet")
    hub = LocalHub(tmp_path / "hub")
    pairs = sample.load_sample_pairs()
    hub.push_dataset(pairs, "quickstart/pairs")
    hub.push_dataset(sample.load_sample_demos(hub.load_dataset("quickstart/pairs", split="train")), "quickstart/demos")
    config = Path(RECIPES_DIR, "quickstart", "curate_demos.yaml")
    results = recipe.cli(["--config", str(config), "--hub", f"local:{hub.root}", "--demos_repo", "quickstart/demos"])
    assert [r.repo_id for r in results] == ["quickstart/clusters", "quickstart/demos"]
    assignments = hub.load_dataset("quickstart/clusters", "default", split="train")
    assert len(assignments) == len(pairs) and set(assignments["cluster"]) == {0, 1, 2, 3}
    review = hub.load_dataset("quickstart/clusters", "review", split="train")
    assert len(review) <= 8 and len(set(review["cluster"])) == 4
    cluster_of = dict(zip(assignments["id"], assignments["cluster"], strict=True))
    demos = hub.load_dataset("quickstart/demos", split="train")
    assert list(demos["cluster"]) == [cluster_of[p] for p in demos["pair_id"]]


def hub_files(hub) -> dict[str, int]:
    """Every file of the hub with its mtime, but the `datasets` cache a read builds beside a repo."""
    files = (p for p in Path(hub.root).rglob("*") if p.is_file() and "/.vital/datasets/" not in p.as_posix())
    return {str(p.relative_to(hub.root)): p.stat().st_mtime_ns for p in files}


def test_push_to_hub_false_clusters_and_pushes_nothing(hub, capsys):
    before = hub_files(hub)
    assert recipe.main(arguments(hub, push_to_hub=False)) == []
    out = capsys.readouterr().out
    # The clustering and the demos' new cluster ids are computed and reported ...
    assert (
        "nothing pushed" in out and "k=2, 10 pairs, 4 to review" in out and "3 demos, 3 cluster id(s) changed" in out
    )
    # ... and not one file of the hub is new or rewritten: no clusters repo, the demos keep their single commit.
    assert hub_files(hub) == before
    assert len(hub.history("t/demos")) == 1


def test_pushes_go_to_hub_revision_while_inputs_keep_theirs(hub):
    """`pairs_revision` / `demos_revision` say what is read; `hub_revision` the branch both outputs are pushed to."""
    clusters, demos = recipe.main(arguments(hub, hub_revision="curation", demos_revision="main"))
    assert (clusters.revision, demos.revision) == ("curation", "curation")
    assert hub.resolve("t/demos", "main") == hub.initial["demos"].commit  # the demos read are left as they were
    assert list(hub.load_dataset("t/demos", revision="curation", split="train")["cluster"]) == [0, 1, 0]
    assert lineage_of(hub.read_card("t/clusters", "curation"))["config"]["hub_revision"] == "curation"
