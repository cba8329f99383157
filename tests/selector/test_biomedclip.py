"""BiomedCLIP for real: a random model with BiomedCLIP's architecture (open_clip ``CustomTextCLIP``: timm ViT/16 +
PubMedBERT-shaped BERT, written in BiomedCLIP's Hub layout by :func:`vital.testing.biomedclip.build_biomedclip_like`,
nothing downloaded) as the selector backbone (train, save, push, load, score) and as the clustering embedder.

open_clip imports torchvision, which does not import beside the main environment's torch: these tests run in the
torchvision environment (``make test-torchvision``) and skip elsewhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import concatenate_datasets


try:
    import open_clip
except Exception as error:  # not installed, or torchvision does not import beside this torch
    pytest.skip(f"open_clip does not import here ({type(error).__name__}: {error})", allow_module_level=True)

from transformers import AutoModel, AutoProcessor

import vital.selector  # noqa: F401  (registers the selector with the Auto classes)
from vital.hub import LocalHub
from vital.selector import SelectorTrainer, SelectorTrainingConfig, score_texts_images
from vital.selector.data import preference_side
from vital.selector.modeling import OPEN_CLIP_MODEL_TYPE, OpenClipBackbone
from vital.selector.training import load_selector, resolve_backbone
from vital.testing.biomedclip import BIOMEDCLIP_MODEL_CFG, build_biomedclip_like


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def biomedclip_dir(tmp_path_factory):
    return build_biomedclip_like(tmp_path_factory.mktemp("biomedclip") / "model", size="small", seed=0)


def _same_keys(a, b, path=""):
    assert set(a) == set(b), (path, sorted(set(a) ^ set(b)))
    for key in a:
        if isinstance(a[key], dict):
            _same_keys(a[key], b[key], f"{path}.{key}")


def test_the_folder_is_biomedclips_architecture_and_loads_as_its_hub_repo_does(biomedclip_dir):
    config = json.loads((biomedclip_dir / "open_clip_config.json").read_text())
    _same_keys(config["model_cfg"], BIOMEDCLIP_MODEL_CFG)  # the published config's keys, and these values:
    text, vision = config["model_cfg"]["text_cfg"], config["model_cfg"]["vision_cfg"]
    assert config["model_cfg"]["embed_dim"] == 512 and text["context_length"] == 256
    assert (text["hf_proj_type"], text["hf_pooler_type"]) == ("mlp", "cls_last_hidden_state_pooler")
    assert vision["timm_model_name"].endswith("_patch16_224") and vision["timm_pool"] == ""

    model = open_clip.create_model(f"local-dir:{biomedclip_dir}")
    assert type(model).__name__ == "CustomTextCLIP"
    assert type(model.text.transformer).__name__ == "BertModel"
    assert model.visual.trunk.patch_embed.patch_size == (16, 16)
    # the selector's backbone loads the same weights
    backbone = OpenClipBackbone(f"open_clip:local-dir:{biomedclip_dir}", pretrained=True)
    ours, theirs = backbone.model.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _fit(model, processor, dataset) -> float:
    images, texts = [], []
    for side in ("chosen", "rejected"):
        for row in dataset:
            image, text = preference_side(row, side, model.config.text_fields)
            images.append(image)
            texts.append(text)
    scores = np.array(score_texts_images(model, processor, images, texts, batch_size=32))
    chosen, rejected = np.split(scores, 2)
    return float(np.mean(chosen > rejected))


@pytest.mark.slow
def test_biomedclip_selector_trains_saves_pushes_loads_and_scores(biomedclip_dir, pairs, tmp_path):
    # The recipe's path: resolve the spec, build a selector with a fresh (seeded) head and the backbone's processor.
    hub = LocalHub(tmp_path / "hub")
    source = resolve_backbone(hub, f"open_clip:local-dir:{biomedclip_dir}")
    assert source.is_open_clip and len(source.lineage["sha256"]) == 64
    model, processor = load_selector(source, seed=0, hidden_sizes=[32], text_fields=["answer"], dropout=0.0)
    assert model.config.backbone_model_type == OPEN_CLIP_MODEL_TYPE
    assert processor.tokenizer.model_max_length == 256

    # Train: prefer the dark image (the seeded untrained selector prefers bright ones, so it starts at 0);
    # full fine-tuning reaches both open_clip towers.
    bright = pairs("brightness", 24, seed=1)
    train = bright.map(
        lambda row: {
            "images": row["rejected_images"],
            "rejected_images": row["images"],
            "chosen": row["rejected"],
            "rejected": row["chosen"],
        }
    )
    before = _fit(model, processor, train)
    assert before <= 0.5
    towers = {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if name.endswith(("patch_embed.proj.weight", "text.proj.0.weight"))
    }
    assert len(towers) == 2
    args = SelectorTrainingConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        max_steps=12,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        bf16=False,  # fp32, as the paper profile
        loss_type="hinge",
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = SelectorTrainer(model=model, args=args, train_dataset=train, processing_class=processor)
    trainer.train()
    after = _fit(trainer.model, processor, train)
    assert after >= 0.9 and after > before, (before, after)
    for name, old in towers.items():
        assert not torch.equal(dict(trainer.model.named_parameters())[name].detach(), old), name

    # Save and push; load from the pushed commit (the architecture rebuilt from the config, no download) and score.
    save_dir = tmp_path / "selector"
    trainer.model.save_pretrained(save_dir)
    processor.save_pretrained(save_dir)
    pushed = hub.push_folder(save_dir, "test/biomedclip-selector", "model", commit_message="BiomedCLIP selector")
    folder = hub.snapshot("test/biomedclip-selector", pushed.commit, "model")
    loaded = AutoModel.from_pretrained(folder)
    loaded_processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(loaded.backbone, OpenClipBackbone)
    images = [row["images"][0] for row in train]
    texts = [preference_side(row, "chosen", ["answer"])[1] for row in train]
    expected = score_texts_images(trainer.model, processor, images, texts)
    scores = score_texts_images(loaded, loaded_processor, images, texts)
    assert np.allclose(scores, expected, atol=1e-5), (scores[:3], expected[:3])
    assert _fit(loaded, loaded_processor, train) == after


def test_biomedclip_clustering_embedder(biomedclip_dir, pairs):
    from vital.demos import cluster_pairs, embed_pairs, load_image_embedder, load_text_embedder

    spec = f"clip:open_clip:local-dir:{biomedclip_dir}"
    image_embedder, text_embedder = load_image_embedder(spec), load_text_embedder(spec)
    rows = pairs("brightness", 6, seed=7)
    images = [row["images"][0] for row in rows] + [row["rejected_images"][0] for row in rows]
    captions = [row["chosen"][0]["content"][0]["text"] for row in rows] * 2

    # The embedder's features are open_clip's own, with open_clip's own preprocessing and tokenizer.
    model = open_clip.create_model(f"local-dir:{biomedclip_dir}").eval()
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{biomedclip_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{biomedclip_dir}")
    with torch.inference_mode():
        reference_images = model.encode_image(torch.stack([preprocess(im.convert("RGB")) for im in images]))
        reference_texts = model.encode_text(tokenizer(captions))
    got_images, got_texts = image_embedder(images), text_embedder(captions)
    cosine = np.sum(got_images * torch.nn.functional.normalize(reference_images, dim=-1).numpy(), axis=1)
    assert cosine.min() > 0.99, cosine  # resizing differs by interpolation only
    assert np.allclose(got_texts, torch.nn.functional.normalize(reference_texts, dim=-1).numpy(), atol=1e-5)

    # Clustering pairs on those features: bright and dark figures fall into two clusters.
    dataset = rows.map(lambda row: {"image": row["images"][0], "caption": "a figure", "mentions": ["shown"]})
    dark = rows.map(lambda row: {"image": row["rejected_images"][0], "caption": "a figure", "mentions": ["shown"]})
    figures = concatenate_datasets([dataset, dark]).select_columns(["image", "caption", "mentions"])
    embeddings = embed_pairs(figures, image_embedder, text_embedder)
    clusters = cluster_pairs(embeddings, k=2, seed=0)
    labels = list(clusters.labels)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6], labels


@pytest.mark.slow
def test_full_size_is_biomedclips_vit_b16_and_bert_base(tmp_path):
    """``size="full"``: the towers are timm's ViT-B/16 and a BERT-base (PubMedBERT's sizes and vocabulary size)."""
    import timm
    from open_clip.model import CustomTextCLIP
    from transformers import BertConfig

    from vital.testing.biomedclip import _BERT_SIZES, biomedclip_model_cfg

    BertConfig(**_BERT_SIZES["full"], max_position_embeddings=512).save_pretrained(tmp_path / "text")
    cfg = biomedclip_model_cfg(tmp_path / "text", size="full")
    assert cfg["vision_cfg"] == BIOMEDCLIP_MODEL_CFG["vision_cfg"]
    cfg["text_cfg"]["hf_model_pretrained"] = False
    model = CustomTextCLIP(**cfg)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(model.visual.trunk) == count(timm.create_model("vit_base_patch16_224", num_classes=0))
    bert_base = BertConfig()  # transformers' defaults are BERT-base: 768 wide, 12 layers, 30,522 words
    assert (bert_base.hidden_size, bert_base.num_hidden_layers, bert_base.vocab_size) == (768, 12, 30522)
    from transformers import BertModel

    # open_clip drops the unused pooler of the CLS-token text tower
    assert count(model.text.transformer) == count(BertModel(bert_base, add_pooling_layer=False))
    assert model.text.proj[-1].out_features == model.visual.head.proj.out_features == 512
