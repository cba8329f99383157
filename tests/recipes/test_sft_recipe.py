"""recipes/sft.py end to end on tiny random VLMs and a local hub: training lowers the loss, the pushed model (full or
LoRA) reloads and generates, bad rows stop the run before training, finished branches are kept, two gloo processes
leave the same artifact, and the two LLaVA-Med steps chain through the hub. (Killed runs resuming exactly:
test_sft_resume.py; reruns with a changed config: test_sft_rerun.py.)"""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from vital.cards import lineage_of
from vital.data.errors import RecordError
from vital.data.schemas import PAIR_FEATURES, SELECTED_FEATURES
from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.sft import RunBranchError
from vital.testing.sft_rows import random_image as image
from vital.testing.sft_rows import selected_row
from vital.testing.tiny_models import build_tiny_idefics3, build_tiny_llava


REPO_ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = REPO_ROOT / "recipes" / "quickstart"
sft = load_recipe("sft")

ANSWERS = [
    "The CT scan shows a small nodule.",
    "There is a left pleural effusion.",
    "No acute abnormality.",
    "The MRI shows a hyperintense lesion.",
    "Histology shows frequent mitotic figures.",
    "The radiograph shows a fracture of the left femur.",
    "Findings are consistent with pneumonia.",
    "The lesion measures 12 mm.",
]
# What a full fine-tune leaves on its branch (a LoRA run has the adapter files instead of config + weights).
PROCESSOR_FILES = {"chat_template.jinja", "processor_config.json", "tokenizer.json", "tokenizer_config.json"}
RUN_FILES = {"README.md", "all_results.json", "train_results.json", "trainer_state.json"}
FULL_LAYOUT = PROCESSOR_FILES | RUN_FILES | {"config.json", "generation_config.json", "model.safetensors"}
LORA_LAYOUT = PROCESSOR_FILES | RUN_FILES | {"adapter_config.json", "adapter_model.safetensors"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny LLaVA and Idefics3 folders, and a local hub holding a `selected` dataset (config top40, train + test
    splits), one with a bad row, and image-caption pairs."""
    root = tmp_path_factory.mktemp("sft")
    build_tiny_llava(root / "tiny-llava")
    build_tiny_idefics3(root / "tiny-idefics3")
    hub = LocalHub(root / "hub")
    rows = [selected_row(i, answer) for i, answer in enumerate(ANSWERS)]
    splits = DatasetDict(
        {
            "train": Dataset.from_list(rows, features=SELECTED_FEATURES),
            "test": Dataset.from_list(rows[:2], features=SELECTED_FEATURES),
        }
    )
    selected = hub.push_dataset(splits, "t/selected", config_name="top40")
    bad = rows[:3] + [selected_row(9, "   ")]  # an empty answer
    hub.push_dataset(Dataset.from_list(bad, features=SELECTED_FEATURES), "t/bad")
    pairs = [
        {
            "id": f"P{i}",
            "image": image(20 + i),
            "caption": answer,
            "fig_label": "F1",
            "mentions": [],
            "modality": "ct",
            "source": None,
        }
        for i, answer in enumerate(ANSWERS)
    ]
    hub.push_dataset(Dataset.from_list(pairs, features=PAIR_FEATURES), "t/pairs")
    return SimpleNamespace(
        root=root,
        hub=hub,
        hub_spec=f"local:{root / 'hub'}",
        llava=root / "tiny-llava",
        idefics3=root / "tiny-idefics3",
        selected=selected,
    )


def args_for(env, out: Path, repo: str, config: str = "sft.yaml", **overrides) -> list[str]:
    """The quickstart recipe pointed at the test hub, model and data; ``overrides`` become ``--key value``."""
    values = {
        "hub": env.hub_spec,
        "dataset_name": "t/selected",
        "dataset_config": "top40",
        "model_name_or_path": str(env.llava),
        "output_dir": str(out),
        "hub_model_id": repo,
        "overwrite_branch": "false",
        **overrides,
    }
    args = ["--config", str(QUICKSTART / config)]
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    return args


def snapshot_files(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


def losses(state: dict) -> list[float]:
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def generate(model, processor) -> torch.Tensor:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What does this image show?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[[image(0)]], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    return out


@pytest.mark.slow
def test_full_sft_lowers_the_loss_and_pushes_a_loadable_model(env, tmp_path):
    (pushed,) = sft.cli(args_for(env, tmp_path / "out", "t/sft-full", dataset_test_split="test"))
    assert pushed.repo_id == "t/sft-full" and pushed.revision == "quickstart"
    snapshot = env.hub.snapshot("t/sft-full", "quickstart", "model")
    assert snapshot_files(snapshot) == FULL_LAYOUT | {"eval_results.json"}  # no checkpoints, no pickled arguments

    state = json.loads((snapshot / "trainer_state.json").read_text())
    curve = losses(state)
    assert state["global_step"] == 30 and len(curve) == 30
    assert np.mean(curve[-5:]) < np.mean(curve[:5]), curve
    assert all(entry["tokens_per_second"] > 0 for entry in state["log_history"] if "loss" in entry)

    lineage = lineage_of(env.hub.read_card("t/sft-full", "quickstart", "model"))
    assert lineage["stage"] == "sft"
    model_input, data_input = lineage["inputs"]
    assert model_input["source"] == str(env.llava.resolve()) and len(model_input["sha256"]) == 64
    assert data_input == {
        "repo_id": "t/selected",
        "repo_type": "dataset",
        "revision": "main",
        "commit": env.selected.commit,
        "config": "top40",
    }
    metrics = lineage["extra"]["metrics"]
    assert metrics["train_tokens_per_second"] > 0 and "eval_loss" in metrics and metrics["train_rows"] == 8
    assert lineage["extra"]["world_size"] == 1 and lineage["extra"]["resumed_from"] is None

    model = AutoModelForImageTextToText.from_pretrained(snapshot)
    processor = AutoProcessor.from_pretrained(snapshot)
    base = AutoModelForImageTextToText.from_pretrained(env.llava)
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)
    generate(model, processor)


@pytest.mark.slow
def test_lora_adapter_saves_and_reloads(env, tmp_path):
    from peft import PeftModel

    sft.cli(args_for(env, tmp_path / "out", "t/sft-lora", config="sft_lora.yaml", max_steps=10))
    snapshot = env.hub.snapshot("t/sft-lora", "quickstart-lora", "model")
    assert snapshot_files(snapshot) == LORA_LAYOUT
    adapter = load_file(snapshot / "adapter_model.safetensors")
    assert adapter and all(
        "lora_" in key and "language_model" in key for key in adapter
    )  # the vision tower is untouched
    curve = losses(json.loads((snapshot / "trainer_state.json").read_text()))
    assert np.mean(curve[-3:]) < np.mean(curve[:3]), curve

    base = AutoModelForImageTextToText.from_pretrained(env.llava)
    model = PeftModel.from_pretrained(base, snapshot)
    assert any(bool(torch.any(w != 0)) for k, w in model.state_dict().items() if "lora_B" in k)  # it trained
    generate(model, AutoProcessor.from_pretrained(snapshot))
    lineage = lineage_of(env.hub.read_card("t/sft-lora", "quickstart-lora", "model"))
    assert lineage["extra"]["adapter"] is True
    parameters = lineage["extra"]["parameters"]
    assert parameters["trainable"] == sum(w.numel() for w in adapter.values()) < parameters["total"] / 10


@pytest.mark.slow
def test_bad_rows_stop_the_run_before_training(env, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RecordError, match=r"record 'c9 \(from t/bad@[0-9a-f]{12}\)'.*empty assistant turn"):
        sft.cli(args_for(env, out, "t/sft-bad", dataset_name="t/bad", dataset_config=""))
    assert not list(out.glob("checkpoint-*"))
    # errors: skip trains on the good rows and says how many were dropped.
    sft.cli(args_for(env, out, "t/sft-bad", dataset_name="t/bad", dataset_config="", errors="skip", max_steps=2))
    card = env.hub.read_card("t/sft-bad", "quickstart", "model")
    extra = lineage_of(card)["extra"]
    assert extra["skipped_rows"] == 1 and extra["metrics"]["train_rows"] == 3
    # ... and pushes each dropped row with its reason beside the weights, linked from the card.
    snapshot = env.hub.snapshot("t/sft-bad", "quickstart", "model")
    skipped = [json.loads(line) for line in (snapshot / "skipped_rows.jsonl").read_text().splitlines()]
    assert [(row["record_id"].split(" ")[0], row["field"]) for row in skipped] == [("c9", skipped[0]["field"])]
    assert "empty assistant turn" in skipped[0]["reason"] and json.loads(skipped[0]["record"])["id"] == "c9"
    assert "skipped_rows.jsonl" in card.text and "1 row(s) of the data were skipped" in card.text


def test_hub_model_id_revision_and_privacy_decide_where_the_run_lands(env, tmp_path, caplog):
    """SFTConfig's push options, honoured by the hub layer (the Trainer itself never pushes: offline, it would fail)."""
    public = sft.cli(
        args_for(env, tmp_path / "a", "t/sft-public", hub_revision="exp-1", hub_private_repo="false", max_steps=1)
    )[0]
    assert (public.repo_id, public.revision) == ("t/sft-public", "exp-1")
    assert env.hub.list_refs("t/sft-public", "model")["branches"]["exp-1"] == public.commit
    assert snapshot_files(env.hub.snapshot("t/sft-public", "exp-1", "model")) == FULL_LAYOUT

    def private(repo: str) -> bool:
        return json.loads((env.hub.repo_dir(repo, "model") / ".vital" / "repo.json").read_text())["private"]

    assert private("t/sft-public") is False
    training = lineage_of(env.hub.read_card("t/sft-public", "exp-1", "model"))["config"]["training"]
    assert training["hub_model_id"] == "t/sft-public" and training["hub_revision"] == "exp-1"
    assert training["push_to_hub"] is True and training["hub_private_repo"] is False  # what the user set
    card = env.hub.read_card("t/sft-public", "exp-1", "model").text
    assert f"| `t/selected` | top40 | `main` | `{env.selected.commit[:12]}` | train | 1.0 |" in card
    assert "`hub_model_id: t/sft-public` and `hub_revision: exp-1`" in card
    # hub_revision unset: the output folder's name; hub_private_repo true: a private repo.
    run = sft.cli(args_for(env, tmp_path / "run-7", "t/sft-private", hub_revision="", max_steps=1))[0]
    assert (run.repo_id, run.revision) == ("t/sft-private", "run-7") and private("t/sft-private") is True
    # push_to_hub false: trained and saved, nothing on the hub, and the log says so and where the model is.
    caplog.set_level(logging.INFO)
    assert sft.cli(args_for(env, tmp_path / "b", "t/sft-none", push_to_hub="false", max_steps=1)) == []
    said = [
        r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "nothing was pushed" in r.getMessage()
    ]
    assert said == [f"push_to_hub is false: nothing was pushed to t/sft-none; the model is in {tmp_path / 'b'}"]
    assert (tmp_path / "b" / "README.md").is_file() and not env.hub.repo_dir("t/sft-none", "model").exists()


def test_a_mixture_in_trls_shape_reads_each_dataset_at_its_revision(env, tmp_path):
    import yaml

    config = yaml.safe_load((QUICKSTART / "sft.yaml").read_text())
    for key in ("dataset_name", "dataset_config", "dataset_revision", "dataset_train_split"):
        config.pop(key)
    rows = [selected_row(i, answer) for i, answer in enumerate(ANSWERS)]
    first = env.hub.push_dataset(Dataset.from_list(rows, features=SELECTED_FEATURES), "t/mix-a", config_name="top40")
    # A later commit on main: the mixture pins the first one by its commit.
    env.hub.push_dataset(Dataset.from_list(rows[:1], features=SELECTED_FEATURES), "t/mix-a", config_name="top40")
    config["datasets"] = [
        {"path": "t/mix-a", "name": "top40", "revision": first.commit, "weight": 0.5},
        {"path": "t/pairs", "weight": 2.0},
    ]
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(config))
    args = args_for(env, tmp_path / "out", "t/sft-mix", max_steps=1)
    args[args.index("--config") + 1] = str(tmp_path / "mix.yaml")
    for key in ("--dataset_name", "--dataset_config"):
        del args[args.index(key) : args.index(key) + 2]
    pushed = sft.cli(args)[0]
    lineage = lineage_of(env.hub.read_card("t/sft-mix", pushed.commit, "model"))
    pairs = env.hub.resolve("t/pairs")
    assert lineage["extra"]["mixture"] == [
        {"path": "t/mix-a", "name": "top40", "revision": first.commit, "commit": first.commit, "split": "train",
         "weight": 0.5},
        {"path": "t/pairs", "name": None, "revision": "main", "commit": pairs, "split": "train", "weight": 2.0},
    ]  # fmt: skip
    assert lineage["extra"]["metrics"]["train_rows"] == 4 + 16  # round(0.5 * 8) + 2 * 8
    assert lineage["config"]["mixture"]["datasets"][1] == {
        "path": "t/pairs", "name": None, "revision": "main", "split": "train", "weight": 2.0
    }  # fmt: skip


