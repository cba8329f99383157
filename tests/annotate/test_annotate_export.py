"""Exports hold exactly the clinicians' last annotations, in the contracts the next stages read, with lineage and
agreement in the card; the exported preferences train the selector as they are."""

import json

import pytest
from datasets import Image, List

from vital.annotate.export import build_export, default_output_repo, demo_id, push_export
from vital.annotate.items import load_items
from vital.annotate.tasks import AnnotationTask, shown_order
from vital.cards import lineage_of
from vital.data.schemas import message_text, qa_turns, validate_dataset


def _text(messages):
    return message_text(messages[0])


def _annotate_preferences(task):
    """alice: 6 items (changes her mind on the first), one tie; bob: the first 3 items, one tie. Returns the
    expected rows {(item, annotator): (chosen column, rejected column)} and the expected ties."""
    ids = task.items.ids
    clicks = [
        ("alice", ids[0], "A"),
        ("alice", ids[1], "B"),
        ("alice", ids[2], "tie"),
        ("alice", ids[3], "A"),
        ("alice", ids[4], "B"),
        ("alice", ids[0], "B"),  # a change of mind: the last click counts
        ("bob", ids[0], "A"),
        ("bob", ids[1], "tie"),
        ("bob", ids[2], "B"),
    ]
    final = {}
    for annotator, item_id, choice in clicks:
        task.annotate(annotator, item_id, choice)
        final[(item_id, annotator)] = choice
    expected, ties = {}, set()
    for (item_id, annotator), choice in final.items():
        if choice == "tie":
            ties.add((item_id, annotator))
            continue
        a_column, b_column = shown_order(annotator, item_id)
        chosen = a_column if choice == "A" else b_column
        expected[(item_id, annotator)] = (chosen, b_column if chosen == a_column else a_column)
    return expected, ties


def test_preferences_export_holds_exactly_the_annotations(hub, make_task, store):
    task = make_task("preference")
    expected, ties = _annotate_preferences(task)
    export = build_export(hub, "preference", "test/answer-pairs", store, weight=2.5)

    rows = export.rows
    assert len(rows) == len(expected) and export.counts["ties"] == len(ties) == 2
    by_key = {(r["item_id"], r["annotator"]): r for r in rows}
    assert set(by_key) == set(expected)
    answers = task.items.dataset.select_columns(["id", "answer_a", "answer_b"])
    texts = {i: {"answer_a": _text(a), "answer_b": _text(b)} for i, a, b in zip(*answers[:].values(), strict=True)}
    for (item_id, annotator), (chosen, rejected) in expected.items():
        row = by_key[(item_id, annotator)]
        assert _text(row["chosen"]) == texts[item_id][chosen]
        assert _text(row["rejected"]) == texts[item_id][rejected]
        assert row["id"] == f"{item_id}-{annotator}"
        assert (row["source"], row["weight"]) == ("clinician", 2.5)
        assert row["shown_as_a"] == shown_order(annotator, item_id)[0]
        assert row["prompt"][0]["content"][0] == {"type": "image", "text": None}
    validate_dataset(rows, "preferences")
    # images are passed through as stored
    raw = rows.cast_column("images", List(Image(decode=False)))
    original = task.items.dataset.cast_column("images", List(Image(decode=False)))
    first = raw[0]
    assert first["images"][0]["bytes"] == original[task.items.index[first["item_id"]]]["images"][0]["bytes"]

    # the annotations config keeps everything, ties included, with the sides shown
    table = export.annotations
    assert len(table) == len(expected) + len(ties)
    assert {(r["item_id"], r["annotator"]) for r in table if r["label"] == "tie"} == ties
    for r in table:
        assert json.loads(r["shown"]) == dict(zip("AB", shown_order(r["annotator"], r["item_id"]), strict=True))

    # agreement: alice and bob share 3 items
    assert export.agreement.items_multiply_annotated == 3
    assert [(p.annotator_a, p.annotator_b, p.n) for p in export.agreement.pairs] == [("alice", "bob", 3)]


