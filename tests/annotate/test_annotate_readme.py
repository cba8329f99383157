"""The README's `vital annotate` commands, exactly as written, start the app: the first run creates the campaign lead
and prints how to log in, and that login works on the running server; the `--add_user` lines add users. Only the
network is swapped: ``--hub hf`` reaches a local hub holding the README's repos. A missing users file stops with one
line, not a traceback."""

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from vital.hub import LocalHub


pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[list[str]]:
    """Every `vital annotate` line of the README's bash blocks, split like a shell would (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S):
        for line in block.splitlines():
            if line.startswith("vital annotate "):
                commands.append(shlex.split(line, comments=True))
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_hub(hub, root) -> LocalHub:
    """The README's repos (paper names) holding the fixture hub's data."""
    target = LocalHub(root)
    target.push_dataset(hub.load_dataset("test/pairs", split="train"), "your-org/biomed-vital-pmc-pairs")
    target.push_dataset(hub.load_dataset("test/answer-pairs", split="train"), "your-org/biomed-vital-answer-pairs")
    for config in ("default", "review"):
        data = hub.load_dataset("test/clusters", name=config, split="train")
        target.push_dataset(data, "your-org/biomed-vital-clusters", config_name=config)
    return target


@pytest.mark.slow
def test_the_readme_commands_start_the_app(hub, tmp_path, monkeypatch, capsys):
    import vital.hub
    from vital.annotate import app as app_module
    from vital.runner import load_recipe

    local = readme_hub(hub, tmp_path / "hub")
    monkeypatch.setattr(vital.hub, "HfHub", lambda *args, **kwargs: local)
    monkeypatch.chdir(tmp_path)
    for name in ("VITAL_ANNOTATE_USERS", "SPACE_ID", "VITAL_HUB", "VITAL_CAMPAIGN_LEADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VITAL_ANNOTATE_PASSWORD", "pw-from-the-environment")
    original = app_module.AnnotationApp.launch
    served = []

    def launch(self, users, host="127.0.0.1", port=None, **kwargs):
        port = _free_port()  # not the README's 7860: tests run side by side
        original(self, users, host=host, port=port, prevent_thread_lock=True, quiet=True)
        served.append((self, f"http://{host}:{port}"))

    monkeypatch.setattr(app_module.AnnotationApp, "launch", launch)
    recipe = load_recipe("annotate")
    commands = readme_commands()
    serve = [c for c in commands if "--task" in c and "--export" not in c and "..." not in c]
    assert [c[c.index("--task") + 1] for c in serve] == ["demos", "preference"]
    assert any("--add_user" in c for c in commands)

    password = None
    for command in commands:
        assert command[:2] == ["vital", "annotate"]
        if "..." in command or "--export" in command:  # placeholders; exports need annotations first
            continue
        recipe.cli(command[2:])
        if "--add_user" in command:
            continue
        app, url = served[-1]
        try:
            printed = capsys.readouterr().out
            if password is None:
                found = re.search(r"as lead with password (\S+)", printed)
                assert found, printed
                password = found.group(1)
                assert "vital annotate --add_user NAME --users outputs/annotations/users.json" in printed
            else:
                assert "password" not in printed  # printed once, on the first run only
            with httpx.Client(base_url=url) as client:
                assert client.get("/").status_code == 200
                assert client.post("/login", data={"username": "lead", "password": password}).status_code == 200
                assert client.get("/gradio_api/login_check").status_code == 200
        finally:
            app.blocks.close()
    assert len(served) == 2
    demos_app, preference_app = served[0][0], served[1][0]
    assert demos_app.task.items.ref.config == "review"
    assert "Mentions in the article" in preference_app.task.view("lead", 0).context  # --pairs: caption shown
    from vital.annotate.auth import load_roles

    roles = load_roles(tmp_path / "outputs/annotations/users.json")
    assert roles == {"lead": {"annotator", "campaign"}, "alice": {"annotator"}, "chief": {"annotator", "campaign"}}
    assert (tmp_path / "outputs/annotations/guidelines").is_dir()


@pytest.mark.slow
def test_a_missing_users_file_is_one_clear_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("VITAL_ANNOTATE_USERS", None)
    env.pop("SPACE_ID", None)
    command = [sys.executable, "-m", "vital.cli", "annotate", "--task", "demos", "--dataset", "x/y@main"]
    command += ["--hub", f"local:{tmp_path}", "--users", str(tmp_path / "nope.json")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert lines[-1] == (
        f"--users {tmp_path / 'nope.json'}: no such file. "
        f"Create it with: vital annotate --add_user NAME --users {tmp_path / 'nope.json'}"
    )