@pytest.mark.slow
def test_a_branch_with_a_finished_run_is_not_overwritten(env, tmp_path, caplog):
    first = sft.cli(args_for(env, tmp_path / "a", "t/sft-branch", hub_revision="r1", max_steps=2))[0]
    # Another run (3 steps, not 2) on the same branch is refused; the same run elsewhere (another output_dir, which
    # does not touch the weights) is the finished run itself: nothing to train, nothing pushed.
    with (
        caplog.at_level(logging.INFO, logger="vital.sft.runs"),
        pytest.raises(RunBranchError, match="already holds a finished SFT run"),
    ):
        sft.cli(args_for(env, tmp_path / "b", "t/sft-branch", hub_revision="r1", max_steps=3))
    assert "differs in config.training.max_steps: running again" in caplog.text  # named, and only it
    assert not (tmp_path / "b").exists()  # refused before anything ran
    same = sft.cli(args_for(env, tmp_path / "d", "t/sft-branch", hub_revision="r1", max_steps=2))[0]
    assert same.commit == first.commit and not (tmp_path / "d").exists()
    other = sft.cli(args_for(env, tmp_path / "c", "t/sft-branch", hub_revision="r2", max_steps=2))[0]
    again = sft.cli(
        args_for(env, tmp_path / "b", "t/sft-branch", hub_revision="r1", max_steps=3, overwrite_branch="true")
    )[0]
    assert len({first.commit, other.commit, again.commit}) == 3
    refs = env.hub.list_refs("t/sft-branch", "model")["branches"]
    assert refs["r1"] == again.commit and refs["r2"] == other.commit


