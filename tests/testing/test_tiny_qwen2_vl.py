"""The tiny random Qwen2-VL of vital.testing.tiny_models: reload, image-token expansion, forward, generate, a TRL SFT
smoke run with assistant-only loss, and recipes/sft.py on it through a local hub.

Qwen2-VL's image and video processors need torchvision, which does not import beside the CPU torch of the main
virtual environment; ``make test-torchvision`` runs this file in a second one (torch 2.14.1 + torchvision 0.29.1)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


pytest.importorskip("torchvision")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from vital.testing.sft_rows import selected_row  # noqa: E402
from vital.testing.tiny_models import build_tiny_qwen2_vl  # noqa: E402


IMAGE_PAD = "<|image_pad|>"
IM_END = "<|im_end|>"
GENERATION_PROMPT = "<|im_start|>assistant\n"
ANSWERS = [
    "The CT scan shows a small nodule.",
    "There is a left pleural effusion.",
    "No acute abnormality.",
    "The MRI shows a hyperintense lesion.",
]


def _image(height: int = 40, width: int = 50, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _user(question: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_qwen2_vl")
    model, _ = build_tiny_qwen2_vl(save_dir=folder)
    return folder, model


@pytest.fixture(scope="module")
def reloaded(saved):
    folder, _ = saved
    return AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder)


def test_reload_config_and_size_on_disk(saved, reloaded):
    folder, built = saved
    model, processor = reloaded
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration" and type(model) is type(built)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert processor.video_processor is not None
    assert _state_dicts_equal(model, built)
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 2e6, f"{size} bytes on disk"

    tok = processor.tokenizer
    config = model.config
    for name in ("<|im_start|>", IM_END, "<|vision_start|>", "<|vision_end|>", IMAGE_PAD, "<|video_pad|>"):
        assert tok.convert_tokens_to_ids(name) != tok.unk_token_id, name
    assert config.image_token_id == tok.convert_tokens_to_ids(IMAGE_PAD) == processor.image_token_id
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config.get_text_config().vocab_size == len(tok)
    text = config.get_text_config()
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert tok.eos_token == IM_END
    eos = model.generation_config.eos_token_id
    assert tok.convert_tokens_to_ids(IM_END) in (eos if isinstance(eos, list) else [eos])
    assert model.generation_config.pad_token_id == tok.pad_token_id


def test_builder_determinism():
    a, _ = build_tiny_qwen2_vl(seed=0)
    b, _ = build_tiny_qwen2_vl(seed=0)
    c, _ = build_tiny_qwen2_vl(seed=1)
    assert _state_dicts_equal(a, b)
    assert not _state_dicts_equal(a, c)


@pytest.mark.parametrize("size", [(40, 50), (56, 56), (200, 120)])
def test_image_tokens_forward_and_generate(size, reloaded):
    model, processor = reloaded
    prompt = processor.apply_chat_template([_user("What does this CT scan show?")], add_generation_prompt=True)
    assert prompt.count(IMAGE_PAD) == 1 and prompt.count("<|vision_start|>") == 1
    assert prompt.endswith(GENERATION_PROMPT)

    inputs = processor(text=[prompt], images=[_image(*size)], return_tensors="pt")
    grid = inputs["image_grid_thw"]
    merge = processor.image_processor.merge_size
    n_tokens = int(grid.prod()) // merge**2
    assert grid.shape == (1, 3) and int(grid[0, 0]) == 1
    assert 1 <= n_tokens <= 9  # min_pixels = max_pixels = 56*56: a handful of tokens whatever the image size
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == n_tokens
    assert inputs["pixel_values"].shape[0] == int(grid.prod())

    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"].clone())
    assert torch.isfinite(out.loss)
    assert out.logits.shape[:2] == inputs["input_ids"].shape

    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    n_in = inputs["input_ids"].shape[1]
    assert n_in < generated.shape[1] <= n_in + 5
    assert torch.equal(generated[:, :n_in], inputs["input_ids"])


def test_batched_images_of_different_sizes(reloaded):
    model, processor = reloaded
    prompts = [
        processor.apply_chat_template([_user(q)], add_generation_prompt=True) for q in ("Describe the MRI.", "Why?")
    ]
    processor.tokenizer.padding_side = "left"
    try:
        inputs = processor(
            text=prompts, images=[_image(40, 50), _image(120, 60, seed=1)], padding=True, return_tensors="pt"
        )
    finally:
        processor.tokenizer.padding_side = "right"
    per_image = (inputs["image_grid_thw"].prod(dim=1) // processor.image_processor.merge_size**2).tolist()
    assert (inputs["input_ids"] == model.config.image_token_id).sum(dim=1).tolist() == per_image
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[0] == 2


def test_chat_template_assistant_mask_and_trl_checks(reloaded):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    _, processor = reloaded
    tok = processor.tokenizer
    replies = ["No acute abnormality.", "Yes, a 12 mm nodule."]
    messages = [
        {"role": "system", "content": "You are a helpful biomedical assistant."},
        {"role": "user", "content": [{"type": "image", "image": _image()}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": replies[0]}]},
        {"role": "user", "content": "Is there any nodule?"},
        {"role": "assistant", "content": replies[1]},
    ]
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0].bool()
    assert tok.decode(ids[mask]) == "".join(f"{r}{IM_END}" for r in replies)
    assert not mask[ids == processor.image_token_id].any()
    assert int((ids == processor.image_token_id).sum()) == int(out["image_grid_thw"].prod()) // 4
    assert has_generation_markers(processor.chat_template)
    assert is_chat_template_stop_token_trained(processor)
    with pytest.raises(Exception, match="Unsupported role"):
        processor.apply_chat_template([{"role": "tool", "content": "x"}])


def _sft_rows() -> list[dict]:
    questions = ["What does this CT scan show?", "Describe the histology slide.", "Is there a lesion?", "Why?"]
    return [
        {
            "images": [_image(32 + 8 * i, 36 + 4 * i, seed=i)],
            "messages": [
                _user(question),
                {"role": "assistant", "content": [{"type": "text", "text": f"Finding number {i}."}]},
            ],
        }
        for i, question in enumerate(questions)
    ]


def test_trl_sft_assistant_only_loss(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, processor = build_tiny_qwen2_vl()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,  # the new name of gradient_checkpointing
        max_length=None,
        assistant_only_loss=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-3,
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(_sft_rows()), processing_class=processor
    )
    assert trainer.chat_template is None  # our template has markers: TRL keeps it

    batch = next(iter(trainer.get_train_dataloader()))
    tok = processor.tokenizer
    image_token_id = model.config.image_token_id
    per_image = (batch["image_grid_thw"].prod(dim=1) // 4).tolist()
    assert (batch["input_ids"] == image_token_id).sum(dim=1).tolist() == per_image
    for labels in batch["labels"]:
        trained = tok.decode(labels[labels != -100])
        assert trained.startswith("Finding number ") and trained.endswith(f".{IM_END}")

    result = trainer.train()
    assert trainer.state.global_step == 3
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(result.training_loss)
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_sft_recipe_on_a_local_hub(tmp_path):
    from datasets import Dataset, DatasetDict

    from vital.data.schemas import SELECTED_FEATURES
    from vital.hub import LocalHub
    from vital.runner import load_recipe

    sft = load_recipe("sft")
    build_tiny_qwen2_vl(tmp_path / "tiny-qwen2-vl")
    hub = LocalHub(tmp_path / "hub")
    rows = [selected_row(i, answer, question="What does it show?") for i, answer in enumerate(ANSWERS)]
    hub.push_dataset(
        DatasetDict({"train": Dataset.from_list(rows, features=SELECTED_FEATURES)}), "t/selected", config_name="top40"
    )
    quickstart = Path(__file__).resolve().parents[2] / "recipes" / "quickstart" / "sft.yaml"
    values = {
        "hub": f"local:{tmp_path / 'hub'}",
        "dataset_name": "t/selected",
        "dataset_config": "top40",
        "model_name_or_path": str(tmp_path / "tiny-qwen2-vl"),
        "output_dir": str(tmp_path / "out"),
        "hub_model_id": "t/sft-qwen2-vl",
        "overwrite_branch": "false",
        "max_steps": 3,
        "save_strategy": "no",
    }
    args = ["--config", str(quickstart)]
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    (pushed,) = sft.cli(args)
    assert pushed.repo_id == "t/sft-qwen2-vl"

    snapshot = hub.snapshot("t/sft-qwen2-vl", pushed.revision, "model")
    state = json.loads((snapshot / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 3 and len(losses) == 3 and all(math.isfinite(x) for x in losses)

    model = AutoModelForImageTextToText.from_pretrained(snapshot)
    processor = AutoProcessor.from_pretrained(snapshot)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    prompt = processor.apply_chat_template([_user("What does it show?")], add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[_image()], return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
