"""Tests for vital.llm.client against the stand-in server: retries, limits, journal resume, Azure wiring, secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import httpx2
import openai
import pytest
from PIL import Image

from vital.llm import (
    AsyncLLMClient,
    ChatRequest,
    CompletionResult,
    EndpointConfig,
    EndpointError,
    Journal,
    image_to_data_url,
    request_key,
    run_sync,
)
from vital.llm.client import failure_category
from vital.llm.limits import retry_after_seconds
from vital.llm.pricing import cost_usd
from vital.testing.standin import REFUSAL_TEXT, STAND_IN_MODEL, SampleResponder, StandInServer


PRICES = {"gpt-4o": {"prompt": 2.5, "completion": 10.0}}


def endpoint(server: StandInServer, **overrides) -> EndpointConfig:
    """A stand-in endpoint with fast backoff, so retries cost milliseconds."""
    settings = {
        "provider": "openai-compatible",
        "model": "gpt-4o",
        "base_url": server.base_url,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 5.0,
        "max_retries": 3,
        "concurrency": 8,
        "prices": PRICES,
    } | overrides
    return EndpointConfig(**settings)


def ask(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], params=params)


def complete_one(config: EndpointConfig, request: ChatRequest) -> CompletionResult:
    async def main() -> CompletionResult:
        async with AsyncLLMClient(config) as client:
            return await client.complete(request)

    return asyncio.run(main())


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps in any half-open window [t, t + window)."""
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- one request -------------------------------------------------------------------------------------------------------


def test_success_reports_text_tokens_cost_and_model():
    responder = SampleResponder({"fig-7": "A chest X-ray with a left lower lobe opacity."}, default="nothing")
    with StandInServer(responder) as server:
        result = complete_one(endpoint(server), ask("Describe fig-7, please."))
    assert result.ok and result.error is None
    assert result.text == "A chest X-ray with a left lower lobe opacity."
    assert result.finish_reason == "stop"
    assert result.model == STAND_IN_MODEL and result.system_fingerprint == STAND_IN_MODEL
    # The stand-in counts ceil(chars / 4) tokens: 23 prompt characters, 46 reply characters.
    assert (result.prompt_tokens, result.completion_tokens) == (6, 12)
    assert result.cost_usd == pytest.approx((6 * 2.5 + 12 * 10.0) / 1e6)
    assert result.attempts == 1 and result.latency_s > 0
    assert server.stats.requests == 1 and server.stats.outcomes["ok"] == 1


def test_429_waits_for_retry_after_then_succeeds():
    with StandInServer(fault_script=["429"], retry_after_s=0.6) as server:
        result = complete_one(endpoint(server), ask("rate limited once"))
        arrivals = server.stats.arrivals
    assert result.ok and result.attempts == 2
    assert server.stats.outcomes == Counter({"429": 1, "ok": 1})
    assert arrivals[1] - arrivals[0] >= 0.55  # honoured retry-after-ms (600), not the 10 ms backoff
    assert arrivals[1] - arrivals[0] < 5


@pytest.mark.parametrize("fault", ["500", "503", "timeout", "malformed_json", "malformed_schema"])
def test_retryable_fault_then_success(fault):
    with StandInServer(SampleResponder(default="fine"), fault_script=[fault], timeout_hold_s=5, retry_after_s=0) as s:
        result = complete_one(endpoint(s, timeout_s=0.5), ask(f"first attempt gets {fault}"))
    assert result.ok, result.error
    assert result.text == "fine" and result.attempts == 2
    assert s.stats.outcomes == Counter({fault: 1, "ok": 1})
    if fault == "timeout":
        assert result.elapsed_s >= 0.45


@pytest.mark.parametrize("status", ["400"])
def test_client_error_is_not_retried(status):
    with StandInServer(fault_script=[status]) as server:
        result = complete_one(endpoint(server), ask("a bad request"))
    assert not result.ok and result.attempts == 1
    assert result.error.startswith(f"http {status}: ")
    assert failure_category(result.error) == f"http {status}"
    assert server.stats.requests == 1


