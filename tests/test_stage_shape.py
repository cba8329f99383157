"""The shape of the stages (docs/design.md, Layout), checked on the source: every stage's ``main()`` is a thin recipe
of about 100 lines at most; production code never imports ``vital.testing`` (only the ``vital`` command may, to start
the stand-in server); a stage never imports another stage (the pipeline runs them by name); and every argument
dataclass documents each of its own fields in a TRL-style ``Parameters:`` section."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest


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


def _rel(path: Path) -> str:
    return path.relative_to(VITAL).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(VITAL.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names (relative imports made absolute; ``from a import b`` gives
    both ``a`` and ``a.b``, since ``b`` may be a module), and every ``import_module("...")`` constant."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
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


def test_every_stage_main_is_at_most_100_lines():
    lengths = {}
    for path in STAGE_FILES:
        mains = [n for n in _tree(path).body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert len(mains) == 1, f"{_rel(path)}: expected one module-level main()"
        lengths[path.stem] = mains[0].end_lineno - mains[0].lineno + 1
    report = "\n".join(
        f"  {name:24s} {n:4d} {'TOO LONG' if n > MAIN_MAX_LINES else 'ok'}"
        for name, n in sorted(lengths.items(), key=lambda kv: -kv[1])
    )
    too_long = sorted(name for name, n in lengths.items() if n > MAIN_MAX_LINES)
    assert not too_long, f"main() over {MAIN_MAX_LINES} lines in {too_long}; every stage's main():\n{report}"


def test_production_code_never_imports_vital_testing():
    offenders = {}  # (file, line) -> the module imported there
    for path in sorted(VITAL.rglob("*.py")):
        rel = _rel(path)
        if rel.startswith("testing/") or rel in TESTING_ALLOWED:
            continue
        for line, module in _imports(path):
            if module == "vital.testing" or module.startswith("vital.testing."):
                offenders.setdefault((rel, line), module)
    lines = [f"{rel}:{line} imports {module}" for (rel, line), module in sorted(offenders.items())]
    assert not lines, "production code imports vital.testing:\n  " + "\n  ".join(lines)


def test_no_stage_imports_another_stage():
    from vital.stages import STAGES

    offenders = []
    for path in STAGE_FILES:
        for line, module in _imports(path):
            name = module.removeprefix("vital.stages.").split(".")[0] if module.startswith("vital.stages.") else None
            if name in STAGES and name != path.stem:
                offenders.append(f"{_rel(path)}:{line} imports vital.stages.{name}")
        if path.name == LOADING_STAGE:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call):
                called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if called in STAGE_LOADERS:
                    offenders.append(f"{_rel(path)}:{node.lineno} loads a stage module with {called}()")
    assert not offenders, "stages import other stages (share library code instead):\n  " + "\n  ".join(offenders)


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
