"""The rating stage end to end on the stand-in judge: every turn rated once, retries, resume after SIGKILL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vital.cards import lineage_of
from vital.data.schemas import qa_turns, validate_dataset
from vital.hub import LocalHub
from vital.llm.jobs import NoRepliesError
from vital.runner import load_recipe
from vital.testing.serve import running_stand_in, stage_args


@pytest.fixture(scope="module")
def candidates_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("rate")
    hub = f"local:{root}/hub"
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    with running_stand_in(faults=0.1, latency_ms=20) as server:
        args = ["--config", "recipes/quickstart/generate.yaml", "--hub", hub, "--journal_dir", f"{root}/gen"]
        load_recipe("generate").cli([*args, "--answer_pairs", "0", *stage_args(server)])
    return root


def rate(root, journals, server, *extra):
    """The quickstart rating over the candidates in ``root``, against the stand-in flags ``server``."""
    args = ["--config", "recipes/quickstart/rate.yaml", "--hub", f"local:{root}/hub", "--journal_dir", str(journals)]
    return load_recipe("rate").cli([*args, *server, *extra])


def lines(journals):
    return [json.loads(line) for p in sorted(Path(journals).glob("*.jsonl")) for line in p.open()]


def test_every_turn_is_rated(candidates_hub, tmp_path, stand_in):
    (pushed,) = rate(candidates_hub, tmp_path / "j", stand_in(faults=0.05, latency_ms=10))
    hub = LocalHub(candidates_hub / "hub")
    candidates = hub.load_dataset("quickstart/candidates", split="train")
    ratings = hub.load_dataset("quickstart/ratings", split="train", revision=pushed.commit)
    expected = {(c["id"], t) for c in candidates for t in range(len(qa_turns(c["messages"])))}
    assert {(r["candidate_id"], r["turn"]) for r in ratings} == expected and len(ratings) == len(expected)
    assert len(validate_dataset(ratings, "ratings")[0]) == len(ratings)
    assert all(0 <= s <= 10 for s in ratings["score"])
    assert any(a == 2 for a in ratings["judge_attempts"])  # the stand-in judge sometimes needs a second ask
    assert lineage_of(hub.read_card("quickstart/ratings"))["inputs"][0]["commit"] == hub.resolve(
        "quickstart/candidates"
    )
    before = lines(tmp_path / "j")
    again = rate(candidates_hub, tmp_path / "j", stand_in())
    assert lines(tmp_path / "j") == before and not again[0].created  # nothing asked twice, no new commit


def test_a_judge_that_never_replies_stops_the_stage_and_pushes_nothing(candidates_hub, tmp_path):
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nowhere = ["--provider", "openai-compatible", "--base_url", f"http://127.0.0.1:{port}/v1", "--model", "m"]
    with pytest.raises(NoRepliesError, match=r"failed \(connection error: \d+\); nothing was pushed.*rerun"):
        rate(candidates_hub, tmp_path / "j", nowhere, "--ratings_repo", "none/ratings", "--max_retries", "0")
    assert not LocalHub(candidates_hub / "hub").repo_dir("none/ratings").exists()
    assert lines(tmp_path / "j") and all(line["error"] for line in lines(tmp_path / "j"))


SCRIPT = "import sys\nfrom vital.runner import load_recipe\nload_recipe('rate').cli(sys.argv[1:])\n"


@pytest.mark.slow
def test_killed_rating_run_resumes_without_reasking(candidates_hub, tmp_path, stand_in):
    journals = tmp_path / "j"
    args = ["--config", "recipes/quickstart/rate.yaml", "--hub", f"local:{candidates_hub}/hub"]
    args += ["--journal_dir", str(journals), *stand_in(latency_ms=300), "--concurrency", "2"]
    args += ["--ratings_repo", "killed/ratings"]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    journal = journals / "journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 6):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {r["key"] for r in lines(journals)}
    assert 6 <= len(finished) < 60

    rate(candidates_hub, journals, stand_in(), "--ratings_repo", "killed/ratings")
    keys = [r["key"] for r in lines(journals)]
    assert len(keys) == len(set(keys))  # no finished turn was asked again
    assert finished <= set(keys)
    ratings = LocalHub(candidates_hub / "hub").load_dataset("killed/ratings", split="train")
    assert all(s is not None for s in ratings["score"])