def test_retry_bound_reached_records_the_reason():
    with StandInServer(fault_script=["500"] * 10) as server:
        results, stats = run_sync(endpoint(server, max_retries=2), [ask("always failing")], progress=False)
    (result,) = results
    assert result.error == "http 500 after 3 attempts: stand-in: Internal Server Error"
    assert result.attempts == 3 and server.stats.requests == 3
    assert (stats.succeeded, stats.failed, stats.retried, stats.retries) == (0, 1, 1, 2)
    assert stats.failure_reasons == Counter({"http 500": 1})


def test_persistent_timeouts_fail_with_timeout_reason():
    with StandInServer(fault_script=["timeout"] * 5, timeout_hold_s=5) as server:
        result = complete_one(endpoint(server, timeout_s=0.3, max_retries=1), ask("slow"))
    assert result.error == "timeout after 2 attempts"
    assert failure_category(result.error) == "timeout"


def test_connection_refused_is_a_failure_not_an_exception():
    server = StandInServer().start()
    config = endpoint(server, max_retries=1)
    server.stop()
    result = complete_one(config, ask("nobody home"))
    assert result.error.startswith("connection error after 2 attempts")


def test_refusal_is_reported():
    with StandInServer(fault_script=["refusal"], refusal_field=True) as server:
        result = complete_one(endpoint(server), ask("something unsafe"))
    assert result.ok and result.refusal == REFUSAL_TEXT and result.text == ""


def test_images_are_sent_as_data_urls():
    seen = []

    def responder(request_json):
        seen.append(request_json["messages"][0]["content"][1]["image_url"]["url"])
        return "an image"

    url = image_to_data_url(Image.new("RGB", (8, 8), (200, 10, 10)))
    message = {
        "role": "user",
        "content": [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}],
    }
    with StandInServer(responder) as server:
        result = complete_one(endpoint(server), ChatRequest(messages=[message]))
    assert result.text == "an image" and seen == [url]
    assert url.startswith("data:image/png;base64,")
    assert result.prompt_tokens == 3 + 85  # text + the stand-in's per-image count


# -- limits ------------------------------------------------------------------------------------------------------------


def test_concurrency_bound_is_respected():
    with StandInServer(latency_ms=100) as server:
        results, stats = run_sync(endpoint(server, concurrency=4), [ask(f"q{i}") for i in range(24)], progress=False)
        peak = server.stats.max_in_flight
    assert stats.succeeded == 24
    assert 2 <= peak <= 4


def test_requests_per_minute_budget_paces_requests():
    rpm = 120  # one request every 0.5 s
    with StandInServer() as server:
        results, stats = run_sync(
            endpoint(server, requests_per_minute=rpm), [ask(f"q{i}") for i in range(7)], progress=False
        )
        arrivals = sorted(server.stats.arrivals)
    assert stats.succeeded == 7
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # Sent every 0.5 s; arrivals jitter by a few ms (the first also opens the connection, a few tens of ms).
    assert min(gaps) >= 0.35 and sum(gaps[1:]) / len(gaps[1:]) >= 0.49, gaps
    # No window holds more than its share of the budget (windows shortened by 10% for that jitter).
    for window in (0.5, 1.0, 2.0, 3.0):
        assert max_in_window(arrivals, window * 0.9) <= rpm * window / 60
    assert arrivals[-1] - arrivals[0] < 3 + 2  # and not much slower than it either


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_seconds({"retry-after": date}) <= 31


# -- many requests -----------------------------------------------------------------------------------------------------


def test_mixed_faults_every_request_succeeds_or_fails_with_a_reason(tmp_path):
    with StandInServer(
        SampleResponder(default="ok"),
        latency_ms=5,
        fault_429=0.10,
        fault_500=0.05,
        fault_timeout=0.02,
        fault_malformed=0.02,
        retry_after_s=0.05,
        timeout_hold_s=2,
        seed=7,
    ) as server:
        config = endpoint(server, concurrency=16, timeout_s=1.0, max_retries=4)
        requests = [ask(f"item {i}") for i in range(200)]
        results, stats = run_sync(config, requests, journal=tmp_path / "j.jsonl", progress=False)
        outcomes = server.stats.outcomes
    assert len(results) == 200
    assert all(
        r.ok or failure_category(r.error) in {"http 429", "http 500", "timeout", "malformed reply"} for r in results
    )
    assert all(r.text == "ok" for r in results if r.ok)
    assert stats.succeeded + stats.failed == 200 and stats.succeeded >= 195
    # Every attempt the server saw is counted by the client; on a loaded machine a client timeout can also fire
    # before the server has read the request, so the client may count a few attempts the server never saw.
    attempts = sum(r.attempts for r in results)
    assert server.stats.requests == sum(outcomes.values()) and 0 <= attempts - server.stats.requests <= 5
    assert outcomes["429"] > 0 and outcomes["500"] > 0 and outcomes["timeout"] > 0
    assert stats.retried > 0 and stats.retries == attempts - 200
    assert len(Journal.open(tmp_path / "j.jsonl")) == 200


