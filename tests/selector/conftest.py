"""Fixtures for the selector tests: one tiny CLIP backbone, and synthetic preference pairs with a known rule.

The synthetic candidates are (image, text) items: a 32x32 noise image that is bright or dark, and a short random
sentence holding one keyword. Two pair families:

- ``consistency``: the chosen item's text names its image's brightness ("bright" / "dark") and the rejected item's
  text names the opposite. Neither the image nor the text alone says which side is chosen (both sides are bright or
  dark, and say "bright" or "dark", equally often): only their combination does.
- ``brightness`` (judge) and ``contradiction`` (clinician): the judge prefers the bright image whatever the text; the
  clinicians prefer a dark image whose text says "effusion" over a bright one whose text says "normal", against the
  judge.
- ``judge_wording`` and ``clinician_wording``: two images of the same brightness whose texts differ; the judge prefers
  the one saying "normal", clinicians the one saying "effusion". Only the text tells them apart, so the clinicians'
  rule can be learnt without touching the judge's brightness rule.
"""

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, List
from datasets import Image as ImageFeature
from PIL import Image

from vital.data.schemas import PREFERENCE_FEATURES, image_part, text_part
from vital.testing.tiny_models import build_tiny_clip


FILLER = [
    "the",
    "scan",
    "shows",
    "a",
    "region",
    "near",
    "the",
    "left",
    "lobe",
    "with",
    "tissue",
    "and",
    "a",
    "small",
    "area",
    "in",
    "the",
    "center",
    "of",
    "the",
    "field",
]
SYNTHETIC_FEATURES = Features({**PREFERENCE_FEATURES, "rejected_images": List(ImageFeature())})


def _image(bright: bool, rng: np.random.Generator) -> Image.Image:
    low, high = (160, 250) if bright else (5, 95)
    return Image.fromarray(rng.integers(low, high, size=(32, 32, 3)).astype(np.uint8))


def _text(keyword: str, rng: np.random.Generator) -> str:
    words = list(rng.choice(FILLER, size=6))
    words.insert(int(rng.integers(0, 7)), keyword)
    return " ".join(words)


def _row(index, chosen, rejected, source="model", weight=1.0):
    (chosen_image, chosen_text), (rejected_image, rejected_text) = chosen, rejected
    return {
        "id": f"{source}-{index}",
        "prompt": [{"role": "user", "content": [image_part(), text_part("Describe the image.")]}],
        "images": [chosen_image],
        "rejected_images": [rejected_image],
        "chosen": [{"role": "assistant", "content": [text_part(chosen_text)]}],
        "rejected": [{"role": "assistant", "content": [text_part(rejected_text)]}],
        "source": source,
        "annotator": "synthetic",
        "weight": weight,
    }


def synthetic_pairs(kind: str, n: int, seed: int, weight: float = 1.0) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        if kind == "consistency":
            bright, other = bool(rng.integers(2)), bool(rng.integers(2))
            chosen = (_image(bright, rng), _text("bright" if bright else "dark", rng))
            rejected = (_image(other, rng), _text("dark" if other else "bright", rng))
            rows.append(_row(i, chosen, rejected))
        elif kind == "brightness":
            chosen = (_image(True, rng), _text(str(rng.choice(["effusion", "normal"])), rng))
            rejected = (_image(False, rng), _text(str(rng.choice(["effusion", "normal"])), rng))
            rows.append(_row(i, chosen, rejected))
        elif kind == "contradiction":
            chosen = (_image(False, rng), _text("effusion", rng))
            rejected = (_image(True, rng), _text("normal", rng))
            rows.append(_row(i, chosen, rejected, source="clinician", weight=weight))
        elif kind in ("judge_wording", "clinician_wording"):
            # Same brightness on both sides: only the text differs. The judge prefers "normal", clinicians "effusion".
            bright = bool(rng.integers(2))
            words = ("normal", "effusion") if kind == "judge_wording" else ("effusion", "normal")
            chosen, rejected = ((_image(bright, rng), _text(word, rng)) for word in words)
            source = "model" if kind == "judge_wording" else "clinician"
            rows.append(_row(i, chosen, rejected, source=source, weight=weight if source == "clinician" else 1.0))
        else:
            raise ValueError(kind)
    return Dataset.from_list(rows, features=SYNTHETIC_FEATURES)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """A saved tiny CLIP (model + processor), built once."""
    path = tmp_path_factory.mktemp("tiny-clip")
    build_tiny_clip(save_dir=path, seed=0)
    return path


@pytest.fixture
def processor(clip_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(clip_dir)


@pytest.fixture
def make_selector(clip_dir):
    """``make_selector(**config)``: a fresh selector around the tiny CLIP, with a seeded head."""
    from vital.selector import SelectorModel

    def make(**config):
        config.setdefault("hidden_sizes", [64, 64])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return SelectorModel.from_backbone(clip_dir, **config)

    return make


@pytest.fixture
def pairs():
    """``pairs(kind, n, seed, weight=1.0)``: a Dataset of synthetic preference rows (see the module docstring)."""
    return synthetic_pairs


@pytest.fixture
def single_thread():
    """Tiny models train several times faster on one thread than on two cores shared with other work."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
