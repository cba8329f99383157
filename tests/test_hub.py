"""The hub layer: the local backend in full, and the exact library calls of the Hugging Face backend (no network)."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Features, Image, Value, load_dataset
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image as PILImage

from vital.hub import HfHub, HubError, LocalHub, get_hub, merge_card, parse_repo_ref


FEATURES = Features({"id": Value("string"), "image": Image(), "score": Value("float32")})


def make_dataset(n=3, offset=0):
    images = [
        PILImage.fromarray((np.random.RandomState(i + offset).rand(12, 10, 3) * 255).astype(np.uint8))
        for i in range(n)
    ]
    return Dataset.from_dict(
        {"id": [f"r{i + offset}" for i in range(n)], "image": images, "score": [float(i) for i in range(n)]},
        features=FEATURES,
    )


def make_card(title="Test"):
    return DatasetCard.from_template(
        DatasetCardData(license="mit", tags=["t"]), template_str=f"---\n{{{{ card_data }}}}\n---\n# {title}\n"
    )


@pytest.fixture
def hub(tmp_path):
    return LocalHub(tmp_path / "hub")


def write_folder(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


# ----------------------------------------------------------------------------------------------------------------------
def test_parse_repo_ref():
    assert parse_repo_ref("org/name@v1") == ("org/name", "v1")
    assert parse_repo_ref("org/name") == ("org/name", "main")
    assert parse_repo_ref("name@abc1234") == ("name", "abc1234")
    with pytest.raises(HubError, match="invalid repo id"):
        parse_repo_ref("a/b/c@main")
    with pytest.raises(HubError, match="empty revision"):
        parse_repo_ref("org/name@")


def test_get_hub_specs(tmp_path, monkeypatch):
    assert isinstance(get_hub(f"local:{tmp_path}"), LocalHub)
    assert get_hub(f"local:{tmp_path}").root == tmp_path.resolve()
    monkeypatch.setenv("VITAL_HUB", f"local:{tmp_path}/env")
    assert get_hub(None).root == (tmp_path / "env").resolve()
    with mock.patch("huggingface_hub.HfApi") as api:
        assert isinstance(get_hub("hf"), HfHub)
        assert get_hub("hf:https://hub.example.org").endpoint == "https://hub.example.org"
        assert api.call_args.kwargs["endpoint"] == "https://hub.example.org"
    with pytest.raises(ValueError, match="unknown hub"):
        get_hub("s3://bucket")


# ----------------------------------------------------------------------------------------------------------------------
# Local backend: commits, refs, immutability
# ----------------------------------------------------------------------------------------------------------------------
def test_commits_are_hashed_immutable_snapshots(hub, tmp_path):
    first = hub.upload_folder(write_folder(tmp_path / "a", {"x.txt": "one", "sub/y.txt": "two"}), "org/repo", "model")
    info = hub.commit_info("org/repo", first.commit, "model")
    assert info["sha"] == first.commit and len(first.commit) == 40 and info["parents"] == []
    assert set(info["tree"]) == {"x.txt", "sub/y.txt"}
    snap = hub.snapshot("org/repo", "main", "model")
    assert (snap / "sub/y.txt").read_text() == "two"
    assert not os.access(snap / "x.txt", os.W_OK) or os.geteuid() == 0  # root may write anyway
    assert (os.stat(snap / "x.txt").st_mode & 0o222) == 0  # no write bits

    second = hub.upload_folder(write_folder(tmp_path / "b", {"x.txt": "changed"}), "org/repo", "model")
    assert second.commit != first.commit
    assert hub.commit_info("org/repo", second.commit, "model")["parents"] == [first.commit]
    # The old commit still reads the old content; the new one keeps the untouched file.
    assert (hub.snapshot("org/repo", first.commit, "model") / "x.txt").read_text() == "one"
    assert (hub.snapshot("org/repo", "main", "model") / "x.txt").read_text() == "changed"
    assert (hub.snapshot("org/repo", "main", "model") / "sub/y.txt").read_text() == "two"
    assert [c["sha"] for c in hub.history("org/repo", repo_type="model")] == [second.commit, first.commit]


def test_resolve_branches_tags_and_short_shas(hub, tmp_path):
    c1 = hub.upload_folder(write_folder(tmp_path / "a", {"f": "1"}), "repo").commit
    assert hub.resolve("repo") == c1
    assert hub.resolve("repo", c1[:8]) == c1
    assert hub.resolve("repo", c1) == c1

    hub.create_tag("repo", "v1")
    with pytest.raises(HubError, match="tags never move"):
        hub.create_tag("repo", "v1")

    hub.create_branch("repo", "run-1")
    c2 = hub.upload_folder(write_folder(tmp_path / "b", {"f": "2"}), "repo", revision="run-1").commit
    assert hub.resolve("repo", "run-1") == c2
    assert hub.resolve("repo", "main") == c1  # the branch moved, main did not
    assert hub.resolve("repo", "v1") == c1
    # A push to a branch that does not exist yet starts it from main, like the Hub.
    c3 = hub.upload_folder(write_folder(tmp_path / "c", {"g": "3"}), "repo", revision="exp").commit
    assert hub.commit_info("repo", c3)["parents"] == [c1]
    assert hub.list_refs("repo") == {"branches": {"main": c1, "run-1": c2, "exp": c3}, "tags": {"v1": c1}}

    with pytest.raises(HubError, match="revision 'nope' not found"):
        hub.resolve("repo", "nope")
    with pytest.raises(HubError, match="not found"):
        hub.resolve("missing/repo")
    with pytest.raises(HubError, match="invalid branch"):
        hub.create_branch("repo", "../escape")


def test_same_content_makes_no_new_commit(hub, tmp_path):
    folder = write_folder(tmp_path / "a", {"f": "same"})
    first = hub.upload_folder(folder, "repo")
    again = hub.upload_folder(folder, "repo")
    assert first.created and not again.created and again.commit == first.commit
    assert len(hub.history("repo")) == 1


def test_content_commit_skips_card_only_commits(hub, tmp_path):
    weights = hub.upload_folder(write_folder(tmp_path / "a", {"w.bin": "1", "README.md": "v1"}), "m", "model").commit
    hub.upload_folder(write_folder(tmp_path / "b", {"README.md": "v2 with results"}), "m", "model")
    assert hub.content_commit("m", "main", "model") == weights
    newer = hub.upload_folder(write_folder(tmp_path / "c", {"w.bin": "2"}), "m", "model").commit
    assert hub.content_commit("m", "main", "model") == newer


def test_delete_patterns(hub, tmp_path):
    hub.upload_folder(write_folder(tmp_path / "a", {"data/a.parquet": "a", "data/b.parquet": "b", "keep": "k"}), "r")
    hub.upload_folder(write_folder(tmp_path / "b", {"data/c.parquet": "c"}), "r", delete_patterns=["data/*"])
    assert set(hub.commit_info("r")["tree"]) == {"data/c.parquet", "keep"}


def test_a_crash_before_the_ref_moves_leaves_the_repo_as_it_was(hub, tmp_path, monkeypatch):
    good = hub.upload_folder(write_folder(tmp_path / "a", {"f": "good"}), "repo").commit
    import vital.hub as hub_module

    real = hub_module._atomic_write

    def crash_on_ref(path, text, *args):
        if "refs" in Path(path).parts:
            raise KeyboardInterrupt("killed")
        real(path, text, *args)

    monkeypatch.setattr(hub_module, "_atomic_write", crash_on_ref)
    with pytest.raises(KeyboardInterrupt):
        hub.upload_folder(write_folder(tmp_path / "b", {"f": "half"}), "repo")
    monkeypatch.setattr(hub_module, "_atomic_write", real)
    assert hub.resolve("repo") == good
    assert (hub.snapshot("repo") / "f").read_text() == "good"
    after = hub.upload_folder(write_folder(tmp_path / "c", {"f": "next"}), "repo")
    assert hub.commit_info("repo", after.commit)["parents"] == [good]


def test_new_repos_are_private_by_default(hub):
    hub.create_repo("a")
    hub.create_repo("b", private=False)
    assert json.loads((hub.repo_dir("a") / ".vital" / "repo.json").read_text())["private"] is True
    assert json.loads((hub.repo_dir("b") / ".vital" / "repo.json").read_text())["private"] is False


def test_asking_another_visibility_of_an_existing_repo_warns_that_it_is_unchanged(hub, tmp_path, caplog):
    hub.create_repo("m", "model")  # private, the default
    caplog.set_level(logging.INFO, logger="vital.hub")
    hub.upload_folder(write_folder(tmp_path / "f", {"w": "1"}), "m", "model", private=False)
    hub.upload_folder(write_folder(tmp_path / "g", {"w": "2"}), "m", "model", private=False)  # warned once
    assert json.loads((hub.repo_dir("m", "model") / ".vital" / "repo.json").read_text())["private"] is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(
        "the model repo m exists as private and its visibility is unchanged (hub_private_repo=False asked for a "
        'public one): set "private" in '
    )
    caplog.clear()
    hub.create_repo("m", "model", private=True)  # the same visibility, or none asked: nothing to say
    hub.create_repo("m", "model")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_hf_backend_warns_when_an_existing_repo_keeps_another_visibility(hf, caplog):
    hf.api.repo_info.return_value = mock.Mock(sha="e" * 40, private=True)
    hf.create_repo("org/m", "model", private=False)
    hf.api.repo_info.assert_called_with("org/m", repo_type="model")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "exists as private and its visibility is unchanged" in warning and "settings page on the Hub" in warning


# ----------------------------------------------------------------------------------------------------------------------
# Local backend: datasets and models as their libraries read them
# ----------------------------------------------------------------------------------------------------------------------
def test_dataset_round_trip_with_images_and_configs(hub):
    ds = make_dataset(3)
    pushed = hub.push_dataset(ds, "org/pairs", card=make_card())
    small = hub.push_dataset(make_dataset(1, offset=10), "org/pairs", config_name="small")

    loaded = hub.load_dataset("org/pairs", split="train", revision=pushed.commit)
    assert loaded.features == FEATURES
    assert loaded["id"] == ["r0", "r1", "r2"]
    for got, want in zip(loaded["image"], ds["image"], strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    # datasets reads the snapshot folder directly, with config names, and the default config is the default.
    snapshot = hub.snapshot("org/pairs", small.commit)
    assert load_dataset(str(snapshot), "small", split="train")["id"] == ["r10"]
    assert load_dataset(str(snapshot), split="train")["id"] == ["r0", "r1", "r2"]

    card = hub.read_card("org/pairs")
    configs = {c["config_name"]: c for c in card.data.to_dict()["configs"]}
    assert configs["default"]["data_files"] == [{"split": "train", "path": "data/train-*"}]
    assert configs["small"]["data_files"] == [{"split": "train", "path": "small/train-*"}]
    assert "# Test" in card.text and card.data.license == "mit"  # the card pushed earlier survives


def test_dataset_images_are_embedded_not_paths(hub, tmp_path):
    path = tmp_path / "img.png"
    PILImage.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(path)
    ds = Dataset.from_dict({"id": ["a"], "image": [str(path)], "score": [1.0]}, features=FEATURES)
    hub.push_dataset(ds, "org/emb")
    path.unlink()  # the pushed dataset must not depend on the file any more
    loaded = hub.load_dataset("org/emb", split="train")
    assert np.asarray(loaded[0]["image"]).mean() == 7


def test_dataset_dict_push_replaces_the_config(hub):
    hub.push_dataset(DatasetDict(train=make_dataset(2), test=make_dataset(1)), "org/dd")
    assert set(hub.load_dataset("org/dd")) == {"train", "test"}
    hub.push_dataset(DatasetDict(train=make_dataset(1)), "org/dd")
    assert set(hub.load_dataset("org/dd")) == {"train"}
    # A single split push adds a split and keeps the others.
    hub.push_dataset(make_dataset(2), "org/dd", split="validation")
    assert {k: len(v) for k, v in hub.load_dataset("org/dd").items()} == {"train": 1, "validation": 2}


def test_delete_config(hub):
    hub.push_dataset(make_dataset(2), "org/cfg")
    hub.push_dataset(make_dataset(1), "org/cfg", config_name="failures")
    deleted = hub.delete_config("org/cfg", "failures")
    assert deleted.created and not any(p.startswith("failures/") for p in hub.commit_info("org/cfg")["tree"])
    card = hub.read_card("org/cfg").data.to_dict()
    assert [c["config_name"] for c in card["configs"]] == ["default"]
    assert len(hub.load_dataset("org/cfg", split="train")) == 2
    assert hub.delete_config("org/cfg", "failures") is None  # already gone: no commit
    assert hub.delete_config("org/missing", "failures") is None


def test_splits_of_one_config_share_features(hub):
    other = Dataset.from_dict({"x": [1]})
    with pytest.raises(ValueError, match="differ in features"):
        hub.push_dataset(DatasetDict(train=make_dataset(1), failures=other), "org/mixed")


def test_dataset_push_is_idempotent(hub):
    first = hub.push_dataset(make_dataset(3), "org/same", card=make_card())
    again = hub.push_dataset(make_dataset(3), "org/same", card=make_card())
    assert again.commit == first.commit and not again.created
    changed = hub.push_dataset(make_dataset(3), "org/same", card=make_card("Other"))
    assert changed.created and changed.commit != first.commit


def test_dataset_push_to_a_branch(hub):
    base = hub.push_dataset(make_dataset(2), "org/b")
    run = hub.push_dataset(make_dataset(1), "org/b", revision="run-2")
    assert hub.resolve("org/b", "main") == base.commit
    assert len(hub.load_dataset("org/b", revision="run-2", split="train")) == 1
    assert len(hub.load_dataset("org/b", revision="main", split="train")) == 2
    assert run.revision == "run-2"


def test_model_folder_loads_with_from_pretrained(hub, tmp_path):
    from transformers import AutoModel, BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    BertModel(config).save_pretrained(tmp_path / "m")
    pushed = hub.push_folder(tmp_path / "m", "org/tiny-bert", "model")
    model = AutoModel.from_pretrained(hub.snapshot("org/tiny-bert", pushed.commit, "model"))
    assert model.config.hidden_size == 8


# ----------------------------------------------------------------------------------------------------------------------
# Local backend: concurrent writers
# ----------------------------------------------------------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import sys, tempfile, pathlib
    from vital.hub import LocalHub
    hub, worker, n = LocalHub(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for i in range(n):
        with tempfile.TemporaryDirectory() as tmp:
            p = pathlib.Path(tmp)
            (p / f"{worker}").mkdir()
            (p / f"{worker}/{i}.txt").write_text(f"{worker}-{i}")
            (p / "shared.txt").write_text(f"{worker}-{i}")
            hub.upload_folder(p, "org/contended", commit_message=f"{worker} {i}")
    """
)


