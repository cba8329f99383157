"""Fault suite: kill the resumable stages at random points, feed them broken inputs and a faulty endpoint.

Every killed run is finished by a rerun, after which nothing is lost (every expected row is there, as a result or as a
recorded failure), nothing is duplicated (journal keys and dataset ids are unique) and every ref of the hub points at
complete commits. The kill points are random but seeded, so a failure can be replayed.
"""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from vital.data.errors import RecordError
from vital.data.schemas import qa_turns
from vital.hub import LocalHub
from vital.llm.journal import Journal
from vital.runner import load_recipe


ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("VITAL_FAULT_SEED", "1234"))
STAGE = "import sys\nfrom vital.runner import load_recipe\nload_recipe(sys.argv[1]).cli(sys.argv[2:])\n"


# -- helpers ----------------------------------------------------------------------------------------------------------
def journal_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(Path(folder).rglob("*.jsonl")) for line in p.open() if line.strip()]


def kill_at_random(argv: list[str], cwd: Path, journals: Path, rng: random.Random, max_delay_s: float) -> float:
    """Start a stage, wait until it has journaled a first request, SIGKILL it after a seeded random delay.

    Returns the delay; the process may have finished by then (a kill after the end must be harmless too).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", STAGE, *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not journal_lines_exist(journals):
        time.sleep(0.02)
    delay = rng.uniform(0, max_delay_s)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return delay


def journal_lines_exist(folder: Path) -> bool:
    return any(p.stat().st_size > 0 for p in Path(folder).rglob("*.jsonl")) if Path(folder).exists() else False


def assert_unique_keys(folder: Path) -> list[str]:
    keys = [r["key"] for r in journal_lines(folder)]
    assert len(keys) == len(set(keys)), "a finished request was sent again"
    return keys


def assert_hub_complete(root: Path) -> int:
    """Every ref of every repo points at a commit whose every file (and every ancestor's) is a snapshot symlink to a
    blob with its content, and ``scan_cache_dir`` reads the hub as a Hugging Face cache without a warning."""
    from huggingface_hub import scan_cache_dir

    hub, commits = LocalHub(root), 0
    for repo_json in sorted(root.glob("*s--*/.vital/repo.json")):
        repo = repo_json.parent.parent
        settings = json.loads(repo_json.read_text())
        repo_id, repo_type = settings["repo_id"], settings["repo_type"]
        assert hub.repo_dir(repo_id, repo_type) == repo
        refs = hub.list_refs(repo_id, repo_type)
        for name, commit in [*refs["branches"].items(), *refs["tags"].items()]:
            assert (repo / ".vital" / "commits" / f"{commit}.json").is_file(), f"{repo_id}@{name}: missing commit"
            assert (repo / "refs" / name).read_text() == commit, f"{repo_id}@{name}: the HF ref differs"
            for info in hub.history(repo_id, commit, repo_type):
                snapshot = repo / "snapshots" / info["sha"]
                for path, blob in info["tree"].items():
                    file = snapshot / path
                    assert file.is_symlink() and file.is_file(), f"{repo_id}@{info['sha'][:12]}: {path} is missing"
                    assert file.resolve() == (repo / "blobs" / blob).resolve(), f"{repo_id}: {path} is not its blob"
                    assert hashlib.sha256(file.read_bytes()).hexdigest() == blob, f"{repo_id}: {path} is corrupt"
                commits += 1
    assert commits, f"no commits found under {root}"
    scan = scan_cache_dir(root)
    assert not scan.warnings, scan.warnings
    return commits


def assert_unique_ids(dataset, column: str = "id") -> None:
    values = dataset[column]
    assert len(values) == len(set(values)), f"duplicated {column} values"


# -- fixtures ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rng():
    return random.Random(SEED)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", f"local:{root}/hub"])
    return root


def stage_args(name: str, root: Path, journals: Path, *extra: str) -> list[str]:
    config = str(ROOT / f"recipes/quickstart/{name}.yaml")
    return ["--config", config, "--hub", f"local:{root}/hub", "--journal_dir", str(journals), *extra]


# -- SIGKILL and resume -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_generate_killed_twice_then_resumed(ingested, rng, stand_in):
    journals = ingested / "gen"
    args = stage_args("generate", ingested, journals, "--answer_pairs", "0", *stand_in(faults=0.1))
    slow = [*stand_in(faults=0.1, latency_ms=120), "--concurrency", "2"]
    for _ in range(2):
        kill_at_random(["generate", *args, *slow], ingested, journals, rng, max_delay_s=0.8)
    # A kill in the middle of a write leaves a torn last line: the rerun must cut it off, not choke on it.
    journal = journals / "journal.jsonl"
    with journal.open("a") as handle:
        handle.write('{"key": "torn')
    load_recipe("generate").cli(args)

    hub = LocalHub(ingested / "hub")
    pairs = hub.load_dataset("quickstart/pairs", split="train")
    candidates = hub.load_dataset("quickstart/candidates", split="train")
    configs = {c["config_name"] for c in hub.read_card("quickstart/candidates").data.to_dict()["configs"]}
    failed = (
        hub.load_dataset("quickstart/candidates", "failures", split="train")["pair_id"]
        if "failures" in configs
        else []
    )
    assert sorted([*candidates["pair_id"], *failed]) == sorted(pairs["id"]) and len(pairs) == 15  # nothing lost
    assert_unique_ids(candidates)
    assert len(assert_unique_keys(journals)) == 15
    assert not journal.read_text().endswith('"torn')
    assert_hub_complete(ingested / "hub")


@pytest.mark.slow
def test_rate_killed_twice_then_resumed(ingested, rng, stand_in):
    if not (ingested / "hub/datasets/quickstart/candidates").exists():
        generate = stage_args("generate", ingested, ingested / "gen", "--answer_pairs", "0", *stand_in(faults=0.1))
        load_recipe("generate").cli(generate)
    journals = ingested / "rate"
    args = stage_args("rate", ingested, journals, *stand_in(faults=0.05))
    slow = [*stand_in(faults=0.05, latency_ms=40), "--concurrency", "2"]
    for _ in range(2):
        kill_at_random(["rate", *args, *slow], ingested, journals, rng, max_delay_s=1.0)
    load_recipe("rate").cli(args)

    hub = LocalHub(ingested / "hub")
    candidates = hub.load_dataset("quickstart/candidates", split="train")
    ratings = hub.load_dataset("quickstart/ratings", split="train")
    expected = {(c["id"], t) for c in candidates for t in range(len(qa_turns(c["messages"])))}
    rated = [(r["candidate_id"], r["turn"]) for r in ratings]
    assert set(rated) == expected and len(rated) == len(expected)  # every turn once
    assert all((r["score"] is not None) or r["error"] for r in ratings)  # a score or the reason there is none
    assert_unique_keys(journals)
    assert_hub_complete(ingested / "hub")


@pytest.fixture(scope="module")
def pipeline_hub(tmp_path_factory, rng):
    """The whole quickstart pipeline, killed once at a random point, then rerun to completion (both in `work`)."""
    work = tmp_path_factory.mktemp("pipeline")
    (work / "recipes").symlink_to(ROOT / "recipes")  # the pipeline YAML names its stages' configs by relative path
    argv = ["pipeline", "--config", "recipes/quickstart/pipeline.yaml", "--hub", f"local:{work}/hub"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", STAGE, *argv], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    started = time.monotonic()
    # Somewhere between the first push and the end of the run (the quickstart takes ~30 s on a free CPU).
    while time.monotonic() - started < 120 and proc.poll() is None and not (work / "hub").exists():
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 20))
    killed_mid_run = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(
        [sys.executable, "-c", STAGE, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return work, killed_mid_run


@pytest.mark.slow
def test_pipeline_killed_once_then_rerun(pipeline_hub):
    work, _ = pipeline_hub
    hub = LocalHub(work / "hub")
    pairs = hub.load_dataset("quickstart/pairs", split="train")
    candidates = hub.load_dataset("quickstart/candidates", split="train")
    configs = {c["config_name"] for c in hub.read_card("quickstart/candidates").data.to_dict()["configs"]}
    failed = (
        hub.load_dataset("quickstart/candidates", "failures", split="train")["pair_id"]
        if "failures" in configs
        else []
    )
    assert sorted([*candidates["pair_id"], *failed]) == sorted(pairs["id"])
    ratings = hub.load_dataset("quickstart/ratings", split="train")
    expected = {(c["id"], t) for c in candidates for t in range(len(qa_turns(c["messages"])))}
    assert sorted((r["candidate_id"], r["turn"]) for r in ratings) == sorted(expected)
    for repo in ("quickstart/pairs", "quickstart/demos", "quickstart/candidates"):
        assert_unique_ids(hub.load_dataset(repo, split="train"))
    assert hub.resolve("quickstart/eval")  # the last stage pushed
    assert_unique_keys(work / "outputs/journals/generate")
    assert_unique_keys(work / "outputs/journals/rate")
    assert_hub_complete(work / "hub")


@pytest.mark.slow
def test_evaluate_killed_then_resumed(pipeline_hub, rng, stand_in):
    work, _ = pipeline_hub
    out = work / "eval-killed"
    args = ["--config", "recipes/quickstart/evaluate.yaml", "--hub", f"local:{work}/hub", "--output_dir", str(out)]
    args += ["--eval_repo", "faults/eval", "--push_fixtures", "false", "--update_model_card", "false"]
    args += ["--limit", "4", *stand_in(faults=0.05)]
    slow = [*stand_in(faults=0.05, latency_ms=80), "--concurrency", "1"]
    kill_at_random(["evaluate", *args, *slow], work, out / "journals", rng, max_delay_s=1.5)
    before = {r["key"] for r in journal_lines(out / "journals")}
    cwd = Path.cwd()
    os.chdir(work)
    try:
        load_recipe("evaluate").cli(args)
    finally:
        os.chdir(cwd)
    keys = assert_unique_keys(out / "journals")
    assert before <= set(keys)
    hub = LocalHub(work / "hub")
    for name in ("vqa-rad", "slake", "path-vqa"):  # every item answered once (`--limit 4`)
        items = hub.load_dataset("faults/eval", name, split="test")
        assert_unique_ids(items)
        assert len(items) == 4
    chat = hub.load_dataset("faults/eval", "chat", split="test")
    assert_unique_ids(chat, "question_id")
    assert all(r["score_model"] is not None or r["judge_error"] or r["answer_error"] for r in chat)
    summary = hub.load_dataset("faults/eval", "summary", split="test")
    assert len(summary) > 0
    assert_hub_complete(work / "hub")


# -- broken inputs ----------------------------------------------------------------------------------------------------
def test_a_corrupt_image_names_the_record_and_the_field(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for i in range(3):
        PILImage.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(images / f"F{i}.jpg")
        records.append({"pair_id": f"F{i}", "fig_caption": f"Axial CT {i}.", "in_text_mention": [], "domain": {}})
    (images / "F1.jpg").write_bytes(b"\xff\xd8\xff truncated jpeg")
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["--pairs_source", "llava-med", "--records", str(path), "--image_dir", str(images)]
    args += ["--hub", f"local:{tmp_path}/hub", "--demos_source", "none", "--pairs_repo", "bad/pairs"]
    with pytest.raises(RecordError, match=r"record 'F1', field 'image'.*corrupt image") as error:
        load_recipe("ingest").cli([*args, "--errors", "raise"])
    assert error.value.record_id == "F1" and error.value.field == "image"
    (pushed,) = load_recipe("ingest").cli([*args, "--errors", "skip"])  # quarantined, not dropped silently
    pairs = LocalHub(tmp_path / "hub").load_dataset("bad/pairs", split="train", revision=pushed.commit)
    assert sorted(pairs["id"]) == ["F0", "F2"]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"id": "R1", "conversations": [{"from": "human", "value": "Q?"}, {"from": "robot", "value": "A."}]}, "from"),
        ({"id": "R2", "conversations": "not a list"}, "conversations"),
        ({"id": "R3"}, "conversations"),
        ({"id": "R4", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "A."}]}, "value"),
    ],
)
def test_a_malformed_llava_record_names_the_record_and_the_field(record, field):
    from vital.data.llava import llava_to_messages

    with pytest.raises(RecordError, match=rf"record '{record['id']}', field '[^']*{field}[^']*'"):
        llava_to_messages([record], image_dir=None)
    _, quarantine = llava_to_messages([record], image_dir=None, errors="skip")
    assert len(quarantine) == 1


def test_a_truncated_journal_line_is_tolerated_and_counted(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal.open(path)
    from vital.llm import CompletionResult

    for key in ("a", "b"):
        journal.append(CompletionResult(key=key, text="ok", finish_reason="stop"))
    journal.close()
    text = path.read_text()
    path.write_text(text + text.splitlines()[0][:25] + "\n" + '{"key": "c", "te')  # a corrupt line and a torn one
    again = Journal.open(path)
    assert again.skipped_lines == 2
    assert again.done("a") is not None and again.done("b") is not None and again.done("c") is None
    again.close()
    assert path.read_text().endswith("\n")  # the torn tail is cut off, so the next append starts a clean line


# -- a faulty endpoint ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_faulty_endpoint_ends_in_success_or_recorded_failures(ingested, tmp_path, stand_in):
    hub_args = ["--hub", f"local:{ingested}/hub", *stand_in(faults=0.6), "--concurrency", "4"]
    gen = ["--config", "recipes/quickstart/generate.yaml", *hub_args, "--journal_dir", str(tmp_path / "gen")]
    gen += ["--max_retries", "1", "--answer_pairs", "0", "--candidates_repo", "faulty/candidates"]
    load_recipe("generate").cli(gen)
    hub = LocalHub(ingested / "hub")
    candidates = hub.load_dataset("faulty/candidates", split="train")
    failures = hub.load_dataset("faulty/candidates", "failures", split="train")
    assert len(candidates) + len(failures) == 15 and len(failures) > 0
    assert all(f["reason"] for f in failures)
    assert set(candidates["pair_id"]).isdisjoint(failures["pair_id"])

    rate = ["--config", "recipes/quickstart/rate.yaml", *hub_args, "--journal_dir", str(tmp_path / "rate")]
    rate += ["--max_retries", "1", "--candidates_repo", "faulty/candidates", "--ratings_repo", "faulty/ratings"]
    load_recipe("rate").cli(rate)
    ratings = hub.load_dataset("faulty/ratings", split="train")
    expected = {(c["id"], t) for c in candidates for t in range(len(qa_turns(c["messages"])))}
    assert sorted((r["candidate_id"], r["turn"]) for r in ratings) == sorted(expected)
    errors = [r["error"] for r in ratings if r["score"] is None]
    assert errors and all(errors)  # some turns failed, each with its reason
    assert_hub_complete(ingested / "hub")
