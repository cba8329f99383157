"""The local hub is a Hugging Face cache: the HF libraries read its repos by repo id, offline, at any branch, tag or
commit, while the hub keeps its history, branches, tags and content verification beside it."""

import inspect
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_dataset
from huggingface_hub import HfApi, hf_hub_download, scan_cache_dir, snapshot_download
from huggingface_hub.hf_api import GitRefs
from PIL import Image as PILImage

from vital.cli import main as vital_main
from vital.hub import HubError, HubIntegrityError, LocalHub


PAIRS, MODEL = "quickstart/pairs", "quickstart/tiny-llava"


def rows(ids: list[str]) -> Dataset:
    images = [PILImage.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)) for i in range(len(ids))]
    return Dataset.from_dict({"id": ids, "image": images})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A hub after quickstart-style pushes: a dataset with a tag ``v1``, a later ``main`` and a branch ``exp``; a tiny
    LLaVA at ``v1`` (seed 0) and a retrained ``main`` (seed 1)."""
    from vital.testing.tiny_models import build_tiny_llava

    base = tmp_path_factory.mktemp("hf-layout")
    hub = LocalHub(base / "hub")
    commits = {"v1": hub.push_dataset(rows(["a", "b"]), PAIRS).commit}
    hub.create_tag(PAIRS, tag="v1", revision=commits["v1"], repo_type="dataset")
    commits["main"] = hub.push_dataset(rows(["c", "d", "e"]), PAIRS).commit
    hub.create_branch(PAIRS, branch="exp", revision="v1", repo_type="dataset")
    commits["exp"] = hub.push_dataset(rows(["x"]), PAIRS, revision="exp").commit
    models = {}
    for seed, ref in ((0, "v1"), (1, "main")):
        model, _ = build_tiny_llava(save_dir=base / f"llava-{seed}", seed=seed)
        models[ref] = (hub.push_folder(base / f"llava-{seed}", MODEL, "model").commit, model.state_dict())
    hub.create_tag(MODEL, tag="v1", revision=models["v1"][0], repo_type="model")
    return hub, commits, models


@pytest.mark.parametrize("revision", ["main", "v1", "exp", "commit"])
def test_snapshot_download_by_repo_id_reads_the_revision_and_load_dataset_its_rows(world, revision):
    hub, commits, _ = world
    expected = {"main": ["c", "d", "e"], "v1": ["a", "b"], "exp": ["x"]}
    name = "v1" if revision == "commit" else revision
    rev = commits[name] if revision == "commit" else revision
    path = snapshot_download(PAIRS, repo_type="dataset", revision=rev, cache_dir=hub.root, local_files_only=True)
    assert os.path.samefile(path, hub.snapshot(PAIRS, commits[name]))
    assert os.path.basename(path) == commits[name]
    assert load_dataset(path, split="train", cache_dir=str(hub.root.parent / "ds-cache"))["id"] == expected[name]
    card = hf_hub_download(
        PAIRS, "README.md", repo_type="dataset", revision=rev, cache_dir=hub.root, local_files_only=True
    )
    assert Path(card).read_text() == hub.read_file(PAIRS, "README.md", commits[name])


def test_from_pretrained_by_repo_id_at_a_revision_gives_that_commits_weights(world):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    hub, _, models = world
    for revision, (commit, weights) in [
        ("v1", models["v1"]),
        ("main", models["main"]),
        (models["v1"][0], models["v1"]),
    ]:
        model = AutoModelForImageTextToText.from_pretrained(
            MODEL, revision=revision, cache_dir=hub.root, local_files_only=True
        )
        loaded = model.state_dict()
        assert set(loaded) == set(weights)
        assert all(torch.equal(loaded[k], weights[k]) for k in weights), f"{MODEL}@{revision} is not {commit[:12]}"
    other = models["main"][1]
    assert not all(torch.equal(models["v1"][1][k], other[k]) for k in other)  # the two revisions do differ
    assert AutoProcessor.from_pretrained(MODEL, revision="v1", cache_dir=hub.root, local_files_only=True)


def test_scan_cache_dir_lists_every_repo_with_its_revisions_and_refs(world):
    hub, _, _ = world
    scan = scan_cache_dir(hub.root)
    assert scan.warnings == []
    assert {(r.repo_id, r.repo_type) for r in scan.repos} == {(PAIRS, "dataset"), (MODEL, "model")}
    for repo in scan.repos:
        refs = hub.list_refs(repo.repo_id, repo.repo_type)
        history = {
            info["sha"] for name in refs["branches"] for info in hub.history(repo.repo_id, name, repo.repo_type)
        }
        assert {r.commit_hash for r in repo.revisions} == history
        by_commit = {r.commit_hash: set(r.refs) for r in repo.revisions}
        for name, commit in [*refs["branches"].items(), *refs["tags"].items()]:
            assert name in by_commit[commit]
        for revision in repo.revisions:
            tree = hub.commit_info(repo.repo_id, revision.commit_hash, repo.repo_type)["tree"]
            assert {f.file_path.relative_to(revision.snapshot_path).as_posix() for f in revision.files} == set(tree)
            assert {f.blob_path.name for f in revision.files} == set(tree.values())


def test_history_branches_and_tags_are_kept_beside_the_cache(world):
    hub, commits, _ = world
    refs = hub.list_repo_refs(PAIRS, repo_type="dataset")
    assert isinstance(refs, GitRefs)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": commits["main"], "exp": commits["exp"]}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": commits["v1"]}
    assert [c.commit_id for c in hub.list_repo_commits(PAIRS, repo_type="dataset")] == [commits["main"], commits["v1"]]
    assert (hub.repo_dir(PAIRS) / "refs" / "v1").read_text() == commits["v1"]  # exactly what the HF libraries read
    assert hub.fsck(PAIRS) == [] and hub.fsck(MODEL, "model") == []


def test_create_branch_and_create_tag_take_hfapis_arguments_and_keep_one_namespace(world, tmp_path):
    for method in ("create_branch", "create_tag"):
        ours = set(inspect.signature(getattr(LocalHub, method)).parameters)
        assert set(inspect.signature(getattr(HfApi, method)).parameters) - {"token"} <= ours, method
    hub, commits, _ = world
    hub = copy_hub(hub, tmp_path)
    assert hub.create_tag(PAIRS, tag="v1", revision=commits["v1"], exist_ok=True) is None
    with pytest.raises(HubError, match="tags never move"):
        hub.create_tag(PAIRS, tag="v1", revision="main")
    with pytest.raises(HubError, match="'exp' is a branch"):
        hub.create_tag(PAIRS, tag="exp")
    with pytest.raises(HubError, match="'v1' is a tag"):
        hub.create_branch(PAIRS, branch="v1")
    with pytest.raises(HubError, match="'v1' is a tag, and tags never move"):
        hub.push_dataset(rows(["z"]), PAIRS, revision="v1")
    assert hub.resolve(PAIRS, "v1") == commits["v1"]


def copy_hub(hub: LocalHub, tmp_path) -> LocalHub:
    shutil.copytree(hub.root, tmp_path / "copy", symlinks=True)
    return LocalHub(tmp_path / "copy")


def test_a_tampered_blob_is_still_refused(world, tmp_path):
    hub, commits, _ = world
    hub = copy_hub(hub, tmp_path)
    shard = next(p for p in hub.commit_info(PAIRS, "v1")["tree"] if p.endswith(".parquet"))
    blob = hub.repo_dir(PAIRS) / "blobs" / hub.commit_info(PAIRS, "v1")["tree"][shard]
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(HubIntegrityError) as error:
        hub.load_dataset(PAIRS, revision="v1", split="train")
    assert (error.value.repo_id, error.value.commit, error.value.file) == (PAIRS, commits["v1"], shard)
    assert any(shard in p and "corrupt" in p for p in hub.fsck(PAIRS))
    # A snapshot entry that is a copy instead of a link (the Hugging Face cache's fallback without symlinks, or a
    # `cp -r` of the hub) is served when its bytes are the committed ones, and refused when they are not.
    link = hub.repo_dir(PAIRS) / "snapshots" / commits["main"] / "README.md"
    content = link.read_bytes()
    link.unlink()
    link.write_bytes(content)
    assert hub.read_file(PAIRS, "README.md", "main") == content.decode()
    link.write_bytes(content.replace(b"---", b"--- ", 1))
    with pytest.raises(HubIntegrityError, match="README.md: content sha256 .* differs from the recorded"):
        hub.read_file(PAIRS, "README.md", "main")


def make_old_layout(hub: LocalHub, old_root) -> None:
    """The hub as the previous layout stored it: ``<root>/<type>s/<org>/<name>/{refs/heads,refs/tags,commits,
    snapshots (hard links), blobs, tmp, repo.json}``."""
    for folder in sorted(hub.root.glob("*s--*")):
        settings = json.loads((folder / ".vital" / "repo.json").read_text())
        old = old_root / f"{settings['repo_type']}s" / settings["repo_id"]
        shutil.copytree(folder / "blobs", old / "blobs")
        shutil.copytree(folder / ".vital" / "commits", old / "commits")
        shutil.copy(folder / ".vital" / "repo.json", old / "repo.json")
        (old / "tmp").mkdir()
        refs = hub.list_refs(settings["repo_id"], settings["repo_type"])
        for kind, key in (("heads", "branches"), ("tags", "tags")):
            (old / "refs" / kind).mkdir(parents=True)
            for name, commit in refs[key].items():
                (old / "refs" / kind / name).write_text(commit)
        for record in (old / "commits").glob("*.json"):
            for path, blob in json.loads(record.read_text())["tree"].items():
                (old / "snapshots" / record.stem / path).parent.mkdir(parents=True, exist_ok=True)
                os.link(old / "blobs" / blob, old / "snapshots" / record.stem / path)
    (old_root / ".cache" / "datasets").mkdir(parents=True)


def test_an_old_layout_hub_says_to_migrate_and_vital_hub_migrate_converts_it(world, tmp_path, capsys):
    hub, commits, models = world
    old_root = tmp_path / "old"
    make_old_layout(hub, old_root)
    old = LocalHub(old_root)
    with pytest.raises(HubError) as error:
        old.resolve(PAIRS, "v1")
    assert "\n" not in str(error.value) and f"vital hub migrate --hub local:{old_root}" in str(error.value)

    assert vital_main(["hub", "migrate", "--hub", f"local:{old_root}"]) == 0
    assert "2 repo(s) migrated" in capsys.readouterr().out
    assert sorted(p.name for p in old_root.iterdir()) == [
        "datasets--quickstart--pairs",
        "models--quickstart--tiny-llava",
    ]
    for repo_id, repo_type in ((PAIRS, "dataset"), (MODEL, "model")):
        assert old.list_refs(repo_id, repo_type) == hub.list_refs(repo_id, repo_type)
        assert old.history(repo_id, "main", repo_type) == hub.history(repo_id, "main", repo_type)
        assert old.fsck(repo_id, repo_type) == []
    path = snapshot_download(PAIRS, repo_type="dataset", revision="v1", cache_dir=old_root, local_files_only=True)
    assert os.path.basename(path) == commits["v1"]
    assert old.load_dataset(PAIRS, revision="v1", split="train")["id"] == ["a", "b"]
    assert scan_cache_dir(old_root).warnings == []
    assert vital_main(["hub", "migrate", "--hub", f"local:{old_root}"]) == 0  # nothing left to do: a no-op


def test_a_migration_that_finds_a_corrupt_repo_leaves_it_as_it_was(world, tmp_path, capsys):
    hub, _, _ = world
    old_root = tmp_path / "old"
    make_old_layout(hub, old_root)
    blob = next((old_root / "datasets" / PAIRS / "blobs").iterdir())
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered")
    assert vital_main(["hub", "migrate", "--hub", f"local:{old_root}"]) == 1
    assert "did not convert cleanly, left as it was" in capsys.readouterr().err
    assert (old_root / "datasets" / PAIRS / "repo.json").is_file()
    assert not (old_root / "datasets--quickstart--pairs").exists()
    with pytest.raises(HubError, match="vital hub migrate"):
        LocalHub(old_root).resolve(PAIRS)