def test_concurrent_pushes_from_processes_all_land(tmp_path):
    root, n = tmp_path / "hub", 6
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(root), f"w{k}", str(n)], stderr=subprocess.PIPE)
        for k in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    hub = LocalHub(root)
    history = hub.history("org/contended")
    assert len(history) == 3 * n  # every push is a commit, none lost
    tree = history[0]["tree"]
    assert {f"w{k}/{i}.txt" for k in range(3) for i in range(n)} | {"shared.txt"} == set(tree)
    # Every commit is complete and parent-linked; each writer's own files accumulate in order.
    for info in history:
        snap = hub.snapshot("org/contended", info["sha"])
        assert set(info["tree"]) == {p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()}
    last = (hub.snapshot("org/contended") / "shared.txt").read_text()
    assert last.endswith(f"-{n - 1}")
    assert not list((hub.repo_dir("org/contended") / ".vital" / "tmp").iterdir())  # no staging left behind


# ----------------------------------------------------------------------------------------------------------------------
# Hugging Face backend: the calls it makes
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def hf(tmp_path):
    api = mock.MagicMock()
    api.upload_folder.return_value = mock.Mock(oid="c" * 40, commit_url="https://hub/commit/c")
    api.upload_file.return_value = mock.Mock(oid="d" * 40, commit_url="https://hub/commit/d")

    def create_commit(repo_id, operations, **kwargs):  # keep the bytes: the staged files are gone after the call
        api.committed = {op.path_in_repo: _op_bytes(op) for op in operations}
        return mock.Mock(oid="f" * 40, commit_url="https://hub/commit/f")

    api.create_commit.side_effect = create_commit
    api.repo_info.return_value = mock.Mock(sha="e" * 40)
    readme = tmp_path / "README.md"
    readme.write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n"
    )
    api.hf_hub_download.return_value = str(readme)
    return HfHub(api=api, token="hf_secret_token")