def test_duplicate_requests_are_sent_once():
    with StandInServer() as server:
        results, stats = run_sync(endpoint(server), [ask("same"), ask("other"), ask("same")], progress=False)
    assert server.stats.requests == 2
    assert results[0] is results[2] and results[0].key != results[1].key


def test_requests_from_a_generator_are_consumed_as_capacity_frees():
    lag = []

    def generate(client):
        for i in range(100):
            finished = client.last_run_stats.succeeded
            lag.append(i - finished)  # requests created but not yet finished
            yield ask(f"lazy {i}")

    async def main(server):
        async with AsyncLLMClient(endpoint(server, concurrency=4)) as client:
            return await client.run(generate(client), progress=False)

    with StandInServer(latency_ms=5) as server:
        results = asyncio.run(main(server))
    assert len(results) == 100 and all(r.ok for r in results)
    assert max(lag) <= 20  # the window, max(2 * concurrency, concurrency + 16): never the whole input


def test_rerun_skips_journaled_requests_and_retries_failures(tmp_path):
    journal = tmp_path / "j.jsonl"
    with StandInServer() as server:
        config = endpoint(server)
        requests = [ask(f"q{i}") for i in range(5)]
        # Pretend an earlier run failed q0 for good.
        with Journal.open(journal) as j:
            j.append(
                CompletionResult(key=AsyncLLMClient(config).key_for(requests[0]), error="http 500 after 4 attempts")
            )
        first, _ = run_sync(config, requests, journal=journal, progress=False)
        assert server.stats.requests == 5
        second, stats = run_sync(config, requests, journal=journal, progress=False)
        assert server.stats.requests == 5  # nothing re-sent
    assert stats.resumed == 5 and stats.succeeded == 0
    assert [r.text for r in second] == [r.text for r in first] and all(r.ok for r in second)


KILLED_RUN = textwrap.dedent(
    """
    import sys
    from vital.llm import ChatRequest, EndpointConfig, run_sync
    base_url, journal = sys.argv[1], sys.argv[2]
    config = EndpointConfig(provider="openai-compatible", model="gpt-4o", base_url=base_url, concurrency=4)
    requests = [ChatRequest(messages=[{"role": "user", "content": f"item {i}"}]) for i in range(50)]
    run_sync(config, requests, journal=journal, progress=False)
    """
)


def test_killed_run_resumes_with_nothing_lost_or_redone(tmp_path):
    journal = tmp_path / "run.jsonl"
    with StandInServer(SampleResponder(default="reply"), latency_ms=150) as server:
        process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, server.base_url, str(journal)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 10:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        before = Journal.open(journal)
        finished_before = set(before.keys())
        before.close()
        assert 10 <= len(finished_before) < 50

        config = EndpointConfig(provider="openai-compatible", model="gpt-4o", base_url=server.base_url, concurrency=4)
        requests = [ask(f"item {i}") for i in range(50)]
        results, stats = run_sync(config, requests, journal=journal, progress=False)
        sent = server.stats.prompts

    assert all(r.ok and r.text == "reply" for r in results)
    assert stats.resumed == len(finished_before) and stats.succeeded == 50 - len(finished_before)
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(Counter(line["key"] for line in lines).values()) == [1] * 50  # every key exactly once
    for request, result in zip(requests, results):
        text = request.messages[0]["content"]
        if result.key in finished_before:
            assert sent[text] == 1, text  # a finished request is never sent again
    # Only the requests in flight at the kill were sent twice.
    assert sum(sent.values()) - 50 <= 4


