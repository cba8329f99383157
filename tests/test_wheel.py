"""Install anywhere: the wheel carries the card templates and the profile configs, and an install of it alone (no
checkout on the path) runs the offline quickstart from an empty folder.

Everything happens under tmp: the checkout's files are copied there before `pip wheel` (which writes `build/` and
egg-info beside the sources), the fresh virtual environment reads its dependencies from this interpreter's
site-packages through a `.pth` file (no downloads), and the wheel is installed with `--no-index --no-deps`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from vital.hub import LocalHub
from vital.stages import STAGES


pytestmark = pytest.mark.slow  # a wheel build, a venv and the whole quickstart (about a minute)

ROOT = Path(__file__).resolve().parents[1]
# What the wheel must carry under vital/_bundled/ (the same folders as setup.py's BUNDLED).
BUNDLED = ("dataset_cards", "model_cards", "recipes/quickstart", "recipes/biomed_vital", "recipes/biomed_vital_plus")


def _run(argv: list, cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _checkout_copy(target: Path) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) copied to ``target``."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("builds the wheel from a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is listed and absent
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _fresh_venv(path: Path) -> Path:
    """A venv whose third-party packages are this interpreter's (a `.pth` path entry: the `.pth` files there, such as
    the checkout's editable install, are not processed, so the checkout's `vital` is not importable)."""
    _run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent, env=_env())
    python = path / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], path, _env()).stdout
    parents = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site.strip()) / "_parent_site_packages.pth").write_text("".join(f"{p}\n" for p in parents))
    return python


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VITAL_HUB", "PYTHONHOME")}
    return {**env, "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def test_the_wheel_installs_and_runs_the_quickstart_from_an_empty_folder(tmp_path):
    # 1. The wheel, built from a copy of the checkout, carries every template and profile config.
    src = _checkout_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-w", dist]
    _run([*build, src], cwd=src, env=_env())
    (wheel,) = dist.glob("biomed_vital-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in BUNDLED:
        expected = {
            f"vital/_bundled/{p.relative_to(ROOT).as_posix()}"
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        assert expected and expected <= names, sorted(expected - names)
    assert {"vital/tiny_models.py", "vital/resources.py", "vital/stages/pipeline.py"} <= names

    # 2. A fresh venv with the wheel installed; its `vital` is the wheel's, not the checkout's.
    python = _fresh_venv(tmp_path / "venv")
    install = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", wheel]
    _run(install, cwd=tmp_path, env=_env())
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _env(VITAL_CACHE=str(tmp_path / "cache"))
    where = _run(
        [python, "-c", "import vital.cards as c; print(c.__file__); print(c.TEMPLATE_DIRS['model'])"], empty, env
    )
    module, templates = where.stdout.split()
    assert Path(module).is_relative_to(tmp_path / "venv"), module
    assert Path(templates) == Path(module).parent / "_bundled" / "model_cards"

    # 3. From an empty folder: `vital --help` lists the stages, and the quickstart runs by profile name.
    vital = tmp_path / "venv" / "bin" / "vital"
    listed = _run([vital, "--help"], empty, env).stdout
    assert all(stage in listed for stage in STAGES), listed
    # A stage alone, on a shipped config named as in the README (no recipes/ folder here): it reads and checks, and
    # pushes nothing.
    alone = _run([vital, "ingest", "--config", "recipes/quickstart/ingest.yaml", "--push_to_hub", "false"], empty, env)
    assert "nothing pushed" in alone.stdout and not (empty / "outputs").exists()
    run = _run([vital, "pipeline", "--config", "quickstart"], empty, env, timeout=600)

    hub = LocalHub(empty / "outputs" / "hub")
    model = hub.resolve("quickstart/sft-tiny-llava", "quickstart", "model")
    evaluation = hub.resolve("quickstart/eval", "main", "dataset")
    assert model[:12] in run.stdout and evaluation[:12] in run.stdout
    card = hub.read_card("quickstart/eval")
    assert card.data.to_dict()["lineage"]["stage"] == "evaluate" and "quickstart/sft-tiny-llava" in card.text
    model_card = hub.read_card("quickstart/sft-tiny-llava", "quickstart", "model").data.to_dict()
    assert model_card["lineage"]["stage"] == "sft" and model_card["model-index"]  # the evaluate stage's results
    assert (empty / "outputs" / "pipeline" / "lineage.png").is_file()
