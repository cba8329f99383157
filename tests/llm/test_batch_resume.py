"""A batch run SIGKILLed at each point (before upload, after upload, after batch creation, while polling, while
merging) resumes from its intent log: the server counts every request submitted exactly once, and the journal holds
every result exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from vital.llm.batch import KILL_ENV, KILL_POINTS
from vital.testing.standin_batch import BatchStandInServer


N = 7
SCRIPT = textwrap.dedent(
    """
    import sys
    from vital.llm import EndpointConfig
    from vital.llm.batch import BatchConfig, run_batch_jobs
    from vital.llm.jobs import Job

    base_url, journal = sys.argv[1], sys.argv[2]
    jobs = [Job(key=f"{i:064x}", index=i, record_id=f"row-{i}", task="caption") for i in range(7)]
    endpoint = EndpointConfig(provider="openai-compatible", model="gpt-4o", base_url=base_url)
    config = BatchConfig(mode="batch", batch_max_requests=3, batch_poll_s=0.02, batch_poll_max_s=0.1)
    build = lambda job: [{"role": "user", "content": f"Describe figure {job.record_id}."}]
    run_batch_jobs(jobs, endpoint, build, journal, config)
    """
)


def run(base_url, journal, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, base_url, str(journal)], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_batch_run_killed_at_any_point_submits_each_request_once(tmp_path, point):
    journal = tmp_path / "journal.jsonl"
    with BatchStandInServer(default_reply(), batch_delay_s=0.05) as server:
        killed = run(server.base_url, journal, kill_at=point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        before = sum(server.batch_stats.submitted.values())
        resumed = run(server.base_url, journal)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    stats = server.batch_stats
    keys = {f"{i:064x}" for i in range(N)}
    assert set(stats.submitted) == keys and set(stats.submitted.values()) == {1}  # each submitted exactly once
    assert stats.batches == 3 and stats.files == 3  # no batch created twice, no file uploaded twice
    lines = [json.loads(line) for line in journal.open()]
    assert Counter(line["key"] for line in lines) == Counter(keys) and all(line["error"] is None for line in lines)
    if point == "before_upload":
        assert before == 0
    elif point == "after_create":
        assert before == 3  # the first batch was on the server when the process died
    elif point in ("polling", "merging"):
        assert before == N  # every batch was on the server when the process died
    if point in ("after_upload", "after_create"):
        assert stats.lists >= 1  # the resumed run looked its file or batch up instead of sending it again


def default_reply():
    from vital.testing.standin import SampleResponder

    return SampleResponder({}, default="A stand-in caption.")