def test_pushed_preferences_and_card(hub, make_task, store):
    _annotate_preferences(make_task("preference"))
    export = build_export(hub, "preference", "test/answer-pairs@main", store)
    pushed = push_export(hub, export, "test/preferences", "test/answer-pairs@main", config={"weight": 1.0})
    loaded = hub.load_dataset("test/preferences", revision=pushed[-1].commit, split="train")
    assert sorted(loaded["id"]) == sorted(export.rows["id"])
    annotations = hub.load_dataset("test/preferences", "annotations", revision=pushed[-1].commit, split="train")
    assert len(annotations) == len(export.annotations)

    card = hub.read_card("test/preferences", pushed[-1].commit)
    lineage = lineage_of(card)
    commit = hub.resolve("test/answer-pairs")
    assert lineage["stage"] == "annotate"
    assert {"repo_id": "test/answer-pairs", "commit": commit}.items() <= lineage["inputs"][0].items()
    assert lineage["inputs"][1]["sha256"] == export.store_hash == lineage["extra"]["store_sha256"]
    assert lineage["extra"]["agreement"]["pairs"][0]["annotators"] == ["alice", "bob"]
    assert "| alice / bob | 3 |" in card.text and "Ties:** 2" in card.text
    assert commit in card.text and export.store_hash in card.text


def test_demos_export(hub, make_task, store):
    task = make_task("demos")
    ids = task.items.ids
    task.annotate("alice", ids[0], "accept")
    task.annotate("alice", ids[1], "edit", text="User: What is it?\nAssistant: A scan.")
    task.annotate("alice", ids[2], "reject")
    task.annotate("bob", ids[0], "reject")
    export = build_export(hub, "demos", "test/clusters", store)
    rows = export.rows
    validate_dataset(rows, "demos")
    assert export.counts == {**export.counts, "accepted": 1, "edited": 1, "rejected": 2, "exported": 2}
    assert rows["id"] == [demo_id(ids[0], "alice"), demo_id(ids[1], "alice")]
    assert rows["curated_by"] == ["alice", "alice"] and rows["pair_id"] == ids[:2]
    assert rows["messages"][0] == task.items.conversations[ids[0]][1]
    assert qa_turns(rows["messages"][1]) == [("What is it?", "A scan.")]
    assert rows["cluster"] == [0, 1] and rows["decision"] == ["accept", "edit"]
    assert export.agreement.pairs[0].percent == 0.0  # alice kept ids[0], bob rejected it

    pushed = push_export(hub, export, "test/clinician-demos", "test/clusters")
    card = hub.read_card("test/clinician-demos", pushed[-1].commit)
    assert "Inter-annotator agreement" in card.text and "1 edited" in card.text
    # the generator's demo sampler reads the export as it is
    from vital.demos import DemoSampler

    demos = hub.load_dataset("test/clinician-demos", split="train")
    assert len(DemoSampler(demos).sample("any-request")) >= 1


def test_ratings_export(hub, make_task, store):
    task = make_task("rating")
    ids = task.items.ids
    for annotator, scores in {"alice": [7, 3, 9], "bob": [7, 4]}.items():
        for item_id, score in zip(ids, scores, strict=False):
            task.annotate(annotator, item_id, score=score, comment=f"{annotator} on {item_id}")
    export = build_export(hub, "rating", "test/candidates", store)
    validate_dataset(export.rows, "ratings")
    got = {(r["candidate_id"], r["turn"], r["judge"]["model"]): (r["score"], r["rationale"]) for r in export.rows}
    expected = {}
    for annotator, scores in {"alice": [7, 3, 9], "bob": [7, 4]}.items():
        for item_id, score in zip(ids, scores, strict=False):
            candidate_id, turn = item_id.rsplit("#t", 1)
            expected[(candidate_id, int(turn), f"clinician:{annotator}")] = (score, f"{annotator} on {item_id}")
    assert got == expected
    pair = export.agreement.pairs[0]
    assert (pair.n, pair.percent) == (2, 0.5) and pair.weighted_kappa is not None


