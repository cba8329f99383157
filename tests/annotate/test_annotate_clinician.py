"""What a clinician sees and what they may send: no A/B source anywhere in what the handlers return, plain wording,
versioned guidelines recorded with every annotation, the figure's caption with the preference task, turn-by-turn
edits, and size limits on every field (a 30 MB comment is refused and nothing is written)."""

import json
from types import SimpleNamespace

import pytest

from vital.annotate.guidelines import DEFAULT_NAMES, load_guidelines
from vital.annotate.items import load_items
from vital.annotate.store import MAX_COMMENT_CHARS, MAX_TURN_CHARS, MAX_TURNS, Annotation, FieldTooLongError
from vital.annotate.tasks import AnnotationTask, structured_turns


gr = pytest.importorskip("gradio")

from vital.annotate.app import AnnotationApp  # noqa: E402


SOURCE_WORDS = ("answer_a", "answer_b", "generation", "stand_in", "judge")
HUGE = "x" * (30 * 1024 * 1024)


def _request(username):
    return SimpleNamespace(username=username, session_hash="s")


def _strings(out) -> str:
    """Every value a handler sends to the page, as text (updates included)."""
    return json.dumps([repr(v) for v in out.values()], default=str)


def test_nothing_the_page_receives_names_the_source_of_an_answer(make_task):
    app = AnnotationApp(make_task("preference"))
    ids = app.task.items.ids
    outs = [app.load(_request("alice"))]
    for item_id, choice in zip(ids[:4], ["A", "B", "tie", "B"], strict=True):
        outs.append(app.submit(item_id, choice, "ok", None, _request("alice")))
    outs.append(app.move(ids[4], -1, _request("alice")))  # back to a saved item
    for out in outs:
        text = _strings(out)
        assert not any(word in text for word in SOURCE_WORDS), text
    last = outs[-2]
    assert "answer B preferred" in last[app.status]  # the side the clinician clicked, in their words


def test_plain_wording_no_developer_terms(make_task):
    demos = AnnotationApp(make_task("demos"))
    text = _strings(demos.load(_request("alice")))
    assert "cluster" not in text and "distance" not in text and "rank" not in text
    rating = AnnotationApp(make_task("rating"))
    assert "first line" not in rating.task.guidelines.text  # not the judge's prompt
    assert "| 7-8 | good" in rating.task.guidelines.text


def test_the_guidelines_version_is_recorded_with_every_annotation(make_task, hub, store, tmp_path):
    task = make_task("rating")
    saved = task.annotate("alice", task.items.ids[0], score=6)
    default = load_guidelines("rating")
    assert saved.guidelines == default.version and default.version.startswith(DEFAULT_NAMES["rating"] + "+")
    # a campaign's own guidelines: its declared version plus the text's hash; an edit gives a new version
    path = tmp_path / "cardio.md"
    path.write_text("version: 2025-03 cardiology\n\n# Scoring\n\nScore 0-10.\n")
    custom = load_guidelines("rating", path)
    assert custom.version.startswith("2025-03-cardiology+") and custom.text.startswith("# Scoring")
    path.write_text("version: 2025-03 cardiology\n\n# Scoring\n\nScore 0 to 10.\n")
    assert load_guidelines("rating", path).version != custom.version
    task = AnnotationTask(task.items, store, guidelines=custom)
    assert task.annotate("bob", task.items.ids[0], score=6).guidelines == custom.version
    assert custom.save(store.root).read_text() == custom.text
    with pytest.raises(ValueError, match="guidelines for 'rating'"):
        AnnotationTask(make_task("preference").items, store, guidelines=custom)


def test_the_preference_task_shows_caption_and_mentions(hub, store):
    plain = AnnotationTask(load_items(hub, "preference", "test/answer-pairs@main"), store)
    assert "No caption" in plain.view("alice", 0).context
    items = load_items(hub, "preference", "test/answer-pairs@main", pairs="test/pairs@main")
    task = AnnotationTask(items, store)
    pair = hub.load_dataset("test/pairs", split="train")[0]
    context = task.view("alice", 0).context
    assert pair["caption"][:40] in context and "Mentions in the article" in context
    assert pair["mentions"][0].strip()[:40] in context
    assert [ref.repo_id for ref in items.inputs] == ["test/answer-pairs", "test/pairs"]


def test_the_preference_task_finds_the_pairs_in_the_lineage(hub, store, tmp_path):
    import yaml
    from huggingface_hub import DatasetCard

    commit = hub.resolve("test/pairs", "main")
    lineage = {"stage": "generate", "inputs": [{"repo_id": "test/pairs", "repo_type": "dataset", "commit": commit}]}
    card = DatasetCard("---\n" + yaml.safe_dump({"lineage": lineage}) + "---\n# Answer pairs\n")
    data = hub.load_dataset("test/answer-pairs", split="train")
    hub.push_dataset(data, "test/answer-pairs-with-lineage", card=card)
    items = load_items(hub, "preference", "test/answer-pairs-with-lineage@main")
    assert items.inputs[-1].repo_id == "test/pairs" and items.inputs[-1].commit == commit
    assert "Mentions in the article" in AnnotationTask(items, store).view("alice", 0).context


def test_turn_by_turn_edits():
    turns = structured_turns([("Where?", "Left lobe."), ("", ""), ("  Size? ", " 2 cm ")])
    assert [(t.question, t.answer) for t in turns] == [("Where?", "Left lobe."), ("Size?", "2 cm")]
    with pytest.raises(ValueError, match="turn 2 has no question"):
        structured_turns([("Where?", "Left."), ("", "Right.")])
    with pytest.raises(FieldTooLongError, match="answer of turn 1"):
        structured_turns([("Where?", "x" * (MAX_TURN_CHARS + 1))])
    with pytest.raises(FieldTooLongError, match="turns; the limit"):
        structured_turns([("q?", "a.")] * (MAX_TURNS + 1))


def test_oversize_fields_are_refused_and_nothing_is_written(make_task, store):
    app = AnnotationApp(make_task("preference"))
    item_id = app.task.items.ids[0]
    with pytest.raises(gr.Error, match="comment is 31,457,280 characters long; the limit is 2,000"):
        app.submit(item_id, "A", HUGE, None, _request("alice"))
    with pytest.raises(FieldTooLongError):
        app.task.annotate("alice", item_id, "A", comment="y" * (MAX_COMMENT_CHARS + 1))
    with pytest.raises(gr.Error, match="not part of the task"):
        app.submit("x" * 10_000, "A", "", None, _request("alice"))
    demos = AnnotationApp(make_task("demos"))
    with pytest.raises(gr.Error, match="question of turn 1"):
        demos.submit(demos.task.items.ids[0], None, "", [(HUGE, "a")], _request("alice"))
    with pytest.raises(FieldTooLongError):  # the store refuses whoever calls it
        store.append(Annotation("preference", "d", "c", "i", "alice", "A", "answer_a", comment=HUGE))
    assert not any(store.root.rglob("*.jsonl")) if store.root.exists() else True
    # at the limit is fine
    assert app.task.annotate("alice", item_id, "A", comment="y" * MAX_COMMENT_CHARS).comment


def test_every_text_box_has_a_size_limit(make_task):
    for name in ("preference", "rating", "demos"):
        app = AnnotationApp(make_task(name))
        boxes = [b for b in app.blocks.blocks.values() if isinstance(b, gr.Textbox)]
        assert boxes and all(b.max_length for b in boxes), [(b.elem_id, b.max_length) for b in boxes]
