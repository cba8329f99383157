"""The generation stage against a real OpenAI-compatible server: `transformers serve` with a tiny local VLM.

The tiny model's replies are nonsense: they must land in the `failures` config with their raw text, not crash the run.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.testing.tiny_models import build_tiny_llava


pytestmark = pytest.mark.slow  # starts `transformers serve` (about 30 s)


ingest = load_recipe("ingest")
generate = load_recipe("generate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    # The CLI beside this interpreter (the venv's bin/ need not be on PATH), else one on PATH.
    cli = Path(sys.executable).with_name("transformers")
    cli = str(cli) if cli.exists() else shutil.which("transformers")
    if cli is None:
        pytest.fail("the transformers CLI is not installed (the dev extra installs transformers[serving])")
    model_dir = tmp_path_factory.mktemp("model") / "tiny-llava"
    # The generation prompts (five demonstrations, caption, mentions, images) run to about 8k tokens, and the server
    # (transformers >= 5.25) answers a request longer than the model's context with a 400.
    build_tiny_llava(model_dir, context_length=16384)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [cli, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("transformers serve did not come up within 90 s")
    yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    proc.terminate()
    proc.wait(timeout=30)


def test_generate_against_transformers_serve(served_model, tmp_path):
    base_url, model = served_model
    hub = f"local:{tmp_path}/hub"
    ingest.cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    args = ["--hub", hub, "--journal_dir", f"{tmp_path}/journals", "--limit", "3", "--answer_pairs", "1"]
    args += ["--provider", "openai-compatible", "--base_url", base_url, "--model", model, "--max_tokens", "12"]
    args += ["--concurrency", "2", "--timeout_s", "120", "--max_retries", "1"]
    (pushed, answer_pairs) = generate.cli(args)

    local = LocalHub(tmp_path / "hub")
    configs = [c["config_name"] for c in local.read_card("quickstart/candidates").data.to_dict()["configs"]]
    assert configs == ["failures"]  # nothing usable: no conversations, every pair a recorded failure
    failures = local.load_dataset("quickstart/candidates", "failures", split="train", revision=pushed.commit)
    assert len(failures) == 3 and set(failures["stage"]) == {"parse"}
    assert all(f["raw"] and f["reason"].startswith("no question-answer turns") for f in failures)
    card = local.read_card("quickstart/candidates")
    assert "openai-compatible" in card.text and model in card.text  # the real server answered, under its name
    ap_failures = local.load_dataset(
        "quickstart/answer-pairs", "failures", split="train", revision=answer_pairs.commit
    )
    assert len(ap_failures) == 1 and ap_failures[0]["stage"] == "parse"
    assert [c["config_name"] for c in local.read_card("quickstart/answer-pairs").data.to_dict()["configs"]] == [
        "failures"
    ]
