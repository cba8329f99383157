"""A BioMed-VITAL selector (self-contained: imports only torch and transformers; open_clip optionally).

Dual-encoder features (image ‖ text) -> MLP -> one score per (image, text) input. Written into every saved selector
folder by biomed-vital and loaded through ``config.json``'s ``auto_map``::

    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(folder_or_repo, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder_or_repo, trust_remote_code=True)
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True, truncation=True)
    scores = model(**inputs).logits.squeeze(-1)

Mirrors ``vital.selector.modeling``: the same parameters, the same forward pass, the same scores.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_vital_selector import OPEN_CLIP_MODEL_TYPE, SelectorConfig


_OPEN_CLIP_INSTALL = (
    "BiomedCLIP and other open_clip backbones need the optional package open_clip_torch: "
    "`pip install open_clip_torch` (it also needs torchvision that imports beside your torch)."
)


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


class OpenClipBackbone(nn.Module):
    """An open_clip model (e.g. BiomedCLIP) behind the transformers dual-encoder interface (architecture only: the
    selector's checkpoint holds its weights). Needs ``pip install open_clip_torch``."""

    def __init__(self, model_name: str, model_cfg: Mapping[str, Any]):
        super().__init__()
        try:
            from open_clip.model import CLIP, CustomTextCLIP
        except ImportError as e:
            raise ImportError(f"{_OPEN_CLIP_INSTALL} ({type(e).__name__}: {e})") from e
        self.model_name = model_name
        self.model_cfg = copy.deepcopy(dict(model_cfg))
        # The architecture only: no tower fetches pretrained weights of its own (the selector's checkpoint follows).
        cfg = copy.deepcopy(self.model_cfg)
        custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
        if "timm_model_name" in cfg.get("vision_cfg", {}):
            cfg["vision_cfg"]["timm_model_pretrained"] = False
        if "hf_model_name" in cfg.get("text_cfg", {}):
            cfg["text_cfg"]["hf_model_pretrained"] = False
        self.model = (CustomTextCLIP if custom_text else CLIP)(**cfg)

    def get_image_features(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.model.encode_image(pixel_values)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        return self.model.encode_text(input_ids)


def _build_backbone(config: SelectorConfig) -> nn.Module:
    if config.backbone_config is None:
        raise ValueError("SelectorConfig.backbone_config is required to build the backbone")
    if config.backbone_model_type == OPEN_CLIP_MODEL_TYPE:
        cfg = config.backbone_config
        return OpenClipBackbone(cfg["model_name"], model_cfg=cfg["model_cfg"])
    return AutoModel.from_config(config.backbone_config_object())


class SelectorModel(PreTrainedModel):
    """Dual-encoder features (image ‖ text) -> MLP -> one score per (image, text) input.

    ``forward`` takes a processor's ``input_ids`` / ``attention_mask`` / ``pixel_values`` (one image per text) and
    returns a ``SequenceClassifierOutput`` whose ``logits`` have shape ``(batch, 1)``.
    """

    config_class = SelectorConfig
    base_model_prefix = "selector"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False

    def __init__(self, config: SelectorConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.backbone = backbone if backbone is not None else _build_backbone(config)
        dims = [config.image_feature_dim + config.text_feature_dim, *config.hidden_sizes]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), ACT2FN[config.hidden_act], nn.Dropout(config.dropout)]
        layers.append(nn.Linear(dims[-1], 1))
        if config.head_activation == "sigmoid":
            layers.append(nn.Sigmoid())
        self.head = nn.Sequential(*layers)
        for name, param in self.backbone.named_parameters():
            if name.split(".")[-1] in ("logit_scale", "logit_bias") or config.freeze_backbone:
                param.requires_grad_(False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and any(module is m for m in self.head.modules()):
            init.kaiming_uniform_(module.weight, a=5**0.5)
            bound = 1 / module.in_features**0.5
            init.uniform_(module.bias, -bound, bound)

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
        **_: Any,
    ) -> SequenceClassifierOutput | tuple:
        if input_ids is None or pixel_values is None:
            raise ValueError("the selector scores (image, text) inputs: pass input_ids and pixel_values")
        features = self.features(input_ids, attention_mask, pixel_values.to(self.dtype))
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
