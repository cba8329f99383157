"""A random-initialised model with BiomedCLIP's architecture, built offline, for tests.

BiomedCLIP (``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) is an open_clip ``CustomTextCLIP``: a
timm ViT-B/16 image tower (224 px, no pooling, linear projection) and a PubMedBERT text tower (the CLS token of the last
hidden state, an MLP projection, 256 tokens), both projected to 512 dimensions. :func:`build_biomedclip_like` writes a
folder laid out as that Hub repo (``open_clip_config.json``, ``open_clip_model.safetensors`` and the tokenizer files)
with random weights, and a local BERT config and uncased WordPiece tokenizer in ``text/``, so open_clip loads it with
``create_model("local-dir:<folder>")``, exactly as it loads the Hub repo, and nothing is downloaded.

``size="full"`` keeps every size of the published config (ViT-B/16, a 12-layer 768-wide BERT with PubMedBERT's 30,522
word vocabulary size; about 196M parameters); ``size="small"`` keeps the same families and the same config keys with
a ViT-Ti/16 (timm ``vit_tiny_patch16_224``) and a 2-layer 64-wide BERT, small enough to train on a CPU in a test.
Requires ``open_clip_torch`` (and so torchvision) and ``timm``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any


__all__ = ["BIOMEDCLIP_MODEL_CFG", "BIOMEDCLIP_PREPROCESS_CFG", "build_biomedclip_like", "biomedclip_model_cfg"]

BIOMEDCLIP_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 512,
    "vision_cfg": {
        "timm_model_name": "vit_base_patch16_224",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 224,
    },
    "text_cfg": {
        "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "hf_proj_type": "mlp",
        "hf_pooler_type": "cls_last_hidden_state_pooler",
        "context_length": 256,
    },
}
"""``model_cfg`` of BiomedCLIP's ``open_clip_config.json`` (the published architecture)."""

BIOMEDCLIP_PREPROCESS_CFG: dict[str, Any] = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
}
"""``preprocess_cfg`` of BiomedCLIP's ``open_clip_config.json`` (OpenAI CLIP's normalisation)."""

_BERT_SIZES = {
    # PubMedBERT (BiomedBERT base, uncased, abstracts)
    "full": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "vocab_size": 30522,
    },
    "small": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
}
_VIT = {"full": "vit_base_patch16_224", "small": "vit_tiny_patch16_224"}


def biomedclip_model_cfg(text_dir: str | Path, size: str = "small") -> dict[str, Any]:
    """BiomedCLIP's ``model_cfg`` with the text tower read from ``text_dir`` and, for ``"small"``, a ViT-Ti/16."""
    if size not in _VIT:
        raise ValueError(f"size must be one of {sorted(_VIT)}, got {size!r}")
    cfg = copy.deepcopy(BIOMEDCLIP_MODEL_CFG)
    cfg["vision_cfg"]["timm_model_name"] = _VIT[size]
    cfg["text_cfg"]["hf_model_name"] = cfg["text_cfg"]["hf_tokenizer_name"] = str(Path(text_dir).resolve())
    return cfg


def _wordpiece_tokenizer(folder: Path, context_length: int):
    """An uncased WordPiece BERT tokenizer (PubMedBERT's kind) trained on the tiny corpus, saved in ``folder``."""
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from vital.testing.tiny_models import tiny_corpus

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(list(tiny_corpus()), vocab_size=600, min_frequency=1)
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(folder))
    tokenizer = BertTokenizerFast(
        vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=context_length
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_biomedclip_like(save_dir: str | Path, size: str = "small", seed: int = 0) -> Path:
    """Write a random BiomedCLIP-architecture model to ``save_dir`` in BiomedCLIP's Hub layout; returns the folder.

    Load it with ``open_clip.create_model("local-dir:<save_dir>")``, or use it as a selector backbone
    (``open_clip:local-dir:<save_dir>``) or clustering embedder (``clip:open_clip:local-dir:<save_dir>``). The same
    ``seed`` and ``size`` give identical weights.
    """
    import torch
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file
    from transformers import BertConfig

    save_dir = Path(save_dir)
    text_dir = save_dir / "text"
    context_length = BIOMEDCLIP_MODEL_CFG["text_cfg"]["context_length"]
    tokenizer = _wordpiece_tokenizer(text_dir, context_length)
    sizes = dict(_BERT_SIZES[size])
    sizes["vocab_size"] = max(sizes.get("vocab_size", 0), len(tokenizer))
    BertConfig(**sizes, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id).save_pretrained(text_dir)

    model_cfg = biomedclip_model_cfg(text_dir, size)
    build_cfg = copy.deepcopy(model_cfg)
    build_cfg["text_cfg"]["hf_model_pretrained"] = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CustomTextCLIP(**build_cfg)
    tokenizer.save_pretrained(save_dir)  # the Hub repo holds its tokenizer too (open_clip's local-dir reads it there)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(save_dir / "open_clip_model.safetensors"))
    config = {"model_cfg": model_cfg, "preprocess_cfg": BIOMEDCLIP_PREPROCESS_CFG}
    (save_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return save_dir
