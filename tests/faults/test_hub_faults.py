"""Fault suite for the local hub: writers killed at random points, concurrent writers of different configs, and a
tampered copy of a hub. Kill points are random but seeded (``VITAL_FAULT_SEED``), so a failure can be replayed."""

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from vital.hub import HubIntegrityError, LocalHub


ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("VITAL_FAULT_SEED", "1234"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def card_configs(hub: LocalHub, repo_id: str, commit: str) -> set[str]:
    text = hub.read_file(repo_id, "README.md", commit)
    if text is None:
        return set()
    return {c["config_name"] for c in DatasetCard(text).data.to_dict().get("configs") or []}


def assert_every_config_loads_at_every_commit(hub: LocalHub, repo_id: str, revision: str = "main") -> int:
    """At every commit of ``revision``: the card lists exactly the configs whose files the tree holds, and each of
    them loads with plain ``datasets.load_dataset(snapshot, config)``. Returns the number of commits."""
    history = hub.history(repo_id, revision)
    for info in history:
        on_disk = {p.split("/")[0] for p in info["tree"] if p.endswith(".parquet")}
        listed = card_configs(hub, repo_id, info["sha"])
        assert listed == on_disk, f"{repo_id}@{info['sha'][:12]}: card lists {sorted(listed)}, tree {sorted(on_disk)}"
        snapshot = hub.snapshot(repo_id, info["sha"])
        for config in listed:
            rows = datasets.load_dataset(
                str(snapshot), config, split="train", cache_dir=str(hub.datasets_cache(repo_id))
            )
            assert len(rows) and set(rows["config"]) == {config}
    return len(history)


# ----------------------------------------------------------------------------------------------------------------------
# Item: concurrent pushes of different configs keep every config
# ----------------------------------------------------------------------------------------------------------------------
PUSHER = textwrap.dedent(
    """
    import sys
    from datasets import Dataset
    from huggingface_hub import DatasetCard
    from vital.hub import LocalHub

    root, config, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    hub = LocalHub(root)
    for i in range(n):
        rows = Dataset.from_dict({"config": [config] * (i + 1), "i": list(range(i + 1))})
        card = DatasetCard(f"---\\nlicense: mit\\n---\\n# pushed by {config}, push {i}\\n")
        hub.push_dataset(rows, "org/shared", config, "train", card=card, commit_message=f"{config} {i}")
    """
)


@pytest.mark.slow
def test_concurrent_pushes_of_different_configs_keep_every_config(tmp_path):
    root, workers, pushes = tmp_path / "hub", 4, 5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSHER, str(root), f"p{k}", str(pushes)], env=ENV, stderr=subprocess.PIPE
        )
        for k in range(workers)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    hub = LocalHub(root)
    assert assert_every_config_loads_at_every_commit(hub, "org/shared") == workers * pushes  # none lost
    final = hub.commit_info("org/shared")["sha"]
    assert card_configs(hub, "org/shared", final) == {f"p{k}" for k in range(workers)}
    for k in range(workers):  # each config holds its writer's last push
        assert len(hub.load_dataset("org/shared", f"p{k}", split="train")) == pushes
    assert hub.fsck("org/shared") == []


# ----------------------------------------------------------------------------------------------------------------------
# Item: a writer killed at random points leaves no visible temporary; the next writer or gc reclaims the rest
# ----------------------------------------------------------------------------------------------------------------------
LOOPER = textwrap.dedent(
    """
    import os, sys
    from datasets import Dataset
    from vital.hub import LocalHub

    root, seed = sys.argv[1], int(sys.argv[2])
    hub = LocalHub(root)
    staging = os.path.join(root, "..", f"folder-{seed}")
    os.makedirs(staging, exist_ok=True)
    print("ready", flush=True)
    for i in range(1000):
        with open(os.path.join(staging, "weights.bin"), "wb") as f:
            f.write(os.urandom(16 << 20))  # big enough for kills to land mid-write
        hub.upload_folder(staging, "org/looped", "dataset", "main", "files", f"folder {seed}.{i}")
        config = f"c{i % 3}"
        rows = Dataset.from_dict({"config": [config] * 3, "i": [seed, i, 0]})
        hub.push_dataset(rows, "org/looped", config, "train", commit_message=f"{config} {seed}.{i}")
    """
)


