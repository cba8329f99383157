"""Fixtures shared by the recipe tests."""

from __future__ import annotations

import pytest
import torch

from vital.runner import load_recipe


@pytest.fixture(autouse=True)
def restore_threads():
    """Recipes set torch's thread count (selection, training); give the next test the count it had."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def rated_hub(tmp_path_factory):
    """Quickstart pairs, tiny models, candidates, answer pairs and ratings from the stand-in (no faults, no latency),
    in a hub of the test module's own (its selector pushes never meet another module's)."""
    from vital.testing.serve import running_stand_in, stage_args

    root = tmp_path_factory.mktemp("rated-hub")
    hub = f"local:{root}/hub"
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    load_recipe("tiny_models").cli(["--config", "recipes/quickstart/tiny_models.yaml", "--hub", hub])
    with running_stand_in() as server:  # no faults, no latency
        fast = stage_args(server)
        load_recipe("generate").cli(
            ["--config", "recipes/quickstart/generate.yaml", "--hub", hub, "--journal_dir", f"{root}/gen", *fast]
        )
        load_recipe("rate").cli(
            ["--config", "recipes/quickstart/rate.yaml", "--hub", hub, "--journal_dir", f"{root}/r", *fast]
        )
    return root
