"""The generation stage end to end on a local hub and the stand-in server: resume, faults, shards, secrets."""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vital.cards import lineage_of
from vital.data.schemas import validate_dataset
from vital.hub import HubError, LocalHub
from vital.llm.jobs import NoRepliesError
from vital.runner import load_recipe


ingest = load_recipe("ingest")
generate = load_recipe("generate")
QUICKSTART = "recipes/quickstart/generate.yaml"


@pytest.fixture
def hub_dir(tmp_path):
    ingest.cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", f"local:{tmp_path}/hub"])
    return tmp_path


def run(tmp_path, server, *extra):
    """The quickstart generation over the hub in ``tmp_path``, against the stand-in flags ``server``."""
    args = ["--config", QUICKSTART, "--hub", f"local:{tmp_path}/hub", "--journal_dir", f"{tmp_path}/journals"]
    return generate.cli([*args, *server, *extra])


def journal_lines(tmp_path):
    return [json.loads(line) for p in sorted((tmp_path / "journals").glob("*.jsonl")) for line in p.open()]


@pytest.mark.slow
def test_generate_on_the_stand_in(hub_dir, stand_in):
    pushed = run(hub_dir, stand_in(faults=0))
    hub = LocalHub(hub_dir / "hub")
    pairs = hub.load_dataset("quickstart/pairs", split="train")
    candidates = hub.load_dataset("quickstart/candidates", split="train", revision=pushed[0].commit)
    configs = [c["config_name"] for c in hub.read_card("quickstart/candidates").data.to_dict()["configs"]]
    assert configs == ["default"] and sorted(candidates["pair_id"]) == sorted(pairs["id"])  # no failures config
    assert len(validate_dataset(candidates, "candidates")[0]) == len(pairs)
    by_id = {p["id"]: p for p in pairs}
    for row in candidates:
        assert len(row["messages"]) >= 8  # 4+ exchanges
        np.testing.assert_array_equal(np.asarray(row["images"][0]), np.asarray(by_id[row["pair_id"]]["image"]))
        generation = row["generation"]
        assert generation["stand_in"] and generation["model"] == "vital-stand-in" and generation["prompt_tokens"] > 0
    demos = hub.load_dataset("quickstart/demos", split="train")
    own_demo = {d["pair_id"]: d["id"] for d in demos}
    for row in candidates:
        # One demo per modality (the sample has one per modality), but a figure is never its own demonstration.
        assert own_demo.get(row["pair_id"]) not in row["generation"]["demo_ids"]
        assert len(row["generation"]["demo_ids"]) == 5 - (row["pair_id"] in own_demo)

    card = hub.read_card("quickstart/candidates")
    assert "Stand-in data" in card.text and "vital-stand-in" in card.text
    commits = {i["repo_id"]: i["commit"] for i in lineage_of(card)["inputs"]}
    assert commits == {
        "quickstart/pairs": hub.resolve("quickstart/pairs"),
        "quickstart/demos": hub.resolve("quickstart/demos"),
    }
    answer_pairs = hub.load_dataset("quickstart/answer-pairs", split="train")
    assert len(answer_pairs) >= 3 and all(a != b for a, b in zip(answer_pairs["answer_a"], answer_pairs["answer_b"]))

    # A rerun sends nothing (every key is journaled once) and makes no new commit.
    lines = journal_lines(hub_dir)
    again = run(hub_dir, stand_in(faults=0))
    assert journal_lines(hub_dir) == lines
    assert [p.commit for p in again] == [p.commit for p in pushed] and not any(p.created for p in again)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_reply_at_all_stops_with_the_reasons_and_pushes_nothing(hub_dir):
    """No server at the address: every request fails, so the stage stops with the reasons instead of pushing a
    dataset of 0 conversations; the journal keeps the failed requests, and a rerun sends them again."""
    nowhere = ["--provider", "openai-compatible", "--base_url", f"http://127.0.0.1:{closed_port()}/v1"]
    with pytest.raises(NoRepliesError, match=r"all 15 request\(s\) failed \(connection error: 15\).*rerun"):
        run(hub_dir, [*nowhere, "--model", "m"], "--answer_pairs", "0", "--max_retries", "0")
    assert not (hub_dir / "hub/datasets/quickstart/candidates").exists()
    lines = journal_lines(hub_dir)
    assert len(lines) == 15 and all(line["error"] for line in lines)


