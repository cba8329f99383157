"""Selection scoring encodes each candidate's image once (not once per turn) and scores exactly as the per-turn
path did."""

import io

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from vital.data.schemas import CANDIDATE_FEATURES, image_part, qa_turns, text_part
from vital.selection import score_candidates
from vital.selector import SelectorModel, candidate_turn_text, score_texts_images
from vital.testing.tiny_models import build_tiny_clip


@pytest.fixture(scope="module")
def selector(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    _, processor = build_tiny_clip(save_dir=folder, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SelectorModel.from_backbone(folder, hidden_sizes=[16])
    return model.eval(), processor


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def candidate(i: int, n_turns: int) -> dict:
    messages = []
    for t in range(n_turns):
        content = [text_part(f"Question {t} about figure {i}?" + " more" * (i % 5))]
        messages.append({"role": "user", "content": ([image_part()] + content) if t == 0 else content})
        messages.append(
            {"role": "assistant", "content": [text_part(f"Answer {t} of {i}, " + "detail " * (t + i % 3))]}
        )
    return {"id": f"c{i}", "pair_id": f"p{i}", "images": [{"bytes": png(i), "path": f"{i}.png"}],
            "messages": messages, "modality": "ct", "caption": f"Caption {i}.", "mentions": [], "generation": None}  # fmt: skip


def test_each_image_is_encoded_once_per_candidate_and_scores_are_unchanged(selector, monkeypatch):
    model, processor = selector
    rows = [candidate(i, 1 + i % 3) for i in range(11)]  # 1, 2 or 3 turns: 21 turns for 11 candidates
    candidates = Dataset.from_list(rows, features=CANDIDATE_FEATURES)
    encoded, preprocessed = [], []
    get_image_features = model.backbone.get_image_features
    image_processor_call = type(processor.image_processor).__call__

    def counting_encoder(*args, pixel_values, **kwargs):
        encoded.append(pixel_values.shape[0])
        return get_image_features(*args, pixel_values=pixel_values, **kwargs)

    def counting_processor(self, images, *args, **kwargs):
        preprocessed.append(len(images))
        return image_processor_call(self, images, *args, **kwargs)

    monkeypatch.setattr(model.backbone, "get_image_features", counting_encoder)
    monkeypatch.setattr(type(processor.image_processor), "__call__", counting_processor)
    # Preprocessing in this process (num_workers=0), so that the counting processor sees it.
    scored = score_candidates(model, processor, candidates, batch_size=4, num_workers=0)
    turns = sum(len(qa_turns(r["messages"])) for r in rows)
    assert turns == 21
    assert sum(encoded) == sum(preprocessed) == len(rows)  # one per candidate, not one per turn
    assert encoded == [4, 4, 3]  # full batches, as many as the streamed rows give

    # The per-turn path (one image encoding per turn) gives the same scores.
    fields = model.config.text_fields
    encoded.clear()
    for i, row in enumerate(rows):
        texts = [candidate_turn_text(row, t, fields) for t in range(len(qa_turns(row["messages"])))]
        image = Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB")
        expected = score_texts_images(model, processor, [image] * len(texts), texts, batch_size=4)
        np.testing.assert_allclose(scored.turn_scores[i], expected, rtol=1e-5, atol=1e-6)
    assert sum(encoded) == turns


def test_texts_are_padded_as_the_tokenizer_pads_them(selector):
    """prepare_image_turns tokenises once and pads each batch itself: the same ids and masks as the tokenizer's own
    padding of that batch (longest, or max_length), right or left."""
    from vital.selection import _pad

    tokenizer = selector[1].tokenizer
    texts = ["a", "a much longer question about the left lower lobe", "mid length text"]
    ids = tokenizer(texts, truncation=True, max_length=32)["input_ids"]
    side = tokenizer.padding_side
    try:
        for tokenizer.padding_side in ("right", "left"):
            for padding, length in ((True, None), ("max_length", 32)):
                expected = tokenizer(texts, padding=padding, truncation=True, max_length=32, return_tensors="pt")
                padded = _pad(tokenizer, ids, length)
                assert torch.equal(padded["input_ids"], expected["input_ids"])
                assert torch.equal(padded["attention_mask"], expected["attention_mask"])
    finally:
        tokenizer.padding_side = side


def test_a_causal_right_padded_text_tower_skips_the_padding_mask_with_the_same_features(selector, monkeypatch):
    """CLIP's text tower is causal and pools a real token: with right padding the padding mask changes no feature, so
    it is left out (the faster causal kernel), bit for bit the same; left padding, or a tower that is not causal,
    keeps it."""
    from vital.selection import prepare_image_turns, score_prepared

    model, processor = selector
    image = Image.open(io.BytesIO(png(0))).convert("RGB")
    turns = [["a", "a much longer question about the left lower lobe and its margin", "mid length"]]
    masks = []
    get_text_features = model.backbone.get_text_features

    def recording(*args, attention_mask=None, **kwargs):
        masks.append(attention_mask)
        return get_text_features(*args, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(model.backbone, "get_text_features", recording)
    prepared = prepare_image_turns(processor, [image], turns, batch_size=8)
    assert prepared.padding_side == "right" and prepared.encodings[0]["attention_mask"].min() == 0  # padded
    without = score_prepared(model, prepared)
    assert masks == [None]
    masks.clear()
    monkeypatch.setattr(model.config, "backbone_model_type", "siglip")  # not in CAUSAL_TEXT_TOWERS
    prepared.image_features = None
    with_mask = score_prepared(model, prepared)
    assert masks[0] is not None and torch.equal(masks[0], prepared.encodings[0]["attention_mask"])
    assert without == with_mask  # exactly
    masks.clear()
    monkeypatch.setattr(model.config, "backbone_model_type", "clip")
    monkeypatch.setattr(processor.tokenizer, "padding_side", "left")
    left = prepare_image_turns(processor, [image], turns, batch_size=8)
    score_prepared(model, left)  # (other scores: CLIP counts positions from the first pad)
    assert masks[0] is not None and left.encodings[0]["attention_mask"][:, 0].min() == 0  # left padded, masked


def test_a_model_in_training_mode_is_scored_in_eval_mode_and_left_as_it_was(selector):
    """The preparing thread runs the image encoder, so the whole run is in eval mode (no dropout), then restored."""
    model, processor = selector
    candidates = Dataset.from_list([candidate(i, 2) for i in range(6)], features=CANDIDATE_FEATURES)
    expected = score_candidates(model.eval(), processor, candidates, batch_size=4).scores
    model.train()
    try:
        assert score_candidates(model, processor, candidates, batch_size=4).scores == expected
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize("num_workers", [1, 2])
def test_dataloader_workers_give_the_same_scores_and_quarantine_in_row_order(selector, num_workers):
    """Preprocessing in worker processes changes where the work runs, not the result: the scores are equal bit for
    bit to those of num_workers=0, in row order, and the bad rows come back from the workers with their reasons."""
    model, processor = selector
    rows = [candidate(i, 1 + i % 3) for i in range(13)]
    rows[3]["images"] = [{"bytes": b"not a png", "path": "3.png"}]
    for i in (6, 7, 8):  # a whole batch with nothing to score
        rows[i]["images"] = []
    candidates = Dataset.from_list(rows, features=CANDIDATE_FEATURES)
    inline = score_candidates(model, processor, candidates, batch_size=3, num_workers=0)
    workers = score_candidates(model, processor, candidates, batch_size=3, num_workers=num_workers)
    assert workers.candidate_ids == inline.candidate_ids == [f"c{i}" for i in range(13) if i not in (3, 6, 7, 8)]
    assert workers.indices == inline.indices
    assert workers.scores == inline.scores
    assert workers.turn_scores == inline.turn_scores
    quarantined = [(r.record_id, r.field) for r in workers.quarantine.records]
    assert quarantined == [("c3", "images[0]"), ("c6", "images"), ("c7", "images"), ("c8", "images")]
    assert [r.reason for r in workers.quarantine.records] == [r.reason for r in inline.quarantine.records]
    assert "corrupt image" in workers.quarantine.records[0].reason
    assert "0x" not in workers.quarantine.records[0].reason  # no object address: the same reason on every run