def test_annotations_join_the_commit_they_were_made_on(make_hub, tmp_path):
    hub = make_hub(tmp_path / "hub")
    from vital.annotate.store import AnnotationStore

    store = AnnotationStore(tmp_path / "store")
    task = AnnotationTask(load_items(hub, "preference", "test/answer-pairs"), store)
    item_id = task.items.ids[0]
    saved = task.annotate("alice", item_id, "A")
    seen = task.view("alice", 0).answers["A"]
    # The answers are regenerated under the same ids: a new commit.
    changed = task.items.dataset.map(
        lambda row: {"answer_a": [{"role": "assistant", "content": [{"type": "text", "text": "new"}]}]}
    )
    hub.push_dataset(changed, "test/answer-pairs")
    assert hub.resolve("test/answer-pairs") != saved.commit
    export = build_export(hub, "preference", "test/answer-pairs@main", store)
    assert _text(export.rows[0]["chosen"]) == seen
    assert export.inputs[0].commit == saved.commit


def test_nothing_to_export(hub, make_task, store):
    with pytest.raises(ValueError, match="no preference annotations"):
        build_export(hub, "preference", "test/answer-pairs", store)
    task = make_task("preference")
    task.annotate("alice", task.items.ids[0], "tie")
    export = build_export(hub, "preference", "test/answer-pairs", store)
    with pytest.raises(ValueError, match="nothing to export"):
        push_export(hub, export, "test/empty", "test/answer-pairs")
    assert default_output_repo("org/answer-pairs@v1", "preference") == "org/preferences"
    assert default_output_repo("answer-pairs", "rating") == "clinician-ratings"


def test_the_recipe_exports(hub, make_task, store):
    from vital.runner import load_recipe

    expected, _ = _annotate_preferences(make_task("preference"))
    recipe = load_recipe("annotate")
    pushed = recipe.cli(
        [
            "--export",
            "--task",
            "preference",
            "--dataset",
            "test/answer-pairs",
            "--hub",
            f"local:{hub.root}",
            "--store",
            str(store.root),
            "--output_repo",
            "test/recipe-preferences",
            "--weight",
            "3",
        ]
    )
    loaded = hub.load_dataset("test/recipe-preferences", revision=pushed[-1].commit, split="train")
    assert set(loaded["weight"]) == {3.0} and len(loaded) == len(expected)


def test_the_recipe_export_without_push_writes_nothing(hub, make_task, store, capsys):
    from vital.runner import load_recipe

    expected, _ = _annotate_preferences(make_task("preference"))
    args = ["--export", "--task", "preference", "--dataset", "test/answer-pairs", "--hub", f"local:{hub.root}"]
    args += ["--store", str(store.root), "--output_repo", "test/not-pushed"]
    assert load_recipe("annotate").cli([*args, "--push_to_hub", "false"]) == []
    assert f"nothing pushed: test/not-pushed: {len(expected)} rows from " in capsys.readouterr().out
    assert not hub.repo_dir("test/not-pushed").exists()
    (pushed,) = load_recipe("annotate").cli([*args, "--hub_revision", "round-1"])
    assert pushed.revision == "round-1" and hub.resolve("test/not-pushed", "round-1") == pushed.commit


@pytest.mark.slow
def test_exported_preferences_train_the_selector(hub, make_task, store, tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoProcessor

    from vital.selector import SelectorModel, SelectorTrainer, SelectorTrainingConfig
    from vital.testing.tiny_models import build_tiny_clip

    _annotate_preferences(make_task("preference"))
    pushed = push_export(
        hub, build_export(hub, "preference", "test/answer-pairs", store), "test/selector-prefs", "test/answer-pairs"
    )
    preferences = hub.load_dataset("test/selector-prefs", revision=pushed[-1].commit, split="train")

    clip_dir = tmp_path / "clip"
    build_tiny_clip(save_dir=clip_dir, seed=0)
    torch.manual_seed(0)
    model = SelectorModel.from_backbone(clip_dir, hidden_sizes=[32])
    args = SelectorTrainingConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = SelectorTrainer(
        model=model, args=args, train_dataset=preferences, processing_class=AutoProcessor.from_pretrained(clip_dir)
    )
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
