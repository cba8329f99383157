"""The local hub refuses hostile names, serves only the bytes its commits record, names repo, commit and file in every
read error, and never lets a killed writer's temporaries show (`vital hub fsck` / `vital hub gc`)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from datasets import Dataset

from vital.cli import main as vital_main
from vital.hub import HubError, HubIntegrityError, LocalHub, parse_repo_ref, validate_name


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def world(tmp_path):
    """A hub with one dataset repo, next to a secret file and a second repo it must never reach."""
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    hub = LocalHub(tmp_path / "hub")
    pushed = hub.push_dataset(Dataset.from_dict({"id": ["a", "b"]}), "org/r")
    hub.push_dataset(Dataset.from_dict({"id": ["other"]}), "org/other")
    return hub, pushed, tmp_path


def outside_files(tmp_path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(tmp_path).as_posix(): p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file() and "hub" not in p.relative_to(tmp_path).parts
    }


UP = "../" * 8
HOSTILE_REFS = [
    f"{UP}secret.txt",
    "../../other",
    "/etc/hostname",
    ".",
    "..",
    "main/.",
    "./main",
    "main\n",
    "main/",
    "/main",
    "a//b",
    "a..b",
    "main.lock",
    "x/.hidden",
    "@",
    "a@{1}",
    "a b",
    "a\\b",
    "ma\x00in",
    "mäin",
]
HOSTILE_NAMES = {
    "repo_id": ["../x", "/abs", ".", "..", "a/..", "x\n", "a/b/c", "a//b", "a--b", ".x", "x/.", "org/../../x"],
    "branch": HOSTILE_REFS,
    "tag": HOSTILE_REFS,
    "revision": HOSTILE_REFS,
    "config": ["../evil", "/abs", ".", "..", "a/b", "x\n", "", "a..b", ".hidden"],
    "split": ["../evil", "a/b", ".", "..", "x\n", "", "a-b"],
    "path": [f"{UP}secret.txt", "/etc/hostname", "a/../../x", "", ".", "./README.md", "a//b", "a\\b", "x\n", "a/."],
    "commit": ["../../other", "a" * 39, "A" * 40, "g" * 40, "a" * 40 + "\n"],
}


@pytest.mark.parametrize("kind,value", [(k, v) for k, values in HOSTILE_NAMES.items() for v in values])
def test_hostile_names_are_refused_with_a_clear_error(kind, value):
    with pytest.raises(HubError, match=f"invalid {kind.replace('_', ' ')}"):
        validate_name(kind, value)


@pytest.mark.parametrize("kind,value", [("repo_id", "org/name.v2"), ("branch", "run/2024-01_a"), ("path", "a/b.c")])
def test_ordinary_names_pass(kind, value):
    assert validate_name(kind, value) == value


def test_hostile_names_neither_read_nor_write_outside_the_hub(world):
    hub, pushed, tmp_path = world
    before = outside_files(tmp_path)
    ds = Dataset.from_dict({"id": ["x"]})
    attempts = []
    for ref in HOSTILE_REFS:
        attempts += [
            lambda ref=ref: hub.resolve("org/r", ref),
            lambda ref=ref: hub.snapshot("org/r", ref),
            lambda ref=ref: hub.load_dataset("org/r", revision=ref, split="train"),
            lambda ref=ref: hub.create_branch("org/r", ref),
            lambda ref=ref: hub.create_tag("org/r", ref),
            lambda ref=ref: hub.push_dataset(ds, "org/r", revision=ref),
        ]
    for name in HOSTILE_NAMES["config"]:
        attempts += [
            lambda name=name: hub.push_dataset(ds, "org/r", config_name=name),
            lambda name=name: hub.load_dataset("org/r", name, split="train"),
            lambda name=name: hub.delete_config("org/r", name),
        ]
    for split in HOSTILE_NAMES["split"]:
        attempts.append(lambda split=split: hub.push_dataset(ds, "org/r", split=split))
    for path in HOSTILE_NAMES["path"]:
        attempts += [
            lambda path=path: hub.read_file("org/r", path),
            lambda path=path: hub.push_datasets({}, "org/r", files={path: tmp_path / "secret.txt"}),
        ]
    for repo_id in HOSTILE_NAMES["repo_id"]:
        attempts += [lambda r=repo_id: hub.push_dataset(ds, r), lambda r=repo_id: hub.resolve(r)]
    for attempt in attempts:
        with pytest.raises(HubError) as error:
            attempt()
        assert "TOPSECRET" not in str(error.value)
    assert outside_files(tmp_path) == before
    assert hub.resolve("org/r") == pushed.commit  # and nothing moved inside
    assert [p.name for p in (hub.repo_dir("org/r") / "refs").iterdir()] == ["main"]


def test_a_ref_holding_a_path_points_nowhere(world):
    hub, _, _ = world
    (hub.repo_dir("org/r") / "refs" / "evil").write_text("../../other/snapshots/x")
    with pytest.raises(HubIntegrityError, match=r"org/r: refs/evil: holds '\.\./\.\./other"):
        hub.snapshot("org/r", "evil")


def test_cli_resolve_with_a_traversal_prints_no_file(world, capsys):
    hub, _, tmp_path = world
    code = vital_main(["hub", "resolve", f"org/r@{UP}secret.txt", "--hub", f"local:{hub.root}"])
    err = capsys.readouterr().err
    assert code == 1 and "invalid revision" in err and "TOPSECRET" not in err


def test_parse_repo_ref_refuses_hostile_revisions():
    for ref in ("main\n", "./main", "main/.", "../../x"):
        with pytest.raises(HubError, match="invalid"):
            parse_repo_ref(f"org/r@{ref}")


# ----------------------------------------------------------------------------------------------------------------------
# Content verification and named read errors
# ----------------------------------------------------------------------------------------------------------------------
def overwrite_middle(file: Path, data: bytes = b"XXXX") -> None:
    os.chmod(file, 0o644)
    with open(file, "r+b") as f:
        f.seek(file.stat().st_size // 2)
        f.write(data)


def test_a_blob_overwritten_mid_file_is_a_named_error(world):
    hub, pushed, _ = world
    parquet = "data/train-00000-of-00001.parquet"
    overwrite_middle(hub.repo_dir("org/r") / "blobs" / hub.commit_info("org/r")["tree"][parquet])
    for read in (lambda: hub.load_dataset("org/r", split="train"), lambda: hub.snapshot("org/r")):
        with pytest.raises(HubIntegrityError) as error:
            read()
        assert (error.value.repo_id, error.value.commit, error.value.file) == ("org/r", pushed.commit, parquet)
        assert f"org/r@{pushed.commit}: {parquet}: content sha256" in str(error.value)
    problems = LocalHub(hub.root).fsck("org/r")
    assert any(parquet in p and "corrupt" in p for p in problems)


def test_a_tampered_card_is_refused_by_read_file(world):
    hub, pushed, _ = world
    overwrite_middle(hub.snapshot("org/r") / "README.md", b"!")
    with pytest.raises(HubIntegrityError, match=f"org/r@{pushed.commit}: README.md: content sha256"):
        hub.read_file("org/r", "README.md")


def test_an_extra_file_in_a_snapshot_is_refused(world):
    hub, pushed, _ = world
    snapshot = hub.repo_dir("org/r") / "snapshots" / pushed.commit
    os.chmod(snapshot / "data", 0o755)
    (snapshot / "data" / "train-99.parquet").write_bytes(b"planted")
    with pytest.raises(HubIntegrityError, match="data/train-99.parquet: not part of the commit"):
        hub.load_dataset("org/r", split="train")


def test_a_corrupt_commit_record_names_repo_commit_and_file(world):
    hub, pushed, _ = world
    (hub.repo_dir("org/r") / ".vital" / "commits" / f"{pushed.commit}.json").write_text('{"tree": {')
    with pytest.raises(HubIntegrityError) as error:
        hub.load_dataset("org/r", split="train")
    assert (error.value.repo_id, error.value.commit, error.value.file) == (
        "org/r",
        pushed.commit,
        f".vital/commits/{pushed.commit}.json",
    )
    assert "corrupt commit record" in str(error.value)
    # A record edited to point at other blobs no longer hashes to its id.
    (hub.repo_dir("org/r") / ".vital" / "commits" / f"{pushed.commit}.json").write_text(
        json.dumps({"sha": pushed.commit, "parents": [], "message": "m", "time": 0, "tree": {}})
    )
    with pytest.raises(HubIntegrityError, match="does not hash to its commit id"):
        hub.history("org/r")


def test_fsck_cli_reports_a_sound_repo_and_a_broken_one(world, capsys):
    hub, _, _ = world
    assert vital_main(["hub", "fsck", "org/r", "--hub", f"local:{hub.root}"]) == 0
    assert "ok" in capsys.readouterr().out
    overwrite_middle(hub.snapshot("org/r") / "README.md", b"!")
    assert vital_main(["hub", "fsck", "org/r", "--hub", f"local:{hub.root}"]) == 1
    assert "README.md" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------------------
# A writer killed at the worst moment (just before its ref moves)
# ----------------------------------------------------------------------------------------------------------------------
KILLED_AT_REF = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from datasets import Dataset
    from vital.hub import LocalHub

    real = os.replace
    def replace(src, dst):
        if "refs" in Path(dst).parts:
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
    os.replace = replace
    LocalHub(sys.argv[1]).push_dataset(Dataset.from_dict({"id": ["new"]}), "org/r", "late")
    """
)


