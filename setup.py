"""Build step that ships the top-level resources in the wheel (metadata and options: setup.cfg).

The card templates (``dataset_cards/``, ``model_cards/``) and the profile configs (``recipes/<profile>/``) stay at the
repository's top level (docs/design.md, Layout); ``build_py`` copies them to ``vital/_bundled/`` in the build folder,
where ``vital.resources`` finds them in an installed package. An editable install reads the checkout's folders, so
nothing is copied then. ``MANIFEST.in`` puts the same folders in the sdist, so a wheel built from it has them too.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


ROOT = Path(__file__).resolve().parent
# Keep in step with vital.resources.RESOURCES / PROFILES (tests/test_wheel.py checks the wheel holds them).
BUNDLED = ("dataset_cards", "model_cards", "recipes/quickstart", "recipes/biomed_vital", "recipes/biomed_vital_plus")


class build_py_with_resources(build_py):
    """``build_py``, then the resource folders copied to ``<build_lib>/vital/_bundled/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "vital" / "_bundled"
        for name in BUNDLED:
            source = ROOT / name
            if not source.is_dir():
                raise FileNotFoundError(f"{source} is missing: the wheel must carry it (is this a full checkout?)")
            destination = target / name
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": build_py_with_resources})
