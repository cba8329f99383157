"""The app's handlers called directly (no browser): who may write, what a click saves, where it goes next."""

import json
from types import SimpleNamespace

import pytest


gr = pytest.importorskip("gradio")

from vital.annotate.app import AnnotationApp, describe, keyboard_js  # noqa: E402
from vital.data.schemas import qa_turns  # noqa: E402


def _request(username):
    return SimpleNamespace(username=username, session_hash="test-session")


def _values(app, out):
    """The handler's output by component name."""
    names = {app.header: "header", app.item_id: "item_id", app.status: "status", app.comment: "comment"}
    for name in ("choice", "score", "answer_a", "answer_b"):
        if hasattr(app, name):
            names[getattr(app, name)] = name
    values = {names[c]: v for c, v in out.items() if c in names}
    if hasattr(app, "turn_questions"):
        questions = [out[c] for c in app.turn_questions]
        answers = [out[c] for c in app.turn_answers]
        values["turns"] = [(q, a) for q, a in zip(questions, answers, strict=True) if q or a]
    return values


def test_anonymous_writes_are_refused(make_task, store):
    app = AnnotationApp(make_task("preference"))
    item_id = app.task.items.ids[0]
    shown = _values(app, app.load(_request(None)))
    assert shown["item_id"] == "" and "not signed in" in shown["header"]
    for nobody in (_request(None), _request(""), None):
        with pytest.raises(gr.Error):
            app.submit(item_id, "A", "", None, nobody)
    assert not store.root.exists() or not any(store.root.rglob("*.jsonl"))


def test_a_click_saves_and_moves_on(make_task, store):
    app = AnnotationApp(make_task("preference"))
    ids = app.task.items.ids
    first = _values(app, app.load(_request("alice")))
    assert first["item_id"] == ids[0] and "0 of 8" in first["header"] and first["choice"] is None
    after = _values(app, app.submit(ids[0], "B", "hmm", None, _request("alice")))
    assert after["item_id"] == ids[1] and "1 of 8" in after["header"] and after["status"].startswith("Saved")
    saved = store.latest("preference", "test/answer-pairs", "alice")[ids[0]]
    assert (saved.choice, saved.comment, saved.session) == ("B", "hmm", "test-session")
    with pytest.raises(gr.Error, match="Choose answer A, answer B or same quality"):
        app.submit(ids[1], None, "", None, _request("alice"))
    # back to the first item: the saved choice and comment are shown
    back = _values(app, app.move(ids[1], -1, _request("alice")))
    assert back["item_id"] == ids[0] and back["choice"] == "B" and back["comment"] == "hmm"
    assert "already saved: answer B preferred" in back["header"]
    # a reload resumes at the first open item
    assert _values(app, app.load(_request("alice")))["item_id"] == ids[1]
    # once everything is done: the all-done page, and the arrows still reach the items
    for item_id in ids:
        done = _values(app, app.submit(item_id, "tie", "", None, _request("alice")))
    assert done["item_id"] == "" and "All 8 items are done" in done["header"]
    assert _values(app, app.move("", -1, _request("alice")))["item_id"] == ids[-1]
    assert _values(app, app.move("", +1, _request("alice")))["item_id"] == ids[0]


def test_rating_and_demos_handlers(make_task):
    rating = AnnotationApp(make_task("rating"))
    item_id = rating.task.items.ids[0]
    with pytest.raises(gr.Error, match="score"):
        rating.submit(item_id, None, "", None, _request("alice"))
    rating.submit(item_id, 8, "", None, _request("alice"))
    assert _values(rating, rating.move(rating.task.items.ids[1], -1, _request("alice")))["score"] == 8

    demos = AnnotationApp(make_task("demos"))
    ids = demos.task.items.ids
    shown = _values(demos, demos.load(_request("alice")))["turns"]
    assert shown[0] == (f"What does the figure of {ids[0]} show?", f"It shows the findings of {ids[0]}.")
    demos.submit(ids[0], None, "", [*shown, ("", "")], _request("alice"))  # kept as shown (empty turn slots)
    demos.submit(ids[1], None, "", [("Which side?", "The left."), ("", "")], _request("alice"))
    demos.submit(ids[2], None, "too blurry", None, _request("alice"), reject=True)
    latest = demos.task.done("alice")
    assert [latest[i].label for i in ids[:3]] == ["accept", "edit", "reject"]
    assert qa_turns(latest[ids[1]].messages) == [("Which side?", "The left.")]
    with pytest.raises(gr.Error, match="turn 2 has no answer"):
        demos.submit(ids[3], None, "", [("Q?", "A."), ("Another?", "")], _request("alice"))
    with pytest.raises(gr.Error, match="conversation is empty"):
        demos.submit(ids[3], None, "", [("", ""), ("", "")], _request("alice"))
    assert describe(latest[ids[2]]) == "rejected"
    # going back shows the corrected turns, not the original ones
    back = _values(demos, demos.move(ids[2], -1, _request("alice")))
    assert back["turns"] == [("Which side?", "The left.")]


