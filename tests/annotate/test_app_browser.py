"""End to end in headless Chromium: log in, annotate with the mouse and the keyboard shortcuts, reload the page and
restart the server, check that every annotator resumes at the right item with their progress, export, and check that
the exported datasets hold exactly the clicks made.

Needs the ``playwright`` package and a Chromium binary (``apt-get install chromium``); never ``playwright install``.
Screenshots of each task go to the test's temporary folder, and to ``outputs/screenshots/`` (or the folder named) when
``VITAL_SCREENSHOTS`` is set.
"""

import json
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest


pytest.importorskip("gradio", reason="the annotation app needs gradio")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = os.environ.get("VITAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

from vital.annotate.app import AnnotationApp  # noqa: E402
from vital.annotate.auth import hash_password  # noqa: E402
from vital.annotate.export import build_export, push_export  # noqa: E402
from vital.annotate.store import AnnotationStore  # noqa: E402
from vital.annotate.tasks import shown_order  # noqa: E402
from vital.data.schemas import message_text, qa_turns, validate_dataset  # noqa: E402


pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2"}
USERS = {name: hash_password(pw) for name, pw in PASSWORDS.items()}
TIMEOUT = 20_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT)
        yield context
        context.close()


@pytest.fixture
def page(browser):
    browser.clear_cookies()
    page = browser.new_page()
    yield page
    page.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("test-artifacts")
    yield folder
    wanted = os.environ.get("VITAL_SCREENSHOTS")
    if wanted:
        target = Path(wanted) if wanted not in ("1", "true", "yes") else REPO / "outputs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            shutil.copy(png, target / png.name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(task):
    """The app on 127.0.0.1 at a random port, in this process's background threads."""
    app = AnnotationApp(task)
    port = _free_port()
    app.launch(USERS, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.blocks.close()


def login(page, url, user):
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Login").click()
    wait_header(page, " annotated")


def wait_header(page, *parts):
    page.wait_for_function(
        "parts => { const h = document.getElementById('vital-header'); return h && parts.every(p => h.innerText.includes(p)); }",
        arg=list(parts),
    )
    return page.inner_text("#vital-header")


def wait_saved(page, item_id, position_after, total):
    page.wait_for_function(
        "id => (document.getElementById('vital-status') || {}).innerText?.includes('Saved ' + id)", arg=item_id
    )
    if position_after is not None:
        wait_header(page, f"item {position_after + 1} of {total}")


def radio(page, elem_id, index):
    page.locator(f"#{elem_id} label").nth(index).click()


# ---- preference -------------------------------------------------------------------------------------------------------
def test_preference_task_end_to_end(page, make_task, hub, store, screenshots):
    task = make_task("preference")
    ids, n = task.items.ids, len(task.items)
    with serve(task) as url:
        page.goto(url)
        page.get_by_role("button", name="Login").wait_for()
        page.screenshot(path=str(screenshots / "annotate-login.png"))
        login(page, url, "alice")
        assert "0 of 8" in wait_header(page, "item 1 of 8")
        page.keyboard.press("1")  # A, by keyboard
        page.keyboard.press("Enter")
        wait_saved(page, ids[0], 1, n)
        radio(page, "vital-choice", 1)  # B, with the mouse, and a comment
        page.locator("#vital-comment textarea, #vital-comment input").first.fill("B is more careful")
        page.click("#vital-submit")
        wait_saved(page, ids[1], 2, n)
        page.keyboard.press("3")  # tie
        page.keyboard.press("Enter")
        wait_saved(page, ids[2], 3, n)
        page.keyboard.press("ArrowRight")  # skip item 4 for now
        wait_header(page, "item 5 of 8")
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        wait_saved(page, ids[4], 5, n)

        page.reload()  # the browser is closed and opened again: resume at the first open item
        header = wait_header(page, "4 of 8", "item 4 of 8")
        assert ids[3] in header
        page.screenshot(path=str(screenshots / "annotate-preference.png"), full_page=True)
        page.keyboard.press("ArrowLeft")  # back to a saved item: its answer is shown
        wait_header(page, "item 3 of 8", "already annotated: tie")

    # A restarted server (a new process would read the same files) resumes alice where she was.
    restarted = make_task("preference", store=AnnotationStore(store.root))
    with serve(restarted) as url:
        login(page, url, "alice")
        assert "4 of 8" in wait_header(page, "item 4 of 8")
        page.context.clear_cookies()
        login(page, url, "bob")
        wait_header(page, "0 of 8", "item 1 of 8")
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        wait_saved(page, ids[0], 1, n)
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        wait_saved(page, ids[1], 2, n)

    clicks = {
        ("alice", ids[0]): "A",
        ("alice", ids[1]): "B",
        ("alice", ids[2]): "tie",
        ("alice", ids[4]): "B",
        ("bob", ids[0]): "B",
        ("bob", ids[1]): "A",
    }
    export = build_export(hub, "preference", "test/answer-pairs", AnnotationStore(store.root))
    pushed = push_export(hub, export, "test/browser-preferences", "test/answer-pairs")
    exported = hub.load_dataset("test/browser-preferences", revision=pushed[-1].commit, split="train")
    validate_dataset(exported, "preferences")
    answers = {row["id"]: row for row in task.items.dataset.select_columns(["id", "answer_a", "answer_b"])}
    expected = {}
    for (annotator, item_id), choice in clicks.items():
        if choice == "tie":
            continue
        a_column, b_column = shown_order(annotator, item_id)
        chosen, rejected = (a_column, b_column) if choice == "A" else (b_column, a_column)
        expected[(item_id, annotator)] = (
            message_text(answers[item_id][chosen][0]),
            message_text(answers[item_id][rejected][0]),
        )
    got = {
        (r["item_id"], r["annotator"]): (message_text(r["chosen"][0]), message_text(r["rejected"][0]))
        for r in exported
    }
    assert got == expected
    assert export.counts["ties"] == 1
    assert {r["item_id"]: r["comment"] for r in exported if r["annotator"] == "alice"}[ids[1]] == "B is more careful"
    shown = hub.load_dataset("test/browser-preferences", "annotations", revision=pushed[-1].commit, split="train")
    assert {(r["annotator"], r["item_id"]): r["choice"] for r in shown} == clicks
    assert "| alice / bob | 2 |" in hub.read_card("test/browser-preferences", pushed[-1].commit).text


# ---- rating -----------------------------------------------------------------------------------------------------------
def test_rating_task_end_to_end(page, make_task, hub, store, screenshots):
    task = make_task("rating")
    ids, n = task.items.ids, len(task.items)
    with serve(task) as url:
        login(page, url, "alice")
        wait_header(page, "0 of 8", "item 1 of 8")
        assert "Scope and relevance" in page.inner_text("#vital-rubric")
        page.keyboard.press("7")
        page.keyboard.press("Enter")
        wait_saved(page, ids[0], 1, n)
        page.keyboard.press("t")  # ten
        page.keyboard.press("Enter")
        wait_saved(page, ids[1], 2, n)
        radio(page, "vital-score", 0)
        page.click("#vital-submit")
        wait_saved(page, ids[2], 3, n)
        page.reload()
        assert ids[3] in wait_header(page, "3 of 8", "item 4 of 8")
        radio(page, "vital-score", 6)  # a selection, for the screenshot
        page.screenshot(path=str(screenshots / "annotate-rating.png"), full_page=True)

    export = build_export(hub, "rating", "test/candidates", AnnotationStore(store.root))
    validate_dataset(export.rows, "ratings")
    got = {(r["candidate_id"], r["turn"]): r["score"] for r in export.rows}
    expected = {}
    for item_id, score in zip(ids, [7.0, 10.0, 0.0], strict=False):
        candidate_id, turn = item_id.rsplit("#t", 1)
        expected[(candidate_id, int(turn))] = score
    assert got == expected and set(export.rows["annotator"]) == {"alice"}


# ---- demos ------------------------------------------------------------------------------------------------------------
def test_demos_task_end_to_end(page, make_task, hub, store, screenshots):
    task = make_task("demos")
    ids, n = task.items.ids, len(task.items)
    edited = (
        "User: Is this image normal?\nAssistant: No: there is a focal abnormality.\nUser: Where?\nAssistant: Left."
    )
    with serve(task) as url:
        login(page, url, "alice")
        wait_header(page, "0 of 4", "item 1 of 4")
        box = page.locator("#vital-conversation textarea")
        assert box.input_value().startswith(f"User: What does the figure of {ids[0]} show?")
        page.keyboard.press("Enter")  # keep as shown
        wait_saved(page, ids[0], 1, n)
        page.keyboard.press("e")  # into the text box, rewrite, Ctrl+Enter
        box.fill(edited)
        box.press("Control+Enter")
        wait_saved(page, ids[1], 2, n)
        page.locator("#vital-comment textarea, #vital-comment input").first.fill("image too small")
        page.locator("#vital-comment textarea, #vital-comment input").first.press("Escape")
        page.keyboard.press("r")  # reject
        wait_saved(page, ids[2], 3, n)
        page.reload()
        assert ids[3] in wait_header(page, "3 of 4", "item 4 of 4")
        page.screenshot(path=str(screenshots / "annotate-demos.png"), full_page=True)
        page.keyboard.press("ArrowLeft")
        wait_header(page, "item 3 of 4", "already annotated: rejected")
        page.keyboard.press("ArrowLeft")
        wait_header(page, "item 2 of 4", "already annotated: edited")
        assert box.input_value() == edited.replace("\n", "\n\n")

    export = build_export(hub, "demos", "test/clusters", AnnotationStore(store.root))
    validate_dataset(export.rows, "demos")
    rows = {r["pair_id"]: r for r in export.rows}
    assert set(rows) == {ids[0], ids[1]} and export.counts["rejected"] == 1
    assert rows[ids[0]]["messages"] == task.items.conversations[ids[0]][1]
    assert qa_turns(rows[ids[1]]["messages"]) == [
        ("Is this image normal?", "No: there is a focal abnormality."),
        ("Where?", "Left."),
    ]
    assert {r["curated_by"] for r in export.rows} == {"alice"}
    rejected = [r for r in export.annotations if r["label"] == "reject"]
    assert [(r["item_id"], r["comment"]) for r in rejected] == [(ids[2], "image too small")]
    assert json.loads(rejected[0]["shown"])["conversation_from"] == f"{ids[2]}-0"
