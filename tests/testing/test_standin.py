"""Tests for vital.testing.standin: protocol, replies, fault injection, determinism and concurrency."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from vital.testing.standin import ENGINES, REFUSAL_TEXT, STAND_IN_MODEL, SampleResponder, StandInServer


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request, monkeypatch):
    """Every test here runs against both engines (the default of StandInServer's ``engine`` is switched)."""
    monkeypatch.setitem(StandInServer.__init__.__kwdefaults__, "engine", request.param)
    return request.param


def post(server: StandInServer, text: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_health_models_and_a_reply():
    with StandInServer(SampleResponder({"fig-1": "An MRI."}, default="?")) as server:
        with urllib.request.urlopen(f"{server.url}/health") as response:
            assert json.load(response)["status"] == "ok"
        with urllib.request.urlopen(f"{server.base_url}/models") as response:
            assert [m["id"] for m in json.load(response)["data"]] == [STAND_IN_MODEL]
        status, headers, body = post(server, "Caption for fig-1 please")
    reply = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert reply["model"] == reply["system_fingerprint"] == STAND_IN_MODEL
    assert reply["choices"][0]["message"]["content"] == "An MRI."
    assert reply["usage"] == {"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8}
    assert reply["id"].startswith("chatcmpl-") and reply["created"] > 0


def test_sample_responder_picks_the_longest_key_in_the_last_user_message():
    responder = SampleResponder({"pair-1": "one", "pair-10": "ten"}, default="none")
    assert responder({"messages": [{"role": "user", "content": "about pair-10"}]}) == "ten"
    assert responder({"messages": [{"role": "user", "content": "about pair-1."}]}) == "one"
    parts = [{"type": "image_url", "image_url": {"url": "data:..."}}, {"type": "text", "text": "see pair-1"}]
    messages = [
        {"role": "user", "content": "pair-10"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": parts},
    ]
    assert responder({"messages": messages}) == "one"
    assert responder({"messages": [{"role": "system", "content": "pair-1"}]}) == "none"


def test_each_fault_kind_looks_like_the_real_thing():
    script = ["429", "500", "malformed_json", "malformed_schema", "refusal", "400"]
    with StandInServer(fault_script=script, retry_after_s=2.5) as server:
        answers = [post(server, "same request") for _ in script]
        last = post(server, "same request")
    (s429, h429, _), (s500, _, _), (_, _, bad_json), (_, _, no_choices), (_, _, refusal), (s400, _, _) = answers
    assert s429 == 429 and h429["Retry-After"] == "3" and h429["retry-after-ms"] == "2500"
    assert s500 == 500 and s400 == 400
    with pytest.raises(ValueError):
        json.loads(bad_json)
    assert "choices" not in json.loads(no_choices)
    assert json.loads(refusal)["choices"][0]["message"]["content"] == REFUSAL_TEXT
    assert last[0] == 200  # the script is spent: answered normally
    assert server.stats.outcomes == Counter(dict.fromkeys(script, 1) | {"ok": 1})


def test_timeout_fault_holds_the_request_until_released():
    with StandInServer(fault_script=["timeout"], timeout_hold_s=30) as server:
        started = time.monotonic()
        with pytest.raises(OSError):  # urllib's socket timeout
            post(server, "hold me", timeout=0.3)
        assert time.monotonic() - started < 5
        assert server.stats.outcomes["timeout"] == 1 and server.stats.in_flight == 1
    # stop() released the held request.


def test_fault_rates_are_honoured_and_deterministic_given_a_seed():
    def outcomes(seed: int) -> list[str]:
        with StandInServer(fault_429=0.2, fault_500=0.1, fault_malformed=0.1, seed=seed) as server:
            kinds = []
            for i in range(300):
                status, _, body = post(server, f"request {i}")
                kinds.append(str(status) if status != 200 else ("ok" if b'"choices": [{' in body else "bad"))
            return kinds

    first = outcomes(seed=1)
    assert first == outcomes(seed=1)
    assert first != outcomes(seed=2)
    counts = Counter(first)
    assert 35 <= counts["429"] <= 85 and 12 <= counts["500"] <= 50 and 12 <= counts["bad"] <= 50


def test_sustains_many_concurrent_slow_requests():
    latency_s, clients = 1.0, 48
    with StandInServer(latency_ms=latency_s * 1000) as server:
        statuses = []
        barrier = threading.Barrier(clients)

        def one(i: int) -> None:
            barrier.wait()
            statuses.append(post(server, f"concurrent {i}")[0])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert statuses == [200] * clients
        assert server.stats.max_in_flight >= 32
    assert elapsed < 8 * latency_s  # served side by side, not one after another (48 s)


@pytest.mark.parametrize("shape", ["uniform", "lognormal"])
def test_latency_distributions_have_the_configured_mean(shape):
    server = StandInServer(latency_ms=200, latency=shape, jitter_ms=100)
    draws = [server._latency_s((i + 0.5) / 2000) for i in range(2000)]
    assert sum(draws) / len(draws) == pytest.approx(0.2, rel=0.03)
    assert min(draws) >= 0 and max(draws) > 0.28


def test_cli_serves_until_interrupted():
    process = subprocess.Popen(
        [sys.executable, "-m", "vital.testing.standin", "--port", "0", "--latency-ms", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", line)
        assert match, line
        with urllib.request.urlopen(f"{match.group(1)}/health", timeout=5) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        StandInServer(fault_429=0.7, fault_500=0.5)
    with pytest.raises(ValueError):
        StandInServer(fault_script=["teapot"])