@pytest.mark.slow
def test_idefics3_with_a_frozen_vision_tower(env, tmp_path):
    sft.cli(
        args_for(
            env,
            tmp_path / "out",
            "t/sft-idefics3",
            model_name_or_path=env.idefics3,
            freeze="vision_tower",
            max_steps=3,
        )
    )
    snapshot = env.hub.snapshot("t/sft-idefics3", "quickstart", "model")
    tuned = AutoModelForImageTextToText.from_pretrained(snapshot)
    base = AutoModelForImageTextToText.from_pretrained(env.idefics3)
    tuned_state, base_state = tuned.state_dict(), base.state_dict()
    changed = {k for k in base_state if not torch.equal(base_state[k], tuned_state[k])}
    assert changed and not any("vision_model" in k for k in changed)
    assert any("connector" in k for k in changed) and any("text_model" in k for k in changed)
    generate(tuned, AutoProcessor.from_pretrained(snapshot))


@pytest.mark.slow
def test_llava_med_alignment_then_instruction_through_the_hub(env, tmp_path):
    # Step 1: caption conversations from pairs; only the projector trains.
    stage1 = sft.cli(
        args_for(
            env,
            tmp_path / "s1",
            "t/stage1",
            dataset_name="t/pairs",
            dataset_config="",
            freeze="all_but_projector",
            hub_revision="align",
            max_steps=3,
        )
    )[0]
    snapshot = env.hub.snapshot("t/stage1", "align", "model")
    tuned = AutoModelForImageTextToText.from_pretrained(snapshot).state_dict()
    base = AutoModelForImageTextToText.from_pretrained(env.llava).state_dict()
    changed = {k for k in tuned if not torch.equal(tuned[k], base[k])}
    assert changed and all(".multi_modal_projector." in k for k in changed)

    # Step 2 reads step 1's model from the hub at its commit.
    sft.cli(
        args_for(
            env,
            tmp_path / "s2",
            "t/stage2",
            model_name_or_path="hub:t/stage1@align",
            freeze="vision_tower",
            max_steps=2,
        )
    )
    card = env.hub.read_card("t/stage2", "quickstart", "model")
    assert lineage_of(card)["inputs"][0] == {
        "repo_id": "t/stage1",
        "repo_type": "model",
        "revision": "align",
        "commit": stage1.commit,
    }
    assert card.data.base_model == "t/stage1"
    # No path of this machine (the hub snapshot the base was read from) in the pushed files.
    snapshot = env.hub.snapshot("t/stage2", "quickstart", "model")
    # (The card, README.md, records the run's arguments as given, `hub: local:<dir>` included.)
    files = [p for p in snapshot.rglob("*") if p.is_file() and p.name != "README.md"]
    assert len(files) > 3 and [p.name for p in files if str(env.root / "hub") in p.read_text(errors="ignore")] == []