def test_cancelled_run_keeps_what_finished(tmp_path):
    journal_path = tmp_path / "run.jsonl"

    async def cancel_midway(server):
        config = endpoint(server, concurrency=4)
        async with AsyncLLMClient(config) as client:
            with Journal.open(journal_path) as journal:
                task = asyncio.create_task(
                    client.run([ask(f"c{i}") for i in range(40)], journal=journal, progress=False)
                )
                while len(journal) < 10:
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                return len(journal)

    with StandInServer(latency_ms=50) as server:
        done = asyncio.run(cancel_midway(server))
        assert 10 <= done < 40
        results, stats = run_sync(
            endpoint(server, concurrency=4), [ask(f"c{i}") for i in range(40)], journal=journal_path, progress=False
        )
    assert stats.resumed == done and all(r.ok for r in results)
    assert len(journal_path.read_text().splitlines()) == 40


def test_client_is_reusable_across_event_loops():
    with StandInServer() as server:
        client = AsyncLLMClient(endpoint(server))
        first = asyncio.run(client.run([ask("a")], progress=False))
        second = asyncio.run(client.run([ask("b")], progress=False))
    assert first[0].ok and second[0].ok


# -- Azure, keys, secrecy ----------------------------------------------------------------------------------------------


def test_azure_config_builds_the_deployment_url(monkeypatch):
    monkeypatch.setenv("AZURE_KEY_FOR_TEST", "azure-secret-value")
    captured = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        captured.append(request)
        body = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
        }
        return httpx2.Response(200, json=body)

    config = EndpointConfig(
        provider="azure",
        model="my-deployment",
        api_key_env="AZURE_KEY_FOR_TEST",
        azure_endpoint="https://example-resource.openai.azure.com",
        azure_deployment="my-deployment",
        azure_api_version="2024-10-21",
    )

    async def main():
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            client = AsyncLLMClient(config, http_client=http)
            assert isinstance(client.sdk, openai.AsyncAzureOpenAI)
            assert client.sdk.max_retries == 0
            return await client.complete(ask("hello"))

    result = asyncio.run(main())
    (request,) = captured
    assert request.url.host == "example-resource.openai.azure.com"
    assert request.url.path == "/openai/deployments/my-deployment/chat/completions"
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == "azure-secret-value"
    # Priced by the model the server reports, since the deployment name is in no table.
    assert result.text == "hi" and result.cost_usd == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1e6)


def test_missing_key_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        AsyncLLMClient(EndpointConfig(provider="openai", api_key_env="NO_SUCH_KEY_VAR"))


def test_api_key_never_reaches_journal_results_or_logs(tmp_path, monkeypatch, caplog, capsys):
    secret = "sk-test-" + "Z9" * 20
    monkeypatch.setenv("VITAL_TEST_API_KEY", secret)
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx2's included
    with StandInServer(fault_script=["429", "500"], retry_after_s=0) as server:
        config = endpoint(server, api_key_env="VITAL_TEST_API_KEY", max_retries=2)
        results, stats = run_sync(config, [ask(f"q{i}") for i in range(6)], journal=tmp_path / "j.jsonl")
    assert stats.succeeded == 6

    # A 401 whose body quotes the key (as OpenAI's does, partly masked) is scrubbed from the error.
    requests_seen = []

    def handler(request):
        requests_seen.append(request)
        return httpx2.Response(
            401, json={"error": {"message": f"Incorrect API key provided: {secret}.", "code": "invalid_api_key"}}
        )

    async def unauthorised():
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            client = AsyncLLMClient(endpoint(server, api_key_env="VITAL_TEST_API_KEY"), http_client=http)
            with pytest.raises(EndpointError, match="http 401"):
                await client.run([ask(f"x{i}") for i in range(50)], journal=tmp_path / "j.jsonl", progress=False)
            return client.last_run_stats

    stats = asyncio.run(unauthorised())
    assert stats.failure_reasons["http 401"] >= 1 and stats.succeeded == 0 and len(requests_seen) < 50
    denied = [r for r in Journal.open(tmp_path / "j.jsonl").results().values() if not r.ok]
    assert denied and all(r.error.startswith("http 401: ") and r.attempts == 1 for r in denied)
    captured = capsys.readouterr()
    haystacks = {
        "journal": (tmp_path / "j.jsonl").read_bytes(),
        "results": repr(results + denied).encode(),
        "logs": caplog.text.encode(),
        "stdout": captured.out.encode(),
        "stderr": captured.err.encode(),
    }
    for name, haystack in haystacks.items():
        assert secret.encode() not in haystack, name
        assert b"Z9Z9Z9" not in haystack, name


