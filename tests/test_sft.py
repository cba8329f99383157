"""vital.sft: SFT data from the hub (formats, pinned commits, checks, mixtures), model provenance, freezing, run
branches, and the labels TRL's collator builds from our data."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

from vital.cards import Lineage, model_card
from vital.data.errors import RecordError
from vital.data.schemas import MESSAGES, PAIR_FEATURES, SELECTED_FEATURES
from vital.hub import ArtifactRef, LocalHub
from vital.sft import (
    SFT_FEATURES,
    RunBranchError,
    SFTDatasetConfig,
    SFTDatasetMixtureConfig,
    ThroughputCallback,
    check_cpu_launch,
    check_run_branch,
    check_sft_rows,
    default_run_branch,
    detect_format,
    finished_run,
    freeze_modules,
    load_sft_dataset,
    load_sft_mixture,
    mix_datasets,
    model_lineage,
    pairs_to_caption_conversations,
    resolve_model,
    stage_output,
    training_datasets,
)
from vital.testing.sft_rows import STAND_IN_GENERATION
from vital.testing.tiny_models import build_tiny_idefics3, build_tiny_llava


REPO_ROOT = Path(__file__).resolve().parent.parent
ANSWERS = [
    "The CT scan shows a small nodule.",
    "There is a left pleural effusion.",
    "No acute abnormality.",
    "The MRI shows a hyperintense lesion.",
]
GENERATION = STAND_IN_GENERATION


def image(seed: int, size=(40, 36)) -> PILImage.Image:
    return PILImage.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def user(text: str, n_images: int = 0) -> dict:
    return {"role": "user", "content": [{"type": "image", "text": None}] * n_images + [{"type": "text", "text": text}]}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def selected_row(i: int, messages=None, n_images: int = 1) -> dict:
    return {
        "id": f"c{i}",
        "pair_id": f"p{i}",
        "images": [image(i) for _ in range(n_images)],
        "messages": messages or [user("What does this image show?", 1), assistant(ANSWERS[i % len(ANSWERS)])],
        "modality": "ct",
        "caption": "A caption.",
        "mentions": [],
        "generation": GENERATION,
        "selector_score": float(i),
    }


def selected(rows) -> Dataset:
    return Dataset.from_list(rows, features=SELECTED_FEATURES)


@pytest.fixture
def hub(tmp_path):
    return LocalHub(tmp_path / "hub")


# ----------------------------------------------------------------------------------------------------------------------
# Specs and formats
# ----------------------------------------------------------------------------------------------------------------------
def test_mixture_config_has_trls_shape_with_a_revision_and_a_weight_per_dataset(tmp_path):
    from types import SimpleNamespace

    from trl import ModelConfig, SFTConfig

    from vital.runner import recipe_parser
    from vital.stages.sft import ScriptArguments

    config = tmp_path / "mix.yaml"
    config.write_text(
        "datasets:\n"
        "  - {path: org/a, name: top40, revision: v1, weight: 0.5}\n"
        "  - {path: org/b, split: dev, weight: 2}\n"
        f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\nbf16: false\n"
    )
    parser = recipe_parser((ScriptArguments, SFTConfig, ModelConfig, SFTDatasetMixtureConfig))
    script_args, _, _, mixture = parser.parse_args_and_config(["--config", str(config)])
    assert mixture.datasets == [
        SFTDatasetConfig("org/a", "top40", "v1", "train", 0.5),
        SFTDatasetConfig("org/b", None, "main", "dev", 2.0),
    ]
    assert training_datasets(script_args, mixture) == mixture.datasets
    # One dataset by the script arguments, TRL's names plus a revision.
    args = ["--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false", "--dataset_name", "org/sel"]
    args += ["--dataset_config", "top10", "--dataset_revision", "dev", "--dataset_train_split", "val"]
    parser = recipe_parser((ScriptArguments, SFTConfig, ModelConfig, SFTDatasetMixtureConfig))  # no config defaults
    script_args, _, _, mixture = parser.parse_args_and_config(args)
    assert training_datasets(script_args, mixture) == [SFTDatasetConfig("org/sel", "top10", "dev", "val", 1.0)]
    assert str(SFTDatasetConfig("org/sel", "top10", "dev", weight=0.5)) == "org/sel@dev:top10 x0.5"
    # Both, or neither: refused.
    both = SimpleNamespace(dataset_name="org/sel")
    with pytest.raises(ValueError, match="both `dataset_name` and `datasets`"):
        training_datasets(both, SFTDatasetMixtureConfig(datasets=[{"path": "org/a"}]))
    with pytest.raises(ValueError, match="no data"):
        training_datasets(SimpleNamespace(dataset_name=None), SFTDatasetMixtureConfig())
    # TRL's normalised `fraction` is refused with the reason; unknown keys and bad weights are named.
    with pytest.raises(ValueError, match=r"datasets\[1\] \(org/b\): `fraction`.*use `weight`"):
        SFTDatasetMixtureConfig(datasets=[{"path": "org/a"}, {"path": "org/b", "fraction": 0.5}])
    with pytest.raises(ValueError, match=r"unknown key\(s\) data_files"):
        SFTDatasetMixtureConfig(datasets=[{"path": "org/a", "data_files": "x.json"}])
    with pytest.raises(ValueError, match="no `path`"):
        SFTDatasetMixtureConfig(datasets=[{"name": "top40"}])
    for bad in (0, -1, "zero"):
        with pytest.raises(ValueError, match="org/a: (the weight must be positive|weight)"):
            SFTDatasetConfig("org/a", weight=bad)


def test_detect_format():
    assert detect_format(["id", "messages", "images"]) == "messages"
    assert detect_format(["messages", "image"]) == "messages"
    assert detect_format(["id", "image", "conversations"]) == "llava"
    assert detect_format(list(PAIR_FEATURES)) == "pairs"
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format(["prompt", "chosen"])


def test_load_selected_demos_llava_and_pairs_at_pinned_commits(hub):
    first = hub.push_dataset(selected([selected_row(i) for i in range(3)]), "t/selected", config_name="top40")
    # A later commit on main must not change what the first commit reads.
    hub.push_dataset(selected([selected_row(i) for i in range(5)]), "t/selected", config_name="top40")

    rows, ref = load_sft_dataset(hub, SFTDatasetConfig("t/selected", "top40", first.commit))
    assert isinstance(ref, ArtifactRef) and ref.commit == first.commit and ref.config == "top40"
    assert rows.features == SFT_FEATURES
    assert rows["id"] == ["c0", "c1", "c2"]
    assert set(rows["source_dataset"]) == {f"t/selected@{first.commit[:12]}:top40"}
    assert np.array_equal(np.asarray(rows[0]["images"][0]), np.asarray(image(0)))
    latest, ref = load_sft_dataset(hub, SFTDatasetConfig("t/selected", name="top40"))
    assert len(latest) == 5 and ref.commit != first.commit

    # Demos: messages + one `image` column.
    demo = {"id": "d0", "image": image(7), "messages": [user("Describe.", 1), assistant("A radiograph.")]}
    hub.push_dataset(
        Dataset.from_list([demo], features=Features({"id": Value("string"), "image": Image(), "messages": MESSAGES})),
        "t/demos",
    )
    rows, _ = load_sft_dataset(hub, "t/demos")
    assert len(rows[0]["images"]) == 1 and rows[0]["messages"][1]["content"][0]["text"] == "A radiograph."

    # LLaVA conversations: `<image>` placeholders become image parts; a text-only record has no image.
    llava = [
        {
            "id": "L0",
            "image": image(8),
            "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A CT."}],
        },
        {
            "id": "L1",
            "image": None,
            "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}],
        },
    ]
    turn = {"from": Value("string"), "value": Value("string")}
    hub.push_dataset(
        Dataset.from_list(
            llava, features=Features({"id": Value("string"), "image": Image(), "conversations": List(turn)})
        ),
        "t/llava",
    )
    rows, _ = load_sft_dataset(hub, "t/llava")
    assert rows[0]["messages"][0]["content"] == [
        {"type": "image", "text": None},
        {"type": "text", "text": "What is it?"},
    ]
    assert len(rows[0]["images"]) == 1 and rows[1]["images"] == []
    assert check_sft_rows(rows)[0] is rows

    # Pairs become caption conversations.
    pairs = [
        {
            "id": "P0",
            "image": image(9),
            "caption": "Axial CT of the chest.",
            "fig_label": "F1",
            "mentions": [],
            "modality": "ct",
            "source": None,
        }
    ]
    hub.push_dataset(Dataset.from_list(pairs, features=PAIR_FEATURES), "t/pairs")
    rows, _ = load_sft_dataset(hub, "t/pairs")
    assert rows[0]["messages"][1] == assistant("Axial CT of the chest.")
    assert rows[0]["messages"][0]["content"][0]["type"] == "image"


def test_llava_rows_with_file_names_are_refused(hub):
    records = [
        {
            "id": "L0",
            "image": "x.png",
            "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}],
        }
    ]
    hub.push_dataset(Dataset.from_list(records), "t/llava-files")
    with pytest.raises(ValueError, match="llava_to_messages"):
        load_sft_dataset(hub, "t/llava-files")


def test_pairs_to_caption_conversations_is_deterministic_by_id():
    pairs = Dataset.from_list(
        [
            {
                "id": f"P{i}",
                "image": image(i),
                "caption": f" Caption {i}. ",
                "fig_label": "",
                "mentions": [],
                "modality": "mri",
                "source": None,
            }
            for i in range(6)
        ],
        features=PAIR_FEATURES,
    )
    rows = pairs_to_caption_conversations(pairs, seed=3)
    assert rows.column_names == ["id", "images", "messages", "modality"]
    assert [m[1]["content"][0]["text"] for m in rows["messages"]] == [f"Caption {i}." for i in range(6)]
    prompts = [m[0]["content"][1]["text"] for m in rows["messages"]]
    reversed_prompts = [
        m[0]["content"][1]["text"]
        for m in pairs_to_caption_conversations(pairs.select(range(5, -1, -1)), seed=3)["messages"]
    ]
    assert prompts == reversed_prompts[::-1]  # the prompt depends on the id, not the position
    only = pairs_to_caption_conversations(pairs, prompts=["Describe the figure."])
    assert {m[0]["content"][1]["text"] for m in only["messages"]} == {"Describe the figure."}
    assert check_sft_rows(rows)[0] is rows


# ----------------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------------
BAD_ROWS = [
    (
        selected_row(10, [user("Two placeholders?", 2), assistant("Yes.")]),
        "c10",
        r"2 image placeholder\(s\) for 1 image",
    ),
    (selected_row(11, [user("No placeholder?"), assistant("Yes.")]), "c11", r"0 image placeholder\(s\) for 1 image"),
    (selected_row(12, [user("Empty?", 1), assistant("   ")]), "c12", "empty assistant turn"),
    (selected_row(13, [user("Q", 1), assistant("A"), user("Q2"), assistant("")]), "c13", "empty assistant turn"),
    (
        selected_row(14, [user("Q"), assistant("A")], n_images=0) | {"messages": [user("Q", 1), assistant("A")]},
        "c14",
        "1 image placeholder",
    ),
]


@pytest.mark.parametrize(("row", "row_id", "reason"), BAD_ROWS, ids=[r[1] for r in BAD_ROWS])
def test_bad_rows_are_rejected_with_their_id(hub, row, row_id, reason):
    hub.push_dataset(selected([selected_row(0), row, selected_row(1)]), "t/bad")
    rows, _ = load_sft_dataset(hub, "t/bad")
    with pytest.raises(RecordError, match=reason) as info:
        check_sft_rows(rows)
    assert info.value.record_id.startswith(f"{row_id} (from t/bad@")
    kept, quarantine = check_sft_rows(rows, errors="skip")
    assert kept["id"] == ["c0", "c1"]
    assert len(quarantine) == 1 and quarantine.records[0].record_id.startswith(row_id)


def test_corrupt_image_is_rejected():
    rows = Dataset.from_list(
        [
            {
                "id": "x",
                "images": [{"bytes": b"not a png", "path": None}],
                "messages": [user("Q", 1), assistant("A")],
                "source_dataset": "",
            }
        ],
        features=Features({**SFT_FEATURES, "images": List(Image(decode=False))}),
    )
    with pytest.raises(RecordError, match="corrupt image"):
        check_sft_rows(rows)


# ----------------------------------------------------------------------------------------------------------------------
# Mixtures
# ----------------------------------------------------------------------------------------------------------------------
def test_mixture_draws_by_weight_and_keeps_provenance(hub):
    hub.push_dataset(selected([selected_row(i) for i in range(10)]), "t/a", config_name="top40")
    hub.push_dataset(selected([selected_row(100 + i) for i in range(4)]), "t/b")
    specs = [SFTDatasetConfig("t/a", "top40", weight=0.5), SFTDatasetConfig("t/b", weight=2.5)]
    mixed, refs = load_sft_mixture(hub, specs, seed=1)
    sources = mixed["source_dataset"]
    a, b = (f"t/a@{refs[0].commit[:12]}:top40", f"t/b@{refs[1].commit[:12]}")
    assert sources.count(a) == 5 and sources.count(b) == 10  # round(0.5 * 10), round(2.5 * 4)
    b_ids = [i for i, s in zip(mixed["id"], sources, strict=True) if s == b]
    assert all(b_ids.count(f"c{100 + i}") >= 2 for i in range(4))  # two full copies, then a draw of two more
    assert len({i for i, s in zip(mixed["id"], sources, strict=True) if s == a}) == 5  # no repeats below 1
    again, _ = load_sft_mixture(hub, specs, seed=1)
    other, _ = load_sft_mixture(hub, specs, seed=2)
    assert again["id"] == mixed["id"] and other["id"] != mixed["id"]
    assert sources != sorted(sources)  # shuffled together, not concatenated
    unweighted, _ = load_sft_mixture(hub, specs, seed=1, weighted=False)
    assert len(unweighted) == 14

    single = Dataset.from_dict({"id": ["x", "y"]})
    assert mix_datasets([(single, 1.0)])["source_dataset"] == ["#0", "#0"]
    with pytest.raises(ValueError, match="positive"):
        mix_datasets([(single, 0.0), (single, 1.0)])


# ----------------------------------------------------------------------------------------------------------------------
# Labels: what TRL's own collator makes of our rows
# ----------------------------------------------------------------------------------------------------------------------
def quickstart_trainer(model, processor, train, tmp_path, config="sft.yaml", **overrides):
    from trl import ModelConfig, SFTConfig, TrlParser

    from vital.runner import load_recipe
    from vital.sft import SFTRunTrainer

    args = ["--config", str(REPO_ROOT / "recipes" / "quickstart" / config), "--output_dir", str(tmp_path / "out")]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    script_args, training_args, _, _ = TrlParser(
        (load_recipe("sft").ScriptArguments, SFTConfig, ModelConfig, SFTDatasetMixtureConfig)
    ).parse_args_and_config(args)
    # The quickstart sets push_to_hub: the stage's trainer keeps the Trainer's own pushes off (the hub layer pushes).
    trainer = SFTRunTrainer(model=model, args=training_args, train_dataset=train, processing_class=processor)
    assert training_args.push_to_hub and not trainer.args.push_to_hub and trainer.hub_model_id is None
    with pytest.raises(RuntimeError, match="does not push by itself"):
        trainer.push_to_hub()
    return trainer


@pytest.mark.parametrize("builder", [build_tiny_llava, build_tiny_idefics3], ids=["llava", "idefics3"])
def test_labels_are_the_assistant_replies_only(hub, tmp_path, builder):
    model, processor = builder()
    rows = [selected_row(i) for i in range(3)]
    rows.append(
        selected_row(
            3, [user("What is it?", 1), assistant("A CT scan."), user("Any lesion?"), assistant("No lesion.")]
        )
    )
    hub.push_dataset(selected(rows), "t/sel")
    train, _ = load_sft_dataset(hub, "t/sel")
    trainer = quickstart_trainer(model, processor, train, tmp_path, per_device_train_batch_size=4)
    assert trainer.args.assistant_only_loss and trainer.args.max_length is None

    tok = processor.tokenizer
    eot = "</s>" if builder is build_tiny_llava else "<end_of_utterance>"
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    image_token = model.config.image_token_id
    expected = {f"c{i}": f" {ANSWERS[i]}{eot}" for i in range(3)} | {"c3": f" A CT scan.{eot} No lesion.{eot}"}
    for rid, ids, labels, mask in zip(
        train["id"], batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True
    ):
        trained = labels != -100
        assert tok.decode(labels[trained]) == expected[rid]
        assert torch.equal(labels[trained], ids[trained])  # labels are the input ids where they count
        assert not trained[ids == image_token].any() and int((ids == image_token).sum()) == 16
        assert not trained[mask == 0].any()  # padding never counts


def test_llava15_training_template_trains_the_end_of_turn_token():
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    _, processor = build_tiny_llava()
    template = (REPO_ROOT / "recipes" / "biomed_vital" / "sft" / "llava15_training.jinja").read_text()
    processor.chat_template = template
    assert has_generation_markers(template) and is_chat_template_stop_token_trained(processor)
    messages = [user("What is it?", 1), assistant("A CT scan."), user("Any lesion?"), assistant("No.")]
    assert (
        processor.apply_chat_template(messages)
        == "<s>USER: <image>\nWhat is it? ASSISTANT: A CT scan.</s>USER: Any lesion? ASSISTANT: No.</s>"
    )
    assert processor.apply_chat_template(messages[:1], add_generation_prompt=True).endswith("What is it? ASSISTANT:")
    messages[0]["content"][0] = {"type": "image", "image": image(0)}
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0].bool()
    assert processor.tokenizer.decode(ids[mask]) == " A CT scan.</s> No.</s>"


# ----------------------------------------------------------------------------------------------------------------------
# Model: provenance and freezing
# ----------------------------------------------------------------------------------------------------------------------
def test_resolve_model_from_folder_hub_and_hub_id(hub, tmp_path):
    folder = tmp_path / "tiny"
    build_tiny_llava(folder)
    source = resolve_model(hub, str(folder))
    assert source.path == str(folder) and source.revision is None and source.base_model is None
    assert source.lineage["source"] == str(folder.resolve()) and len(source.lineage["sha256"]) == 64
    assert resolve_model(hub, str(folder)).lineage == source.lineage  # the fingerprint is stable

    pushed = hub.push_folder(folder, "org/tiny", "model", revision="v1")
    for spec in ("hub:org/tiny@v1", f"hub:org/tiny@{pushed.commit[:10]}"):
        source = resolve_model(hub, spec)
        assert Path(source.path) == hub.snapshot("org/tiny", pushed.commit, "model")
        assert source.lineage.commit == pushed.commit and source.base_model == "org/tiny"
    assert resolve_model(hub, "hub:org/tiny", revision="v1").lineage.commit == pushed.commit

    source = resolve_model(hub, "llava-hf/llava-1.5-7b-hf", revision="main")
    assert (source.path, source.revision, source.base_model) == (
        "llava-hf/llava-1.5-7b-hf",
        "main",
        "llava-hf/llava-1.5-7b-hf",
    )

    class Loaded:
        class config:
            _commit_hash = "abc123"

    assert model_lineage(source, Loaded())["commit"] == "abc123"


@pytest.mark.parametrize("builder", [build_tiny_llava, build_tiny_idefics3], ids=["llava", "idefics3"])
def test_freeze(builder):
    model, _ = builder()
    vision = model.model.vision_tower if builder is build_tiny_llava else model.model.vision_model
    projector = model.model.multi_modal_projector if builder is build_tiny_llava else model.model.connector
    total = sum(p.numel() for p in model.parameters())
    assert freeze_modules(model, "none") == {"trainable": total, "total": total}

    counts = freeze_modules(model, "vision_tower")
    assert not any(p.requires_grad for p in vision.parameters())
    assert all(p.requires_grad for p in projector.parameters())
    assert all(p.requires_grad for p in model.lm_head.parameters())
    assert counts["trainable"] == total - sum(p.numel() for p in vision.parameters())

    counts = freeze_modules(builder()[0], "all_but_projector")
    assert counts["trainable"] == sum(p.numel() for p in projector.parameters())
    with pytest.raises(ValueError, match="freeze must be"):
        freeze_modules(model, "everything")
    with pytest.raises(ValueError, match="no projector"):
        freeze_modules(torch.nn.Linear(2, 2), "all_but_projector")


# ----------------------------------------------------------------------------------------------------------------------
# Run branches, output staging, launch checks, callbacks
# ----------------------------------------------------------------------------------------------------------------------
def test_run_branch_refusal(hub, tmp_path):
    check_run_branch(hub, "org/model", "run-1")  # no repo yet: a fresh run
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    hub.create_repo("org/model", "model")
    hub.create_branch("org/model", "run-1", repo_type="model")
    hub.push_folder(folder, "org/model", "model", revision="run-1")
    check_run_branch(hub, "org/model", "run-1")  # files but no card: an unfinished run, may go on

    def card(branch):
        return model_card(
            "model",
            lineage=Lineage(stage="sft", extra={"run_branch": branch}),
            model_name="m",
            description="",
            repo_id="org/model",
        )

    hub.push_folder(folder, "org/model", "model", revision="run-1", card=card("run-1"))
    assert finished_run(hub, "org/model", "run-1")["stage"] == "sft"
    with pytest.raises(RunBranchError, match="overwrite_branch"):
        check_run_branch(hub, "org/model", "run-1")
    check_run_branch(hub, "org/model", "run-1", overwrite=True)
    # A branch made from main inherits main's card, but that card names another branch: not this run's.
    hub.push_folder(folder, "org/model", "model", revision="main", card=card("run-1"))
    hub.create_branch("org/model", "run-2", repo_type="model")
    check_run_branch(hub, "org/model", "run-2")

    assert default_run_branch(tmp_path / "my run: v2") == "my-run-v2"


def test_stage_output_leaves_out_checkpoints_and_keeps_the_tensorboard_logs(tmp_path):
    out = tmp_path / "out"
    for rel in (
        "model.safetensors",
        "config.json",
        "checkpoint-3/model.safetensors",
        "runs/x/events",
        "training_args.bin",
        "sub/file.txt",
    ):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(rel)
    staged = stage_output(out, tmp_path / "staged")
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == [
        "config.json",
        "model.safetensors",
        "runs/x/events",
        "sub/file.txt",
    ]


def test_cpu_launch_trap_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="use_cpu: true"):
        check_cpu_launch(use_cpu=False)
    check_cpu_launch(use_cpu=True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_cpu_launch(use_cpu=False)


def test_throughput_callback_adds_rates_to_the_logs():
    from types import SimpleNamespace

    callback = ThroughputCallback()
    args = SimpleNamespace(train_batch_size=2, gradient_accumulation_steps=1, world_size=2)
    state = SimpleNamespace(global_step=0, log_history=[])
    callback.on_train_begin(args, state, None)
    state.global_step = 2
    logs = {"loss": 1.0, "num_tokens": 100.0}
    state.log_history.append({**logs, "step": 2})
    callback.on_log(args, state, None, logs=logs)
    assert logs["tokens_per_second"] > 0 and logs["samples_per_second"] > 0
    assert state.log_history[-1]["tokens_per_second"] == logs["tokens_per_second"]
    callback.on_log(args, state, None, logs={"eval_loss": 1.0})  # eval logs are left alone
    callback.on_train_end(args, state, None)
    assert callback.summary["train_tokens"] == 100.0 and math.isfinite(callback.summary["train_tokens_per_second"])


def test_run_target_reads_sftconfigs_hub_options_with_our_defaults(tmp_path):
    from trl import SFTConfig

    from vital.sft import RunTarget, run_target

    unset = SFTConfig(output_dir=str(tmp_path / "my run"), use_cpu=True, bf16=False)
    assert unset.hub_private_repo is None and unset.push_to_hub is False  # TRL's defaults
    # Unset: the output folder's name for the repo and the branch (as the Trainer names its repo), private.
    assert run_target(unset) == RunTarget("my-run", "my-run", private=True, push=False)
    named = SFTConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        push_to_hub=True,
        hub_model_id="org/model",
        hub_revision="exp-2",
        hub_private_repo=False,
    )
    assert run_target(named) == RunTarget("org/model", "exp-2", private=False, push=True)


def test_the_hf_backend_honours_the_same_hub_options(tmp_path):
    """claim_branch and push_run with HfHub: the repo is created as hub_private_repo says, the run branch is
    hub_revision, the repo is hub_model_id (the calls are checked on a mocked HfApi; nothing goes online)."""
    from unittest import mock

    from trl import SFTConfig

    from vital.hub import HfHub
    from vital.sft import claim_branch, push_run, run_target

    api = mock.MagicMock()
    api.upload_folder.return_value = mock.Mock(oid="c" * 40, commit_url="https://hub/commit/c")
    api.create_commit.return_value = mock.Mock(oid="f" * 40, commit_url="https://hub/commit/f")
    api.repo_info.return_value = mock.Mock(sha="e" * 40)
    (tmp_path / "card.md").write_text("---\nlicense: mit\n---\n# no lineage\n")
    api.hf_hub_download.return_value = str(tmp_path / "card.md")
    hub = HfHub(api=api, token="hf_secret_token")
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        push_to_hub=True,
        hub_model_id="org/model",
        hub_revision="exp-3",
        hub_private_repo=False,
    )
    target = run_target(args)
    assert claim_branch(hub, target, Lineage(stage="sft"), world_size=1, overwrite=False) is None
    api.create_repo.assert_any_call("org/model", repo_type="model", private=False, exist_ok=True)
    api.create_branch.assert_any_call("org/model", branch="exp-3", revision=None, repo_type="model", exist_ok=True)
    output = tmp_path / "out"
    output.mkdir()
    (output / "config.json").write_text("{}")
    (output / "checkpoint-1").mkdir()
    (output / "checkpoint-1" / "model.safetensors").write_bytes(b"x")
    push_run(hub, target, output, final_loss=1.0)
    calls = [*api.upload_folder.call_args_list, *api.create_commit.call_args_list]
    assert calls and all(c.kwargs.get("revision") == "exp-3" for c in calls)
    assert all(c.kwargs.get("repo_id", c.args[0] if c.args else None) == "org/model" for c in calls)
