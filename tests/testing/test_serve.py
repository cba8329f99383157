"""`vital stand-in`: one loopback server answering every API stage's requests (chat and Batch API), started from the
command line the way `vital pipeline` starts it, and stopped by a signal or by its launcher's death."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vital.data.sample import load_sample_pairs
from vital.generation import CAPTION_FRAME
from vital.llm import STAND_IN_MODEL
from vital.testing.eval_replies import chat_judge_reply, verdict_reply
from vital.testing.sample_replies import judge_reply
from vital.testing.serve import StandInResponder, start_server
from vital.testing.standin import STAND_IN_MODEL as SERVED_MODEL


ROOT = Path(__file__).resolve().parents[2]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def user(text: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"model": "anything", "messages": [*messages, {"role": "user", "content": text}]}


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else process.returncode
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.05)
    return path.read_text().strip()


def test_the_stand_in_model_name_is_production_codes():
    assert SERVED_MODEL is STAND_IN_MODEL == "vital-stand-in"


def test_one_responder_answers_generation_judges_and_questions():
    responder = StandInResponder()
    pair = load_sample_pairs()[0]
    replies = json.loads((ROOT / "vital/data/sample/standin_responses.json").read_text())
    figure = f"{CAPTION_FRAME}\n{pair['caption']}"
    assert responder(user(figure, "Write a conversation.")) == replies["conversation"][pair["id"]]
    assert responder(user(figure, "... Answer 2 ...")) == replies["answer_pairs"][pair["id"]]
    rubric = f"Figure Caption:\n{pair['caption']}\n\nGive the pair ONE score.\nAnswer:\nA chest X-ray.\n\n"
    assert responder(user(rubric)) == judge_reply(rubric)  # the rating judge
    chat = "[Assistant 1]\nthe lung is clear\n[End of Assistant 1]\n[Assistant 2]\nthe lung\n[End of Assistant 2]"
    assert responder(user(chat)) == chat_judge_reply(chat)  # the open-chat judge, even about a figure caption
    verdict = "[Reference answer]\nclear\n[End of reference answer]\n[Assistant A]\nclear\n[End of Assistant A]"
    assert responder(user(f"{CAPTION_FRAME}\n{verdict}")) == verdict_reply(f"{CAPTION_FRAME}\n{verdict}")
    assert responder(user("Is there a fracture?")) in ("yes", "no")
    assert responder(user("What organ is shown?")) == "The image shows a medical scan."


def test_start_server_answers_chat_and_batches_with_injected_faults():
    server = start_server(faults=0.9, seed=1)
    try:
        outcomes = []
        for i in range(20):
            try:
                outcomes.append(post(f"{server.base_url}/chat/completions", user(f"Is item {i} visible?"))["model"])
            except (urllib.error.HTTPError, json.JSONDecodeError):
                outcomes.append("fault")
        assert outcomes.count("fault") >= 10 and STAND_IN_MODEL in outcomes  # ~90% faults, the rest answered
        with urllib.request.urlopen(f"{server.base_url}/batches", timeout=10) as response:
            assert json.load(response)["data"] == []  # the Batch API is served too
    finally:
        server.stop()


def test_vital_stand_in_serves_until_terminated(tmp_path):
    url_file = tmp_path / "url"
    command = [sys.executable, "-m", "vital.cli", "stand-in", "--port", "0", "--url_file", str(url_file)]
    process = subprocess.Popen(
        [*command, "--latency_ms", "1", "--seed", "3"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = wait_for(url_file, process)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        reply = post(f"{url}/chat/completions", user("Is the heart enlarged?"))
        assert reply["model"] == STAND_IN_MODEL and reply["choices"][0]["message"]["content"] in ("yes", "no")
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert process.returncode == 0 and out.decode().strip() == url  # the URL is printed too
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/models", timeout=2)


def test_the_stand_in_stops_when_its_launcher_is_killed(tmp_path):
    url_file = tmp_path / "url"
    launcher = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-m', 'vital.testing.serve', '--port', '0', '--url_file', sys.argv[1],"
        " '--exit_with_parent'])\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", launcher, str(url_file)], cwd=ROOT)
    try:
        url = wait_for(url_file, process)
        post(f"{url}/chat/completions", user("Is it there?"))
    finally:
        process.kill()  # SIGKILL: the launcher cannot stop its child
        process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1)
        except urllib.error.URLError:
            return
        time.sleep(0.2)
    pytest.fail("the stand-in outlived its killed launcher")
