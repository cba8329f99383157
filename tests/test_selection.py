"""Selection: every turn scored, scores aggregated, bad candidates quarantined with the reason, exact top ratios with
deterministic tie-breaking, slices of processes that add up to the whole, mixtures that say where each row came from."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

import vital.selection as selection
from vital.data.schemas import CANDIDATE_FEATURES, image_part, text_part
from vital.selection import (
    MIXTURE_FEATURES,
    CandidateScores,
    aggregate_turn_scores,
    build_mixture,
    cut_scores,
    kept_count,
    parse_mixture_spec,
    plot_score_histogram,
    rank_candidates,
    ratio_config_name,
    score_candidates,
    select_top_ratios,
)
from vital.selector import SelectorModel, candidate_turn_text, score_texts_images
from vital.testing.tiny_models import build_tiny_clip


@pytest.fixture(autouse=True)
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def selector(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    _, processor = build_tiny_clip(save_dir=folder, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SelectorModel.from_backbone(folder, hidden_sizes=[16])
    return model, processor


def png(value: int, size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def candidate(cid: str, n_turns: int, image=None) -> dict:
    messages = []
    for t in range(n_turns):
        content = [text_part(f"Question {t} about {cid}?")]
        messages.append({"role": "user", "content": ([image_part()] + content) if t == 0 else content})
        messages.append({"role": "assistant", "content": [text_part(f"Answer {t} of {cid}, " + "detail " * t)]})
    return {
        "id": cid,
        "pair_id": cid.split("#")[0],
        "images": [{"bytes": png(10 * len(cid)), "path": f"{cid}.png"}] if image is None else image,
        "messages": messages,
        "modality": "ct",
        "caption": f"Caption of {cid}.",
        "mentions": [],
        "generation": None,
    }


def dataset(rows: list[dict]) -> Dataset:
    return Dataset.from_list(rows, features=CANDIDATE_FEATURES)


# ---- scoring ---------------------------------------------------------------------------------------------------------
def test_every_turn_is_scored_and_aggregated(selector):
    model, processor = selector
    candidates = dataset([candidate("a", 1), candidate("b", 3), candidate("c", 2)])
    scored = score_candidates(model, processor, candidates, batch_size=2)
    assert scored.candidate_ids == ["a", "b", "c"] and scored.indices == [0, 1, 2] and not len(scored.quarantine)
    assert [len(t) for t in scored.turn_scores] == [1, 3, 2]
    # the same numbers as scoring each turn by hand
    row = candidates[1]
    texts = [candidate_turn_text(row, t, model.config.text_fields) for t in range(3)]
    by_hand = score_texts_images(model, processor, [row["images"][0]] * 3, texts, batch_size=2)
    np.testing.assert_allclose(scored.turn_scores[1], by_hand, rtol=1e-5, atol=1e-6)
    assert scored.scores[1] == pytest.approx(float(np.mean(scored.turn_scores[1])), abs=1e-6)
    for how, fn in (("min", min), ("max", max)):
        other = score_candidates(model, processor, candidates, batch_size=2, aggregate=how)
        assert other.scores[1] == pytest.approx(fn(other.turn_scores[1]), abs=1e-7)
    with pytest.raises(ValueError, match="aggregate"):
        score_candidates(model, processor, candidates, aggregate="median")


def test_missing_and_corrupt_images_are_quarantined_with_the_reason(selector):
    model, processor = selector
    rows = [
        candidate("good-1", 2),
        candidate("no-image", 2, image=[]),
        candidate("null-image", 1, image=[None]),
        candidate("corrupt", 2, image=[{"bytes": b"\x89PNG not really", "path": "corrupt.png"}]),
        candidate("truncated", 1, image=[{"bytes": noise_png()[:300], "path": "truncated.png"}]),
        candidate("good-2", 1),
    ]
    scored = score_candidates(model, processor, dataset(rows), batch_size=4)
    assert scored.candidate_ids == ["good-1", "good-2"] and scored.indices == [0, 5]
    reasons = {r.record_id: (r.field, r.reason) for r in scored.quarantine.records}
    assert set(reasons) == {"no-image", "null-image", "corrupt", "truncated"}
    assert reasons["no-image"][1].startswith("missing image")
    assert reasons["null-image"] == ("images[0]", "missing image")
    assert reasons["corrupt"][0] == "images[0]" and reasons["corrupt"][1].startswith("corrupt image")
    assert reasons["truncated"][1].startswith("corrupt image")
    quarantine = scored.quarantine.to_dataset()
    assert set(quarantine["record_id"]) == set(reasons) and all(quarantine["reason"])
    # quarantined candidates are neither kept nor counted: 2 scored, top50 keeps 1
    configs = select_top_ratios(dataset(rows), scored, [0.5])
    assert len(configs["top50"]) == 1 and configs["top50"][0]["id"] in {"good-1", "good-2"}


def test_process_slices_are_whole_batches_that_add_up_to_the_whole(selector, monkeypatch):
    model, processor = selector
    candidates = dataset([candidate(f"c{i:02d}", 1 + i % 3) for i in range(11)])
    whole = score_candidates(model, processor, candidates, batch_size=2)

    class State:
        num_processes = 3

        def __init__(self, index):
            self.process_index = index

    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "gather_object", lambda obj: list(obj))  # this process's part only
    parts = [score_candidates(model, processor, candidates, batch_size=2, state=State(i)) for i in range(3)]
    assert [p.indices for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert sum((p.candidate_ids for p in parts), []) == whole.candidate_ids
    np.testing.assert_allclose(sum((p.scores for p in parts), []), whole.scores, atol=1e-6)
    assert selection._slice(5, 2, 4, 3) == (5, 5)  # more processes than batches: the last ones get nothing


# ---- ranking and ratios ------------------------------------------------------------------------------------------------
def patched_scores(monkeypatch, by_id: dict[str, list[float]]):
    """Replace the model: each turn scores what ``by_id`` says for its candidate (the text names the candidate)."""

    def fake(model, prepared):
        out = []
        for texts in prepared.turns:
            out.append([])
            for text in texts:
                cid = text.split(" about ")[1].split("?")[0]
                turn = int(text.split(" ")[1])
                out[-1].append(by_id[cid][turn])
        return out

    monkeypatch.setattr(selection, "score_prepared", fake)


def test_ratios_and_tie_breaking_are_exact(monkeypatch, selector):
    model, processor = selector
    by_id = {
        "e": [0.9],
        "b": [0.4, 0.8],  # mean 0.6
        "d": [0.6],  # ties with b: b first
        "a": [0.6],  # ties with b and d: a first of all three
        "c": [0.1, 0.1, 0.4],  # mean 0.2
        "g": [0.2],  # ties with c: c first
        "f": [-1.0],
        "h": [0.30000001],  # equal to 0.3 in float32: ties with i, h first
        "i": [0.3],
        "j": [0.0],
    }
    patched_scores(monkeypatch, by_id)
    candidates = dataset([candidate(cid, len(s)) for cid, s in by_id.items()])
    scored = score_candidates(model, processor, candidates, batch_size=3)
    order = [scored.candidate_ids[p] for p in rank_candidates(scored.candidate_ids, scored.scores)]
    assert order == ["e", "a", "b", "d", "h", "i", "c", "g", "j", "f"]

    configs = select_top_ratios(candidates, scored, [0.9, 0.1, 0.4, 0.8, 0.25])
    assert list(configs) == ["top10", "top25", "top40", "top80", "top90"]
    assert {name: len(ds) for name, ds in configs.items()} == {
        "top10": 1,
        "top25": 3,
        "top40": 4,
        "top80": 8,
        "top90": 9,
    }
    assert configs["top40"]["id"] == ["e", "a", "b", "d"]
    assert configs["top90"]["id"] == order[:9]
    top = configs["top80"]
    assert top.features["selector_score"].dtype == "float32"
    assert top["selector_score"] == pytest.approx([0.9, 0.6, 0.6, 0.6, 0.3, 0.3, 0.2, 0.2], abs=1e-6)
    assert top[2]["selector_turn_scores"] == pytest.approx([0.4, 0.8])
    assert set(CANDIDATE_FEATURES) <= set(top.column_names)
    assert cut_scores(scored, [0.4, 0.8]) == {"top40": pytest.approx(0.6), "top80": pytest.approx(0.2)}
    # the input order does not matter
    shuffled = candidates.shuffle(seed=1)
    again = select_top_ratios(shuffled, score_candidates(model, processor, shuffled, batch_size=4), [0.8])
    assert again["top80"]["id"] == top["id"]


def test_kept_counts_and_names():
    assert [kept_count(7, r) for r in (0.1, 0.4, 0.8, 0.9, 1.0)] == [1, 3, 6, 7, 7]
    assert [kept_count(100, r) for r in (0.1, 0.4, 0.8, 0.9)] == [10, 40, 80, 90]
    assert kept_count(30, 0.1) == 3  # 0.1 * 30 is 3.0000000000000004 in floating point
    assert kept_count(0, 0.5) == 0
    assert [ratio_config_name(r) for r in (0.1, 0.9, 0.125, 1.0)] == ["top10", "top90", "top12_5", "top100"]
    with pytest.raises(ValueError):
        kept_count(10, 0)
    with pytest.raises(ValueError, match="NaN"):
        rank_candidates(["a"], [math.nan])
    assert aggregate_turn_scores([1.0, 2.0, 6.0]) == 3.0
    with pytest.raises(ValueError, match="duplicate"):
        select_top_ratios(dataset([candidate("a", 1)]), CandidateScores(), [0.1, 0.10000000001])


# ---- mixtures and the histogram ----------------------------------------------------------------------------------------
def test_mixtures_carry_provenance(monkeypatch, selector, tmp_path):
    model, processor = selector
    patched_scores(monkeypatch, {"a": [0.3], "b": [0.9], "c": [0.1]})
    candidates = dataset([candidate(c, 1) for c in "abc"])
    top = select_top_ratios(candidates, score_candidates(model, processor, candidates), [0.5])["top50"]
    other = Dataset.from_dict(
        {
            "id": ["llava-1"],
            "images": [[{"bytes": png(200), "path": "x.png"}]],
            "messages": [candidate("llava-1", 1)["messages"]],
            "extra_column": ["dropped"],
        }
    )
    demo = Dataset.from_dict(
        {"id": ["demo-1"], "image": [{"bytes": png(50), "path": "d.png"}], "messages": [candidate("d", 1)["messages"]]}
    )
    mix = build_mixture([(top, "org/cands@abc:top50"), (other, "org/llava@def"), (demo, "org/demos@123")])
    assert mix.features == MIXTURE_FEATURES
    assert mix["provenance"] == ["org/cands@abc:top50"] * 2 + ["org/llava@def", "org/demos@123"]
    assert mix["id"] == ["b", "a", "llava-1", "demo-1"]
    assert mix["selector_score"][2:] == [None, None] and mix["selector_score"][0] == pytest.approx(0.9)
    assert mix["modality"] == ["ct", "ct", "other", "other"]
    assert mix[2]["images"][0].size == (12, 12) and mix[3]["images"][0].getpixel((0, 0)) == (50, 50, 50)
    with pytest.raises(ValueError, match="TRL format"):
        build_mixture([(Dataset.from_dict({"id": ["x"], "conversations": [[]]}), "org/llava-json")])
    assert parse_mixture_spec("mix150k = top80+org/a@main + org/b:cfg") == (
        "mix150k",
        ["top80", "org/a@main", "org/b:cfg"],
    )
    with pytest.raises(ValueError):
        parse_mixture_spec("no-equals-sign")

    path = plot_score_histogram([0.1, 0.5, 0.9, 0.4], {"top10": 0.9, "top50": 0.4}, tmp_path / "h.png", bins=5)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300
    first = path.read_bytes()
    assert plot_score_histogram([0.1, 0.5, 0.9, 0.4], {"top10": 0.9, "top50": 0.4}, path, bins=5).read_bytes() == first
