"""Tests for vital.testing.tiny_models: offline tiny VLMs / CLIP, their chat templates, and a TRL SFT smoke run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, CLIPModel

from vital.testing.tiny_models import (
    BOS_TOKEN,
    EOS_TOKEN,
    IDEFICS3_CHAT_TEMPLATE,
    IMAGE_TOKEN,
    LLAVA_CHAT_TEMPLATE,
    PAD_TOKEN,
    TINY_VLM_BUILDERS,
    UNK_TOKEN,
    build_tiny_clip,
    build_tiny_llava,
    build_tiny_tokenizer,
)


VLM_NAMES = sorted(TINY_VLM_BUILDERS)
# The end-of-turn token each template closes an assistant reply with, and the generation prompt it ends with.
END_OF_TURN = {"llava": EOS_TOKEN, "idefics3": "<end_of_utterance>"}
GENERATION_PROMPT = {"llava": "ASSISTANT:", "idefics3": "Assistant:"}
TEMPLATES = {"llava": LLAVA_CHAT_TEMPLATE, "idefics3": IDEFICS3_CHAT_TEMPLATE}


def _image(height: int = 40, width: int = 50, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _expected_image_tokens(name: str, model) -> int:
    config = model.config
    if name == "llava":
        vision = config.vision_config
        n = (vision.image_size // vision.patch_size) ** 2  # the "default" strategy drops CLS
        assert n == config.image_seq_length
        return n
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2


def _image_token_id(model) -> int:
    config = model.config
    return config.image_token_index if hasattr(config, "image_token_index") else config.image_token_id


def _state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def saved_vlms(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Each tiny VLM built once and saved; maps name -> (folder, in-memory model)."""
    out = {}
    for name, builder in TINY_VLM_BUILDERS.items():
        folder = tmp_path_factory.mktemp(f"tiny_{name}")
        model, _ = builder(save_dir=folder)
        out[name] = (folder, model)
    return out


@pytest.fixture(scope="module")
def reloaded_vlms(saved_vlms):
    """name -> (model, processor) reloaded from disk with the Auto classes."""
    return {
        name: (AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder))
        for name, (folder, _) in saved_vlms.items()
    }


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def test_tokenizer_special_tokens_and_vocab():
    tok = build_tiny_tokenizer(extra_special_tokens=["<image>", "<foo>"])
    assert len(tok) == 512
    assert [tok.convert_tokens_to_ids(t) for t in (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)] == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 2, 3)
    assert tok.convert_tokens_to_ids("<image>") == 4
    assert tok.convert_tokens_to_ids("<foo>") == 5
    text = "Describe the <image> CT scan: 3.5 cm<foo>"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id
    assert ids.count(4) == 1 and ids.count(5) == 1  # extra special tokens are never split
    assert tok.decode(ids, skip_special_tokens=False) == BOS_TOKEN + text
    # Byte-level: anything round-trips, even characters absent from the corpus.
    odd = "Ünïcödé ✓ 42µm"
    assert tok.decode(tok(odd, add_special_tokens=False).input_ids) == odd


def test_tokenizer_is_deterministic_and_validates_size():
    a = build_tiny_tokenizer(extra_special_tokens=["<image>"])
    b = build_tiny_tokenizer(extra_special_tokens=["<image>"])
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert len(build_tiny_tokenizer(vocab_size=400)) == 400
    with pytest.raises(ValueError, match="too small"):
        build_tiny_tokenizer(vocab_size=100)


def test_tokenizer_bos_eos_options():
    tok = build_tiny_tokenizer(add_bos_token=False, add_eos_token=True)
    ids = tok("What is shown?").input_ids
    assert ids[0] != tok.bos_token_id and ids[-1] == tok.eos_token_id


# ---------------------------------------------------------------------------------------------------------------------
# Vision-language models
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VLM_NAMES)
def test_vlm_reload_and_size_on_disk(name, saved_vlms, reloaded_vlms):
    folder, built = saved_vlms[name]
    model, processor = reloaded_vlms[name]
    assert type(model) is type(built)
    assert _state_dicts_equal(model, built)
    assert processor.chat_template == TEMPLATES[name]
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 1.5e6, f"{name} is {size} bytes on disk"
    gen = model.generation_config
    assert gen.pad_token_id == processor.tokenizer.pad_token_id
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert processor.tokenizer.convert_tokens_to_ids(END_OF_TURN[name]) in eos
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer)