def test_space_mode_takes_the_hugging_face_user(make_task, store, monkeypatch):
    pytest.importorskip("itsdangerous", reason="Space mode needs gradio[oauth]")
    # Off a Space, gradio mocks the OAuth routes with the machine's Hugging Face login: not needed for the handlers.
    monkeypatch.setattr(gr.oauth, "_add_mocked_oauth_routes", lambda app: None)
    app = AnnotationApp(make_task("preference"), space=True, allowed={"dr-who"})
    item_id = app.task.items.ids[0]
    with pytest.raises(gr.Error):  # signed out
        app.submit(item_id, "A", "", None, _request(None), None)
    with pytest.raises(gr.Error):  # signed in, not invited
        app.submit(item_id, "A", "", None, _request(None), SimpleNamespace(username="dr-house"))
    with pytest.raises(gr.Error):  # a local username does not count on a Space
        app.submit(item_id, "A", "", None, _request("dr-who"), None)
    app.submit(item_id, "A", "", None, _request(None), SimpleNamespace(username="dr-who"))
    assert store.annotators("preference", "test/answer-pairs") == ["dr-who"]
    assert "Sign in with your Hugging Face account" in _values(app, app.load(_request(None), None))["header"]


def test_no_local_server_without_users(make_task):
    app = AnnotationApp(make_task("preference"))
    with pytest.raises(ValueError, match="no users"):
        app.launch(users={})
    script = keyboard_js("preference")
    assert '"1": {"radio": "vital-choice", "index": 0}' in script and "ArrowLeft" in script


def test_the_recipe_adds_users_and_serves(hub, store, tmp_path, monkeypatch):
    from vital.annotate.auth import verify_password
    from vital.runner import load_recipe

    recipe = load_recipe("annotate")
    users = tmp_path / "users.json"
    monkeypatch.setenv("VITAL_ANNOTATE_PASSWORD", "pw-alice")
    recipe.cli(["--add_user", "alice", "--users", str(users)])
    assert verify_password("pw-alice", json.loads(users.read_text())["alice"])

    served = {}
    monkeypatch.setattr(AnnotationApp, "launch", lambda self, users, **kw: served.update(app=self, users=users, **kw))
    monkeypatch.delenv("SPACE_ID", raising=False)
    common = ["--hub", f"local:{hub.root}", "--store", str(store.root), "--users", str(users), "--port", "7999"]
    recipe.cli(["--task", "demos", "--dataset", "test/clusters@main", "--candidates", "test/candidates", *common])
    app = served["app"]
    assert (app.task.name, len(app.task), app.space) == ("demos", 4, False)
    assert app.task.items.ref.config == "review" and set(served["users"]) == {"alice"} and served["port"] == 7999
    with pytest.raises(SystemExit, match="--task"):
        recipe.cli(["--dataset", "test/clusters", *common])


def test_a_conversation_longer_than_the_boxes_is_kept_whole_or_cut_in_the_open(make_task, monkeypatch):
    import vital.annotate.app as app_module

    monkeypatch.setattr(app_module, "MAX_TURNS", 1)  # the fixture's conversations have two turns
    demos = AnnotationApp(make_task("demos"))
    ids = demos.task.items.ids
    shown = _values(demos, demos.load(_request("alice")))
    assert len(shown["turns"]) == 1 and "has 2 turns; the first 1 are shown" in shown["status"]
    demos.submit(ids[0], None, "", shown["turns"], _request("alice"))  # unchanged: the whole conversation is kept
    kept = demos.task.done("alice")[ids[0]]
    assert kept.label == "accept" and kept.messages == demos.task.items.conversations[ids[0]][1]
