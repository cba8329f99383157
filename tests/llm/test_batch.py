"""Batch mode against the stand-in Batch API: the same journal and keys as online, file limits, injected faults
retried or quarantined, a run that finishes a batch's failures online, Azure's batch deployments, batch prices."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vital.llm import EndpointConfig
from vital.llm.batch import BatchConfig
from vital.llm.jobs import Job, run_jobs_sharded, sent_by
from vital.llm.journal import CompletionResult
from vital.llm.pricing import cost_usd
from vital.testing.serve import served
from vital.testing.standin import SampleResponder
from vital.testing.standin_batch import BatchStandInServer


N = 7
JOBS = [Job(key=f"{i:064x}", index=i, record_id=f"row-{i}", task="caption") for i in range(N)]
FAST = {"batch_poll_s": 0.02, "batch_poll_max_s": 0.1}


def build(job):
    return [{"role": "user", "content": f"Describe figure {job.record_id} in one line."}]


def responder():
    return SampleResponder({f"row-{i}": f"Figure {i}: a chest X-ray." for i in range(N)}, default="?")


def endpoint_for(server, **overrides):
    return EndpointConfig(
        provider="openai-compatible",
        model="gpt-4o",
        base_url=server.base_url,
        max_retries=overrides.pop("max_retries", 3),
        backoff_base_s=0.01,
        **overrides,
    )


def journal_lines(folder):
    return [json.loads(line) for p in sorted(Path(folder).glob("journal*.jsonl")) for line in p.open()]


def test_batch_mode_journals_the_same_keys_and_texts_as_online_at_half_the_cost(tmp_path):
    with BatchStandInServer(responder(), batch_delay_s=0.05) as server:
        endpoint = endpoint_for(server)
        online = run_jobs_sharded(JOBS, endpoint, build, tmp_path / "online")
        assert server.batch_stats.batches == 0 and server.stats.requests == N
        batch = run_jobs_sharded(
            JOBS, endpoint, build, tmp_path / "batch", batch=BatchConfig(mode="batch", batch_max_requests=3, **FAST)
        )
    assert server.stats.requests == N  # batch mode sent no online request
    assert server.batch_stats.batches == 3 and server.batch_stats.files == 3  # 3 + 3 + 1 requests per file
    assert set(server.batch_stats.submitted) == {job.key for job in JOBS}
    assert set(server.batch_stats.submitted.values()) == {1}
    assert server.batch_stats.urls == {"/v1/chat/completions": N} and server.batch_stats.models == {"gpt-4o": N}
    # `vital stand-in`'s last line counts both sides, not only the chat requests.
    assert served(server) == (
        f"chat requests by outcome: {{'ok': {N}}}; Batch API: 3 file(s) uploaded, 3 batch(es) created, "
        f"{N} request(s) submitted"
    )
    for job in JOBS:
        a, b = online[job.key], batch[job.key]
        assert a.ok and b.ok and a.text == b.text == f"Figure {job.index}: a chest X-ray."
        assert (a.prompt_tokens, a.completion_tokens) == (b.prompt_tokens, b.completion_tokens)
        assert a.cost_usd > 0 and b.cost_usd == pytest.approx(a.cost_usd / 2)
    assert sorted(line["key"] for line in journal_lines(tmp_path / "batch")) == sorted(job.key for job in JOBS)


def test_each_result_says_how_it_was_sent_and_a_mixed_run_is_counted_by_way(tmp_path):
    """A run can mix both ways (a batch finished online, or a journal from either): each journal line keeps how its
    request was sent, so a card counts requests and cost by the way they were actually sent, not by `--mode`."""
    half = JOBS[: N // 2]
    with BatchStandInServer(responder(), batch_delay_s=0.02) as server:
        endpoint = endpoint_for(server)
        run_jobs_sharded(half, endpoint, build, tmp_path, batch=BatchConfig(mode="batch", **FAST))
        online = run_jobs_sharded(JOBS, endpoint, build, tmp_path)  # the other half online, same journal
        assert server.stats.requests == N - len(half)
        again = run_jobs_sharded(JOBS, endpoint, build, tmp_path, batch=BatchConfig(mode="batch", **FAST))
        assert server.batch_stats.batches == 1  # the batch-mode rerun found everything journaled: no new batch
    assert {line["key"]: line["mode"] for line in journal_lines(tmp_path)} == {
        job.key: "batch" if job in half else "online" for job in JOBS
    }
    by_batch = sum(online[j.key].cost_usd for j in half)
    by_online = sum(online[j.key].cost_usd for j in JOBS if j not in half)
    assert by_batch > 0 and by_online > 0
    expected = f"{N - len(half)} online (${by_online:.4f}), {len(half)} through the Batch API (${by_batch:.4f})"
    assert sent_by(online.values()) == sent_by(again.values()) == expected
    # A journal line from before the way was recorded is counted apart, not guessed.
    old = CompletionResult.from_record({"key": "k", "text": "x", "cost_usd": 0.5})
    assert old.mode is None and sent_by([old]) == "1 journaled before the way was recorded ($0.5000)"
    assert sent_by([]) == "none"


def test_input_files_stay_within_the_byte_limit(tmp_path):
    with BatchStandInServer(responder(), batch_delay_s=0.01) as server:
        size = len(json.dumps({"custom_id": JOBS[0].key, "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "gpt-4o", "messages": build(JOBS[0]), "max_tokens": 1024}}))  # fmt: skip
        config = BatchConfig(mode="batch", batch_max_bytes=2 * size + 30, **FAST)
        results = run_jobs_sharded(JOBS, endpoint_for(server), build, tmp_path, batch=config)
    files = sorted((tmp_path / "batches" / "journal").glob("0*.jsonl"))
    assert [len(f.read_text().splitlines()) for f in files] == [2, 2, 2, 1]
    assert all(f.stat().st_size <= config.batch_max_bytes for f in files)
    assert all(r.ok for r in results.values()) and server.batch_stats.batches == 4


def test_a_request_bigger_than_a_file_names_its_record(tmp_path):
    with BatchStandInServer(responder()) as server:
        with pytest.raises(ValueError, match="caption row-0 .*over batch_max_bytes=100"):
            run_jobs_sharded(JOBS, endpoint_for(server), build, tmp_path, batch=BatchConfig("batch", 10, 100, **FAST))
        assert server.batch_stats.files == 0


@pytest.mark.parametrize(
    ("fault", "resent"),
    [("failed", 3), ("expired", 2), ("cancelled", 2), ("malformed", 1), ("request_error", 1)],  # of the first 3
)
def test_batch_faults_are_journaled_and_sent_again(tmp_path, fault, resent):
    with BatchStandInServer(responder(), batch_delay_s=0.02, batch_script=[fault], poll_500=2) as server:
        config = BatchConfig(mode="batch", batch_max_requests=3, **FAST)
        results = run_jobs_sharded(JOBS, endpoint_for(server), build, tmp_path, batch=config)
    assert all(r.ok and r.text == f"Figure {JOBS[i].index}: a chest X-ray." for i, r in enumerate(results.values()))
    submitted = server.batch_stats.submitted
    assert sorted(submitted.values()) == [1] * (N - resent) + [2] * resent
    assert all(submitted[job.key] == 1 for job in JOBS[3:])  # later batches were fine
    lines = journal_lines(tmp_path)
    failures = [line for line in lines if line["error"]]
    assert len(failures) == resent and all(results[f["key"]].attempts == 2 for f in failures)
    expected = {"failed": "batch failed", "expired": "batch expired", "cancelled": "batch cancelled"}
    expected["malformed"] = "batch completed"
    assert {f["error"].split(":")[0] for f in failures} == {expected.get(fault, "http 500")}
    assert Counter(line["key"] for line in lines if not line["error"]) == Counter(job.key for job in JOBS)
    assert server.batch_stats.retrievals >= 2 + 4  # two polls answered 500, then every batch polled


def test_failures_past_the_retries_are_returned_and_an_online_run_finishes_them(tmp_path):
    with BatchStandInServer(responder(), batch_delay_s=0.02, batch_script=["failed"]) as server:
        endpoint = endpoint_for(server, max_retries=0)
        config = BatchConfig(mode="batch", batch_max_requests=3, **FAST)
        results = run_jobs_sharded(JOBS, endpoint, build, tmp_path, batch=config)
        failed = [key for key, r in results.items() if not r.ok]
        assert failed == [job.key for job in JOBS[:3]]
        assert all(results[k].error.startswith("batch failed: stand-in: the batch failed") for k in failed)
        assert server.stats.requests == 0
        online = run_jobs_sharded(JOBS, endpoint, build, tmp_path)  # the same journal, online
    assert all(r.ok for r in online.values())
    assert server.stats.requests == 3  # only the batch's failures were sent online
    assert sum(server.batch_stats.submitted.values()) == N


def test_azure_batch_deployment(tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_TEST_KEY", "not-a-real-key")
    with BatchStandInServer(responder(), batch_delay_s=0.02) as server:
        endpoint = EndpointConfig(
            provider="azure",
            model="gpt-4o",
            azure_endpoint=server.url,
            azure_api_version="2024-10-21",
            azure_deployment="gpt-4o-batch",
            api_key_env="AZURE_TEST_KEY",
        )
        results = run_jobs_sharded(JOBS, endpoint, build, tmp_path, batch=BatchConfig(mode="batch", **FAST))
    assert all(r.ok for r in results.values())
    assert server.batch_stats.models == {"gpt-4o-batch": N}  # the batch deployment answers
    assert server.batch_stats.urls == {"/chat/completions": N}
    assert set(server.batch_stats.api_versions) == {"2024-10-21"}
    assert all(r.cost_usd == pytest.approx(cost_usd(r.prompt_tokens, r.completion_tokens, model="gpt-4o", batch=True))
               for r in results.values())  # fmt: skip


def test_batch_prices():
    assert cost_usd(1_000_000, 1_000_000, model="gpt-4o", batch=True) == pytest.approx((2.50 + 10.00) / 2)
    assert cost_usd(1_000_000, 0, model="gpt-4o-mini-2024-07-18", batch=True) == pytest.approx(0.075)
    table = {"m": {"prompt": 1.0, "completion": 2.0, "batch_prompt": 0.9, "batch_completion": 1.5}}
    assert cost_usd(1_000_000, 1_000_000, model="m", prices=table, batch=True) == pytest.approx(2.4)
    assert cost_usd(1_000_000, 1_000_000, model="m", prices=table) == pytest.approx(3.0)