def test_faults_end_in_success_or_a_recorded_failure(hub_dir, stand_in, caplog):
    caplog.set_level(logging.INFO)
    run(hub_dir, stand_in(faults=0.45), "--max_retries", "1", "--answer_pairs", "0")
    # Some requests failed: the run's summary and the candidates' line are warnings with the counts by reason.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(re.search(r" [1-9]\d* failed \((http 5\d\d|malformed reply): \d", m) for m in warnings), warnings
    assert any(m.startswith("candidates: ") and "failures (request: " in m for m in warnings), warnings
    hub = LocalHub(hub_dir / "hub")
    candidates = hub.load_dataset("quickstart/candidates", split="train")
    failures = hub.load_dataset("quickstart/candidates", "failures", split="train")
    assert len(candidates) + len(failures) == 15
    assert len(failures) > 0  # with one retry and 45% faults, some requests exhaust their retries
    readme = (hub.snapshot("quickstart/candidates", "main") / "README.md").read_text()
    assert 'load_dataset("quickstart/candidates", "failures"' in readme  # the card's snippet loads them
    assert all(f["stage"] == "request" and f["reason"] for f in failures)
    assert set(candidates["pair_id"]).isdisjoint(failures["pair_id"])
    # Failed requests are retried by the next run; the successes are not sent again.
    ok_keys = {r["key"] for r in journal_lines(hub_dir) if r["error"] is None}
    run(hub_dir, stand_in(faults=0), "--answer_pairs", "0")
    assert len(hub.load_dataset("quickstart/candidates", split="train")) == 15
    assert "failures" not in {
        c["config_name"] for c in hub.read_card("quickstart/candidates").data.to_dict()["configs"]
    }
    resent = [r for r in journal_lines(hub_dir) if r["key"] in ok_keys]
    assert len(resent) == len(ok_keys)


def test_replies_from_another_model_are_not_labelled_stand_in(hub_dir, stand_in):
    """The stand-in label comes from the replies: an endpoint answering as another model gets no stand-in label,
    even on the same loopback server code."""
    run(hub_dir, [*stand_in(model="tiny-real"), "--model", "tiny-real"], "--answer_pairs", "0")
    hub = LocalHub(hub_dir / "hub")
    generation = hub.load_dataset("quickstart/candidates", split="train")["generation"]
    assert len(generation) == 15 and not any(g["stand_in"] for g in generation)
    assert {(g["model"], g["endpoint"]) for g in generation} == {("tiny-real", "openai-compatible")}
    card = hub.read_card("quickstart/candidates")
    assert card.data.pretty_name == "BioMed-VITAL candidates" and "Stand-in data" not in card.text


def test_hub_arguments_name_the_push(hub_dir, stand_in):
    """`push_to_hub false` sends and journals, pushes nothing; `hub_revision` names the branch pushed to."""
    server = stand_in()
    assert run(hub_dir, server, "--answer_pairs", "0", "--push_to_hub", "false") == []
    hub = LocalHub(hub_dir / "hub")
    assert len(journal_lines(hub_dir)) == 15 and not (hub_dir / "hub/datasets/quickstart/candidates").exists()
    (pushed,) = run(hub_dir, server, "--answer_pairs", "0", "--hub_revision", "run-1")
    assert pushed.revision == "run-1" and hub.resolve("quickstart/candidates", "run-1") == pushed.commit
    with pytest.raises(SystemExit):  # the old names are refused, not silently taken
        run(hub_dir, server, "--revision", "run-2")


def test_bad_pairs_are_quarantined_as_input_failures(hub_dir, stand_in):
    hub = LocalHub(hub_dir / "hub")
    pairs = hub.load_dataset("quickstart/pairs", split="train")

    def corrupt(row, i):
        if i == 0:
            row["image"] = {"bytes": b"not an image", "path": None}
        return row

    from datasets import Image

    broken = (
        pairs.cast_column("image", Image(decode=False)).map(corrupt, with_indices=True).cast_column("image", Image())
    )
    hub.push_dataset(broken, "quickstart/pairs")
    run(hub_dir, stand_in(faults=0), "--answer_pairs", "0")
    failures = hub.load_dataset("quickstart/candidates", "failures", split="train")
    assert failures["stage"] == ["input"] and failures["pair_id"] == [pairs[0]["id"]]
    assert "corrupt image" in failures["reason"][0]
    assert len(hub.load_dataset("quickstart/candidates", split="train")) == len(pairs) - 1


