"""The HTTP transport under the SDK (aiohttp by default when installed, httpx on request), the request the SDK builds
(learnt once, sent as the SDK would send it), the journal's group commit (one fsync per batch of appends, in a thread:
the event loop never waits for the disk) and the collector's young generation during a run."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time

import httpx2
import openai
import pytest

from vital.llm import ChatRequest, CompletionResult, EndpointConfig, Journal, run_sync
from vital.llm.client import RUN_GC_THRESHOLD0, AsyncLLMClient, fewer_young_collections, resolve_transport
from vital.testing.standin import StandInServer


REPLY = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}

ENDPOINTS = {
    "openai-compatible": {
        "provider": "openai-compatible",
        "model": "gpt-4o",
        "base_url": "http://vllm.internal:8000/v1",
    },
    "azure": {
        "provider": "azure",
        "model": "my-deployment",
        "api_key_env": "AZURE_KEY_FOR_TEST",
        "azure_endpoint": "https://example-resource.openai.azure.com",
        "azure_deployment": "my-deployment",
        "azure_api_version": "2024-10-21",
    },
}


def _recording_client(handler, **kwargs) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler), **kwargs)


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


def test_group_commit_flushes_the_disk_at_most_once_per_interval(tmp_path, monkeypatch):
    """Appends arriving one per millisecond for half a second: with the shipped 50 ms interval about ten fsyncs, where
    an fsync per wake-up would make hundreds; every line is written when append returns and synced by close."""
    real_fsync, calls = os.fsync, []
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(time.monotonic()), real_fsync(fd)))

    def run(journal: Journal) -> int:
        calls.clear()
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < 0.5:
            journal.append(CompletionResult(key=f"k{i}", text="x"))
            assert journal.path.read_bytes().count(b"\n") == i + 1  # what a killed process would leave behind
            i += 1
            time.sleep(0.001)
        synced_while_running = len(calls)
        journal.close()
        assert len(Journal.open(journal.path).results()) == i
        return synced_while_running

    shipped = run(Journal.open(tmp_path / "shipped.jsonl"))
    assert 3 <= shipped <= 0.5 / 0.05 + 3, shipped
    every_wake_up = run(Journal.open(tmp_path / "eager.jsonl", commit_interval_s=0))
    assert every_wake_up >= 3 * shipped, (every_wake_up, shipped)
    with pytest.raises(ValueError, match="commit_interval_s"):
        Journal(tmp_path / "x.jsonl", commit_interval_s=-1)


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


# -- the request the SDK builds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_requests_are_the_ones_the_sdk_builds_and_the_sdk_builds_one(name, monkeypatch):
    """Every request carries the URL, headers and body that the SDK's own ``chat.completions.create`` sends for the
    same call, while the SDK builds a request once per client, not once per request."""
    monkeypatch.setenv("AZURE_KEY_FOR_TEST", "azure-secret-value")
    config = EndpointConfig(**ENDPOINTS[name], temperature=0.2, max_tokens=64, seed=7)
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=REPLY)

    posts = []
    original_post = openai.AsyncOpenAI.post

    async def counting_post(self, *args, **kwargs):
        posts.append(args[0])
        return await original_post(self, *args, **kwargs)

    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe the figure — an axial CT."}]}]

    async def main():
        async with _recording_client(handler) as http:
            client = AsyncLLMClient(config, http_client=http)
            await client.sdk.chat.completions.create(
                model=config.model, messages=messages, temperature=0.2, max_tokens=64, seed=7
            )
            monkeypatch.setattr(openai.AsyncOpenAI, "post", counting_post)
            return await client.run([ChatRequest(messages, key=f"k{i}") for i in range(20)], progress=False)

    results = asyncio.run(main())
    assert all(r.ok and r.text == "hi" for r in results)
    assert posts == ["/chat/completions"]  # learnt once, on a transport that sends nothing
    (sdk_request, *ours) = seen
    assert len(ours) == 20

    def headers(request: httpx2.Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k != "content-length"}

    for request in ours:
        assert (request.method, request.url) == (sdk_request.method, sdk_request.url)
        assert headers(request) == headers(sdk_request)
        assert json.loads(request.content) == json.loads(sdk_request.content)
        assert request.extensions["timeout"] == sdk_request.extensions["timeout"]
    assert b"\\u2014" not in ours[0].content and "—".encode() in ours[0].content  # UTF-8, as the SDK sends JSON
    if name == "azure":
        assert sdk_request.url.path == "/openai/deployments/my-deployment/chat/completions"
        assert sdk_request.headers["api-key"] == "azure-secret-value"
    else:
        assert sdk_request.headers["authorization"] == "Bearer EMPTY"


def test_azure_key_does_not_follow_a_redirect_to_another_origin(monkeypatch):
    """The SDK's Azure redirect hook still applies: the request carries the origin the hook checks, so a redirect to
    another host arrives there without the api-key, and one to the same host keeps it."""
    monkeypatch.setenv("AZURE_KEY_FOR_TEST", "azure-secret-value")
    config = EndpointConfig(**ENDPOINTS["azure"], max_retries=0)
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.host == "example-resource.openai.azure.com" and "moved" not in request.url.path:
            target = "https://elsewhere.example/v1/chat" if len(seen) == 1 else "/openai/moved"
            return httpx2.Response(307, headers={"Location": target})
        return httpx2.Response(200, json=REPLY)

    async def main():
        async with _recording_client(handler, follow_redirects=True) as http:
            client = AsyncLLMClient(config, http_client=http)
            return [await client.complete(ChatRequest([{"role": "user", "content": "q"}])) for _ in range(2)]

    results = asyncio.run(main())
    assert all(r.ok for r in results)
    assert [r.url.host for r in seen] == ["example-resource.openai.azure.com", "elsewhere.example"] + [
        "example-resource.openai.azure.com"
    ] * 2
    assert seen[0].headers["api-key"] == "azure-secret-value" and "api-key" not in seen[1].headers
    assert seen[3].headers["api-key"] == "azure-secret-value"  # the same origin keeps it


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": {"message": "Invalid image URL.", "type": "invalid_request_error"}},
            "http 400: Invalid image URL.",
        ),
        (
            502,
            "<html><body>502 Bad Gateway</body></html>",
            "http 502 after 1 attempt: <html><body>502 Bad Gateway</body></html>",
        ),
        (422, {"detail": "unknown field"}, 'http 422: {"detail":"unknown field"}'),
    ],
)
def test_an_error_reply_is_reported_with_what_it_says(status, body, expected):
    def handler(request: httpx2.Request) -> httpx2.Response:
        if isinstance(body, dict):
            return httpx2.Response(status, json=body)
        return httpx2.Response(status, text=body)

    config = EndpointConfig(**ENDPOINTS["openai-compatible"], max_retries=0)

    async def main():
        async with _recording_client(handler) as http:
            return await AsyncLLMClient(config, http_client=http).complete(
                ChatRequest([{"role": "user", "content": "q"}])
            )

    assert asyncio.run(main()).error == expected
