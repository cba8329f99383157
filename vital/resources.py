"""Where the package's non-code resources are: the card templates and the profile configs.

The repository keeps them at its top level (``dataset_cards/``, ``model_cards/``, ``recipes/<profile>/``; see
docs/design.md, Layout). A wheel carries copies under ``vital/_bundled/`` (``setup.py`` copies them at build time), so
an installed package finds them without a checkout. This module is the one place that decides which copy is read: the
wheel's when it is there, else the checkout's (an editable install or ``PYTHONPATH``)::

    resource_dir("dataset_cards")              # .../vital/_bundled/dataset_cards or <checkout>/dataset_cards
    pipeline_config("quickstart")              # the quickstart profile's pipeline.yaml, from any folder
"""

from __future__ import annotations

from pathlib import Path


PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = PACKAGE_DIR / "_bundled"
"""The wheel's copies (absent in a checkout)."""
CHECKOUT_DIR = PACKAGE_DIR.parent
"""The repository root when the package is imported from a checkout."""

RESOURCES = ("dataset_cards", "model_cards", "recipes")
"""The top-level folders a wheel carries (of ``recipes/``, only the profile folders :data:`PROFILES`)."""
PROFILES = ("quickstart", "biomed_vital", "biomed_vital_plus")
"""The config profiles shipped with the package, each a folder ``recipes/<profile>/`` with a ``pipeline.yaml``."""


def resource_dir(name: str) -> Path:
    """The folder ``name`` (one of :data:`RESOURCES`): the wheel's copy when present, else the checkout's. A path
    that exists in neither is returned as the checkout's, so the caller's error names where it looked."""
    if name not in RESOURCES:
        raise ValueError(f"unknown resource folder {name!r}; known: {', '.join(RESOURCES)}")
    bundled = BUNDLED_DIR / name
    return bundled if bundled.is_dir() else CHECKOUT_DIR / name


def profile_dir(profile: str) -> Path:
    """The config folder of a shipped profile (``recipes/<profile>/``)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; shipped profiles: {', '.join(PROFILES)}")
    return resource_dir("recipes") / profile


def pipeline_config(name_or_path: str) -> str:
    """The pipeline YAML that ``vital pipeline --config <name_or_path>`` reads: an existing file as given, else a
    shipped profile's ``pipeline.yaml`` (``quickstart``, ``biomed_vital``, ``biomed_vital_plus``), found wherever the
    command runs. Anything else is an error that names both readings."""
    if Path(name_or_path).is_file():
        return name_or_path
    if name_or_path in PROFILES:
        path = profile_dir(name_or_path) / "pipeline.yaml"
        if path.is_file():
            return str(path)
        raise FileNotFoundError(f"profile {name_or_path!r}: {path} is missing (a broken install?)")
    raise FileNotFoundError(
        f"pipeline config {name_or_path!r} is neither a file nor a shipped profile ({', '.join(PROFILES)})"
    )


def config_file(name_or_path: str) -> str:
    """The YAML a stage's ``--config`` names: an existing file as given, else a config shipped with the package,
    named relative to ``recipes/`` (``quickstart/generate.yaml``) or as in the repository (``recipes/quickstart/
    generate.yaml``), so the README's commands work from any folder once the package is installed. Anything else is
    an error that names where it looked."""
    if Path(name_or_path).is_file():
        return name_or_path
    relative = Path(name_or_path)
    if not relative.is_absolute():
        parts = relative.parts[1:] if relative.parts[:1] == ("recipes",) else relative.parts
        shipped = resource_dir("recipes").joinpath(*parts) if parts else None
        if shipped is not None and shipped.is_file():
            return str(shipped)
    raise FileNotFoundError(
        f"config {name_or_path!r} is neither a file nor a config shipped in {resource_dir('recipes')} "
        f"(e.g. quickstart/generate.yaml)"
    )