@pytest.mark.parametrize("name", VLM_NAMES)
def test_vlm_image_token_expansion_forward_and_generate(name, reloaded_vlms):
    model, processor = reloaded_vlms[name]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What does this CT scan show?"}]},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.count(IMAGE_TOKEN) == 1
    assert prompt.endswith(GENERATION_PROMPT[name])

    inputs = processor(text=[prompt], images=[[_image()]], return_tensors="pt")
    n_image_tokens = _expected_image_tokens(name, model)
    assert n_image_tokens == 16
    assert int((inputs["input_ids"] == _image_token_id(model)).sum()) == n_image_tokens
    assert int((inputs["input_ids"] == processor.tokenizer.bos_token_id).sum()) == 1  # template bos, no double bos
    if name == "idefics3":
        ids = inputs["input_ids"][0].tolist()
        tok = processor.tokenizer
        assert ids.count(tok.convert_tokens_to_ids("<fake_token_around_image>")) == 2
        assert ids.count(tok.convert_tokens_to_ids("<global-img>")) == 1
    assert inputs["pixel_values"].shape[-2:] == (32, 32)

    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"].clone())
    assert torch.isfinite(out.loss)
    assert out.logits.shape[:2] == inputs["input_ids"].shape

    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    n_in = inputs["input_ids"].shape[1]
    assert n_in < generated.shape[1] <= n_in + 5
    assert torch.equal(generated[:, :n_in], inputs["input_ids"])


@pytest.mark.parametrize("name", VLM_NAMES)
def test_vlm_builder_determinism(name):
    builder = TINY_VLM_BUILDERS[name]
    a, _ = builder(seed=0)
    b, _ = builder(seed=0)
    c, _ = builder(seed=1)
    assert _state_dicts_equal(a, b)
    assert not _state_dicts_equal(a, c)


def test_tiny_llava_context_length_changes_only_the_context():
    short, short_processor = build_tiny_llava(seed=0)
    long, long_processor = build_tiny_llava(seed=0, context_length=16384)
    assert (short.config.text_config.max_position_embeddings, long.config.text_config.max_position_embeddings) == (
        2048,
        16384,
    )
    assert (short_processor.tokenizer.model_max_length, long_processor.tokenizer.model_max_length) == (2048, 16384)
    assert _state_dicts_equal(short, long)


# ---------------------------------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------------------------------


def _conversation(image: Image.Image | None) -> tuple[list[dict], list[str]]:
    replies = ["No acute abnormality.", "Yes, a 12 mm nodule."]
    first_user: list[dict] = [{"type": "text", "text": "What does this CT scan show?"}]
    if image is not None:
        first_user.insert(0, {"type": "image", "image": image})
    messages = [
        {"role": "system", "content": "You are a helpful biomedical assistant."},
        {"role": "user", "content": first_user},
        {"role": "assistant", "content": [{"type": "text", "text": replies[0]}]},
        {"role": "user", "content": "Is there any nodule?"},  # plain string content is accepted too
        {"role": "assistant", "content": replies[1]},
    ]
    return messages, replies


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text-only"])
@pytest.mark.parametrize("name", VLM_NAMES)
def test_chat_template_assistant_mask(name, with_image, reloaded_vlms):
    _, processor = reloaded_vlms[name]
    tok = processor.tokenizer
    messages, replies = _conversation(_image() if with_image else None)
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0].bool()
    assert ids.shape == mask.shape
    eot = END_OF_TURN[name]
    # Exactly the replies (with the space after the role cue) and their end-of-turn tokens are masked in.
    assert tok.decode(ids[mask]) == "".join(f" {r}{eot}" for r in replies)
    unmasked = tok.decode(ids[~mask])
    assert all(r not in unmasked for r in replies)
    assert "You are a helpful biomedical assistant." in unmasked and "Is there any nodule?" in unmasked
    # Two contiguous masked spans, each ending on the end-of-turn token and followed by an unmasked newline.
    starts = [i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1])]
    ends = [i for i in range(len(mask)) if mask[i] and (i == len(mask) - 1 or not mask[i + 1])]
    assert len(starts) == len(ends) == 2
    eot_id = tok.convert_tokens_to_ids(eot)
    for end in ends:
        assert ids[end] == eot_id
        assert tok.decode(ids[end + 1 : end + 2]) == "\n"
    if with_image:
        assert int((ids == processor.image_token_id).sum()) == 16
        assert not mask[ids == processor.image_token_id].any()