def _op_bytes(op):
    content = getattr(op, "path_or_fileobj", None)
    return Path(content).read_bytes() if isinstance(content, str) else content


def commit_operations(api) -> dict[str, object]:
    """``{path_in_repo: operation}`` of the one ``create_commit`` call (asserting there was exactly one)."""
    api.create_commit.assert_called_once()
    return {op.path_in_repo: op for op in api.create_commit.call_args.kwargs["operations"]}


def test_hf_push_dataset_is_one_create_commit(hf, tmp_path):
    from huggingface_hub import CommitOperationAdd

    result = hf.push_dataset(make_dataset(2), "org/pairs", config_name="top10", revision="run-1", card=make_card("P"))
    hf.api.create_repo.assert_called_once_with("org/pairs", repo_type="dataset", private=True, exist_ok=True)
    hf.api.create_branch.assert_called_once_with(
        "org/pairs", branch="run-1", revision=None, repo_type="dataset", exist_ok=True
    )
    ops = commit_operations(hf.api)
    assert set(ops) == {"top10/train-00000-of-00001.parquet", "README.md"}
    assert all(isinstance(op, CommitOperationAdd) for op in ops.values())
    kwargs = hf.api.create_commit.call_args.kwargs
    # Against the head the card was read at: a concurrent push makes the Hub refuse this commit, not lose configs.
    assert kwargs["parent_commit"] == "e" * 40 and kwargs["revision"] == "run-1"
    hf.api.hf_hub_download.assert_called_once_with("org/pairs", "README.md", repo_type="dataset", revision="e" * 40)
    readme = ops["README.md"].path_or_fileobj.decode()
    assert "config_name: default" in readme and "config_name: top10" in readme  # kept and added
    assert "# P" in readme and "license: mit" in readme
    (tmp_path / "shard.parquet").write_bytes(hf.api.committed["top10/train-00000-of-00001.parquet"])
    assert load_dataset("parquet", data_files=str(tmp_path / "shard.parquet"), split="train")["id"] == ["r0", "r1"]
    hf.api.upload_file.assert_not_called()  # no second commit for the card
    assert result.commit == "f" * 40


