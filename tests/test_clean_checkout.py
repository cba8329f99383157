"""`.ci/clean_checkout.py`, the wrapper `make test` runs the suite under, fails a run that writes into the checkout:
a new file (ignored or not), a file written inside an ignored folder that existed before, a modified tracked file;
and it lets through writes elsewhere and into the virtual environments and caches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "clean_checkout.py"


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "checkout"
    (root / "outputs").mkdir(parents=True)
    (root / "outputs" / "old.txt").write_text("from before\n")
    (root / ".gitignore").write_text("/outputs/\n.venv/\n__pycache__/\n")
    (root / "tracked.py").write_text("x = 1\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=root, check=True)
    return root


def run(root: Path, code: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--root", str(root), "--", sys.executable, "-c", code]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("code", "named"),
    [
        ("open('new_outputs.txt', 'w').write('x')", "new_outputs.txt"),
        ("import os; os.makedirs('recipes/run'); open('recipes/run/a.json', 'w').write('x')", "recipes/"),
        ("open('outputs/new.txt', 'w').write('x')", "outputs/new.txt"),  # inside an ignored folder already there
        ("open('tracked.py', 'a').write('y = 2\\n')", "tracked.py"),
    ],
)
def test_a_write_into_the_checkout_fails_the_run_and_is_named(checkout, code, named):
    done = run(checkout, code)
    assert done.returncode == 1, done.stderr
    assert named in done.stderr


def test_writes_elsewhere_and_into_venvs_and_caches_pass(checkout, tmp_path):
    code = (
        "import os, sys; "
        f"open({str(tmp_path / 'elsewhere.txt')!r}, 'w').write('x'); "
        "os.makedirs('.venv/lib'); open('.venv/lib/x.py', 'w').write('x'); "
        "os.makedirs('pkg/__pycache__'); open('pkg/__pycache__/m.pyc', 'w').write('x')"
    )
    done = run(checkout, code)
    assert done.returncode == 0, done.stderr


def test_the_command_status_wins(checkout):
    assert run(checkout, "raise SystemExit(3)").returncode == 3
