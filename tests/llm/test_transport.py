"""The HTTP transport under the SDK (aiohttp by default when installed, httpx on request) and the journal's group
commit (one fsync per batch of appends, in a thread: the event loop never waits for the disk)."""

from __future__ import annotations

import gc
import json
import os
import threading
import time

import pytest

from vital.llm import ChatRequest, CompletionResult, EndpointConfig, Journal, run_sync
from vital.llm.client import RUN_GC_THRESHOLD0, AsyncLLMClient, fewer_young_collections, resolve_transport
from vital.testing.standin import StandInServer


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_both_transports_complete_requests(transport):
    with StandInServer() as server:
        config = EndpointConfig(
            provider="openai-compatible", model="m", base_url=server.base_url, http_transport=transport
        )
        results, stats = run_sync(config, [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(5)])
    assert stats.succeeded == 5 and all(r.text for r in results)


def test_auto_prefers_aiohttp_and_the_pool_keeps_every_connection():
    assert resolve_transport("auto") == "aiohttp"  # openai[aiohttp] is installed in the test environment
    config = EndpointConfig(provider="openai-compatible", model="m", base_url="http://127.0.0.1:9/v1", concurrency=300)
    client = AsyncLLMClient(config)
    assert client.transport == "aiohttp"
    assert type(client.sdk._client).__name__ == "_InstalledAioHttpClient"
    # The SDK's default pool keeps 100 idle connections; at concurrency 300 that would reopen connections all the time.
    assert client.sdk._client._transport.limits.max_connections >= 300
    with pytest.raises(ValueError, match="http_transport"):
        EndpointConfig(http_transport="curl")


def test_group_commit_syncs_batches_and_loses_no_append(tmp_path, monkeypatch):
    """With a slow disk (fsync takes 20 ms), 400 appends from four threads need far fewer fsyncs than appends, and
    every line is in the file (readable by another process) as soon as append returns."""
    real_fsync, calls = os.fsync, []

    def slow_fsync(fd):
        calls.append(fd)
        time.sleep(0.02)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    path = tmp_path / "j.jsonl"
    journal = Journal.open(path)

    def writer(tag: str) -> None:
        for i in range(100):
            journal.append(CompletionResult(key=f"{tag}-{i}", text="x"))
            lines = path.read_bytes().count(b"\n")  # what a killed process would leave behind
            assert lines >= i + 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    keys = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert sorted(keys) == sorted(f"{t}-{i}" for t in "abcd" for i in range(100))
    assert journal.fsyncs == len(calls) and len(calls) < 100, len(calls)


def _young_collections(allocations: int) -> int:
    """Young-generation collections while ``allocations`` small cyclic containers are made and dropped, a few
    hundred of them alive at a time (as in a request in flight)."""
    counts: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 0:
            counts.append(1)

    alive: list = []
    gc.callbacks.append(count)
    try:
        for i in range(allocations):
            node: dict = {"i": i}
            node["self"] = node
            alive.append(node)
            if len(alive) > 300:
                alive.pop(0)
    finally:
        gc.callbacks.remove(count)
    return len(counts)


def test_a_run_collects_the_young_generation_far_less_often_and_restores_the_thresholds():
    before = gc.get_threshold()
    default = _young_collections(60_000)
    with fewer_young_collections():
        assert gc.get_threshold() == (RUN_GC_THRESHOLD0, *before[1:])
        raised = _young_collections(60_000)
        with fewer_young_collections():  # nested, or a second run in the same process: the first one restores
            pass
        assert gc.get_threshold()[0] == RUN_GC_THRESHOLD0
    assert gc.get_threshold() == before
    assert default >= 50 and raised * 5 <= default, (default, raised)

    gc.set_threshold(50_000, *before[1:])  # never lowered
    try:
        with fewer_young_collections():
            assert gc.get_threshold()[0] == 50_000
        assert gc.get_threshold()[0] == 50_000
    finally:
        gc.set_threshold(*before)
    gc.disable()  # a disabled collector is left alone
    try:
        with fewer_young_collections():
            assert gc.get_threshold() == before and not gc.isenabled()
    finally:
        gc.enable()


def test_requests_run_under_the_raised_threshold(monkeypatch):
    seen: list[int] = []
    original = AsyncLLMClient._complete_safely

    async def recording(self, request, on_send=None):
        seen.append(gc.get_threshold()[0])
        return await original(self, request, on_send)

    monkeypatch.setattr(AsyncLLMClient, "_complete_safely", recording)
    before = gc.get_threshold()
    with StandInServer() as server:
        config = EndpointConfig(provider="openai-compatible", model="m", base_url=server.base_url)
        _, stats = run_sync(config, [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(3)])
    assert stats.succeeded == 3 and seen == [RUN_GC_THRESHOLD0] * 3
    assert gc.get_threshold() == before
