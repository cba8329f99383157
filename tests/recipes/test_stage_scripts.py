"""Stage names and their scripts: every stage of `vital.stages` has a thin script in recipes/ that runs it, no script
shadows a standard library module (a `recipes/select.py` hid `select` from subprocess and asyncio for every
`python recipes/<stage>.py`), and every stage keeps its command name."""

import ast
import sys
from pathlib import Path

from vital.runner import STAGE_SCRIPTS, available_recipes, load_recipe
from vital.stages import STAGES


RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def test_no_recipe_script_shadows_a_standard_library_module():
    shadowing = {p.stem for p in RECIPES_DIR.glob("*.py")} & set(sys.stdlib_module_names)
    assert not shadowing, f"recipes/ scripts named like standard library modules: {sorted(shadowing)}"


def test_select_keeps_its_command_name():
    assert "select" in available_recipes() and "select_data" not in available_recipes()
    assert STAGE_SCRIPTS["select"] == "select_data"
    assert load_recipe("select") is load_recipe("select_data")
    assert load_recipe("select").__name__ == "vital.stages.select"


def test_every_stage_has_a_thin_script_that_imports_only_its_stage():
    scripts = {p.stem for p in RECIPES_DIR.glob("*.py")}
    assert scripts == {STAGE_SCRIPTS.get(stage, stage) for stage in STAGES}
    for stage in STAGES:
        path = RECIPES_DIR / f"{STAGE_SCRIPTS.get(stage, stage)}.py"
        tree = ast.parse(path.read_text())
        imported = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        ]
        assert imported == [f"vital.stages.{stage}"], (path.name, imported)
        assert hasattr(load_recipe(stage), "cli"), stage
