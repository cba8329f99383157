"""Generate and rate with `--mode batch` on the quickstart, through the stand-in Batch API: the same rows as online,
the judge's re-asks as a second batch round, the mode on the cards, and an online rerun that sends nothing."""

import json
from pathlib import Path

import pytest

from vital.data.schemas import qa_turns
from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.testing.serve import running_stand_in, stage_args


@pytest.fixture(scope="module")
def server():
    """The stand-in (chat and Batch API, batches answered after 0.2 s) with the quickstart's online faults."""
    with running_stand_in(faults=0.1, latency_ms=20, batch_delay_s=0.2) as server:
        yield server


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-mode")
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", f"local:{root}/hub"])
    return root


def generate(root, journals, server, *extra):
    args = ["--config", "recipes/quickstart/generate.yaml", "--hub", f"local:{root}/hub", "--journal_dir",
            str(journals), "--answer_pairs", "2", *stage_args(server)]  # fmt: skip
    return load_recipe("generate").cli([*args, *extra])


def journal_lines(folder):
    return [json.loads(line) for p in sorted(Path(folder).glob("journal*.jsonl")) for line in p.open()]


def batch_log(folder):
    return [json.loads(line) for p in Path(folder).glob("batches/*/batches.jsonl") for line in p.open()]


@pytest.fixture(scope="module")
def generated(root, server):
    pushed = generate(root, root / "gen-batch", server, "--mode", "batch")
    return pushed, root / "gen-batch"


@pytest.mark.slow
def test_generate_in_batch_mode_matches_online_and_a_rerun_sends_nothing(root, generated, server):
    (candidates, pairs), journals = generated
    hub = LocalHub(root / "hub")
    rows = hub.load_dataset("quickstart/candidates", split="train", revision=candidates.commit)
    lines = journal_lines(journals)
    assert len(rows) == 15 and all(line["error"] is None for line in lines) and len(lines) == 15 + 2
    assert {e["event"] for e in batch_log(journals)} >= {"uploaded", "created", "merged"}

    def card(repo, commit):
        return (hub.snapshot(repo, commit) / "README.md").read_text()

    # Each card counts its own requests, by how they were sent (15 conversations, 2 answer pairs).
    assert "| requests | 15: 15 through the Batch API ($" in card("quickstart/candidates", candidates.commit)
    # No failures: the card's snippet does not load a failures config that is not there.
    assert '"failures"' not in card("quickstart/candidates", candidates.commit)
    assert "**Requests:** 2: 2 through the Batch API ($" in card("quickstart/answer-pairs", pairs.commit)
    # Online over another journal: the same conversations (the stand-in answers deterministically).
    (online, _) = generate(root, root / "gen-online", server)
    online_rows = hub.load_dataset("quickstart/candidates", split="train", revision=online.commit)
    assert online_rows["messages"] == rows["messages"]
    assert "| requests | 15: 15 online ($" in card("quickstart/candidates", online.commit)
    # Online over the batch journal: every request is answered from the journal, nothing is appended, and the card
    # still says they went through the Batch API.
    (again, _) = generate(root, journals, server)
    assert journal_lines(journals) == lines
    assert "| requests | 15: 15 through the Batch API ($" in card("quickstart/candidates", again.commit)
    # Batch mode over the online journal sends nothing through the Batch API: the card says online, as it was paid.
    (rerun, _) = generate(root, root / "gen-online", server, "--mode", "batch")
    text = card("quickstart/candidates", rerun.commit)
    assert "| requests | 15: 15 online ($" in text and "through the Batch API" not in text


@pytest.mark.slow
def test_rate_in_batch_mode_rates_every_turn_with_reasks_as_a_second_round(root, generated, server):
    (candidates, _), _ = generated
    journals = root / "rate-batch"
    args = ["--config", "recipes/quickstart/rate.yaml", "--hub", f"local:{root}/hub", "--journal_dir", str(journals),
            "--candidates_revision", candidates.commit, "--mode", "batch", *stage_args(server)]  # fmt: skip
    (pushed,) = load_recipe("rate").cli(args)
    hub = LocalHub(root / "hub")
    rows = hub.load_dataset("quickstart/candidates", split="train", revision=candidates.commit)
    ratings = hub.load_dataset("quickstart/ratings", split="train", revision=pushed.commit)
    assert len(ratings) == sum(len(qa_turns(m)) for m in rows["messages"])
    assert all(s is not None and 0 <= s <= 10 for s in ratings["score"])
    assert any(a == 2 for a in ratings["judge_attempts"])  # a reply without a score was asked again ...
    created = [e for e in batch_log(journals) if e["event"] == "created"]
    assert len(created) == 2  # ... in a second batch, after the first one was merged
    readme = (hub.snapshot("quickstart/ratings", pushed.commit) / "README.md").read_text()
    assert f"| requests | {len(journal_lines(journals))} through the Batch API ($" in readme  # re-asks included
