"""The campaign view: progress per annotator, kappa with a bootstrap interval (scikit-learn's kappa), conflicts in the
lead's own blinded terms, adjudication saved apart from the annotations, the adjudicated set, and the role check."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from vital.annotate.campaign import Campaign, bootstrap_kappa, kappa, resampled_kappas
from vital.annotate.tasks import shown_order


gr = pytest.importorskip("gradio")

from vital.annotate.app import AnnotationApp  # noqa: E402


def _request(username):
    return SimpleNamespace(username=username, session_hash="s")


def test_kappa_and_its_interval():
    a = ["x", "y", "x", "x", "y", "x", "y", "y", "x", "x"] * 3
    b = ["x", "y", "y", "x", "y", "x", "x", "y", "x", "x"] * 3
    value = kappa(a, b)
    assert value == pytest.approx(cohen_kappa_score(a, b))
    low, high = bootstrap_kappa(a, b)
    assert low < value < high and high - low < 0.8
    assert bootstrap_kappa(a, b) == (low, high)  # seeded
    # more items: a narrower interval
    low10, high10 = bootstrap_kappa(a * 10, b * 10)
    assert high10 - low10 < high - low
    assert math.isnan(kappa(["x"] * 4, ["x"] * 4))
    # the vectorised resamples compute scikit-learn's kappa, nominal and weighted
    rng = np.random.default_rng(1)
    index = rng.integers(0, len(a), (5, len(a)))
    for row, value in zip(index, resampled_kappas(a, b, index), strict=True):
        assert value == pytest.approx(cohen_kappa_score([a[i] for i in row], [b[i] for i in row]))
    scores_a, scores_b = rng.integers(0, 11, 40).tolist(), rng.integers(0, 11, 40).tolist()
    index = rng.integers(0, 40, (5, 40))
    for row, value in zip(index, resampled_kappas(scores_a, scores_b, index, "quadratic"), strict=True):
        pick_a, pick_b = [scores_a[i] for i in row], [scores_b[i] for i in row]
        assert value == pytest.approx(cohen_kappa_score(pick_a, pick_b, weights="quadratic", labels=list(range(11))))
    assert kappa(scores_a, scores_b, "quadratic") == pytest.approx(
        resampled_kappas(scores_a, scores_b, np.arange(40), "quadratic")[0]
    )


def _preference_votes(task):
    """alice and bob agree on items 0-2 (by source), disagree on 3; carol annotates item 0 only."""
    ids = task.items.ids
    columns = ["answer_a", "answer_b", "answer_a", "answer_a"]
    for annotator in ("alice", "bob"):
        for i, column in enumerate(columns):
            if annotator == "bob" and i == 3:
                column = "answer_b"
            a_column, _ = shown_order(annotator, ids[i])
            task.annotate(annotator, ids[i], "A" if a_column == column else "B")
    task.annotate("carol", ids[0], "tie")
    return ids


def test_progress_agreement_conflicts_and_adjudication(make_task, store, monkeypatch):
    task = make_task("preference")
    ids = _preference_votes(task)
    campaign = Campaign(task)
    progress = {r["annotator"]: r["done"] for r in campaign.progress()}
    assert progress == {"alice": 4, "bob": 4, "carol": 1}
    pairs = {(p.annotator_a, p.annotator_b): p for p in campaign.agreement(resamples=200)}
    assert set(pairs) == {("alice", "bob")}  # carol shares one item only
    ab = pairs[("alice", "bob")]
    assert ab.n == 4 and ab.percent == 0.75
    expected = cohen_kappa_score(["answer_a", "answer_b", "answer_a", "answer_a"], ["answer_a", "answer_b"] * 2)
    assert ab.kappa == pytest.approx(expected)
    assert math.isnan(ab.low)  # 4 shared items: no interval
    monkeypatch.setattr("vital.annotate.campaign.MIN_ITEMS_FOR_INTERVAL", 2)
    ab = campaign.agreement(resamples=200)[0]
    assert (ab.low, ab.high) == bootstrap_kappa(
        ["answer_a", "answer_b", "answer_a", "answer_a"], ["answer_a", "answer_b"] * 2, resamples=200
    )

    conflicts = {c["item"]: c for c in campaign.conflicts("lead")}
    assert set(conflicts) == {ids[0], ids[3]}  # carol's tie on item 0, bob's change on item 3
    lead_a, _ = shown_order("lead", ids[3])
    alice_words = "answer A" if lead_a == "answer_a" else "answer B"
    assert f"alice: {alice_words}" in conflicts[ids[3]]["votes"]
    assert "answer_a" not in json.dumps(conflicts) and "answer_b" not in json.dumps(conflicts)

    rows, counts = campaign.adjudicated_set()
    assert counts == {"items": 4, "consensus": 2, "adjudicated": 0, "unresolved": 2}
    decision = campaign.adjudicate("lead", ids[3], "A" if lead_a == "answer_b" else "B", "bob is right")
    assert decision.label == "answer_b" and decision.role == "adjudicator"
    assert store.path("preference", task.dataset, "lead", "adjudicator").is_file()
    assert "lead" not in store.annotators("preference", task.dataset)  # not counted as an annotator
    with pytest.raises(ValueError, match="choose one of"):
        campaign.adjudicate("lead", ids[0], "C")
    rows, counts = campaign.adjudicated_set()
    assert counts == {"items": 4, "consensus": 2, "adjudicated": 1, "unresolved": 1}
    by_item = {r["item_id"]: r for r in rows}
    assert by_item[ids[3]]["label"] == "answer_b" and by_item[ids[3]]["decided_by"] == "adjudication"
    assert by_item[ids[1]]["label"] == "answer_b" and by_item[ids[1]]["decided_by"] == "consensus"


def test_rating_conflicts_use_a_tolerance(make_task):
    task = make_task("rating")
    ids = task.items.ids
    for annotator, scores in {"alice": [7, 2, 9], "bob": [8, 9, 9]}.items():
        for item_id, score in zip(ids, scores, strict=False):
            task.annotate(annotator, item_id, score=score)
    campaign = Campaign(task)
    assert [c["item"] for c in campaign.conflicts("lead")] == [ids[1]]
    rows, counts = campaign.adjudicated_set()
    assert {r["item_id"]: r["score"] for r in rows} == {ids[0]: 7.5, ids[2]: 9}
    campaign.adjudicate("lead", ids[1], "4")
    assert {r["item_id"]: r["score"] for r in campaign.adjudicated_set()[0]}[ids[1]] == 4.0


def test_the_campaign_view_is_behind_its_own_role(make_task, tmp_path):
    task = make_task("preference")
    ids = _preference_votes(task)
    app = AnnotationApp(task, roles={"lead": {"campaign"}, "alice": {"annotator"}})
    hidden = app.campaign_view(_request("alice"))
    assert list(hidden) == [app.campaign_tab] and hidden[app.campaign_tab]["visible"] is False
    for handler in (lambda r: app.campaign_decide(ids[3], "A", "", r), app.campaign_export):
        with pytest.raises(gr.Error, match="Only the campaign's leads"):
            handler(_request("alice"))
    assert app.campaign_item_view(ids[3], _request("alice"))[app.campaign_detail] == ""
    # the lead sees everything, and cannot annotate (no annotator role)
    view = app.campaign_view(_request("lead"))
    assert view[app.campaign_tab]["visible"] is True
    assert set(view[app.campaign_progress]["annotator"]) == {"alice", "bob", "carol"}
    assert "alice / bob | 4 | 75%" in view[app.campaign_agreement]
    assert "too few items for an interval" in view[app.campaign_agreement]  # 4 shared items
    assert "Campaign" in app.load(_request("lead"))[app.header]
    with pytest.raises(gr.Error, match="Not signed in"):
        app.submit(ids[0], "A", "", None, _request("lead"))
    detail = app.campaign_item_view(ids[3], _request("lead"))[app.campaign_detail]
    assert "**Answer A**" in detail and "answer_a" not in detail and "answer_b" not in detail
    app.campaign_decide(ids[3], "B", "", _request("lead"))
    out = app.campaign_export(_request("lead"))
    lines = [json.loads(x) for x in Path(out[app.campaign_file]).read_text().splitlines()]
    assert len(lines) == 3 and "1 adjudicated" in out[app.campaign_status]


def test_the_export_carries_the_adjudicated_set(make_task, hub, store):
    from vital.annotate.export import build_export, push_export

    task = make_task("preference")
    ids = _preference_votes(task)
    export = build_export(hub, "preference", "test/answer-pairs", store)
    assert export.adjudicated is None  # nothing adjudicated: no such config
    before = export.store_hash
    lead_a, _ = shown_order("lead", ids[3])
    Campaign(task).adjudicate("lead", ids[3], "A" if lead_a == "answer_b" else "B")
    export = build_export(hub, "preference", "test/answer-pairs", store)
    assert export.store_hash != before  # the decisions are part of what the export read
    pushed = push_export(hub, export, "test/adjudicated-preferences", "test/answer-pairs")
    rows = hub.load_dataset("test/adjudicated-preferences", "adjudicated", revision=pushed[-1].commit, split="train")
    assert {r["item_id"]: (r["label"], r["decided_by"]) for r in rows} == {
        ids[1]: ("answer_b", "consensus"),
        ids[2]: ("answer_a", "consensus"),
        ids[3]: ("answer_b", "adjudication"),
    }
    card = hub.read_card("test/adjudicated-preferences", pushed[-1].commit).text
    assert "2 by consensus of the annotators, 1 decided by a campaign lead; 1 conflict(s) still open" in card