@pytest.mark.slow
def test_writers_killed_at_random_points_leave_no_visible_temporaries(tmp_path):
    rng, root, kills = random.Random(SEED), tmp_path / "hub", 8
    repo_folder = root / "datasets--org--looped"
    tmp, left_by_kill, commits = repo_folder / ".vital" / "tmp", [], [0]

    def count_commits() -> int:
        return len(LocalHub(root).history("org/looped")) if (repo_folder / "refs/main").exists() else 0

    for k in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", LOOPER, str(root), str(k)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.2, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        present = {p.name for p in tmp.iterdir()} if tmp.is_dir() else set()
        if left_by_kill and commits[-1] < count_commits():
            # This writer committed after the previous kill: it reclaimed that dead writer's staging.
            assert not left_by_kill[-1] & present, "the next writer did not reclaim a dead writer's staging"
        left_by_kill.append({name for name in present if name.startswith("w-")})
        commits.append(count_commits())
    assert any(left_by_kill), "no kill landed inside a hub write: the loop tested nothing (raise the payload)"
    hub = LocalHub(root)
    repo = hub.repo_dir("org/looped")
    # Never a temporary among the refs, whatever the kill point.
    assert [p.name for p in (repo / "refs").rglob("*")] == ["main"]
    assert list(hub.list_refs("org/looped")["branches"]) == ["main"]
    # Whatever is wrong is only leftovers, which gc reclaims; afterwards the repo is sound.
    assert all("leftover" in p for p in hub.fsck("org/looped")), hub.fsck("org/looped")
    leftovers = len(list((repo / ".vital" / "tmp").glob("w-*.lock")))
    assert hub.gc("org/looped")["temporaries"] == leftovers
    assert not list((repo / ".vital" / "tmp").iterdir()) and hub.fsck("org/looped") == []
    # Every ref loads, at every commit.
    assert assert_every_config_loads_at_every_commit(hub, "org/looped") > 0


# ----------------------------------------------------------------------------------------------------------------------
# Item: a tampered copy of a hub is refused, and loading it never poisons the original
# ----------------------------------------------------------------------------------------------------------------------
def test_a_tampered_copy_is_refused_and_never_poisons_the_original(tmp_path, monkeypatch):
    original = LocalHub(tmp_path / "a")
    pushed = original.push_dataset(datasets.Dataset.from_dict({"config": ["default"] * 2, "x": [1, 2]}), "org/r")
    shutil.copytree(original.root, tmp_path / "b", symlinks=True)  # same commit ids, same mtimes
    copy = LocalHub(tmp_path / "b")
    shard = "data/train-00000-of-00001.parquet"
    target = copy.repo_dir("org/r") / "snapshots" / pushed.commit / shard
    stat = target.stat()
    os.chmod(target, 0o644)
    pq.write_table(pa.table({"config": ["default"] * 2, "x": [666, 666]}), target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a tamperer keeps the timestamps

    with pytest.raises(HubIntegrityError) as error:
        copy.load_dataset("org/r", split="train")
    assert (error.value.repo_id, error.value.commit, error.value.file) == ("org/r", pushed.commit, shard)
    assert any(shard in p for p in copy.fsck("org/r"))

    # Even with verification out of the way, the copy's rows land in the copy's own datasets cache...
    monkeypatch.setattr(copy, "verify", lambda repo_id, revision, repo_type="dataset": target.parents[1])
    assert copy.load_dataset("org/r", split="train")["x"] == [666, 666]
    # ...so the untouched original still serves its own bytes.
    assert original.load_dataset("org/r", split="train")["x"] == [1, 2]
    assert original.fsck("org/r") == []