# -- keys, config, prices ----------------------------------------------------------------------------------------------


def test_request_key_is_stable_and_order_independent():
    image_a = image_to_data_url(Image.new("RGB", (4, 4), (0, 0, 0)))
    image_b = image_to_data_url(Image.new("RGB", (4, 4), (255, 255, 255)))

    def message(url):
        return [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ]

    key = request_key("gpt-4o", message(image_a), {"temperature": 0.2, "max_tokens": 10})
    assert key == request_key("gpt-4o", message(image_a), {"max_tokens": 10, "temperature": 0.2, "seed": None})
    assert len(key) == 64 and int(key, 16) >= 0
    assert key != request_key("gpt-4o", message(image_b), {"temperature": 0.2, "max_tokens": 10})
    assert key != request_key("gpt-4o-mini", message(image_a), {"temperature": 0.2, "max_tokens": 10})
    assert key != request_key("gpt-4o", message(image_a), {"temperature": 0.3, "max_tokens": 10})
    assert key != request_key("gpt-4o", message(image_a), {"temperature": 0.2, "max_tokens": 10}, extra="v2")
    reordered = [{"content": message(image_a)[0]["content"], "role": "user"}]
    assert key == request_key("gpt-4o", reordered, {"temperature": 0.2, "max_tokens": 10})


def test_image_to_data_url_round_trips():
    import base64
    import io

    image = Image.new("RGBA", (5, 3), (1, 2, 3, 255))
    url = image_to_data_url(image, format="JPEG")
    assert url.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (5, 3) and decoded.mode == "RGB"
    png = Image.open(io.BytesIO(base64.b64decode(image_to_data_url(image).split(",", 1)[1])))
    assert png.tobytes() == image.tobytes()


def test_endpoint_config_validates_and_parses_from_the_command_line(tmp_path):
    from transformers import HfArgumentParser

    with pytest.raises(ValueError, match="max_retries"):
        EndpointConfig(max_retries=1000)
    with pytest.raises(ValueError, match="base_url"):
        EndpointConfig(provider="openai-compatible")
    with pytest.raises(ValueError, match="azure_endpoint"):
        EndpointConfig(provider="azure")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local": {"prompt": 1, "completion": 2}}))
    (config,) = HfArgumentParser(EndpointConfig).parse_args_into_dataclasses(
        ["--provider", "openai-compatible", "--base_url", "http://127.0.0.1:1/v1", "--concurrency", "32",
         "--response_format", "json_object", "--prices", str(prices), "--seed", "3"]
    )  # fmt: skip
    assert config.concurrency == 32 and config.seed == 3 and config.prices == {"local": {"prompt": 1, "completion": 2}}
    assert AsyncLLMClient(config).params_for(ask("x")) == {
        "max_tokens": 1024,
        "seed": 3,
        "response_format": {"type": "json_object"},
    }
    for field in EndpointConfig.__dataclass_fields__.values():
        assert field.metadata.get("help"), field.name


def test_prices_lookup_and_unknown_model_warning(caplog):
    assert cost_usd(1_000_000, 1_000_000, model="gpt-4o-mini-2024-07-18") == pytest.approx(0.15 + 0.60)
    assert cost_usd(1_000_000, 0, model="gpt-4o-2024-08-06") == pytest.approx(2.5)
    assert cost_usd(0, 1_000_000, model="gpt-4.1") == pytest.approx(8.0)
    assert cost_usd(1000, 1000, model="Qwen/Qwen2-VL-7B", provider="openai-compatible") == 0.0
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert cost_usd(1000, 1000, model="some-new-model-x") == 0.0
        assert cost_usd(1000, 1000, model="some-new-model-x") == 0.0
    assert [r.getMessage() for r in caplog.records].count(
        "no price for model 'some-new-model-x' (reported None): its cost is counted as 0"
    ) == 1