@pytest.mark.parametrize("name", VLM_NAMES)
def test_chat_template_rendering(name, reloaded_vlms):
    _, processor = reloaded_vlms[name]
    typed = [
        {"role": "user", "content": [{"type": "text", "text": "Describe the MRI."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Normal."}]},
    ]
    plain = [{"role": "user", "content": "Describe the MRI."}, {"role": "assistant", "content": "Normal."}]
    text = processor.apply_chat_template(typed)
    assert text == processor.apply_chat_template(plain)
    assert text.startswith(BOS_TOKEN)
    assert f" Normal.{END_OF_TURN[name]}" in text
    assert not text.endswith(GENERATION_PROMPT[name])
    # The tokenizer carries the same template, for text-only use.
    assert processor.tokenizer.apply_chat_template(plain, tokenize=False) == text
    with pytest.raises(Exception, match="Unsupported role"):
        processor.apply_chat_template([{"role": "tool", "content": "x"}])


@pytest.mark.parametrize("name", VLM_NAMES)
def test_chat_template_passes_trl_checks(name, reloaded_vlms):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    _, processor = reloaded_vlms[name]
    assert has_generation_markers(processor.chat_template)
    assert is_chat_template_stop_token_trained(processor)


# ---------------------------------------------------------------------------------------------------------------------
# TRL SFT smoke run
# ---------------------------------------------------------------------------------------------------------------------


def _sft_dataset():
    from datasets import Dataset

    rows = []
    for i in range(4):
        question = ["What does this CT scan show?", "Describe the histology slide.", "Is there a lesion?", "Why?"][i]
        rows.append(
            {
                "images": [_image(32 + 4 * i, 36, seed=i)],
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": f"Finding number {i}."}]},
                ],
            }
        )
    return Dataset.from_list(rows)


@pytest.mark.parametrize("name", VLM_NAMES)
def test_trl_sft_assistant_only_loss(name, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, processor = TINY_VLM_BUILDERS[name]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        max_length=None,
        assistant_only_loss=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-3,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=_sft_dataset(), processing_class=processor)
    # Our template has markers, so TRL must not swap in a training template of its own.
    assert trainer.chat_template is None

    batch = next(iter(trainer.get_train_dataloader()))
    tok = processor.tokenizer
    eot = END_OF_TURN[name]
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        trained = tok.decode(labels[labels != -100])
        assert trained.startswith(" Finding number ") and trained.endswith(f".{eot}")
        assert int((ids == _image_token_id(model)).sum()) == 16

    result = trainer.train()
    assert trainer.state.global_step == 3
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(result.training_loss)
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------------------------------------------------
# CLIP
# ---------------------------------------------------------------------------------------------------------------------


def test_clip_features_reload_and_pooling(tmp_path):
    model, processor = build_tiny_clip(save_dir=tmp_path)
    reloaded = CLIPModel.from_pretrained(tmp_path)
    reprocessor = AutoProcessor.from_pretrained(tmp_path)
    assert _state_dicts_equal(model, reloaded)
    assert type(reprocessor).__name__ == "CLIPProcessor"
    assert AutoTokenizer.from_pretrained(tmp_path).model_max_length == 64

    texts = ["a chest X-ray", "a histology slide with frequent mitotic figures and necrosis"]
    inputs = reprocessor(
        text=texts, images=[_image(), _image(seed=1), _image(seed=2)], return_tensors="pt", padding=True
    )
    tok = reprocessor.tokenizer
    assert (inputs["input_ids"][:, 0] == tok.bos_token_id).all()
    assert ((inputs["input_ids"] == tok.eos_token_id).sum(dim=1) == 1).all()
    assert inputs["pixel_values"].shape == (3, 3, 32, 32)

    with torch.no_grad():
        # transformers 5: get_*_features return an output object; the projected embeddings are its pooler_output.
        text_features = reloaded.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).pooler_output
        image_features = reloaded.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        outputs = reloaded(**inputs)
        # Pooling happens at the eos token, so padding does not change the short text's embedding.
        alone = reprocessor(text=texts[:1], return_tensors="pt")
        alone_features = reloaded.get_text_features(**alone).pooler_output
    assert text_features.shape == (2, 16)
    assert image_features.shape == (3, 16)
    assert outputs.logits_per_image.shape == (3, 2)
    assert torch.isfinite(outputs.logits_per_image).all()
    torch.testing.assert_close(alone_features[0], text_features[0], rtol=1e-4, atol=1e-5)

    # Long texts are truncated to the 64 positions the text model has.
    long = reprocessor(text=["word " * 200], return_tensors="pt", truncation=True)
    assert long["input_ids"].shape[1] == 64
    with torch.no_grad():
        assert reloaded.get_text_features(**long).pooler_output.shape == (1, 16)


def test_clip_determinism():
    a, _ = build_tiny_clip(seed=3)
    b, _ = build_tiny_clip(seed=3)
    assert _state_dicts_equal(a, b)
