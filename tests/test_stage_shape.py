"""The shape of the stages (docs/design.md, Layout), checked on the source: every stage's ``main()`` is a thin recipe
of about 100 lines at most; production code never imports ``vital.testing`` (only the ``vital`` command may, to start
the stand-in server); a stage never imports another stage (the pipeline runs them by name); and every argument
dataclass documents each of its own fields in a TRL-style ``Parameters:`` section."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from vital.stages import STAGES


VITAL = Path(__file__).resolve().parents[1] / "vital"
STAGE_FILES = sorted(p for p in (VITAL / "stages").glob("*.py") if p.name != "__init__.py")
MAIN_MAX_LINES = 100
TESTING_ALLOWED = {"cli.py"}  # `vital stand-in` / the pipeline's stand-in launch start the stand-in server from here
STAGE_LOADERS = {"load_recipe", "load_stage", "import_module"}
LOADING_STAGE = "pipeline.py"  # the one stage that runs other stages (by name, through vital.runner.load_recipe)
# Argument dataclasses outside vital/stages and vital/arguments.py that stages take on their command line.
ARGUMENT_CLASSES = {
    "llm/client.py": {"EndpointConfig"},
    "llm/batch.py": {"BatchConfig"},
    "selector/trainer.py": {"SelectorTrainingConfig"},
    "evaluation/answering.py": {"GenerationSettings"},
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path, root: Path = VITAL) -> str:
    return path.relative_to(root).as_posix()


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = VITAL) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names (relative imports made absolute; ``from a import b`` gives
    both ``a`` and ``a.b``, since ``b`` may be a module), and every ``import_module("...")`` constant."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _is_dataclass(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if (getattr(target, "id", None) or getattr(target, "attr", None)) == "dataclass":
            return True
    return False


def _own_fields(node: ast.ClassDef) -> list[str]:
    """The fields a dataclass defines itself (annotated names in its body, ``ClassVar`` left out)."""
    fields = []
    for statement in node.body:
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and "ClassVar" not in ast.unparse(statement.annotation)
        ):
            fields.append(statement.target.id)
    return fields


def main_lengths(root: Path = VITAL) -> dict[str, int]:
    """Lines of each stage's ``main()``, from its ``def`` line to its last line."""
    lengths = {}
    for path in sorted(p for p in (root / "stages").glob("*.py") if p.name != "__init__.py"):
        mains = [n for n in _tree(path).body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert len(mains) == 1, f"{_rel(path, root)}: expected one module-level main()"
        lengths[path.stem] = mains[0].end_lineno - mains[0].lineno + 1
    return lengths


def vital_testing_imports(root: Path = VITAL) -> list[str]:
    """Where production code (outside ``testing/``, but for :data:`TESTING_ALLOWED`) imports ``vital.testing``."""
    offenders = {}  # (file, line) -> the module imported there
    for path in sorted(root.rglob("*.py")):
        rel = _rel(path, root)
        if rel.startswith("testing/") or rel in TESTING_ALLOWED:
            continue
        for line, module in _imports(path, root):
            if module == "vital.testing" or module.startswith("vital.testing."):
                offenders.setdefault((rel, line), module)
    return [f"{rel}:{line} imports {module}" for (rel, line), module in sorted(offenders.items())]


def stage_imports(stages: Sequence[str], root: Path = VITAL) -> list[str]:
    """Where a stage module imports another stage module, or loads one by name (only the pipeline may)."""
    offenders = []
    for path in sorted(p for p in (root / "stages").glob("*.py") if p.name != "__init__.py"):
        for line, module in _imports(path, root):
            name = module.removeprefix("vital.stages.").split(".")[0] if module.startswith("vital.stages.") else None
            entry = f"{_rel(path, root)}:{line} imports vital.stages.{name}"
            if name in stages and name != path.stem and entry not in offenders:
                offenders.append(entry)
        if path.name == LOADING_STAGE:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call):
                called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if called in STAGE_LOADERS:
                    offenders.append(f"{_rel(path, root)}:{node.lineno} loads a stage module with {called}()")
    return offenders


