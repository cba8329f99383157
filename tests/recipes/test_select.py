"""The select recipe end to end on a local hub: one config per ratio, best first; the same selector and candidates
commits give the same `selected` content (rerun: no new commit; another hub: the same files); bad images are
quarantined with the reason; two processes push once and select the same rows."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Image as ImageFeature
from datasets import List
from PIL import Image

from vital.cards import lineage_of
from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.selector import SelectorModel
from vital.testing.serve import running_stand_in, stage_args
from vital.testing.tiny_models import build_tiny_clip


pytestmark = pytest.mark.slow  # a tiny pipeline up to the candidates, then a two-process run (about a minute)

RATIOS = [0.1, 0.4, 0.8, 0.9]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A hub with the quickstart candidates and demos, and an (untrained) tiny selector in `test/selector`."""
    root = tmp_path_factory.mktemp("select")
    hub = f"local:{root}/hub"
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    with running_stand_in() as server:  # no faults, no latency
        fast = [*stage_args(server), "--answer_pairs", "0"]
        load_recipe("generate").cli(
            ["--config", "recipes/quickstart/generate.yaml", "--hub", hub, "--journal_dir", f"{root}/gen", *fast]
        )
    clip = root / "clip"
    _, processor = build_tiny_clip(save_dir=clip, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        selector = SelectorModel.from_backbone(clip, hidden_sizes=[16])
    selector.save_pretrained(root / "selector")
    processor.save_pretrained(root / "selector")
    LocalHub(root / "hub").push_folder(root / "selector", "test/selector", "model")
    return root / "hub"


def config(tmp_path, **overrides) -> str:
    values = {
        "candidates_repo": "quickstart/candidates",
        "selector_repo": "test/selector",
        "selected_repo": "test/selected",
        "ratios": RATIOS,
        "batch_size": 4,
        "mixtures": ["mix=top80+quickstart/demos"],
        "torch_threads": 1,
        "use_cpu": True,
        **overrides,
    }
    path = tmp_path / f"select-{len(list(tmp_path.glob('select-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def select(hub_dir, yaml_path, *extra):
    return load_recipe("select").cli(["--config", yaml_path, "--hub", f"local:{hub_dir}", *extra])


def tree(hub: LocalHub, repo: str) -> dict:
    return hub.commit_info(repo)["tree"]


def test_select_end_to_end_and_deterministic(inputs, tmp_path):
    hub_a, hub_b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(inputs, hub_a)
    shutil.copytree(inputs, hub_b)
    yaml_path = config(tmp_path)
    (first,) = select(hub_a, yaml_path)
    hub = LocalHub(hub_a)
    candidates = hub.load_dataset("quickstart/candidates", split="train")
    n = len(candidates)

    configs = {c["config_name"] for c in hub.read_card("test/selected").data.to_dict()["configs"]}
    assert configs == {"top10", "top40", "top80", "top90", "mix"}
    previous = None
    for ratio in RATIOS:
        name = f"top{round(ratio * 100)}"
        rows = hub.load_dataset("test/selected", name, revision=first.commit, split="train")
        assert len(rows) == math.ceil(ratio * n)
        keys = [(-s, i) for s, i in zip(rows["selector_score"], rows["id"])]
        assert keys == sorted(keys)  # best first, ties by id
        if previous is not None:
            assert rows["id"][: len(previous)] == previous  # each ratio extends the one below
        previous = rows["id"]
        assert set(candidates.column_names) | {"selector_score", "selector_turn_scores"} <= set(rows.column_names)
    mix = hub.load_dataset("test/selected", "mix", revision=first.commit, split="train")
    candidates_commit = hub.resolve("quickstart/candidates")
    assert mix["provenance"].count(f"quickstart/candidates@{candidates_commit}:top80") == math.ceil(0.8 * n)
    demos = [p for p in mix["provenance"] if p.startswith("quickstart/demos@")]
    assert len(demos) == len(hub.load_dataset("quickstart/demos", split="train"))

    snapshot = hub.snapshot("test/selected", first.commit)
    with Image.open(snapshot / "figures" / "score_histogram.png") as figure:
        assert figure.format == "PNG"
    card = hub.read_card("test/selected", first.commit)
    assert "](figures/score_histogram.png)" in card.text
    assert f"| `top40` | {math.ceil(0.4 * n)} |" in card.text and f"{n} candidates scored" in card.text
    lineage = lineage_of(card)
    commits = {i["repo_id"]: i["commit"] for i in lineage["inputs"]}
    assert commits["test/selector"] == hub.resolve("test/selector", repo_type="model")
    assert commits["quickstart/candidates"] == candidates_commit

    # Deterministic: a rerun makes no commit; another hub with the same inputs holds the same files.
    history = len(hub.history("test/selected"))
    (again,) = select(hub_a, yaml_path)
    assert not again.created and again.commit == first.commit and len(hub.history("test/selected")) == history
    select(hub_b, yaml_path)
    other = LocalHub(hub_b)
    files_a, files_b = tree(hub, "test/selected"), tree(other, "test/selected")
    assert files_a.pop("README.md") != files_b.pop("README.md")  # the cards name their own hub ...
    assert files_a == files_b  # ... and every data file and the figure are the same bytes
    card_b = other.read_card("test/selected").text.replace(str(hub_b), str(hub_a))
    assert card_b == hub.read_card("test/selected").text


def test_bad_images_are_quarantined_and_stale_configs_removed(inputs, tmp_path):
    hub_dir = tmp_path / "hub"
    shutil.copytree(inputs, hub_dir)
    hub = LocalHub(hub_dir)
    candidates = hub.load_dataset("quickstart/candidates", split="train")
    raw = candidates.cast_column("images", List(ImageFeature(decode=False)))
    bad = {raw[1]["id"]: [], raw[4]["id"]: [{"bytes": b"not a png", "path": "broken.png"}]}
    broken = raw.map(lambda row: {"images": bad.get(row["id"], row["images"])}).cast(candidates.features)
    hub.push_dataset(broken, "broken/candidates")

    yaml_path = config(tmp_path, candidates_repo="broken/candidates", selected_repo="broken/selected")
    (pushed,) = select(hub_dir, yaml_path)
    quarantine = hub.load_dataset("broken/selected", "quarantine", revision=pushed.commit, split="train")
    reasons = dict(zip(quarantine["record_id"], quarantine["reason"]))
    assert set(reasons) == set(bad)
    assert reasons[raw[1]["id"]].startswith("missing image") and reasons[raw[4]["id"]].startswith("corrupt image")
    scored = len(candidates) - 2
    top90 = hub.load_dataset("broken/selected", "top90", revision=pushed.commit, split="train")
    assert len(top90) == math.ceil(0.9 * scored) and not set(top90["id"]) & set(bad)
    card = hub.read_card("broken/selected", pushed.commit).text
    assert f"{scored} candidates scored, 2 quarantined" in card and "missing image 1" in card

    # A narrower rerun leaves exactly its own configs: the earlier ratios and the mixture are removed.
    (narrow,) = select(
        hub_dir,
        config(
            tmp_path, candidates_repo="broken/candidates", selected_repo="broken/selected", ratios=[0.5], mixtures=[]
        ),
    )
    names = {c["config_name"] for c in hub.read_card("broken/selected", narrow.commit).data.to_dict()["configs"]}
    assert names == {"top50", "quarantine"}
    assert not (hub.snapshot("broken/selected", narrow.commit) / "top10").exists()


def test_two_processes_push_once_and_select_the_same_rows(inputs, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(inputs, one)
    shutil.copytree(inputs, two)
    yaml_path = config(tmp_path, mixtures=[])
    select(one, yaml_path)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml"]
    command += ["recipes/select_data.py", "--config", yaml_path, "--hub", f"local:{two}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test/selected  dataset") == 1  # only the main process pushed and printed
    a, b = LocalHub(one), LocalHub(two)
    assert len(a.history("test/selected")) == len(b.history("test/selected"))
    for name in ("top10", "top40", "top80", "top90"):
        rows_a = a.load_dataset("test/selected", name, split="train")
        rows_b = b.load_dataset("test/selected", name, split="train")
        assert rows_a["id"] == rows_b["id"]
        assert rows_a["selector_score"] == pytest.approx(rows_b["selector_score"], abs=1e-6)
