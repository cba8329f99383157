"""End to end in headless Chromium, as a clinician would: log in, annotate every task with the keyboard, reload the
page and restart the server, check that every annotator resumes at the right item with their progress, export, and
check that the exported datasets hold exactly the keys pressed. After every action the whole DOM (and the page's
Gradio state) is searched for anything naming the source of an answer. Zoom and brightness/contrast are checked on the
rendered pixels. A campaign lead sees progress and agreement, adjudicates a conflict and downloads the adjudicated set.

Needs the ``playwright`` package and a Chromium binary (``apt-get install chromium``); never ``playwright install``.
Screenshots of each task go to the test's temporary folder, and to ``outputs/screenshots/`` (or the folder named) when
``VITAL_SCREENSHOTS`` is set.
"""

import io
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

from PIL import Image, ImageChops, ImageStat  # noqa: E402

from vital.annotate.app import AnnotationApp  # noqa: E402
from vital.annotate.auth import hash_password  # noqa: E402
from vital.annotate.export import build_export, push_export  # noqa: E402
from vital.annotate.items import load_items  # noqa: E402
from vital.annotate.store import AnnotationStore  # noqa: E402
from vital.annotate.tasks import AnnotationTask, shown_order  # noqa: E402
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
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "lead": "lead-pw-3"}
ROLES = {"lead": {"campaign"}}
# What would unblind an annotator: the dataset's column names, and the old "B (= answer_a)" status.
LEAKS = ("answer_a", "answer_b", "(= ")
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
    app = AnnotationApp(task, roles=ROLES)
    port = _free_port()
    app.launch(USERS, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.blocks.close()


def type_login(page, user, password):
    """Type a name and a password into the login form and press Enter; the server's answer to the form."""
    page.get_by_label("username").click()
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
        page.keyboard.press("Enter")
    return answer.value.status


def login(page, url, user):
    """Sign in with the keyboard: type the name, Tab, the password, Enter."""
    page.goto(url)
    assert type_login(page, user, PASSWORDS[user]) == 200
    page.wait_for_selector("#vital-header")
    if user != "lead":
        wait_header(page, " done")


def wait_header(page, *parts):
    page.wait_for_function(
        "parts => { const h = document.getElementById('vital-header'); "
        "return h && parts.every(p => h.innerText.includes(p)); }",
        arg=list(parts),
    )
    return page.inner_text("#vital-header")


def wait_saved(page, position, position_after, total):
    page.wait_for_function(
        "p => (document.getElementById('vital-status') || {}).innerText?.includes('Saved item ' + p + ':')",
        arg=position + 1,
    )
    if position_after is not None:
        wait_header(page, f"item {position_after + 1} of {total}")


def assert_blind(page):
    """Nothing in the DOM, nor in the page's Gradio state, names the column an answer came from."""
    dom = page.content()
    state = page.evaluate("() => JSON.stringify(window.gradio_config || {})")
    for leak in LEAKS:
        assert leak not in dom, f"{leak!r} is in the DOM"
        assert leak not in state, f"{leak!r} is in the page's state"


def press(page, *keys):
    for key in keys:
        page.keyboard.press(key)
    assert_blind(page)


def figure_pixels(page) -> Image.Image:
    """The figure as rendered (its frame: zoom enlarges the picture inside it)."""
    page.wait_for_timeout(150)
    return Image.open(
        io.BytesIO(
            page.locator("#vital-image img").first.evaluate_handle("e => e.parentElement").as_element().screenshot()
        )
    ).convert("L")


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute grey-level difference (0-255) of two renderings of the same frame."""
    assert a.size == b.size
    return ImageStat.Stat(ImageChops.difference(a, b)).mean[0]


def check_image_tools(page, screenshots, name):
    """Zoom in and a brightness/contrast preset each change the rendered pixels; reset restores them."""
    page.locator("#vital-image img").first.wait_for()
    original = figure_pixels(page)
    press(page, "+", "+")
    zoomed = figure_pixels(page)
    assert page.inner_text("#vital-zoom-level") == "156 %"
    assert difference(original, zoomed) > 3, "zooming did not change the rendered image"
    press(page, "Shift+ArrowLeft")
    assert difference(zoomed, figure_pixels(page)) > 1, "moving the zoomed image did not change it"
    zoomed.save(screenshots / f"{name}-zoomed.png")
    press(page, "o")
    assert difference(original, figure_pixels(page)) < 0.5
    press(page, "w")  # the next preset: narrower window, more contrast
    windowed = figure_pixels(page)
    windowed.save(screenshots / f"{name}-window-level.png")
    assert difference(original, windowed) > 3, "the brightness/contrast preset did not change the rendered image"
    assert ImageStat.Stat(windowed).stddev[0] > ImageStat.Stat(original).stddev[0]  # more contrast
    press(page, "o")
    assert difference(original, figure_pixels(page)) < 0.5


# ---- preference -------------------------------------------------------------------------------------------------------
def test_preference_task_end_to_end(page, make_task, hub, store, screenshots):
    items = load_items(hub, "preference", "test/answer-pairs@main", pairs="test/pairs@main")
    task = AnnotationTask(items, store)
    ids, n = task.items.ids, len(task.items)
    with serve(task) as url:
        page.goto(url)
        page.get_by_role("button", name="Login").wait_for()
        page.screenshot(path=str(screenshots / "annotate-login.png"))
        login(page, url, "alice")
        assert "0 of 8" in wait_header(page, "item 1 of 8")
        assert_blind(page)
        context = page.inner_text("#vital-context")
        assert "Mentions in the article" in context and len(context) > 100  # caption and mentions
        assert page.locator("#vital-campaign-progress").count() == 0  # no campaign view for an annotator
        check_image_tools(page, screenshots, "preference")
        press(page, "1", "Enter")  # answer A
        wait_saved(page, 0, 1, n)
        assert_blind(page)
        press(page, "c")  # comment, then back to the keys with Esc
        page.keyboard.type("B is more careful")
        press(page, "Escape", "2", "Enter")
        wait_saved(page, 1, 2, n)
        assert_blind(page)
        press(page, "3", "Enter")  # same quality
        wait_saved(page, 2, 3, n)
        press(page, "ArrowRight")  # skip item 4 for now
        wait_header(page, "item 5 of 8")
        press(page, "2", "Enter")
        wait_saved(page, 4, 5, n)
        assert "answer B preferred" in page.inner_text("#vital-status")
        assert_blind(page)

        page.reload()  # the browser is closed and opened again: resume at the first open item
        header = wait_header(page, "4 of 8", "item 4 of 8")
        assert ids[3] in header
        assert_blind(page)
        page.screenshot(path=str(screenshots / "annotate-preference.png"), full_page=True)
        press(page, "ArrowLeft")  # back to a saved item: its answer is shown
        wait_header(page, "item 3 of 8", "already saved: same quality")
        assert_blind(page)
        page.get_by_role("tab", name="Guidelines").click()
        assert "Medical accuracy" in page.inner_text("#vital-guidelines")
        assert task.guidelines.version in page.content()
        page.screenshot(path=str(screenshots / "annotate-guidelines.png"), full_page=True)

    # A restarted server (a new process would read the same files) resumes alice where she was.
    restarted = AnnotationTask(items, AnnotationStore(store.root))
    with serve(restarted) as url:
        login(page, url, "alice")
        assert "4 of 8" in wait_header(page, "item 4 of 8")
        page.click("#vital-logout")  # log out: back to the login form, the session is gone
        page.get_by_role("button", name="Login").wait_for()
        login(page, url, "bob")
        wait_header(page, "0 of 8", "item 1 of 8")
        press(page, "2", "Enter")
        wait_saved(page, 0, 1, n)
        press(page, "1", "Enter")
        wait_saved(page, 1, 2, n)

        # The campaign lead: progress, agreement, a conflict adjudicated blind, the adjudicated set downloaded.
        page.click("#vital-logout")
        page.get_by_role("button", name="Login").wait_for()
        login(page, url, "lead")
        page.get_by_role("tab", name="Campaign").click()
        page.wait_for_function("() => document.getElementById('vital-campaign-progress')?.innerText.includes('bob')")
        assert "kappa" in page.inner_text("#vital-campaign-agreement")
        assert "alice / bob" in page.inner_text("#vital-campaign-agreement")
        assert_blind(page)
        page.wait_for_function("() => document.getElementById('vital-campaign-detail')?.innerText.includes('Votes')")
        assert_blind(page)
        page.locator("#vital-campaign-decision label").first.click()
        page.click("#vital-campaign-decide")
        page.wait_for_function(
            "() => document.getElementById('vital-campaign-status')?.innerText.includes('Decision saved')"
        )
        assert_blind(page)
        page.screenshot(path=str(screenshots / "annotate-campaign.png"), full_page=True)
        page.click("#vital-campaign-export")
        page.wait_for_function(
            "() => document.getElementById('vital-campaign-status')?.innerText.includes('exported')"
        )
        assert "1 adjudicated" in page.inner_text("#vital-campaign-status")
        assert_blind(page)

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
    assert set(shown["guidelines"]) == {task.guidelines.version}
    assert "| alice / bob | 2 |" in hub.read_card("test/browser-preferences", pushed[-1].commit).text
    assert len(AnnotationStore(store.root).adjudications("preference", "test/answer-pairs")) == 1


# ---- rating -----------------------------------------------------------------------------------------------------------
def test_rating_task_end_to_end(page, make_task, hub, store, screenshots):
    task = make_task("rating")
    ids, n = task.items.ids, len(task.items)
    with serve(task) as url:
        # the login page locks bob out after five wrong passwords: the right one is refused too
        page.goto(url)
        for _ in range(5):
            assert type_login(page, "bob", "wrong") == 400
        assert type_login(page, "bob", PASSWORDS["bob"]) == 429
        assert page.locator("#vital-header").count() == 0
        login(page, url, "alice")
        wait_header(page, "0 of 8", "item 1 of 8")
        assert "Score the answer from" in page.inner_text("#vital-instructions")
        assert "Mentions in the article" in page.inner_text("#vital-context")
        check_image_tools(page, screenshots, "rating")
        press(page, "7", "Enter")
        wait_saved(page, 0, 1, n)
        press(page, "t", "Enter")  # ten
        wait_saved(page, 1, 2, n)
        press(page, "0", "Enter")
        wait_saved(page, 2, 3, n)
        page.reload()
        assert ids[3] in wait_header(page, "3 of 8", "item 4 of 8")
        press(page, "6")  # a selection, for the screenshot
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
    with serve(task) as url:
        login(page, url, "alice")
        wait_header(page, "0 of 4", "item 1 of 4")
        first_question = page.locator("#vital-turn-q0 textarea")
        assert first_question.input_value() == f"What does the figure of {ids[0]} show?"
        assert page.locator("#vital-turn-a1 textarea").input_value() == "It is chest_xray."
        assert "cluster" not in page.inner_text("body") and "distance" not in page.inner_text("body")
        check_image_tools(page, screenshots, "demos")
        press(page, "Enter")  # keep as shown
        wait_saved(page, 0, 1, n)
        press(page, "e")  # into the first question: rewrite turn 1, drop turn 2, add a turn, Ctrl+Enter
        page.keyboard.press("Control+a")
        page.keyboard.type("Is this image normal?")
        page.keyboard.press("Tab")
        page.keyboard.press("Control+a")
        page.keyboard.type("No: there is a focal abnormality.")
        for box in ("#vital-turn-q1 textarea", "#vital-turn-a1 textarea"):
            page.locator(box).fill("")
        page.locator("#vital-turn-q2 textarea").fill("Where?")
        page.locator("#vital-turn-a2 textarea").fill("Left.")
        page.locator("#vital-turn-a2 textarea").press("Control+Enter")
        wait_saved(page, 1, 2, n)
        press(page, "c")
        page.keyboard.type("image too small")
        press(page, "Escape", "r")  # reject
        wait_saved(page, 2, 3, n)
        page.reload()
        assert ids[3] in wait_header(page, "3 of 4", "item 4 of 4")
        page.screenshot(path=str(screenshots / "annotate-demos.png"), full_page=True)
        press(page, "ArrowLeft")
        wait_header(page, "item 3 of 4", "already saved: rejected")
        press(page, "ArrowLeft")
        wait_header(page, "item 2 of 4", "already saved: corrected")
        assert first_question.input_value() == "Is this image normal?"
        assert page.locator("#vital-turn-q1 textarea").input_value() == "Where?"

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