def test_shards_merge_into_the_same_dataset(hub_dir, tmp_path, stand_in):
    server = [*stand_in(faults=0.1), "--requests_per_minute", "60000"]  # retried faults change nothing
    assert run(hub_dir, server, "--shard", "0/2", "--answer_pairs", "0") == []
    assert run(hub_dir, server, "--shard", "1/2", "--answer_pairs", "0") == []
    files = sorted(p.name for p in (hub_dir / "journals").glob("*.jsonl"))
    assert files == ["journal-shard-00000-of-00002.jsonl", "journal-shard-00001-of-00002.jsonl"]
    lines = journal_lines(hub_dir)
    run(hub_dir, server, "--answer_pairs", "0")  # merges, sends nothing
    assert journal_lines(hub_dir) == lines
    hub = LocalHub(hub_dir / "hub")
    assert len(hub.load_dataset("quickstart/candidates", split="train")) == 15
    card = (hub.snapshot("quickstart/candidates", "main") / "README.md").read_text()
    assert "each of the 2 shards (--shard i/2) took 1/2 of it" in card


def test_a_merge_missing_a_shard_names_it_and_sends_nothing(hub_dir, stand_in):
    """The journals of shard 0 of 2 alone: the merge names shard 1 and sends none of its requests (sending them
    from here would pay twice, over budget, if that shard still runs elsewhere)."""
    server = stand_in(faults=0)
    assert run(hub_dir, server, "--shard", "0/2", "--answer_pairs", "0") == []
    sent = stand_in.servers[0].stats.requests
    with pytest.raises(RuntimeError, match=r"7 request\(s\) have no journaled result \(shard 1/2: 7, no "
                       r"journal-shard-00001-of-00002.jsonl here\)\. Run those shards"):  # fmt: skip
        run(hub_dir, server, "--answer_pairs", "0")
    assert stand_in.servers[0].stats.requests == sent  # the merge sent nothing
    with pytest.raises(HubError, match="not found"):  # nothing was pushed
        LocalHub(hub_dir / "hub").resolve("quickstart/candidates")


def test_each_generate_card_counts_only_its_own_resent_requests(hub_dir, stand_in):
    """Two candidate requests were in flight at a kill (marked sent, never journaled): the rerun resends them, and
    the candidates card says 2 were resent while the answer-pairs card, whose requests were all new, says none."""
    server = stand_in(faults=0)
    run(hub_dir, server, "--answer_pairs", "0")
    journal = hub_dir / "journals" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    lost = [json.loads(line)["key"] for line in lines[:2]]
    journal.write_text("".join(f"{line}\n" for line in lines[2:]))
    assert set(lost) <= set(journal.with_name("journal.jsonl.sent").read_text().split())
    pushed = run(hub_dir, server)  # with answer pairs this time

    hub = LocalHub(hub_dir / "hub")
    candidates_card = (hub.snapshot("quickstart/candidates", pushed[0].commit) / "README.md").read_text()
    pairs_card = (hub.snapshot("quickstart/answer-pairs", pushed[1].commit) / "README.md").read_text()
    assert "**2 request(s) were resent after a kill**" in candidates_card
    assert "No request was resent after a kill." in pairs_card and "resent after a kill**" not in pairs_card
    resent = [r for r in journal_lines(hub_dir) if r.get("resent_after_kill")]
    assert sorted(r["key"] for r in resent) == sorted(lost)


def test_the_api_key_never_reaches_outputs(hub_dir, capfd, monkeypatch, stand_in):
    secret = "sk-test-VERY-secret-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    run(hub_dir, stand_in(faults=0.2))
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    for path in hub_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


SCRIPT = """
import sys
from vital.runner import load_recipe
load_recipe("generate").cli(sys.argv[1:])
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(hub_dir, stand_in):
    args = ["--config", QUICKSTART, "--hub", f"local:{hub_dir}/hub", "--journal_dir", f"{hub_dir}/journals"]
    args += [*stand_in(latency_ms=400), "--concurrency", "2", "--answer_pairs", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    journal = hub_dir / "journals" / "journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {r["key"] for r in journal_lines(hub_dir)}
    assert 4 <= len(finished) < 15, "the kill must land mid-run"

    run(hub_dir, stand_in(faults=0), "--answer_pairs", "0")
    lines = journal_lines(hub_dir)
    keys = [r["key"] for r in lines]
    assert len(keys) == len(set(keys)) == 15  # no finished request was sent again
    candidates = LocalHub(hub_dir / "hub").load_dataset("quickstart/candidates", split="train")
    assert sorted(candidates["pair_id"]) == sorted(set(candidates["pair_id"])) and len(candidates) == 15