def test_a_writer_killed_before_its_ref_moves_leaves_nothing_visible_and_gc_reclaims_it(world):
    hub, pushed, _ = world
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_REF, str(hub.root)], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    repo = hub.repo_dir("org/r")
    assert hub.list_refs("org/r") == {"branches": {"main": pushed.commit}, "tags": {}}
    assert [p.name for p in (repo / "refs").iterdir()] == ["main"]  # no temporary among the refs
    assert list((repo / ".vital" / "tmp").iterdir())  # the dead writer's staging is there...
    assert any("leftover" in p for p in hub.fsck("org/r"))
    reclaimed = hub.gc("org/r")  # ...until gc (or the next writer) takes it
    assert reclaimed["temporaries"] == 1 and reclaimed["commits"] == 1 and reclaimed["snapshots"] == 1
    assert not list((repo / ".vital" / "tmp").iterdir()) and hub.fsck("org/r") == []
    assert hub.load_dataset("org/r", split="train")["id"] == ["a", "b"]


def test_the_next_writer_reclaims_a_dead_writers_staging(world):
    hub, _, _ = world
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", KILLED_AT_REF, str(hub.root)], env=env, capture_output=True)
    hub.push_dataset(Dataset.from_dict({"id": ["c"]}), "org/r", "next")
    assert not list((hub.repo_dir("org/r") / ".vital" / "tmp").iterdir())


def test_an_old_temporary_among_the_refs_is_never_listed(world):
    hub, pushed, _ = world
    (hub.repo_dir("org/r") / "refs" / f".main.{'a' * 32}.tmp").write_text(pushed.commit)
    assert hub.list_refs("org/r")["branches"] == {"main": pushed.commit}
    assert hub.gc("org/r")["temporaries"] == 1
    assert [p.name for p in (hub.repo_dir("org/r") / "refs").iterdir()] == ["main"]