def test_hf_push_datasets_all_configs_card_deletes_and_files_in_one_commit(hf, tmp_path):
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    hf.api.list_repo_files.return_value = ["README.md", "a/test-00000-of-00002.parquet", "old/train-0.parquet", "x"]
    chart = write_folder(tmp_path / "fig", {"chart.png": "png"}) / "chart.png"
    hf.push_datasets(
        {"a": (make_dataset(1), "test"), "b": DatasetDict(train=make_dataset(2))},
        "org/eval",
        card=make_card("Eval"),
        private=False,
        delete_configs=["old"],
        files={"figures/chart.png": chart},
    )
    ops = commit_operations(hf.api)
    assert {p for p, op in ops.items() if isinstance(op, CommitOperationDelete)} == {
        "a/test-00000-of-00002.parquet",
        "old/train-0.parquet",
    }
    added = {p for p, op in ops.items() if isinstance(op, CommitOperationAdd)}
    assert added == {
        "a/test-00000-of-00001.parquet",
        "b/train-00000-of-00001.parquet",
        "figures/chart.png",
        "README.md",
    }
    readme = DatasetCard(ops["README.md"].path_or_fileobj.decode())
    assert {c["config_name"] for c in readme.data.to_dict()["configs"]} == {"default", "a", "b"}
    hf.api.create_repo.assert_called_once_with("org/eval", repo_type="dataset", private=False, exist_ok=True)
    hf.api.create_branch.assert_not_called()  # main needs no branch


