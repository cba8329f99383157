"""vital.runs: run fingerprints, an output_dir bound to one run, exact loading of full checkpoints, the base-weights
guard, and the world size in the "same finished run?" check."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText

from vital.cards import Lineage, model_card
from vital.hub import ArtifactRef, LocalHub
from vital.runs import (
    FINGERPRINT_FILE,
    BaseWeightsError,
    StaleCheckpointError,
    check_not_base_weights,
    fingerprint_changes,
    load_full_checkpoint,
    prepare_output_dir,
    read_fingerprint,
    run_fingerprint,
    saved_key_map,
    weights_equal,
    write_fingerprint,
)
from vital.sft import same_finished_run
from vital.testing.tiny_models import build_tiny_llava


def fingerprint(**changes):
    values = {
        "stage": "sft",
        "inputs": [ArtifactRef("t/data", "dataset", "main", "a" * 40)],
        "config": {"training": {"learning_rate": 1e-3, "output_dir": "out", "save_steps": 2, "max_steps": 4}},
        "seed": 0,
        "world_size": 1,
        "effective_batch": 2,
        **changes,
    }
    return run_fingerprint(**values)


def test_the_fingerprint_changes_with_what_changes_the_weights_only():
    base = fingerprint()
    where = {"training": {"learning_rate": 1e-3, "output_dir": "elsewhere", "save_steps": 7, "max_steps": 4}}
    assert fingerprint(config=where)["sha256"] == base["sha256"]  # where it writes, how often it saves
    pinned = [ArtifactRef("t/data", "dataset", "a" * 40, "a" * 40)]  # the same commit, named by its hash
    assert fingerprint(inputs=pinned)["sha256"] == base["sha256"]
    for changed, named in [
        ({"world_size": 2}, "world_size"),
        ({"effective_batch": 4}, "effective_batch"),
        ({"seed": 1}, "seed"),
        ({"inputs": [ArtifactRef("t/data", "dataset", "main", "b" * 40)]}, "inputs"),
        ({"config": {"training": {**where["training"], "learning_rate": 5e-4}}}, "config.training.learning_rate"),
        ({"config": {"training": {**where["training"], "max_steps": 30}}}, "config.training.max_steps"),
    ]:
        other = fingerprint(**changed)
        assert other["sha256"] != base["sha256"]
        assert fingerprint_changes(base, other) == [named]


def test_an_output_dir_of_another_run_is_moved_aside(tmp_path):
    out = tmp_path / "out"
    first, second = fingerprint(), fingerprint(seed=1)
    assert prepare_output_dir(out, first) is None and read_fingerprint(out) == first
    for step in (2, 4):
        (out / f"checkpoint-{step}").mkdir()
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        write_fingerprint(out / f"checkpoint-{step}", first)
    (out / "eval_results.json").write_text("{}")
    assert prepare_output_dir(out, first) == str(out / "checkpoint-4")  # its own run: resume

    assert prepare_output_dir(out, second) is None  # another run: fresh, in an empty folder
    assert sorted(p.name for p in out.iterdir()) == [FINGERPRINT_FILE] and read_fingerprint(out) == second
    (aside,) = tmp_path.glob("out.superseded-*")
    assert aside.name == f"out.superseded-{first['sha256'][:12]}"
    assert {p.name for p in aside.iterdir()} == {FINGERPRINT_FILE, "checkpoint-2", "checkpoint-4", "eval_results.json"}

    # A folder with files but no fingerprint (an older version's run) is not resumed either.
    legacy = tmp_path / "legacy"
    (legacy / "checkpoint-3").mkdir(parents=True)
    (legacy / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert prepare_output_dir(legacy, first) is None
    assert (tmp_path / "legacy.superseded-unknown" / "checkpoint-3").is_dir()

    # A checkpoint named by path must belong to this run.
    with pytest.raises(StaleCheckpointError, match="belongs to another run .*seed"):
        prepare_output_dir(tmp_path / "new", second, str(aside / "checkpoint-4"))
    assert prepare_output_dir(tmp_path / "new", first, str(aside / "checkpoint-4")) == str(aside / "checkpoint-4")


def test_a_checkpoint_of_another_run_inside_a_bound_folder_is_skipped(tmp_path):
    out, own, other = tmp_path / "out", fingerprint(), fingerprint(seed=3)
    write_fingerprint(out, own)
    for step, belongs in ((2, own), (4, other)):
        (out / f"checkpoint-{step}").mkdir()
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        write_fingerprint(out / f"checkpoint-{step}", belongs)
    assert prepare_output_dir(out, own) == str(out / "checkpoint-2")


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llava")
    build_tiny_llava(folder)
    return folder


def test_a_llava_checkpoint_loads_tensor_for_tensor(llava, tmp_path):
    saved = AutoModelForImageTextToText.from_pretrained(llava)
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(torch.randn_like(p))
    saved.save_pretrained(tmp_path / "ckpt")  # original key naming: language_model.model.*
    mapping = saved_key_map(saved)
    assert "language_model.model.embed_tokens.weight" in mapping

    naive = AutoModelForImageTextToText.from_pretrained(llava).load_state_dict(
        load_file(tmp_path / "ckpt" / "model.safetensors"), strict=False
    )
    assert naive.unexpected_keys and naive.missing_keys  # the Trainer's own reload placed none of them
    fresh = AutoModelForImageTextToText.from_pretrained(llava)
    load_full_checkpoint(fresh, tmp_path / "ckpt")
    expected, got = saved.state_dict(), fresh.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)

    # A checkpoint with a key that fits nowhere is refused, naming it.
    (tmp_path / "bad").mkdir()
    tensors = {k: v.contiguous() for k, v in saved.state_dict().items()}
    tensors["not.a.weight"] = torch.zeros(1)
    save_file(tensors, tmp_path / "bad" / "model.safetensors")
    with pytest.raises(RuntimeError, match="not.a.weight"):
        load_full_checkpoint(AutoModelForImageTextToText.from_pretrained(llava), tmp_path / "bad")


def test_base_weights_are_refused_after_steps(llava, tmp_path):
    same = tmp_path / "same"
    AutoModelForImageTextToText.from_pretrained(llava).save_pretrained(same)
    assert weights_equal(same, llava)
    with pytest.raises(BaseWeightsError, match="3 step"):
        check_not_base_weights(same, llava, steps=3, adapter=False)
    check_not_base_weights(same, llava, steps=0, adapter=False)  # nothing trained: nothing to refuse

    changed = tmp_path / "changed"
    model = AutoModelForImageTextToText.from_pretrained(llava)
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1
    model.save_pretrained(changed)
    assert not weights_equal(changed, llava)
    check_not_base_weights(changed, llava, steps=3, adapter=False)

    # The same tensors under other names are still the base model.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    state = {
        f"x.{k}": v.contiguous() for k, v in AutoModelForImageTextToText.from_pretrained(llava).state_dict().items()
    }
    save_file(state, renamed / "model.safetensors")
    assert weights_equal(renamed, llava)

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file(
        {"m.q_proj.lora_A.weight": torch.ones(2, 4), "m.q_proj.lora_B.weight": torch.zeros(4, 2)},
        adapter / "adapter_model.safetensors",
    )
    with pytest.raises(BaseWeightsError, match="no-op"):
        check_not_base_weights(adapter, None, steps=2, adapter=True)


def test_same_finished_run_counts_the_world_size(tmp_path):
    hub = LocalHub(tmp_path / "hub")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    hub.create_repo("org/model", "model")
    hub.create_branch("org/model", "run", repo_type="model")
    planned = Lineage(stage="sft", config={"training": {"learning_rate": 1e-3}}, seed=0)
    finished = Lineage(stage="sft", config=planned.config, seed=0, extra={"run_branch": "run", "world_size": 2})
    card = model_card("model", lineage=finished, model_name="m", description="", repo_id="org/model")
    pushed = hub.push_folder(folder, "org/model", "model", revision="run", card=card)
    assert same_finished_run(hub, "org/model", "run", planned, world_size=2) == pushed.commit
    assert same_finished_run(hub, "org/model", "run", planned, world_size=1) is None
