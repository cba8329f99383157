"""Configuration of a BioMed-VITAL selector (self-contained: imports only transformers).

Written into every saved selector folder by biomed-vital and loaded through ``config.json``'s ``auto_map`` with
``AutoConfig.from_pretrained(folder_or_repo, trust_remote_code=True)``. Mirrors ``vital.selector.modeling``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.activations import ACT2FN


OPEN_CLIP_MODEL_TYPE = "open_clip"
TEXT_FIELDS = ("question", "answer", "caption", "mentions")
HEAD_ACTIVATIONS = (None, "sigmoid")
_TEMPLATE_FIELD = re.compile(r"\{(\w+)\}")


class SelectorConfig(PreTrainedConfig):
    r"""Configuration of a selector: a dual-encoder backbone (kept as a dict) and an MLP head to one score.

    Args:
        backbone_config (`dict`): the dual encoder's configuration (CLIP, SigLIP, ...), or for open_clip
            ``{"model_name": ..., "model_cfg": {...}}``.
        backbone_model_type (`str`): ``model_type`` of the backbone, or ``"open_clip"``.
        image_feature_dim (`int`), text_feature_dim (`int`): sizes of the backbone's image and text features.
        hidden_sizes (`list[int]`, defaults to `[512, 512, 512]`): hidden layers of the MLP head.
        hidden_act (`str`, defaults to `"relu"`): activation between the head's layers.
        dropout (`float`, defaults to 0.1): dropout after each hidden activation.
        normalize_features (`bool`, defaults to `False`): L2-normalise image and text features before concatenating.
        text_fields (`list[str]`, defaults to `["question", "answer"]`): the candidate texts joined, with newlines, into
            the scored text.
        text_template (`str`, *optional*): fills the scored text instead of joining ``text_fields``, e.g. the official
            ``"{caption}{mentions}Question:{question}Answer:{answer}"``; ``text_fields`` then lists its fields in order.
        head_activation (`str`, *optional*): ``"sigmoid"`` ends the head in a sigmoid (the official selector: scores in
            (0, 1)); ``None``: raw scores.
        freeze_backbone (`bool`, defaults to `False`): whether the backbone was frozen in training.
        initializer_range (`float`, defaults to 0.02): unused by the head.
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
            in_template = _TEMPLATE_FIELD.findall(self.text_template)
            if not in_template or any(f not in TEXT_FIELDS for f in in_template):
                raise ValueError(f"text_template must name fields from {TEXT_FIELDS}, got {self.text_template!r}")
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
        if self.id2label is None:
            kwargs.setdefault("num_labels", 1)
        super().__post_init__(**kwargs)
        if self.num_labels != 1:
            raise ValueError(f"a selector outputs one score: num_labels must be 1, got {self.num_labels}")
        if self.backbone_config is not None and (self.image_feature_dim is None or self.text_feature_dim is None):
            image_dim, text_dim = _infer_feature_dims(self.backbone_model_type, self.backbone_config)
            self.image_feature_dim = self.image_feature_dim or image_dim
            self.text_feature_dim = self.text_feature_dim or text_dim

    @property
    def text_padding(self) -> bool | str:
        """SigLIP pools the last position, so its texts pad to ``"max_length"``; others pad to the longest text."""
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
