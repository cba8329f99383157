"""The data stages' arguments: one `HubArguments` base with TRL's push names, and a `Parameters:` docstring that
describes every field, inherited ones included."""

import dataclasses
import re

import pytest

from vital.arguments import HubArguments
from vital.runner import load_recipe


ARGUMENTS = {
    "ingest": "IngestArguments",
    "import_released": "ImportArguments",
    "import_demos": "ImportDemosArguments",
    "curate_demos": "CurateDemosArguments",
    "select": "ScriptArguments",
    "annotate": "AnnotateArguments",
}


@pytest.mark.parametrize("stage", sorted(ARGUMENTS))
def test_arguments_share_the_hub_base_and_document_every_field(stage):
    cls = getattr(load_recipe(stage), ARGUMENTS[stage])
    assert issubclass(cls, HubArguments)
    names = [f.name for f in dataclasses.fields(cls)]
    assert not {"revision", "private", "push"} & set(names)  # the push branch, privacy and switch: TRL's names only
    doc = cls.__doc__ or ""
    assert "\n    Parameters:\n" in doc
    documented = re.findall(r"^\s{8}(\w+) \(`", doc.split("Parameters:", 1)[1], flags=re.MULTILINE)
    assert sorted(documented) == sorted(names), f"{cls.__name__}: documented {documented}, fields {names}"
    for name in names:  # each entry has an indented description under its header line
        entry = re.search(rf"^\s{{8}}{name} \(`[^\n]*\n\s{{12}}\S", doc, flags=re.MULTILINE)
        assert entry, f"{cls.__name__}.{name} has no description"
