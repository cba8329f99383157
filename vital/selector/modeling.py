"""The selection model: a CLIP-family dual encoder with a scalar head (``docs/design.md``, Selector).

BioMed-VITAL's selector embeds a candidate's image and text with BiomedCLIP, concatenates the two feature vectors and
maps them through an MLP (1024 -> 512 -> 512 -> 512 -> 1) to one score. Here the backbone is any dual encoder that
transformers loads (``CLIPModel``, ``SiglipModel``, ``VisionTextDualEncoderModel``: anything with
``get_image_features`` / ``get_text_features``), or BiomedCLIP itself through open_clip (optional extra, see
:class:`OpenClipBackbone`).

Example::

    from vital.selector import SelectorModel, score_texts_images

    model = SelectorModel.from_backbone("path/to/clip", hidden_sizes=[512, 512, 512], text_fields=["question", "answer"])
    scores = score_texts_images(model, processor, images, texts, batch_size=64)

Importing this module registers ``vital_selector`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForSequenceClassification``, so a saved selector folder reloads with any of them (after
``import vital.selector``). A saved folder also carries self-contained copies of the config and model
(:mod:`vital.selector.remote_code`) and an ``auto_map``, so it loads without biomed-vital through
``AutoModel.from_pretrained(folder, trust_remote_code=True)``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput

from vital.selector.data import TEXT_FIELDS, encode_texts_images, template_fields
from vital.selector.remote_code import AUTO_MAP, write_remote_code


__all__ = [
    "HEAD_ACTIVATIONS",
    "OPEN_CLIP_MODEL_TYPE",
    "OpenClipBackbone",
    "SelectorConfig",
    "SelectorModel",
    "score_texts_images",
]

OPEN_CLIP_MODEL_TYPE = "open_clip"
"""``backbone_model_type`` of a backbone built by open_clip rather than transformers."""

_OPEN_CLIP_PREFIXES = ("hf-hub:", "open_clip:")
_OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")  # names that carry their own config and weights
HEAD_ACTIVATIONS = (None, "sigmoid")
"""What ends the head: nothing (raw scores, ours) or a sigmoid (the official selector)."""
_OPEN_CLIP_INSTALL = (
    "BiomedCLIP and other open_clip backbones need the optional package open_clip_torch: "
    "`pip install open_clip_torch` (it also needs torchvision that imports beside your torch)."
)


class SelectorConfig(PreTrainedConfig):
    r"""Configuration of a :class:`SelectorModel`.

    The backbone's own configuration is kept as a plain dict under ``backbone_config`` with its type in
    ``backbone_model_type``. (A dict stored under ``text_config``, ``decoder``, ``generator`` or ``text_encoder`` would
    be picked up by ``get_text_config()`` and break TRL's reward trainer, so none of those names is used.)

    Args:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            The dual encoder's configuration (``CLIPConfig``, ``SiglipConfig``, ``VisionTextDualEncoderConfig``, ...)
            or, for open_clip, ``{"model_name": ..., "model_cfg": {...}}``. A config object is stored as its dict.
        backbone_model_type (`str`, *optional*):
            ``model_type`` of the backbone (``"clip"``, ``"siglip"``, ...) or ``"open_clip"``. Taken from
            ``backbone_config`` when not given.
        image_feature_dim (`int`, *optional*), text_feature_dim (`int`, *optional*):
            Sizes of the backbone's image and text features; inferred from the backbone config (``projection_dim``,
            or the towers' sizes for SigLIP) when not given.
        hidden_sizes (`list[int]`, *optional*, defaults to `[512, 512, 512]`):
            Hidden layers of the MLP head (the paper's 1024 -> 512 -> 512 -> 512 -> 1 for BiomedCLIP's 512 + 512
            features). An empty list gives a linear head.
        hidden_act (`str`, *optional*, defaults to `"relu"`):
            Activation between the head's layers (any name in ``transformers.activations.ACT2FN``).
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout after each hidden activation (TRL's trainers disable dropout by default: ``disable_dropout``).
        normalize_features (`bool`, *optional*, defaults to `False`):
            L2-normalise the image and text features before concatenating them (CLIP's similarity space). Off by
            default: the paper concatenates the raw features, and the norm carries information.
        text_fields (`list[str]`, *optional*, defaults to `["question", "answer"]`):
            Which texts of a candidate turn are joined (with newlines, in this order) into the text the selector
            scores: ``"question"`` (the user turn), ``"answer"`` (the assistant turn), ``"caption"`` (the figure
            caption) and ``"mentions"`` (the in-text sentences). The collator and the scoring helpers read it.
        text_template (`str`, *optional*):
            Fills the scored text instead of joining ``text_fields`` with newlines, e.g. the official
            ``"{caption}{mentions}Question:{question}Answer:{answer}"``
            (:data:`vital.selector.data.OFFICIAL_TEXT_TEMPLATE`). ``text_fields`` must then list the template's
            fields in order (it is filled from the template when not given).
        head_activation (`str`, *optional*):
            ``"sigmoid"`` ends the head in a sigmoid, as the official selector does: scores lie in (0, 1), so no pair
            can ever reach a hinge margin of 1 and every pair keeps contributing to the hinge loss. ``None`` (ours):
            raw scores.
        freeze_backbone (`bool`, *optional*, defaults to `False`):
            Train the head only (the backbone's parameters get ``requires_grad=False``).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Unused by the head (PyTorch's default init); kept for transformers' generic init code.
    """

    model_type = "vital_selector"

    backbone_config: dict | PreTrainedConfig | None = None
    backbone_model_type: str | None = None
    image_feature_dim: int | None = None
    text_feature_dim: int | None = None
    hidden_sizes: list[int] | None = None
    hidden_act: str = "relu"
    dropout: float = 0.1
    normalize_features: bool = False
    text_fields: list[str] | None = None
    text_template: str | None = None
    head_activation: str | None = None
    freeze_backbone: bool = False
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if isinstance(self.backbone_config, PreTrainedConfig):
            self.backbone_model_type = self.backbone_model_type or self.backbone_config.model_type
            self.backbone_config = self.backbone_config.to_dict()
        if self.backbone_config is not None:
            self.backbone_config = dict(self.backbone_config)
            self.backbone_model_type = self.backbone_model_type or self.backbone_config.get("model_type")
            if not self.backbone_model_type:
                raise ValueError("backbone_config has no model_type: pass backbone_model_type")
        if self.hidden_sizes is None:
            self.hidden_sizes = [512, 512, 512]
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]
        if self.text_template is not None:
            in_template = template_fields(self.text_template)
            if self.text_fields is None:
                self.text_fields = in_template
            elif list(self.text_fields) != in_template:
                raise ValueError(
                    f"text_fields {list(self.text_fields)} do not match the fields of text_template {in_template}"
                )
        if self.text_fields is None:
            self.text_fields = ["question", "answer"]
        self.text_fields = list(self.text_fields)
        if self.head_activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"head_activation must be one of {HEAD_ACTIVATIONS}, got {self.head_activation!r}")
        unknown = [f for f in self.text_fields if f not in TEXT_FIELDS]
        if unknown or not self.text_fields:
            raise ValueError(f"text_fields must be a non-empty list drawn from {TEXT_FIELDS}, got {self.text_fields}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"unknown hidden_act {self.hidden_act!r}")
        # One score per input: TRL's RewardTrainer requires num_labels == 1.
        if self.id2label is None:
            kwargs.setdefault("num_labels", 1)
        super().__post_init__(**kwargs)
        if self.num_labels != 1:
            raise ValueError(f"a selector outputs one score: num_labels must be 1, got {self.num_labels}")
        if self.backbone_config is not None and (self.image_feature_dim is None or self.text_feature_dim is None):
            image_dim, text_dim = _infer_feature_dims(self.backbone_model_type, self.backbone_config)
            self.image_feature_dim = self.image_feature_dim or image_dim
            self.text_feature_dim = self.text_feature_dim or text_dim
        # The text tower's special tokens, declared where the Trainer looks (`get_text_config()` is this config): it
        # otherwise "aligns" them from the tokenizer and warns on every fit that the model config was changed.
        text_config = (self.backbone_config or {}).get("text_config") or {}
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(self, name, None) is None and text_config.get(name) is not None:
                setattr(self, name, text_config[name])

    @property
    def text_padding(self) -> bool | str:
        """How to pad the scored texts: SigLIP pools the last position, so it needs ``"max_length"``; others pad to the
        longest text."""
        return "max_length" if (self.backbone_model_type or "").startswith("siglip") else True

    def backbone_config_object(self) -> PreTrainedConfig:
        """The backbone's configuration as a transformers config object (not for open_clip backbones)."""
        if self.backbone_config is None:
            raise ValueError("this SelectorConfig has no backbone_config")
        if self.backbone_model_type == OPEN_CLIP_MODEL_TYPE:
            raise ValueError("open_clip backbones have no transformers config")
        values = copy.deepcopy(self.backbone_config)
        values.pop("model_type", None)
        return AutoConfig.for_model(self.backbone_model_type, **values)


def _infer_feature_dims(model_type: str, backbone_config: Mapping[str, Any]) -> tuple[int, int]:
    if model_type == OPEN_CLIP_MODEL_TYPE:
        dim = (backbone_config.get("model_cfg") or {}).get("embed_dim")
        if dim is None:
            raise ValueError("open_clip backbone_config needs model_cfg.embed_dim")
        return dim, dim
    projection = backbone_config.get("projection_dim")
    if projection:
        return projection, projection
    vision, text = backbone_config.get("vision_config") or {}, backbone_config.get("text_config") or {}
    image_dim = vision.get("hidden_size")
    text_dim = text.get("projection_size") or text.get("hidden_size")
    if not image_dim or not text_dim:
        raise ValueError(
            f"cannot infer the feature sizes of a {model_type!r} backbone: pass image_feature_dim and text_feature_dim"
        )
    return image_dim, text_dim


def _pooled(output: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features``: a tensor in older transformers, an output object in 5.x."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None and isinstance(output, tuple | list):
        pooled = output[1] if len(output) > 1 else output[0]
    if not isinstance(pooled, torch.Tensor):
        raise TypeError(f"cannot read features from a {type(output).__name__}: expected a tensor or pooler_output")
    return pooled


# ---------------------------------------------------------------------------------------------------------------------
# open_clip (BiomedCLIP), optional
# ---------------------------------------------------------------------------------------------------------------------
def _require_open_clip():
    try:
        import open_clip
    except ImportError as e:  # the package is missing, or torchvision does not import beside this torch
        raise ImportError(f"{_OPEN_CLIP_INSTALL} ({type(e).__name__}: {e})") from e
    return open_clip


class OpenClipBackbone(nn.Module):
    """An open_clip model (e.g. BiomedCLIP) behind the transformers dual-encoder interface.

    ``get_image_features(pixel_values)`` and ``get_text_features(input_ids, attention_mask)`` return the projected,
    unnormalised embeddings, as ``CLIPModel`` does. The model's architecture config travels in :attr:`config_dict`
    (stored in the selector's config), so a saved selector rebuilds it without downloading weights; an HF text tower
    (BiomedCLIP's PubMedBERT) still needs its transformers config, from the Hub or the local cache.

    Requires ``pip install open_clip_torch`` (not a dependency of biomed-vital); constructing one without it raises an
    ImportError that says so.

    Args:
        model_name: open_clip model name, e.g. ``"hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"``,
            or ``"local-dir:<folder>"`` (a folder laid out as such a Hub repo).
        model_cfg: the architecture config (open_clip's ``model_cfg`` dict); looked up from ``model_name`` if None.
        pretrained: load pretrained weights: ``True`` for an ``hf-hub:`` or ``local-dir:`` name (its own checkpoint),
            or an open_clip pretrained tag (``"openai"``) or a local checkpoint path; ``False`` builds the
            architecture only (no tower fetches pretrained weights: a saved selector's weights are loaded after).
    """

    def __init__(self, model_name: str, model_cfg: Mapping[str, Any] | None = None, pretrained: bool | str = False):
        super().__init__()
        open_clip = _require_open_clip()
        name = model_name.removeprefix("open_clip:")
        if model_cfg is None:
            model_cfg = _open_clip_model_cfg(open_clip, name)
        self.model_name = model_name
        self.model_cfg = copy.deepcopy(dict(model_cfg))
        if pretrained:
            tag = None if pretrained is True else pretrained
            if tag is None and not name.startswith(_OPEN_CLIP_SCHEMAS):
                raise ValueError(f"name the pretrained weights of {name!r}: an open_clip tag or a checkpoint path")
            self.model = open_clip.create_model(name, pretrained=tag)
        else:
            from open_clip.model import CLIP, CustomTextCLIP

            # The architecture only: no tower downloads its own pretrained weights (the selector's weights follow).
            cfg = copy.deepcopy(self.model_cfg)
            custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
            if "timm_model_name" in cfg.get("vision_cfg", {}):
                cfg["vision_cfg"]["timm_model_pretrained"] = False
            if "hf_model_name" in cfg.get("text_cfg", {}):
                cfg["text_cfg"]["hf_model_pretrained"] = False
            self.model = (CustomTextCLIP if custom_text else CLIP)(**cfg)

    @property
    def config_dict(self) -> dict[str, Any]:
        return {"model_type": OPEN_CLIP_MODEL_TYPE, "model_name": self.model_name, "model_cfg": self.model_cfg}

    @property
    def embed_dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    def get_image_features(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.model.encode_image(pixel_values)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        return self.model.encode_text(input_ids)

    def build_processor(self):
        """A transformers processor that mirrors the model's preprocessing (image resize/crop/normalise, tokenizer).

        Returns a ``VisionTextDualEncoderProcessor`` (saveable, reloadable with ``AutoProcessor``). Needs the HF
        tokenizer named in the model config (Hub or local cache).
        """
        from transformers import AutoTokenizer, CLIPImageProcessor, VisionTextDualEncoderProcessor

        vision = self.model_cfg.get("vision_cfg", {})
        text = self.model_cfg.get("text_cfg", {})
        size = vision.get("image_size", 224)
        size = size[0] if isinstance(size, list | tuple) else size
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True
        )
        tokenizer_name = text.get("hf_tokenizer_name") or text.get("hf_model_name")
        if not tokenizer_name:
            raise ValueError("this open_clip model has no HF tokenizer; build a processor by hand")
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, model_max_length=text.get("context_length", 77))
        return VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _open_clip_model_cfg(open_clip, name: str) -> dict[str, Any]:
    if name.startswith("hf-hub:"):
        from open_clip.factory import _get_hf_config

        return _get_hf_config(name.removeprefix("hf-hub:"))["model_cfg"]
    if name.startswith("local-dir:"):  # a folder laid out as an open_clip Hub repo (open_clip_config.json + weights)
        import json

        path = Path(name.removeprefix("local-dir:")) / "open_clip_config.json"
        return json.loads(path.read_text(encoding="utf-8"))["model_cfg"]
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {name!r}")
    return cfg


def _is_open_clip_name(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_OPEN_CLIP_PREFIXES)


# ---------------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------------
class SelectorModel(PreTrainedModel):
    """Dual-encoder features (image ‖ text) -> MLP -> one score per (image, text) input.

    ``forward`` takes a processor's ``input_ids`` / ``attention_mask`` / ``pixel_values`` (one image per text) and
    returns a ``SequenceClassifierOutput`` whose ``logits`` have shape ``(batch, 1)``; with ``labels`` (target scores,
    shape ``(batch,)``) it also returns their mean squared error. Pairwise training lives in
    :class:`vital.selector.trainer.SelectorTrainer`.
    """

    config_class = SelectorConfig
    base_model_prefix = "selector"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True  # delegated to the backbone's encoders (transformers backbones)
    accepts_loss_kwargs = False  # the Trainer scales the loss for gradient accumulation itself

    def __init__(self, config: SelectorConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        if backbone is None:
            backbone = _build_backbone(config)
        self.backbone = backbone
        dims = [config.image_feature_dim + config.text_feature_dim, *config.hidden_sizes]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), ACT2FN[config.hidden_act], nn.Dropout(config.dropout)]
        layers.append(nn.Linear(dims[-1], 1))
        if config.head_activation == "sigmoid":
            layers.append(nn.Sigmoid())
        self.head = nn.Sequential(*layers)
        # Parameters outside the feature path (CLIP's logit_scale, SigLIP's logit_bias) get no gradient; freezing
        # them keeps DistributedDataParallel from waiting for it.
        for name, param in self.backbone.named_parameters():
            if name.split(".")[-1] in ("logit_scale", "logit_bias") or config.freeze_backbone:
                param.requires_grad_(False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is ours: the backbone initialises itself (transformers) or is loaded (open_clip). PyTorch's
        # default Linear init keeps the MLP's output at a useful scale, unlike a 0.02 normal through four layers.
        if isinstance(module, nn.Linear) and any(module is m for m in self.head.modules()):
            init.kaiming_uniform_(module.weight, a=5**0.5)
            bound = 1 / module.in_features**0.5
            init.uniform_(module.bias, -bound, bound)

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone: str | Path | nn.Module, **config_kwargs: Any) -> SelectorModel:
        """A selector around a pretrained dual encoder, with a fresh head.

        Args:
            backbone: a loaded dual encoder (``CLIPModel``, ``SiglipModel``, ``VisionTextDualEncoderModel``, an
                :class:`OpenClipBackbone`), a local folder or Hub id that ``AutoModel.from_pretrained`` loads, or an
                open_clip name (needs open_clip_torch): ``hf-hub:<repo>`` (BiomedCLIP:
                ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) or ``open_clip:<model>@<tag>``.
            **config_kwargs: further :class:`SelectorConfig` fields (``hidden_sizes``, ``text_fields``, ...).
        """
        if _is_open_clip_name(backbone):
            name, _, tag = backbone.partition("@")  # "open_clip:ViT-B-16@openai"
            backbone = OpenClipBackbone(name, pretrained=tag or True)
        elif isinstance(backbone, str | Path):
            backbone = AutoModel.from_pretrained(backbone)
        if isinstance(backbone, OpenClipBackbone):
            config = SelectorConfig(
                backbone_config=backbone.config_dict, backbone_model_type=OPEN_CLIP_MODEL_TYPE, **config_kwargs
            )
        elif isinstance(backbone, PreTrainedModel):
            for method in ("get_image_features", "get_text_features"):
                if not hasattr(backbone, method):
                    raise TypeError(f"{type(backbone).__name__} is not a dual encoder: it has no {method}()")
            config = SelectorConfig(backbone_config=backbone.config, **config_kwargs)
        else:
            raise TypeError(f"unsupported backbone {type(backbone).__name__}")
        return cls(config, backbone=backbone)

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained``, plus the self-contained ``configuration_vital_selector.py`` and
        ``modeling_vital_selector.py`` and an ``auto_map`` naming them in ``config.json``, so the folder (or the
        repo it is pushed to) loads with ``AutoModel.from_pretrained(..., trust_remote_code=True)`` without
        biomed-vital."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(save_directory)

    # ---- forward ------------------------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module | None:
        getter = getattr(self.backbone, "get_input_embeddings", None)
        return getter() if getter is not None else None

    def features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pixel_values: torch.Tensor
    ) -> torch.Tensor:
        """The head's input: image features ‖ text features, shape ``(batch, image_dim + text_dim)``."""
        image = _pooled(self.backbone.get_image_features(pixel_values=pixel_values))
        text = _pooled(self.backbone.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        if image.shape[0] != text.shape[0]:
            raise ValueError(
                f"{image.shape[0]} images for {text.shape[0]} texts: the selector needs one image per text"
            )
        if self.config.normalize_features:
            image = nn.functional.normalize(image, dim=-1)
            text = nn.functional.normalize(text, dim=-1)
        return torch.cat([image, text], dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        use_cache: bool | None = None,  # TRL's RewardTrainer passes use_cache=False; a dual encoder has no cache
    ) -> SequenceClassifierOutput | tuple:
        if input_ids is None or pixel_values is None:
            raise ValueError("the selector scores (image, text) inputs: pass input_ids and pixel_values")
        features = self.features(input_ids, attention_mask, pixel_values)
        logits = self.head(features.to(self.dtype))
        loss = None
        if labels is not None:
            loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def score(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scores of one processed batch (``input_ids``, ``attention_mask``, ``pixel_values``) as a 1-D CPU tensor.

        Runs in eval mode (restoring the previous mode) on the model's device; other keys in ``batch`` are ignored.
        """
        was_training = self.training
        self.eval()
        try:
            device = self.device
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "pixel_values") if k in batch}
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            return self(**inputs).logits.squeeze(-1).float().cpu()
        finally:
            self.train(was_training)


def _build_backbone(config: SelectorConfig) -> nn.Module:
    if config.backbone_config is None:
        raise ValueError("SelectorConfig.backbone_config is required to build the backbone")
    if config.backbone_model_type == OPEN_CLIP_MODEL_TYPE:
        cfg = config.backbone_config
        return OpenClipBackbone(cfg["model_name"], model_cfg=cfg.get("model_cfg"), pretrained=False)
    return AutoModel.from_config(config.backbone_config_object())


def score_texts_images(
    model: SelectorModel,
    processor: Any,
    images: Sequence[Any],
    texts: Sequence[str],
    batch_size: int = 32,
    max_length: int | None = None,
    padding: bool | str | None = None,
) -> list[float]:
    """Score ``(images[i], texts[i])`` in batches with a selector (a ``PeftModel`` around one works too).

    Args:
        model: the selector.
        processor: its processor (``tokenizer`` + ``image_processor``), e.g. ``AutoProcessor.from_pretrained(folder)``.
        images: one image per text: PIL images, ``{"bytes"/"path"}`` cells or a one-image list (the first is used).
        texts: the texts to score, built with :func:`vital.selector.data.candidate_turn_text` and the model's
            ``config.text_fields`` and ``config.text_template``.
        batch_size: inputs per forward pass.
        max_length: token limit (defaults to the tokenizer's ``model_max_length``).
        padding: the tokenizer's padding; default ``model.config.text_padding`` (``"max_length"`` for SigLIP).

    Returns:
        One float per input, in order.
    """
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images for {len(texts)} texts")
    if padding is None:
        padding = getattr(model.config, "text_padding", True)
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = encode_texts_images(
            processor,
            images[start : start + batch_size],
            texts[start : start + batch_size],
            max_length=max_length,
            padding=padding,
        )
        scores.extend(model.score(batch).tolist())
    return scores


AutoConfig.register(SelectorConfig.model_type, SelectorConfig, exist_ok=True)
AutoModel.register(SelectorConfig, SelectorModel, exist_ok=True)
AutoModelForSequenceClassification.register(SelectorConfig, SelectorModel, exist_ok=True)
