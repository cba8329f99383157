"""The tasks without a browser: what is shown, what a click records, side randomisation, progress and resuming."""

from collections import Counter

import pytest

from vital.annotate.items import load_items
from vital.annotate.store import AnonymousWriteError
from vital.annotate.tasks import AnnotationTask, shown_order
from vital.data.schemas import qa_turns


# ---- side randomisation -----------------------------------------------------------------------------------------------
def test_sides_are_deterministic_per_annotator_and_item_and_balanced():
    items = [f"q{i}" for i in range(400)]
    alice = [shown_order("alice", i) for i in items]
    assert alice == [shown_order("alice", i) for i in items]  # the same after a reload or a restart
    assert set(alice) == {("answer_a", "answer_b"), ("answer_b", "answer_a")}
    swapped = Counter(order[0] for order in alice)["answer_b"]
    assert 160 <= swapped <= 240  # about half
    bob = [shown_order("bob", i) for i in items]
    differ = sum(a != b for a, b in zip(alice, bob, strict=True))
    assert 160 <= differ <= 240  # annotators' orders are independent
    assert [shown_order("alice", i, salt="other") for i in items] != alice


def test_preference_view_and_click_record_the_sides(make_task):
    task = make_task("preference")
    for position, item_id in enumerate(task.items.ids):
        view = task.view("alice", position)
        order = shown_order("alice", item_id)
        assert view.shown == {"A": order[0], "B": order[1]}
        row = task.items.row(position)
        assert view.answers["A"] == row[order[0]][0]["content"][0]["text"]
        assert view.answers["B"] == row[order[1]][0]["content"][0]["text"]
        assert view.question == row["question"] and view.image.mode == "RGB"
    item_id = task.items.ids[0]
    saved = task.annotate("alice", item_id, "A", comment=" clearer ")
    assert saved.shown == {"A": shown_order("alice", item_id)[0], "B": shown_order("alice", item_id)[1]}
    assert saved.label == saved.shown["A"] and saved.comment == "clearer"
    assert task.annotate("alice", item_id, "b").label == saved.shown["B"]
    assert task.annotate("alice", item_id, "tie").label == "tie"
    with pytest.raises(ValueError, match="choose one of"):
        task.annotate("alice", item_id, "C")
    with pytest.raises(ValueError, match="not among"):
        task.annotate("alice", "no-such-item", "A")


def test_rating_items_are_turns_and_scores_are_checked(make_task):
    task = make_task("rating")
    candidates = task.items.dataset
    assert len(task) == sum(len(qa_turns(m)) for m in candidates["messages"])
    assert task.items.ids[:2] == [f"{candidates['id'][0]}#t0", f"{candidates['id'][0]}#t1"]
    view = task.view("alice", 1)
    assert (view.question, view.answer) == qa_turns(candidates["messages"][0])[1]
    assert "Mentions" in view.context or candidates["mentions"][0] == []
    saved = task.annotate("alice", task.items.ids[1], score=7, comment="fine")
    assert (saved.score, saved.label, saved.shown) == (7.0, "7", {"candidate_id": candidates["id"][0], "turn": 1})
    for bad in (None, -1, 11, True):
        with pytest.raises(ValueError, match="score"):
            task.annotate("alice", task.items.ids[1], score=bad)


def test_demos_accept_edit_reject(make_task):
    task = make_task("demos")
    assert task.items.ref.config == "review"
    first, second, third = task.items.ids[:3]
    view = task.view("alice", 0)
    assert view.conversation.startswith("User: What does the figure of")
    assert (
        "**Image type:** chest X-ray" in view.context
        and "cluster" not in view.context
        and view.shown == {"conversation_from": f"{first}-0"}
    )

    accepted = task.annotate("alice", first, "accept")
    assert accepted.label == "accept" and accepted.messages == task.items.conversations[first][1]
    edited = task.annotate("alice", second, "edit", text="User: Is it normal?\nAssistant: No, there is a mass.")
    assert edited.label == "edit"
    assert qa_turns(edited.messages) == [("Is it normal?", "No, there is a mass.")]
    assert edited.messages[0]["content"][0] == {"type": "image", "text": None}
    # the edited conversation is what the annotator sees when they come back
    assert task.view("alice", 1).conversation == "User: Is it normal?\n\nAssistant: No, there is a mass."
    same = task.annotate("alice", third, "edit", text=task.view("alice", 2).conversation)
    assert same.label == "accept"  # saved unchanged
    assert task.annotate("alice", third, "reject").messages is None
    with pytest.raises(ValueError, match="does not parse"):
        task.annotate("alice", third, "edit", text="just some words")


def test_demos_from_a_demos_dataset_review_their_own_conversations(hub, store):
    from vital.data.sample import load_sample_demos

    demos = load_sample_demos()
    hub.push_dataset(demos, "test/sample-demos")
    task = AnnotationTask(load_items(hub, "demos", "test/sample-demos"), store)
    assert task.items.ids == list(demos["id"]) and task.items.pair_ids == list(demos["pair_id"])
    assert task.annotate("alice", demos["id"][0], "accept").messages == demos["messages"][0]


def test_progress_and_resume(make_task, store):
    task = make_task("preference")
    ids = task.items.ids
    assert task.progress("alice") == (0, len(ids)) and task.next_open("alice") == 0
    task.annotate("alice", ids[0], "A")
    task.annotate("alice", ids[1], "B")
    task.annotate("alice", ids[3], "tie")  # skipped ids[2] with the arrow key
    assert task.progress("alice") == (3, len(ids))
    assert task.next_open("alice") == 2  # resumes at the first open item
    assert task.next_open("alice", after=2) == 4
    assert task.progress("bob") == (0, len(ids))  # everyone has their own progress

    restarted = make_task("preference", store=type(store)(store.root))
    assert restarted.progress("alice") == (3, len(ids)) and restarted.next_open("alice") == 2
    assert restarted.view("alice", 1).previous.choice == "B"
    for item_id in ids:
        restarted.annotate("alice", item_id, "A")
    assert restarted.next_open("alice") == len(ids)  # all done


def test_anonymous_clicks_are_refused_and_nothing_is_written(make_task, store):
    task = make_task("preference")
    for nobody in (None, ""):
        with pytest.raises(AnonymousWriteError):
            task.annotate(nobody, task.items.ids[0], "A")
    assert not store.root.exists() or not any(store.root.rglob("*.jsonl"))


def test_limit_and_unknown_task(hub):
    assert len(load_items(hub, "preference", "test/answer-pairs", limit=3)) == 3
    with pytest.raises(ValueError, match="unknown task"):
        load_items(hub, "ranking", "test/answer-pairs")
    with pytest.raises(ValueError, match="no column"):
        load_items(hub, "preference", "test/candidates")
