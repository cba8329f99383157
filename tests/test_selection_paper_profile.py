"""Selection in the paper profile: one text per candidate (its first turn, in the official text template), cut with
``int()``; ours scores every turn and averages, cut with ``ceil``."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from vital.data.schemas import CANDIDATE_FEATURES, image_part, text_part
from vital.selection import score_candidates, select_top_ratios
from vital.selector import OFFICIAL_TEXT_TEMPLATE, SelectorModel, score_texts_images
from vital.selector.data import candidate_turn_text
from vital.testing.tiny_models import build_tiny_clip


@pytest.fixture(scope="module")
def official_selector(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    _, processor = build_tiny_clip(save_dir=folder, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SelectorModel.from_backbone(folder, hidden_sizes=[16], text_template=OFFICIAL_TEXT_TEMPLATE)
    return model, processor


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _candidate(index: int, n_turns: int) -> dict:
    messages = []
    for t in range(n_turns):
        content = [text_part(f"Question {t} about figure {index}?")]
        messages.append({"role": "user", "content": ([image_part()] + content) if t == 0 else content})
        messages.append({"role": "assistant", "content": [text_part(f"Answer {t}, " + "detail " * (t + index))]})
    return {
        "id": f"c{index}",
        "pair_id": f"p{index}",
        "images": [{"bytes": _png(20 * index), "path": f"c{index}.png"}],
        "messages": messages,
        "modality": "ct",
        "caption": f"Caption {index}. ",
        "mentions": [f"Figure {index} shows it."],
        "generation": None,
    }


def test_paper_selection_scores_the_first_turn_in_the_official_text_and_cuts_with_int(official_selector):
    model, processor = official_selector
    assert model.config.text_fields == ["caption", "mentions", "question", "answer"]
    candidates = Dataset.from_list([_candidate(i, 1 + i % 3) for i in range(7)], features=CANDIDATE_FEATURES)
    scored = score_candidates(model, processor, candidates, batch_size=4, aggregate="first")
    assert [len(t) for t in scored.turn_scores] == [1] * 7  # later turns are not scored at all
    row = candidates[2]
    text = candidate_turn_text(row, 0, model.config.text_fields, model.config.text_template)
    assert text == "Caption 2. Figure 2 shows it.Question:Question 0 about figure 2?Answer:Answer 0, detail detail "
    (by_hand,) = score_texts_images(model, processor, [row["images"][0]], [text])
    assert scored.scores[2] == pytest.approx(by_hand, abs=1e-6)

    ours = score_candidates(model, processor, candidates, batch_size=4, aggregate="mean")
    assert [len(t) for t in ours.turn_scores] == [1 + i % 3 for i in range(7)]
    assert ours.scores[2] == pytest.approx(float(np.mean(ours.turn_scores[2])), abs=1e-6)

    # 7 candidates at 10 / 40 %: int() keeps 0 and 2, ceil keeps 1 and 3
    floor = select_top_ratios(candidates, scored, [0.1, 0.4], cut="floor")
    ceil = select_top_ratios(candidates, scored, [0.1, 0.4], cut="ceil")
    assert [len(floor["top10"]), len(floor["top40"])] == [0, 2]
    assert [len(ceil["top10"]), len(ceil["top40"])] == [1, 3]