def test_hf_resolve_load_and_snapshot(hf):
    assert hf.resolve("org/pairs", "v1") == "e" * 40
    hf.api.repo_info.assert_called_with("org/pairs", revision="v1", repo_type="dataset")
    with mock.patch("datasets.load_dataset") as load:
        hf.load_dataset("org/pairs", "top10", revision="main", split="train")
    load.assert_called_once_with(
        "org/pairs", name="top10", revision="e" * 40, split="train", token="hf_secret_token"
    )  # pinned to the resolved commit, not the moving branch
    hf.api.snapshot_download.return_value = "/cache/snap"
    assert hf.snapshot("org/model", "main", "model") == Path("/cache/snap")
    hf.api.snapshot_download.assert_called_with("org/model", repo_type="model", revision="e" * 40)


def test_hf_folder_branch_and_tag_calls(hf, tmp_path):
    write_folder(tmp_path / "m", {"config.json": "{}"})
    result = hf.push_folder(tmp_path / "m", "org/model", "model", revision="run-3", card=make_card("Model"))
    assert (tmp_path / "m" / "README.md").read_text().count("# Model") == 1
    hf.api.upload_folder.assert_called_once_with(
        repo_id="org/model",
        folder_path=str(tmp_path / "m"),
        path_in_repo=None,
        repo_type="model",
        revision="run-3",
        commit_message="Upload folder",
        delete_patterns=None,
    )
    assert result.commit == "c" * 40
    hf.create_tag("org/model", "v1", "run-3", "model")
    hf.api.create_tag.assert_called_once_with(
        "org/model", tag="v1", tag_message=None, revision="run-3", repo_type="model", exist_ok=False
    )


