"""A tiny_models rerun with nothing changed builds nothing: the repo's card holds the build's fingerprint (config, seed,
builder, stack versions). Anything changed builds again."""

from __future__ import annotations

import functools

from vital.cards import lineage_of
from vital.hub import LocalHub
from vital.runner import load_recipe


def test_an_unchanged_rerun_builds_nothing_and_a_changed_one_builds(tmp_path, monkeypatch):
    recipe = load_recipe("tiny_models")
    args = ["--config", "recipes/quickstart/tiny_models.yaml", "--hub", f"local:{tmp_path}/hub"]
    vlm, clip = recipe.cli(args)
    hub = LocalHub(tmp_path / "hub")
    assert lineage_of(hub.read_card("quickstart/tiny-llava", repo_type="model"))["extra"]["run_fingerprint"]

    built = []

    def counting(build):
        @functools.wraps(build)
        def wrapper(*a, **k):
            built.append(build.__name__)
            return build(*a, **k)

        return wrapper

    monkeypatch.setitem(recipe.TINY_VLM_BUILDERS, "llava", counting(recipe.TINY_VLM_BUILDERS["llava"]))
    monkeypatch.setattr(recipe, "build_tiny_clip", counting(recipe.build_tiny_clip))
    again = recipe.cli(args)
    assert built == []  # nothing rebuilt
    assert [p.commit for p in again] == [vlm.commit, clip.commit] and not any(p.created for p in again)

    other = recipe.cli([*args, "--seed", "1"])
    assert built == ["build_tiny_llava", "build_tiny_clip"]
    assert all(p.created for p in other) and other[0].commit != vlm.commit
