"""The selector model: config, backbones, forward, scoring, save/load round trips, the open_clip guard."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoProcessor,
    CLIPModel,
    SiglipConfig,
    SiglipModel,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vital.selector import OpenClipBackbone, SelectorConfig, SelectorModel, encode_texts_images, score_texts_images
from vital.selector.modeling import _pooled


def _inputs(processor, n=4):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)) for _ in range(n)]
    texts = [f"question {i}\nan answer that mentions effusion {i}" for i in range(n)]
    return images, texts


def test_config_defaults_follow_the_paper_and_keep_the_backbone_safe(clip_dir):
    config = SelectorConfig(backbone_config=AutoConfig.from_pretrained(clip_dir))
    assert config.hidden_sizes == [512, 512, 512]
    assert config.text_fields == ["question", "answer"]
    assert config.num_labels == 1
    assert config.backbone_model_type == "clip"
    assert isinstance(config.backbone_config, dict)
    assert (config.image_feature_dim, config.text_feature_dim) == (16, 16)  # the tiny CLIP's projection_dim
    # TRL sets config.get_text_config().pad_token_id: it must land on the selector's own config.
    assert config.get_text_config() is config
    assert not any(hasattr(config, name) for name in ("text_config", "decoder", "generator", "text_encoder"))


def test_config_refuses_what_a_selector_cannot_be(clip_dir):
    backbone = AutoConfig.from_pretrained(clip_dir)
    with pytest.raises(ValueError, match="text_fields"):
        SelectorConfig(backbone_config=backbone, text_fields=["question", "rationale"])
    with pytest.raises(ValueError, match="num_labels"):
        SelectorConfig(backbone_config=backbone, num_labels=2)


def test_forward_gives_one_score_per_image_text_input(make_selector, processor):
    model = make_selector().eval()
    batch = encode_texts_images(processor, *_inputs(processor, 3))
    out = model(**batch)
    assert out.logits.shape == (3, 1)
    assert model.config.image_feature_dim + model.config.text_feature_dim == model.head[0].in_features
    labelled = model(**batch, labels=torch.zeros(3))
    assert labelled.loss.item() == pytest.approx(out.logits.pow(2).mean().item(), rel=1e-5)
    assert model(**batch, return_dict=False)[0].shape == (3, 1)


def test_the_score_depends_on_both_image_and_text(make_selector, processor):
    model = make_selector().eval()
    images, texts = _inputs(processor, 2)
    base = score_texts_images(model, processor, [images[0]], [texts[0]])
    assert score_texts_images(model, processor, [images[1]], [texts[0]]) != base
    assert score_texts_images(model, processor, [images[0]], [texts[1]]) != base


def test_features_are_read_from_tensors_and_output_objects():
    features = torch.randn(2, 4)
    assert _pooled(features) is features
    assert _pooled(BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=features)) is features
    with pytest.raises(TypeError):
        _pooled(object())


def test_from_backbone_keeps_the_pretrained_weights(clip_dir, make_selector):
    clip = CLIPModel.from_pretrained(clip_dir)
    model = make_selector()
    for name, tensor in clip.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], tensor, msg=name)


def test_freeze_backbone_trains_the_head_only(make_selector):
    model = make_selector(freeze_backbone=True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    # CLIP's logit_scale never reaches the score: it is frozen even when the backbone trains.
    assert not make_selector().backbone.logit_scale.requires_grad


def test_save_and_reload_with_from_pretrained_and_the_auto_classes(make_selector, processor, tmp_path):
    model = make_selector(text_fields=["caption", "question", "answer"], dropout=0.0).eval()
    images, texts = _inputs(processor)
    expected = score_texts_images(model, processor, images, texts)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    for loader in (SelectorModel, AutoModel, AutoModelForSequenceClassification):
        reloaded = loader.from_pretrained(tmp_path)
        assert isinstance(reloaded, SelectorModel)
        assert reloaded.config.text_fields == ["caption", "question", "answer"]
        reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
        got = score_texts_images(reloaded, reloaded_processor, images, texts)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_scoring_in_batches_matches_one_batch(make_selector, processor):
    model = make_selector().eval()
    images, texts = _inputs(processor, 5)
    whole = model.score(encode_texts_images(processor, images, texts)).tolist()
    np.testing.assert_allclose(score_texts_images(model, processor, images, texts, batch_size=2), whole, rtol=1e-5)
    assert model.training is False
    with pytest.raises(ValueError):
        score_texts_images(model, processor, images[:2], texts)


def test_score_restores_training_mode(make_selector, processor):
    model = make_selector().train()
    model.score(encode_texts_images(processor, *_inputs(processor, 2)))
    assert model.training


def _tiny_towers():
    text = {
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
    }
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 24,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
    }
    return text, vision


@pytest.mark.parametrize("family", ["siglip", "vision_text_dual_encoder"])
def test_other_dual_encoders_work_as_backbones(family, tmp_path):
    text, vision = _tiny_towers()
    if family == "siglip":
        backbone = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        expected_dims = (24, 32)  # vision hidden size, text projection size
    else:
        config = VisionTextDualEncoderConfig.from_vision_text_configs(
            AutoConfig.for_model("clip_vision_model", **vision), AutoConfig.for_model("bert", **text), projection_dim=8
        )
        backbone = VisionTextDualEncoderModel(config)
        expected_dims = (8, 8)
    model = SelectorModel.from_backbone(backbone, hidden_sizes=[16]).eval()
    assert (model.config.image_feature_dim, model.config.text_feature_dim) == expected_dims
    # SigLIP pools the text at the last position: its texts are padded to max_length.
    assert model.config.text_padding == ("max_length" if family == "siglip" else True)
    batch = {
        "input_ids": torch.randint(0, 99, (3, 16)),
        "attention_mask": torch.ones(3, 16, dtype=torch.long),
        "pixel_values": torch.randn(3, 3, 32, 32),
    }
    scores = model.score(batch)
    assert scores.shape == (3,)
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(AutoModel.from_pretrained(tmp_path).score(batch), scores)


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None, reason="open_clip_torch is installed")
def test_biomedclip_without_open_clip_says_what_to_install():
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        SelectorModel.from_backbone("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        OpenClipBackbone("ViT-B-16", model_cfg={"embed_dim": 512})
    # A saved open_clip selector config fails the same way when the model is built.
    config = SelectorConfig(
        backbone_config={"model_name": "ViT-B-16", "model_cfg": {"embed_dim": 512}}, backbone_model_type="open_clip"
    )
    assert (config.image_feature_dim, config.text_feature_dim) == (512, 512)
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        SelectorModel(config)