def test_hf_endpoint_and_token_from_environment(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example.org")
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    hub = HfHub()
    assert hub.api.endpoint == "https://mirror.example.org"
    assert hub.token == "hf_from_env" and hub.api.token == "hf_from_env"
    assert "hf_from_env" not in repr(hub)


def test_merge_card_keeps_dataset_metadata():
    current = "---\nconfigs:\n- config_name: a\ndataset_info:\n  features: []\nlicense: old\n---\nold body\n"
    merged = merge_card(current, make_card("New"))
    card = DatasetCard(merged)
    assert card.data.license == "mit" and card.data.to_dict()["configs"] == [{"config_name": "a"}]
    assert "old body" not in merged and "# New" in merged


# ----------------------------------------------------------------------------------------------------------------------
# The Hugging Face Hub's vocabulary on the local hub
# ----------------------------------------------------------------------------------------------------------------------
def test_local_create_commit_takes_hub_operations_and_refuses_a_moved_parent(hub, tmp_path):
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    base = hub.upload_folder(write_folder(tmp_path / "a", {"old/x.txt": "x", "keep.txt": "k"}), "r")
    (tmp_path / "local.txt").write_text("from a file")
    ops = [
        CommitOperationAdd("new/bytes.txt", b"from bytes"),
        CommitOperationAdd("new/file.txt", str(tmp_path / "local.txt")),
        CommitOperationDelete("old/"),
    ]
    made = hub.create_commit("r", ops, "Hub-style commit", parent_commit=base.commit)
    assert made.oid == made.commit and made.created
    assert set(hub.commit_info("r")["tree"]) == {"keep.txt", "new/bytes.txt", "new/file.txt"}
    assert hub.read_file("r", "new/file.txt") == "from a file"
    with pytest.raises(HubError, match="not at the parent commit"):
        hub.create_commit("r", [CommitOperationAdd("late.txt", b"late")], "stale", parent_commit=base.commit)
    assert hub.resolve("r") == made.commit  # the refused commit changed nothing
    refs = hub.list_repo_refs("r")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", made.commit)]
    assert [c.title for c in hub.list_repo_commits("r")] == ["Hub-style commit", "Upload folder"]
