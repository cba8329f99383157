"""Rows of a `selected` dataset (the SFT stage's input) for tests and benchmarks: random images, one question and
one answer each, with every column the schema asks for."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


STAND_IN_GENERATION = {
    "model": "stand-in",
    "endpoint": "stand-in",
    "prompt_sha": "0" * 8,
    "demo_ids": [],
    "prompt_tokens": 1,
    "completion_tokens": 1,
    "cost_usd": 0.0,
    "stand_in": True,
}
"""The `generation` column of the rows: where a candidate came from (here: the stand-in)."""


def random_image(seed: int, size: tuple[int, int] = (40, 36)) -> Image.Image:
    """An RGB image of random pixels, ``size`` = (height, width), the same for the same seed."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def selected_row(i: int, answer: str, question: str = "What does this image show?") -> dict[str, Any]:
    """Candidate ``c{i}`` of figure ``p{i}`` as the select stage pushes it (stand-in generation metadata, score i)."""
    return {
        "id": f"c{i}",
        "pair_id": f"p{i}",
        "images": [random_image(i)],
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "modality": "ct",
        "caption": f"Figure {i}.",
        "mentions": [],
        "generation": dict(STAND_IN_GENERATION),
        "selector_score": float(i),
    }
