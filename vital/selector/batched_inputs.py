"""A processor's outputs for many inputs at once, bit for bit, at less cost (selection scoring's preprocessing).

transformers' PIL image backend rescales and normalises image by image, in NumPy; over thousands of small images
the per-image calls cost more than the arithmetic. :func:`pixel_values` lets the processor resize and crop (its own
per-model steps) and does the rescaling and normalisation once over the batch with the same NumPy operations in the
same dtypes, so every value is the same. Any processor that does not run that standard pipeline (another backend, an
overridden step, padding) is simply called as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _standard_pil_pipeline(image_processor: Any) -> bool:
    """Whether ``image_processor`` is a PIL-backend processor running the backend's own resize -> crop -> rescale ->
    normalise loop, with no padding (the steps :func:`pixel_values` reproduces)."""
    try:
        from transformers.image_processing_backends import PilBackend
    except ImportError:  # a transformers without backends: call the processor as it is
        return False
    cls = type(image_processor)
    return (
        isinstance(image_processor, PilBackend)
        and all(getattr(cls, name) is getattr(PilBackend, name) for name in ("_preprocess", "rescale", "normalize"))
        and not getattr(image_processor, "do_pad", False)
    )


def _per_channel(name: str, value: Any, channels: int, dtype: Any) -> Any:
    """``value`` (one number, or one per channel) as a ``(channels, 1, 1)`` array, as transformers' normalize reads it."""
    values = np.asarray([value] * channels if np.ndim(value) == 0 else value, dtype=dtype)
    if values.shape != (channels,):
        raise ValueError(f"{name} must have {channels} elements, got {values.size}")
    return values[:, None, None]


def pixel_values(image_processor: Any, images: Sequence[Any]) -> Any:
    """``image_processor(images, return_tensors="pt", do_convert_rgb=False)["pixel_values"]``, bit for bit.

    For a standard PIL-backend processor (CLIP's, SigLIP's) the processor resizes and crops each image and this
    function rescales (transformers' ``rescale``, which takes a batch as it is) and normalises (``(x - mean) / std``
    in float32, as transformers' ``normalize`` does per image) the whole batch at once; any other processor is called
    as it is. ``images`` are decoded PIL images, RGB already (the processor's conversion is skipped).
    """
    import torch
    from transformers.image_transforms import rescale

    images = list(images)
    if not _standard_pil_pipeline(image_processor):
        return image_processor(images, return_tensors="pt", do_convert_rgb=False)["pixel_values"]
    batch = image_processor(
        images, return_tensors="np", do_convert_rgb=False, do_rescale=False, do_normalize=False
    )["pixel_values"]  # fmt: skip
    if image_processor.do_rescale:  # transformers' own rescale: it takes an array of any shape
        batch = rescale(batch, image_processor.rescale_factor)
    if image_processor.do_normalize:
        # (transformers' normalize transposes a channels-first image whole: on a batch it would pair the means with
        # the batch axis, so its arithmetic is done here per channel)
        if not np.issubdtype(batch.dtype, np.floating):
            batch = batch.astype(np.float32)
        channels = batch.shape[1]
        mean, std = (
            _per_channel(name, getattr(image_processor, name), channels, batch.dtype)
            for name in ("image_mean", "image_std")
        )
        batch = (batch - mean) / std
    return torch.from_numpy(np.ascontiguousarray(batch))
