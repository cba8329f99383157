"""`pixel_values` gives the processor's own pixel values, bit for bit, for every configuration it takes over, and calls
any other processor as it is."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil
from transformers.image_processing_backends import PilBackend

from vital.selector.batched_inputs import _resized_and_cropped, _standard_pil_pipeline, pixel_values


def images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def merged(processor):
    """The settings as the processor's call merges them."""
    return processor._merge_and_standardize_kwargs(do_convert_rgb=False)


SQUARE = [(20, 20), (24, 24), (7, 7), (64, 64)]
MIXED = [(20, 31), (45, 17), (32, 32), (3, 90), (200, 120)]  # upsampled, downsampled, smaller than the crop


@pytest.mark.parametrize(
    "settings, sizes",
    [
        ({}, MIXED),  # CLIP's defaults: shortest edge 224, bicubic, center crop 224, OpenAI mean and std
        ({"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}, MIXED),  # the tiny CLIP's
        ({"size": {"height": 16, "width": 24}, "do_center_crop": False}, MIXED),  # fixed size, no crop (SigLIP-like)
        ({"do_rescale": False}, SQUARE),  # normalised from uint8 directly
        ({"do_normalize": False}, SQUARE),  # rescaled only
        ({"do_rescale": False, "do_normalize": False}, SQUARE),  # uint8 as resized
        ({"image_mean": 0.5, "image_std": 0.25, "rescale_factor": 1 / 127.5}, SQUARE),  # one number for all channels
        ({"image_mean": [0.1, 0.2, 0.3], "image_std": [0.9, 0.8, 0.7], "resample": 2}, MIXED),  # bilinear
        ({"do_resize": False, "crop_size": {"height": 30, "width": 30}}, MIXED),  # cropped, padded where smaller
        ({"do_resize": False, "do_center_crop": False}, [(12, 9)] * 3),  # neither resized nor cropped
        ({"size": {"shortest_edge": 16}, "do_center_crop": False}, [(20, 30), (40, 60)]),  # same shape after resize
    ],
)
def test_pixel_values_equal_the_processors_bit_for_bit(settings, sizes):
    processor = CLIPImageProcessorPil(**settings)
    batch = images(sizes)
    # the batched path is the one tested, resize and crop included
    assert isinstance(processor, PilBackend) and _standard_pil_pipeline(processor)
    assert _resized_and_cropped(batch, merged(processor)) is not None
    expected = processor(batch, return_tensors="pt", do_convert_rgb=False)["pixel_values"]
    got = pixel_values(processor, batch)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_siglip_pixel_values_equal_the_processors_bit_for_bit():
    processor = SiglipImageProcessorPil(size={"height": 40, "width": 40})
    assert _standard_pil_pipeline(processor)
    batch = images(MIXED)
    assert torch.equal(pixel_values(processor, batch), processor(batch, return_tensors="pt")["pixel_values"])


@pytest.mark.parametrize(
    "settings, sizes, mode",
    [
        ({"image_mean": 0.5, "image_std": 0.5}, SQUARE, "L"),  # not RGB: the processor converts and resizes it
        ({"size": {"shortest_edge": 16, "longest_edge": 20}, "do_center_crop": False}, SQUARE, "RGB"),  # other rule
        ({"size": {"max_height": 16, "max_width": 12}, "do_center_crop": False}, SQUARE, "RGB"),
    ],
)
def test_what_it_does_not_resize_itself_goes_to_the_processor(settings, sizes, mode):
    processor = CLIPImageProcessorPil(**settings)
    batch = [image.convert(mode) for image in images(sizes)]
    assert _standard_pil_pipeline(processor)
    assert _resized_and_cropped(batch, merged(processor)) is None
    expected = processor(batch, return_tensors="pt", do_convert_rgb=False)["pixel_values"]
    assert torch.equal(pixel_values(processor, batch), expected)


def test_images_of_different_sizes_after_the_steps_are_left_to_the_processor():
    processor = CLIPImageProcessorPil(size={"shortest_edge": 16}, do_center_crop=False)
    assert _resized_and_cropped(images([(20, 30), (30, 20)]), merged(processor)) is None
    assert _resized_and_cropped(images([(20, 30), (40, 60)]), merged(processor)).shape == (2, 3, 16, 24)


def test_the_processor_settings_are_read_at_call_time():
    processor = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    batch = images(SQUARE)
    before = pixel_values(processor, batch)
    processor.image_mean = [0.0, 0.0, 0.0]
    processor.image_std = [1.0, 1.0, 1.0]
    after = pixel_values(processor, batch)
    assert not torch.equal(before, after)
    assert torch.equal(after, processor(batch, return_tensors="pt", do_convert_rgb=False)["pixel_values"])


def test_settings_the_processor_refuses_are_refused_by_its_own_check():
    processor = CLIPImageProcessorPil(resample=None, size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    with pytest.raises(ValueError, match="`size` and `resample` must be specified"):
        processor(images(SQUARE), do_convert_rgb=False)
    with pytest.raises(ValueError, match="`size` and `resample` must be specified"):
        pixel_values(processor, images(SQUARE))


def test_a_mean_of_the_wrong_length_is_refused_naming_it():
    processor = CLIPImageProcessorPil(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    processor.image_mean = [0.5, 0.5]
    with pytest.raises(ValueError, match="image_mean must have 3 elements, got 2"):
        pixel_values(processor, images(SQUARE))


class OwnNormalize(CLIPImageProcessorPil):
    """A processor with a step of its own: pixel_values must leave it to the processor."""

    calls = 0

    def normalize(self, image, mean, std, **kwargs):
        OwnNormalize.calls += 1
        return super().normalize(image, mean, std, **kwargs) * 2


class OwnResize(CLIPImageProcessorPil):
    def resize(self, image, size, resample=None, **kwargs):
        return super().resize(image, size, resample=0, **kwargs)  # nearest, whatever the settings say


class OwnPreprocess(CLIPImageProcessorPil):
    def _preprocess(self, images, **kwargs):
        out = super()._preprocess(images, **kwargs)
        out["pixel_values"] = out["pixel_values"] + 1
        return out


@pytest.mark.parametrize("cls", [OwnNormalize, OwnResize, OwnPreprocess])
def test_a_processor_with_its_own_steps_is_called_as_it_is(cls):
    processor = cls(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    assert not _standard_pil_pipeline(processor)
    batch = images(SQUARE)
    OwnNormalize.calls = 0
    got = pixel_values(processor, batch)
    assert torch.equal(got, processor(batch, return_tensors="pt", do_convert_rgb=False)["pixel_values"])
    if cls is OwnNormalize:
        assert OwnNormalize.calls == 2 * len(batch)  # each image through its normalize, in both calls


def test_a_padding_processor_is_not_taken_over():
    processor = CLIPImageProcessorPil(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    processor.do_pad = True
    assert not _standard_pil_pipeline(processor)


def test_the_selection_stage_preprocesses_through_it(monkeypatch):
    """prepare_image_turns takes its pixels from pixel_values (the function these tests hold to the processor)."""
    from vital import selection
    from vital.testing.tiny_models import build_tiny_clip

    _, processor = build_tiny_clip(seed=0)
    seen = []

    def recording(image_processor, batch):
        seen.append(len(batch))
        return pixel_values(image_processor, batch)

    monkeypatch.setattr(selection, "pixel_values", recording)
    prepared = selection.prepare_image_turns(
        processor, images([(20, 20)] * 5), [["a"], ["b", "c"], ["d"], ["e"], ["f"]], 3
    )
    assert seen == [3, 2]
    expected = processor.image_processor(images([(20, 20)] * 5), return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.cat(prepared.pixels), expected)