def test_every_stage_main_is_at_most_100_lines():
    lengths = main_lengths()
    assert set(lengths) == set(STAGES)
    report = "\n".join(
        f"  {name:24s} {n:4d} {'TOO LONG' if n > MAIN_MAX_LINES else 'ok'}"
        for name, n in sorted(lengths.items(), key=lambda kv: -kv[1])
    )
    too_long = sorted(name for name, n in lengths.items() if n > MAIN_MAX_LINES)
    assert not too_long, f"main() over {MAIN_MAX_LINES} lines in {too_long}; every stage's main():\n{report}"


def test_production_code_never_imports_vital_testing():
    offenders = vital_testing_imports()
    assert not offenders, "production code imports vital.testing:\n  " + "\n  ".join(offenders)


def test_no_stage_imports_another_stage():
    offenders = stage_imports(STAGES)
    assert not offenders, "stages import other stages (share library code instead):\n  " + "\n  ".join(offenders)


FAKE_PACKAGE = {
    "__init__.py": "",
    "cli.py": "from vital.testing.servers import start\n",  # allowed: the `vital` command
    "lib.py": "def f():\n    from .testing import helpers\n",
    "other.py": "import vital.testing\nfrom vital import testing\n",
    "testing/__init__.py": "from vital.testing.helpers import x\n",  # allowed: inside vital/testing
    "stages/__init__.py": "STAGES = ('a', 'b', 'pipeline')\n",
    "stages/a.py": "from vital.stages import STAGES\n\n\ndef main():\n" + "    pass\n" * 100,
    "stages/b.py": "from . import a\nfrom vital.stages.a import main as other\n\n\ndef main():\n    load_recipe('a')\n",
    "stages/pipeline.py": "from vital.runner import load_recipe\n\n\ndef main():\n    load_recipe('a')\n",
}
FAKE_DATACLASS = '''
@dataclass
class A(Base):
    """
    Parameters:
        x (`int`):
            An x.
    """

    x: int = 0
    y: str = ""
    z: ClassVar[int] = 1
'''


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The detectors on a made-up package: each way of breaking a rule is found, and the allowed cases are not."""
    root = tmp_path / "vital"
    for name, text in FAKE_PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert main_lengths(root) == {"a": 101, "b": 2, "pipeline": 2}
    assert vital_testing_imports(root) == [
        "lib.py:2 imports vital.testing",
        "other.py:1 imports vital.testing",
        "other.py:2 imports vital.testing",
    ]
    assert stage_imports(("a", "b", "pipeline"), root) == [
        "stages/b.py:1 imports vital.stages.a",
        "stages/b.py:2 imports vital.stages.a",
        "stages/b.py:6 loads a stage module with load_recipe()",
    ]
    documented = ast.parse(FAKE_DATACLASS).body[0]
    assert _is_dataclass(documented) and _own_fields(documented) == ["x", "y"] and _undocumented(documented) == ["y"]
    assert _undocumented(ast.parse("@dataclass\nclass B:\n    x: int = 0\n").body[0]) == ["no 'Parameters:' section"]


def _argument_dataclasses() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for path in [*STAGE_FILES, VITAL / "arguments.py", *(VITAL / rel for rel in ARGUMENT_CLASSES)]:
        wanted = ARGUMENT_CLASSES.get(_rel(path))
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef) and _is_dataclass(node) and (wanted is None or node.name in wanted):
                found.append((_rel(path), node))
    return found


def test_the_argument_classes_are_found():
    names = {node.name for _, node in _argument_dataclasses()}
    assert {"HubArguments", "PipelineArguments", "TinyModelsArguments", "EndpointConfig", "BatchConfig"} <= names
    assert {"SelectorTrainingConfig", "GenerationSettings"} <= names


def _undocumented(node: ast.ClassDef) -> list[str]:
    doc = ast.get_docstring(node) or ""
    if "Parameters:" not in doc:
        return ["no 'Parameters:' section"]
    section = doc.split("Parameters:", 1)[1]
    return [name for name in _own_fields(node) if not re.search(rf"^\s+{re.escape(name)} \(", section, re.MULTILINE)]


@pytest.mark.parametrize("where", [f"{rel}:{node.name}" for rel, node in _argument_dataclasses()])
def test_every_argument_dataclass_documents_its_fields(where):
    rel, name = where.split(":")
    node = next(n for r, n in _argument_dataclasses() if r == rel and n.name == name)
    missing = _undocumented(node)
    assert not missing, f"{where}: the docstring's Parameters: section lacks {missing}"
