"""Stage names and their scripts: no script in recipes/ shadows a standard library module (a `recipes/select.py` hid
`select` from subprocess and asyncio for every `python recipes/<stage>.py`), and every stage keeps its command name."""

import sys

from vital.runner import RECIPES_DIR, STAGE_SCRIPTS, available_recipes, load_recipe


def test_no_recipe_script_shadows_a_standard_library_module():
    shadowing = {p.stem for p in RECIPES_DIR.glob("*.py")} & set(sys.stdlib_module_names)
    assert not shadowing, f"recipes/ scripts named like standard library modules: {sorted(shadowing)}"


def test_select_keeps_its_command_name():
    assert "select" in available_recipes() and "select_data" not in available_recipes()
    assert STAGE_SCRIPTS["select"] == "select_data"
    assert load_recipe("select") is load_recipe("select_data")
    assert load_recipe("select").__file__ == str(RECIPES_DIR / "select_data.py")