@pytest.mark.slow
def test_two_gloo_processes_on_cpu_leave_the_same_artifact(env, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO_ROOT / "accelerate_configs" / "cpu.yaml"),
    ]
    command = [*launcher, "--main_process_port", str(port), str(REPO_ROOT / "recipes" / "sft.py")]
    command += args_for(env, tmp_path / "out", "t/sft-ddp", max_steps=4, save_steps=2)
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=170, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    snapshot = env.hub.snapshot("t/sft-ddp", "quickstart", "model")
    assert snapshot_files(snapshot) == FULL_LAYOUT
    assert len(env.hub.history("t/sft-ddp", "quickstart", "model")) == 1  # one push, from rank 0 only
    lineage = lineage_of(env.hub.read_card("t/sft-ddp", "quickstart", "model"))
    assert lineage["extra"]["world_size"] == 2
    # 8 rows, 2 per process and step: 2 steps per epoch with two processes (4 with one).
    assert json.loads((snapshot / "trainer_state.json").read_text())["epoch"] == 2.0
    AutoModelForImageTextToText.from_pretrained(snapshot)


def test_every_sft_config_parses():
    from trl import ModelConfig, SFTConfig

    from vital.runner import recipe_parser
    from vital.sft import SFTDatasetMixtureConfig, training_datasets

    configs = sorted(QUICKSTART.glob("sft*.yaml")) + sorted((REPO_ROOT / "recipes").glob("biomed_vital*/sft/*.yaml"))
    assert len(configs) == 8
    for config in configs:
        # bf16 is refused on a machine without a GPU unless use_cpu is set: the GPU configs are parsed with it.
        parser = recipe_parser((sft.ScriptArguments, SFTConfig, ModelConfig, SFTDatasetMixtureConfig))
        script_args, training_args, model_args, mixture = parser.parse_args_and_config(
            ["--config", str(config), "--use_cpu", "true"]
        )
        assert training_args.assistant_only_loss and training_args.max_length is None, config
        assert training_datasets(script_args, mixture) and model_args.model_name_or_path, config
        # SFTConfig's hub vocabulary: every recipe names its model repo and run branch, pushes, and stays private.
        assert training_args.hub_model_id and training_args.hub_revision, config
        assert training_args.push_to_hub and training_args.hub_private_repo is True, config
        assert script_args.freeze in ("none", "vision_tower", "all_but_projector")
        if training_args.chat_template_path:
            assert (REPO_ROOT / training_args.chat_template_path).is_file()
        if "biomed_vital" in str(config):
            assert training_args.bf16 and not script_args.overwrite_branch


def load_benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_stops_without_cuda_and_runs_tiny_on_cpu(monkeypatch, capsys):
    bench = load_benchmark("gpu_llava7b_lora")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out
    # The same code end to end on a model of the same structure, small enough for a CPU.
    assert (
        bench.main(
            [
                "--size",
                "tiny",
                "--device",
                "cpu",
                "--batch-sizes",
                "2",
                "--text-tokens",
                "8",
                "--steps",
                "1",
                "--warmup",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "LoRA r=16 trains" in out and "tokens/s" in out


@pytest.mark.slow
def test_overhead_benchmark_runs():
    import trl

    init = trl.SFTTrainer.__init__
    result = load_benchmark("bench_sft").main(["--steps", "3", "--repeats", "1", "--rows", "8"])
    assert trl.SFTTrainer.__init__ is init  # the stopwatch is taken off again
    assert set(result["runs"]) == {"recipe", "bare", "bare again"}
    assert all(np.isfinite(v) for v in result["overhead_percent"].values())


def test_a_checkpoint_cut_off_mid_save_is_skipped(tmp_path):
    from vital.runner import last_complete_checkpoint

    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if complete:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text('{"global_st')  # torn while writing
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(tmp_path / "missing") is None
