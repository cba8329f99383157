"""A batch run SIGKILLed at each point (before upload, after upload, after batch creation, while polling, while
merging) resumes from its intent log: the server counts every request submitted exactly once, and the journal holds
every result exactly once.

The run is a subprocess that kills itself at the chosen point: the script wraps the OpenAI SDK's calls (and the
journal's append) there, so the production code carries no hook of its own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from vital.testing.standin_batch import BatchStandInServer


N = 7
# Where the run dies: (the class whose method is wrapped, the method, before or after the call returns).
KILL_POINTS = {
    "before_upload": ("openai.resources.files:Files", "create", "before"),
    "after_upload": ("openai.resources.files:Files", "create", "after"),
    "after_create": ("openai.resources.batches:Batches", "create", "after"),
    "polling": ("openai.resources.batches:Batches", "retrieve", "after"),
    "merging": ("vital.llm.journal:Journal", "append", "after"),  # after the first result merged
}
SCRIPT = textwrap.dedent(
    """
    import importlib, json, os, signal, sys
    from vital.llm import EndpointConfig
    from vital.llm.batch import BatchConfig, run_batch_jobs
    from vital.llm.jobs import Job

    base_url, journal, kill = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if kill:
        where, name, when = kill
        module, cls = where.split(":")
        owner = getattr(importlib.import_module(module), cls)
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
            return out

        setattr(owner, name, wrapped)
    jobs = [Job(key=f"{i:064x}", index=i, record_id=f"row-{i}", task="caption") for i in range(7)]
    endpoint = EndpointConfig(provider="openai-compatible", model="gpt-4o", base_url=base_url)
    config = BatchConfig(mode="batch", batch_max_requests=3, batch_poll_s=0.02, batch_poll_max_s=0.1)
    build = lambda job: [{"role": "user", "content": f"Describe figure {job.record_id}."}]
    run_batch_jobs(jobs, endpoint, build, journal, config)
    """
)


def run(base_url, journal, kill_at=None):
    kill = json.dumps(KILL_POINTS[kill_at] if kill_at else None)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, base_url, str(journal), kill], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_batch_run_killed_at_any_point_submits_each_request_once(tmp_path, point):
    journal = tmp_path / "journal.jsonl"
    with BatchStandInServer(default_reply(), batch_delay_s=0.05) as server:
        killed = run(server.base_url, journal, kill_at=point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        before = sum(server.batch_stats.submitted.values())
        merged_before = sum(1 for _ in journal.open()) if journal.exists() else 0
        resumed = run(server.base_url, journal)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    stats = server.batch_stats
    keys = {f"{i:064x}" for i in range(N)}
    assert set(stats.submitted) == keys and set(stats.submitted.values()) == {1}  # each submitted exactly once
    assert stats.batches == 3 and stats.files == 3  # no batch created twice, no file uploaded twice
    lines = [json.loads(line) for line in journal.open()]
    assert Counter(line["key"] for line in lines) == Counter(keys) and all(line["error"] is None for line in lines)
    if point in ("before_upload", "after_upload"):
        assert before == 0  # no batch existed when the process died
    elif point == "after_create":
        assert before == 3  # the first batch was on the server when the process died
    elif point in ("polling", "merging"):
        assert before == N  # every batch was on the server when the process died
    if point == "merging":
        assert merged_before == 1  # one result was in the journal; the rerun merged the rest and not it again
    else:
        assert merged_before == 0
    if point in ("before_upload", "after_upload", "after_create"):
        assert stats.lists >= 1  # the resumed run looked its file or batch up instead of sending it again


def default_reply():
    from vital.testing.standin import SampleResponder

    return SampleResponder({}, default="A stand-in caption.")
