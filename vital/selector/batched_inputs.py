"""A processor's outputs for many inputs at once, bit for bit, at less cost (selection scoring's preprocessing).

transformers' PIL image backend turns each image into a NumPy array, back into a PIL image to resize it, back into an
array to crop, rescale and normalise it, image by image; over thousands of small images the per-image calls cost more
than the arithmetic. For a processor running the backend's own steps, :func:`pixel_values` resizes each decoded image
as a PIL image with the same PIL call, crops it with transformers' own ``center_crop``, and rescales and normalises
the whole batch once, with the same NumPy operations in the same dtypes, so every value is the same. Any processor
that does not run that standard pipeline (another backend, an overridden step, padding), and any input or size rule
not covered here, goes to the processor's own code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


# The processor call's own steps, from __call__ down to each image: a class that overrides one of them is called as it is.
_STANDARD_STEPS = (
    "__call__",
    "preprocess",
    "_preprocess_image_like_inputs",
    "_prepare_image_like_inputs",
    "process_image",
    "_preprocess",
    "resize",
    "center_crop",
    "rescale",
    "normalize",
)


def _standard_pil_pipeline(image_processor: Any) -> bool:
    """Whether ``image_processor`` is a PIL-backend processor running the backend's own call: each image converted,
    resized, cropped, rescaled and normalised, with no padding (the steps :func:`pixel_values` reproduces)."""
    try:
        from transformers.image_processing_backends import PilBackend
    except ImportError:  # a transformers without backends: call the processor as it is
        return False
    cls = type(image_processor)
    return (
        isinstance(image_processor, PilBackend)
        and all(
            hasattr(image_processor, name) for name in ("_merge_and_standardize_kwargs", "_validate_preprocess_kwargs")
        )
        and all(getattr(cls, name) is getattr(PilBackend, name) for name in _STANDARD_STEPS)
        and not getattr(image_processor, "do_pad", False)
    )


def _per_channel(name: str, value: Any, channels: int, dtype: Any) -> Any:
    """``value`` (one number, or one per channel) as a ``(channels, 1, 1)`` array, as transformers' normalize reads it."""
    values = np.asarray([value] * channels if np.ndim(value) == 0 else value, dtype=dtype)
    if values.shape != (channels,):
        raise ValueError(f"{name} must have {channels} elements, got {values.size}")
    return values[:, None, None]


def _resized_and_cropped(images: Sequence[Any], settings: dict[str, Any]) -> Any:
    """The processor's resize and crop of RGB PIL ``images`` as one ``uint8`` batch (channels first), or None where
    the processor's own code must run: an image that is not RGB, a size rule other than a shortest edge or a fixed
    height and width, an interpolation that is not PIL's, or images of different sizes after the steps.

    The backend resizes a ``uint8`` array by making it a PIL image again (the same pixels, mode RGB) and calling
    ``Image.resize`` with the target size, the resample filter and no reducing gap: the same call on the decoded image
    gives the same bytes. The target size comes from transformers' ``get_resize_output_image_size``, as the backend's.
    """
    from PIL import Image
    from transformers.image_transforms import center_crop, get_resize_output_image_size
    from transformers.image_utils import ChannelDimension

    if not all(isinstance(image, Image.Image) and image.mode == "RGB" for image in images):
        return None
    first = ChannelDimension.FIRST
    do_resize, size, resample = settings.get("do_resize"), settings.get("size"), settings.get("resample")
    do_crop, crop = settings.get("do_center_crop"), settings.get("crop_size")
    shortest_edge = False
    if do_resize:
        if size is None or not isinstance(resample, int):  # (the processor's check refuses a missing one first)
            return None
        shortest_edge = bool(size.shortest_edge) and not size.longest_edge
        fixed = not size.shortest_edge and not (size.max_height and size.max_width) and size.height and size.width
        if not (shortest_edge or fixed):
            return None
    if do_crop and (crop is None or crop.height is None or crop.width is None):
        return None
    out = []
    for image in images:
        if do_resize:
            width, height = image.size
            if shortest_edge:  # the function reads only the shape of the array it is given
                shape_only = np.empty((1, height, width), dtype=np.uint8)
                height, width = get_resize_output_image_size(
                    shape_only, size=size.shortest_edge, default_to_square=False, input_data_format=first
                )
            else:
                height, width = size.height, size.width
            image = image.resize((width, height), resample=resample, reducing_gap=None)
        array = np.asarray(image).transpose(2, 0, 1)
        if do_crop:
            array = center_crop(array, (crop.height, crop.width), data_format=first, input_data_format=first)
        out.append(array)
    if len({array.shape for array in out}) > 1:
        return None
    return np.stack(out)


def pixel_values(image_processor: Any, images: Sequence[Any]) -> Any:
    """``image_processor(images, return_tensors="pt", do_convert_rgb=False)["pixel_values"]``, bit for bit.

    For a standard PIL-backend processor (CLIP's, SigLIP's) the settings are merged and checked by the processor's
    own methods, each image is resized and cropped as the backend does it (:func:`_resized_and_cropped`), and the
    whole batch is rescaled (transformers' ``rescale``, which takes a batch as it is) and normalised (``(x - mean) /
    std`` in float32, as transformers' ``normalize`` does per image) at once; any other processor is called as it is.
    ``images`` are decoded PIL images, RGB already (the processor's conversion is skipped).
    """
    import torch
    from transformers.image_transforms import rescale

    images = list(images)
    if not _standard_pil_pipeline(image_processor):
        return image_processor(images, return_tensors="pt", do_convert_rgb=False)["pixel_values"]
    settings = image_processor._merge_and_standardize_kwargs(do_convert_rgb=False)
    image_processor._validate_preprocess_kwargs(**settings)
    batch = _resized_and_cropped(images, settings) if images else None
    if batch is None:
        batch = image_processor(
            images, return_tensors="np", do_convert_rgb=False, do_rescale=False, do_normalize=False
        )["pixel_values"]  # fmt: skip
    if settings["do_rescale"]:  # transformers' own rescale: it takes an array of any shape
        batch = rescale(batch, settings["rescale_factor"])
    if settings["do_normalize"]:
        # (transformers' normalize transposes a channels-first image whole: on a batch it would pair the means with
        # the batch axis, so its arithmetic is done here per channel)
        if not np.issubdtype(batch.dtype, np.floating):
            batch = batch.astype(np.float32)
        channels = batch.shape[1]
        mean, std = (_per_channel(name, settings[name], channels, batch.dtype) for name in ("image_mean", "image_std"))
        batch = (batch - mean) / std
    return torch.from_numpy(np.ascontiguousarray(batch))
