"""The clinicians' annotation app: a Gradio front for one `AnnotationTask`.

Every click that annotates is saved before the next item appears (see `vital.annotate.store`); a returning annotator
resumes at their first unannotated item and the header shows their progress (n of N). The item being annotated is the
one whose id the page shows (sent with the click), so a double click or a slow network can never attach a choice to
an item the clinician has not seen.

What clinicians see is written for them: a short instruction above each task, a **Guidelines** tab (its version is
recorded with every annotation, `vital.annotate.guidelines`), plain words for choices and saved answers. Nothing on
screen names the column or model an answer came from: the preference task shows "Answer A" and "Answer B" in an order
drawn per annotator and item, and says which *side* was chosen, never which source.

Keyboard (ignored while typing in a text box; Esc leaves the box):

=============== ======================================================================================================
preference      ``1`` / ``2`` / ``3``: answer A, answer B, same quality; ``Enter``: save; ``c``: comment
rating          ``0`` ... ``9``, ``t`` (10): score; ``Enter``: save; ``c``: comment
demos           ``Enter`` (or ``Ctrl+Enter`` in a text box): save the conversation as it stands (kept if unchanged,
                corrected otherwise); ``r``: reject; ``e``: edit the first question; ``c``: comment
image           ``+`` / ``-``: zoom (also the mouse wheel; drag to move); ``Shift+arrows``: move; ``o``: reset the
                view; ``w``: next brightness/contrast preset
all             ``←`` / ``→``: previous / next item (nothing is saved by moving)
=============== ======================================================================================================

Locally the app sits behind Gradio's login form (`vital.annotate.auth`: hashed passwords, sign-in throttling, request
size limits, a **Log out** button); on a Space it shows ``gr.LoginButton`` and takes the Hugging Face user. Handlers
resolve the user on every call and refuse to write without one. Users with the ``campaign`` role also get the
**Campaign** tab (`vital.annotate.campaign`): progress, agreement with its interval, conflicts to adjudicate, and the
adjudicated set to download.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # clinical deployments do not phone home

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from vital.annotate.auth import (  # noqa: E402
    LOCKOUT_S,
    MAX_FAILURES_PER_USER,
    LoginThrottle,
    RequestGuard,
    make_auth,
    resolve_annotator,
)
from vital.annotate.campaign import BOOTSTRAP_RESAMPLES, MIN_ITEMS_FOR_INTERVAL, Campaign  # noqa: E402
from vital.annotate.guidelines import IMAGE_TOOLS_HELP  # noqa: E402
from vital.annotate.store import (  # noqa: E402
    MAX_COMMENT_CHARS,
    MAX_ITEM_ID_CHARS,
    MAX_TURN_CHARS,
    MAX_TURNS,
    Annotation,
    AnonymousWriteError,
)
from vital.annotate.tasks import SCORES, AnnotationTask, structured_turns  # noqa: E402
from vital.data.schemas import qa_turns  # noqa: E402
from vital.generation import ParseError, parse_conversation  # noqa: E402


logger = logging.getLogger(__name__)

CSS = """
#vital-answer-a, #vital-answer-b { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 12px; }
#vital-status { min-height: 1.5em; }
.vital-keys { opacity: 0.75; font-size: 0.9em; }
#vital-image img { transform-origin: center center; cursor: grab; touch-action: none; user-select: none; }
#vital-image .image-frame, #vital-image .image-container { overflow: hidden; }
.vital-imagetools { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; font-size: 0.9em; }
.vital-imagetools button { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 2px 10px;
  background: var(--button-secondary-background-fill); }
.vital-imagetools label { display: inline-flex; gap: 4px; align-items: center; }
"""

SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")

AUTH_MESSAGE = (
    "BioMed-VITAL annotation: sign in with the account you were given. After "
    f"{MAX_FAILURES_PER_USER} wrong passwords, sign-in is locked for {LOCKOUT_S // 60} minutes."
)
TASK_TITLES = {
    "preference": "Which answer is better?",
    "rating": "How good is this answer?",
    "demos": "Is this a good teaching conversation?",
}
PREFERENCE_OPTIONS = [("Answer A (1)", "A"), ("Answer B (2)", "B"), ("Same quality (3)", "tie")]
SCORE_OPTIONS = [(f"{s}", s) for s in SCORES]

# Brightness/contrast presets on the displayed grey levels (0-255): (name, window width, window centre).
WINDOW_PRESETS = (
    ("Full range", 255, 127.5),
    ("Soft tissue: narrow, mid-grey", 128, 128),
    ("Dark detail (e.g. lung)", 128, 64),
    ("Bright detail (e.g. bone)", 128, 192),
    ("High contrast", 64, 128),
)

KEYMAPS: dict[str, dict[str, Any]] = {
    "preference": {
        "1": {"radio": "vital-choice", "index": 0},
        "2": {"radio": "vital-choice", "index": 1},
        "3": {"radio": "vital-choice", "index": 2},
        "Enter": {"click": "vital-submit"},
        "c": {"focus": "vital-comment"},
    },
    "rating": {
        **{str(i): {"radio": "vital-score", "index": i} for i in range(10)},
        "t": {"radio": "vital-score", "index": 10},
        "Enter": {"click": "vital-submit"},
        "c": {"focus": "vital-comment"},
    },
    "demos": {
        "Enter": {"click": "vital-submit"},
        "Ctrl+Enter": {"click": "vital-submit"},
        "r": {"click": "vital-reject"},
        "e": {"focus": "vital-turn-q0"},
        "c": {"focus": "vital-comment"},
    },
}
NAVIGATION = {"ArrowLeft": {"click": "vital-prev"}, "ArrowRight": {"click": "vital-next"}}
IMAGE_KEYS = {"+": "zoom-in", "=": "zoom-in", "-": "zoom-out", "o": "reset", "w": "next-preset"}

KEYS_HELP = {
    "preference": "Keys: **1** answer A · **2** answer B · **3** same quality · **Enter** save · **c** comment · "
    "**←/→** previous/next",
    "rating": "Keys: **0-9** score · **t** 10 · **Enter** save · **c** comment · **←/→** previous/next",
    "demos": "Keys: **Enter** save the conversation as it stands (Ctrl+Enter in a text box) · **r** reject · "
    "**e** edit · **c** comment · **←/→** previous/next",
}


def image_tools_html() -> str:
    """The toolbar under the figure: zoom, reset, brightness/contrast presets and sliders, and the SVG filter that
    applies the window (a linear map of the grey levels, in sRGB)."""
    options = "".join(f'<option value="{w},{c}">{name}</option>' for name, w, c in WINDOW_PRESETS)
    funcs = "".join(f'<feFunc{ch} type="linear" slope="1" intercept="0"/>' for ch in "RGB")
    return (
        '<div class="vital-imagetools" id="vital-imagetools">'
        '<button type="button" data-vital-view="zoom-in" title="Zoom in (+)">Zoom +</button>'
        '<button type="button" data-vital-view="zoom-out" title="Zoom out (-)">Zoom −</button>'
        '<button type="button" data-vital-view="reset" title="Reset the view (o)">Reset view</button>'
        '<span id="vital-zoom-level">100 %</span>'
        '<label>Brightness/contrast <select id="vital-wl-preset" title="Next preset (w)">'
        f"{options}</select></label>"
        '<label>Contrast (window) <input type="range" id="vital-wl-window" min="8" max="255" step="1" value="255">'
        "</label>"
        '<label>Brightness (level) <input type="range" id="vital-wl-level" min="0" max="255" step="0.5" '
        'value="127.5"></label>'
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true">'
        f'<filter id="vital-wl" color-interpolation-filters="sRGB"><feComponentTransfer>{funcs}'
        "</feComponentTransfer></filter></svg></div>"
    )


_PAGE_JS = """
() => {
  const keymap = __KEYMAP__;
  const imageKeys = __IMAGE_KEYS__;
  const find = (id) => document.getElementById(id);
  const press = (id) => {
    const el = find(id);
    if (!el) return;
    const button = el.tagName === 'BUTTON' ? el : el.querySelector('button');
    (button || el).click();
  };
  // ---- the image viewer: zoom and pan (CSS transform), window/level (SVG linear transfer) ----
  const view = {zoom: 1, x: 0, y: 0, win: 255, level: 127.5, src: null};
  const image = () => document.querySelector('#vital-image img');
  const apply = () => {
    const img = image();
    if (!img) return;
    if (img.src !== view.src) { view.src = img.src; view.zoom = 1; view.x = 0; view.y = 0; }
    if (img.parentElement) img.parentElement.style.overflow = 'hidden';
    img.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
    const slope = 255 / view.win, intercept = 0.5 - view.level / view.win;
    document.querySelectorAll('#vital-wl feFuncR, #vital-wl feFuncG, #vital-wl feFuncB').forEach((f) => {
      f.setAttribute('slope', String(slope)); f.setAttribute('intercept', String(intercept));
    });
    const identity = view.win === 255 && view.level === 127.5;
    img.style.filter = identity ? 'none' : 'url(#vital-wl)';
    const zoomLabel = find('vital-zoom-level');
    if (zoomLabel) zoomLabel.textContent = Math.round(view.zoom * 100) + ' %';
    const w = find('vital-wl-window'), l = find('vital-wl-level');
    if (w) w.value = view.win;
    if (l) l.value = view.level;
  };
  const zoomBy = (factor) => { view.zoom = Math.min(8, Math.max(1, view.zoom * factor)); if (view.zoom === 1) { view.x = 0; view.y = 0; } apply(); };
  const setWindow = (win, level) => { view.win = Number(win); view.level = Number(level); apply(); };
  const nextPreset = () => {
    const select = find('vital-wl-preset');
    if (!select) return;
    select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
    const [w, c] = select.value.split(','); setWindow(w, c);
  };
  const viewAction = (action) => {
    if (action === 'zoom-in') zoomBy(1.25);
    else if (action === 'zoom-out') zoomBy(0.8);
    else if (action === 'reset') {
      view.zoom = 1; view.x = 0; view.y = 0;
      const select = find('vital-wl-preset'); if (select) select.selectedIndex = 0;
      setWindow(255, 127.5);
    } else if (action === 'next-preset') nextPreset();
  };
  document.addEventListener('click', (e) => {
    const button = e.target.closest && e.target.closest('[data-vital-view]');
    if (button) { e.preventDefault(); viewAction(button.dataset.vitalView); }
  });
  document.addEventListener('input', (e) => {
    if (e.target.id === 'vital-wl-window' || e.target.id === 'vital-wl-level') {
      setWindow(find('vital-wl-window').value, find('vital-wl-level').value);
    } else if (e.target.id === 'vital-wl-preset') {
      const [w, c] = e.target.value.split(','); setWindow(w, c);
    }
  });
  document.addEventListener('wheel', (e) => {
    if (e.target === image()) { e.preventDefault(); zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1); }
  }, {passive: false});
  let drag = null;
  document.addEventListener('pointerdown', (e) => {
    if (e.target === image() && view.zoom > 1) { drag = {x: e.clientX - view.x, y: e.clientY - view.y}; e.preventDefault(); }
  });
  document.addEventListener('pointermove', (e) => { if (drag) { view.x = e.clientX - drag.x; view.y = e.clientY - drag.y; apply(); } });
  document.addEventListener('pointerup', () => { drag = null; });
  new MutationObserver(() => { const img = image(); if (img && img.src !== view.src) apply(); })
    .observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  // ---- keys ----
  document.addEventListener('keydown', (e) => {
    const t = e.target || {};
    const tag = (t.tagName || '').toLowerCase();
    const typing = tag === 'textarea' || tag === 'select' || t.isContentEditable ||
      (tag === 'input' && !['radio', 'checkbox', 'range', 'button', 'submit'].includes(t.type));
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      if (keymap['Ctrl+Enter']) {
        e.preventDefault();
        if (typing) t.blur();  // the keys work again on the next item
        press(keymap['Ctrl+Enter'].click);
      }
      return;
    }
    if (typing) { if (e.key === 'Escape') t.blur(); return; }
    if (tag === 'button' && (e.key === 'Enter' || e.key === ' ')) return;  // the focused button's own click
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.shiftKey && e.key.startsWith('Arrow')) {
      if (view.zoom > 1) {
        e.preventDefault();
        const step = 40;
        if (e.key === 'ArrowLeft') view.x += step; else if (e.key === 'ArrowRight') view.x -= step;
        else if (e.key === 'ArrowUp') view.y += step; else view.y -= step;
        apply();
      }
      return;
    }
    if (imageKeys[e.key]) { e.preventDefault(); viewAction(imageKeys[e.key]); return; }
    const action = keymap[e.key];
    if (!action) return;
    e.preventDefault();
    if (action.radio) {
      const inputs = document.querySelectorAll('#' + action.radio + ' input[type=radio]');
      if (inputs[action.index]) inputs[action.index].click();
    } else if (action.click) {
      press(action.click);
    } else if (action.focus) {
      const box = document.querySelector('#' + action.focus + ' textarea, #' + action.focus + ' input');
      if (box) box.focus();
    }
  });
}
"""


def keyboard_js(task: str) -> str:
    """The page script: keys to this task's buttons and choices, and the image viewer (zoom, pan, window/level)."""
    return _PAGE_JS.replace("__KEYMAP__", json.dumps({**KEYMAPS[task], **NAVIGATION})).replace(
        "__IMAGE_KEYS__", json.dumps(IMAGE_KEYS)
    )


class AnnotationApp:
    """The Gradio Blocks of one task, with handlers callable without a browser (see the tests).

    Args:
        task: the task (items + store).
        space: running on a Hugging Face Space: sign-in with Hugging Face OAuth.
        allowed: on a Space, the usernames allowed to annotate (None: any signed-in user).
        title: the page title.
        roles: ``{username: roles}`` (`vital.annotate.auth.load_roles`); a user not listed is an annotator.
        campaign_leads: usernames with the ``campaign`` role in addition to ``roles`` (e.g. on a Space).
    """

    def __init__(
        self,
        task: AnnotationTask,
        space: bool = False,
        allowed: set[str] | None = None,
        title: str | None = None,
        roles: Mapping[str, set[str]] | None = None,
        campaign_leads: set[str] | None = None,
    ):
        self.task = task
        self.space = space
        self.allowed = allowed
        self.roles = {name: set(r) for name, r in (roles or {}).items()}
        for name in campaign_leads or ():
            self.roles.setdefault(name, {"annotator"}).add("campaign")
        self.title = title or f"Annotation: {TASK_TITLES[task.name]}"
        self.campaign = Campaign(task)
        self.throttle = LoginThrottle()
        self.blocks = self._build()

    # -- who is asking ------------------------------------------------------------------------------------------------
    def annotator(self, request: Any = None, profile: Any = None) -> str | None:
        """The signed-in user, if they may annotate."""
        user = self.user(request, profile)
        return user if user is not None and "annotator" in self.roles.get(user, {"annotator"}) else None

    def user(self, request: Any = None, profile: Any = None) -> str | None:
        return resolve_annotator(request, profile, space=self.space, allowed=self.allowed)

    def lead(self, request: Any = None, profile: Any = None) -> str | None:
        """The signed-in user if they have the ``campaign`` role, else None."""
        user = self.user(request, profile)
        return user if user is not None and "campaign" in self.roles.get(user, set()) else None

    # -- rendering ----------------------------------------------------------------------------------------------------
    def _signed_out(self) -> dict:
        message = (
            "Sign in with your Hugging Face account to annotate."
            if self.space
            else "You are not signed in: reload the page and log in."
        )
        if self.space and self.allowed:
            message += " Only invited annotators may annotate."
        return self._blank(f"## {self.title}\n\n{message}", item_id="")

    def _blank(self, header: str, item_id: str = "", status: str = "") -> dict:
        out = {
            self.header: header,
            self.item_id: item_id,
            self.image: None,
            self.context: "",
            self.status: status,
            self.comment: "",
        }
        if self.task.name == "preference":
            out.update({self.question: "", self.answer_a: "", self.answer_b: "", self.choice: None})
        elif self.task.name == "rating":
            out.update({self.question: "", self.answer: "", self.score: None})
        else:
            out.update(self._turn_values([], item=False))
        return out

    def _turn_values(self, turns: list[tuple[str, str]], item: bool = True) -> dict:
        """The turn boxes: the conversation's turns, then two empty ones to add a turn (up to `MAX_TURNS`); none
        without an ``item``."""
        shown = min(MAX_TURNS, len(turns) + 2) if item else 0
        out = {}
        for i in range(MAX_TURNS):
            question, answer = turns[i] if i < len(turns) else ("", "")
            out[self.turn_rows[i]] = gr.update(visible=i < shown)
            out[self.turn_questions[i]] = question
            out[self.turn_answers[i]] = answer
        return out

    def render(self, annotator: str, position: int, status: str = "") -> dict:
        """The component values for ``annotator`` at ``position`` (``len(task)``: the all-done page)."""
        done, total = self.task.progress(annotator)
        progress = f"**{annotator}** · {TASK_TITLES[self.task.name]} · **{done} of {total}** done"
        if position >= len(self.task):
            header = f"{progress}\n\nAll {total} items are done. Thank you! Use ← to review or change an answer."
            return self._blank(header, status=status)
        view = self.task.view(annotator, position)
        header = f"{progress} · item {position + 1} of {total} <small>(ref. `{view.item_id}`)</small>"
        if view.previous is not None:
            header += f" · already saved: {describe(view.previous)}"
        previous = view.previous
        out = {
            self.header: header,
            self.item_id: view.item_id,
            self.image: view.image,
            self.context: view.context,
            self.status: status,
            self.comment: previous.comment if previous else "",
        }
        if self.task.name == "preference":
            out.update(
                {
                    self.question: f"**Question**\n\n{view.question}",
                    self.answer_a: f"**Answer A** (key 1)\n\n{view.answers['A']}",
                    self.answer_b: f"**Answer B** (key 2)\n\n{view.answers['B']}",
                    self.choice: previous.choice if previous else None,
                }
            )
        elif self.task.name == "rating":
            score = int(previous.score) if previous and previous.score is not None else None
            out.update(
                {
                    self.question: f"**Question**\n\n{view.question}",
                    self.answer: f"**Answer**\n\n{view.answer}",
                    self.score: score,
                }
            )
        else:
            out.update(self._turn_values(view.turns))
            if len(view.turns) > MAX_TURNS:
                note = (
                    f"This conversation has {len(view.turns)} turns; the first {MAX_TURNS} are shown. Saving it "
                    f"unchanged keeps all {len(view.turns)}; saving a correction keeps the turns shown."
                )
                out[self.status] = f"{status} {note}".strip()
        return out

    # -- handlers (the annotator is resolved on every call) ------------------------------------------------------------
    def load(self, request: gr.Request, profile: gr.OAuthProfile | None = None) -> dict:
        user = self.annotator(request, profile)
        if user is None:
            if self.lead(request, profile) is not None:
                return self._blank(f"## {self.title}\n\nYou run this campaign: see the **Campaign** tab.")
            return self._signed_out()
        return self.render(user, self.task.next_open(user))

    def move(self, item_id: str, step: int, request: gr.Request, profile: gr.OAuthProfile | None = None) -> dict:
        user = self.annotator(request, profile)
        if user is None:
            return self._signed_out()
        n = len(self.task)
        if item_id in self.task.items.index:
            position = (self.task.items.index[item_id] + step) % n
        else:  # from the all-done page
            position = n - 1 if step < 0 else 0
        return self.render(user, position)

    def submit(
        self,
        item_id: str,
        choice: Any,
        comment: str,
        edit: list[tuple[str, str]] | str | None,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
        reject: bool = False,
    ) -> dict:
        """Save the click on ``item_id`` and show the annotator's next open item. Refuses anonymous clicks and fields
        over their size limits. ``edit`` (demos): the turns as ``(question, answer)`` pairs, or "User:/Assistant:"
        text."""
        user = self.annotator(request, profile)
        if not item_id:
            raise gr.Error("No item on screen to annotate.")
        session = getattr(request, "session_hash", "") or ""
        try:
            if len(str(item_id)) > MAX_ITEM_ID_CHARS or item_id not in self.task.items.index:
                raise ValueError("This item is not part of the task: reload the page.")
            if self.task.name == "preference":
                if choice not in ("A", "B", "tie"):
                    raise ValueError("Choose answer A, answer B or same quality first (keys 1, 2, 3).")
                saved = self.task.annotate(user, item_id, choice, comment=comment, session=session)
            elif self.task.name == "rating":
                if choice is None or choice == "":
                    raise ValueError("Choose a score from 0 to 10 first (keys 0-9, t for 10).")
                saved = self.task.annotate(user, item_id, score=float(choice), comment=comment, session=session)
            elif reject:
                saved = self.task.annotate(user, item_id, "reject", comment=comment, session=session)
            else:
                kind = "accept" if self._unchanged(item_id, edit) else "edit"
                text, turns = (edit, None) if isinstance(edit, str) or edit is None else (None, edit)
                saved = self.task.annotate(
                    user, item_id, kind, text=text, turns=turns, comment=comment, session=session
                )
        except AnonymousWriteError as error:
            raise gr.Error("Not signed in: annotations without a signed-in annotator are not saved.") from error
        except ValueError as error:
            raise gr.Error(str(error)) from error
        position = self.task.items.index[item_id]
        status = f"Saved item {position + 1}: {describe(saved)}."
        return self.render(user, self.task.next_open(user, after=position), status)

    def _unchanged(self, item_id: str, edit: list[tuple[str, str]] | str | None) -> bool:
        _, original = self.task.items.conversations.get(item_id, (None, None))
        if not original or edit is None:
            return False
        try:
            if isinstance(edit, str):
                return [(t.question, t.answer) for t in parse_conversation(edit)] == qa_turns(original)
            # a conversation longer than the boxes is unchanged when the turns shown are (the rest was not shown)
            return [(t.question, t.answer) for t in structured_turns(edit)] == qa_turns(original)[:MAX_TURNS]
        except (ParseError, ValueError):
            return False

    # -- the campaign view (the ``campaign`` role) ---------------------------------------------------------------------
    def campaign_view(self, request: gr.Request, profile: gr.OAuthProfile | None = None) -> dict:
        """Progress, agreement and conflicts for a campaign lead; nothing (and the tab hidden) for anyone else."""
        lead = self.lead(request, profile)
        if lead is None:
            return {self.campaign_tab: gr.update(visible=False)}
        progress = self.campaign.progress()
        conflicts = self.campaign.conflicts(lead)
        open_items = [c["item"] for c in conflicts if not c["decision"]]
        return {
            self.campaign_tab: gr.update(visible=True),
            self.campaign_progress: _table(progress, ["annotator", "done", "of", "share", "last saved (UTC)"]),
            self.campaign_agreement: agreement_text(self.campaign.agreement(), self.task.name),
            self.campaign_conflicts: _table(conflicts, ["item", "position", "votes", "decision"]),
            self.campaign_item: gr.update(
                choices=[c["item"] for c in conflicts], value=open_items[0] if open_items else None
            ),
        }

    def campaign_item_view(self, item_id: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """What the lead sees of a conflict: the item (answers in the lead's own order), the votes, the options."""
        lead = self.lead(request, profile)
        if lead is None or not item_id or item_id not in self.task.items.index:
            return {self.campaign_detail: "", self.campaign_decision: gr.update(choices=[], value=None)}
        position = self.task.items.index[item_id]
        view = self.task.view(lead, position)
        votes = self.campaign.votes().get(item_id, {})
        lines = [f"**Item {position + 1}** <small>(ref. `{item_id}`)</small>", ""]
        if self.task.name == "preference":
            lines += [f"**Question:** {view.question}", "", f"**Answer A**\n\n{view.answers['A']}", ""]
            lines += [f"**Answer B**\n\n{view.answers['B']}", ""]
        elif self.task.name == "rating":
            lines += [f"**Question:** {view.question}", "", f"**Answer:** {view.answer}", ""]
        lines.append(
            "**Votes:** " + "; ".join(f"{a}: {self.campaign.plain(v, lead)}" for a, v in sorted(votes.items()))
        )
        comments = [f"- {a}: {v.comment}" for a, v in sorted(votes.items()) if v.comment]
        if comments:
            lines += ["", "**Comments**", *comments]
        if self.task.name == "demos":
            for annotator, vote in sorted(votes.items()):
                if vote.messages:
                    turns = "\n".join(f"- *{q}* {a}" for q, a in qa_turns(vote.messages))
                    lines += ["", f"**{annotator}'s version**", turns]
        options = self.campaign.options(item_id, lead)
        return {self.campaign_detail: "\n".join(lines), self.campaign_decision: gr.update(choices=options, value=None)}

    def campaign_decide(self, item_id, decision, comment, request: gr.Request, profile: gr.OAuthProfile | None = None):
        lead = self.lead(request, profile)
        if lead is None:
            raise gr.Error("Only the campaign's leads may adjudicate.")
        if not item_id or decision in (None, ""):
            raise gr.Error("Choose an item and a decision first.")
        try:
            self.campaign.adjudicate(lead, item_id, str(decision), comment, getattr(request, "session_hash", "") or "")
        except ValueError as error:
            raise gr.Error(str(error)) from error
        out = self.campaign_view(request, profile)
        out[self.campaign_status] = f"Decision saved for item {self.task.items.index[item_id] + 1}."
        return out

    def campaign_export(self, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The adjudicated set as a JSON Lines file to download (leads only)."""
        lead = self.lead(request, profile)
        if lead is None:
            raise gr.Error("Only the campaign's leads may export.")
        rows, counts = self.campaign.adjudicated_set()
        folder = Path(tempfile.mkdtemp(prefix="vital-adjudicated-"))
        path = folder / f"{self.task.name}-adjudicated.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        status = (
            f"{len(rows)} item(s) exported: {counts['consensus']} by consensus, {counts['adjudicated']} adjudicated; "
            f"{counts['unresolved']} conflict(s) still open (left out)."
        )
        return {self.campaign_file: str(path), self.campaign_status: status}

    # -- layout -------------------------------------------------------------------------------------------------------
    def _build(self) -> gr.Blocks:
        task = self.task.name
        guidelines = self.task.guidelines
        with gr.Blocks(title=self.title) as blocks:
            with gr.Row():
                if self.space:
                    gr.LoginButton()
                else:
                    gr.Button("Log out", link="/logout", size="sm", elem_id="vital-logout", scale=0)
            self.header = gr.Markdown(elem_id="vital-header")
            self.item_id = gr.Textbox(
                visible="hidden", elem_id="vital-item-id", label="item", max_length=MAX_ITEM_ID_CHARS
            )
            with gr.Tabs():
                with gr.Tab("Annotate", id="annotate"):
                    gr.Markdown(guidelines.instructions, elem_id="vital-instructions")
                    self._build_task(task)
                with gr.Tab("Guidelines", id="guidelines"):
                    gr.Markdown(guidelines.text, elem_id="vital-guidelines")
                    gr.Markdown(IMAGE_TOOLS_HELP)
                    gr.Markdown(f"<small>Guidelines version `{guidelines.version}`</small>")
                with gr.Tab("Campaign", id="campaign", visible=False) as self.campaign_tab:
                    self._build_campaign()
            on_load, common = self._on_load
            blocks.load(on_load, None, **common)
            on_view, view_outputs, private = self._on_view
            blocks.load(on_view, None, view_outputs, **private)
        return blocks

    def _build_task(self, task: str) -> None:
        with gr.Row():
            with gr.Column(scale=2):
                self.image = gr.Image(
                    type="pil",
                    interactive=False,
                    label="Figure",
                    height=420,
                    elem_id="vital-image",
                    buttons=["fullscreen"],  # no download or share button: clinical images stay here
                )
                gr.HTML(image_tools_html(), elem_id="vital-imagetools-box")
            with gr.Column(scale=3):
                self.context = gr.Markdown(elem_id="vital-context")
        choice_input = None
        if task == "preference":
            self.question = gr.Markdown(elem_id="vital-question")
            with gr.Row(equal_height=True):
                self.answer_a = gr.Markdown(elem_id="vital-answer-a")
                self.answer_b = gr.Markdown(elem_id="vital-answer-b")
            self.choice = gr.Radio(PREFERENCE_OPTIONS, label=TASK_TITLES[task], elem_id="vital-choice")
            choice_input = self.choice
        elif task == "rating":
            self.question = gr.Markdown(elem_id="vital-question")
            self.answer = gr.Markdown(elem_id="vital-answer")
            self.score = gr.Radio(
                SCORE_OPTIONS,
                label="Score: 0 wrong or unsafe · 5 acceptable · 10 what an expert would write (see Guidelines)",
                elem_id="vital-score",
            )
            choice_input = self.score
        else:
            gr.Markdown("**Conversation** — edit any box to correct it; empty a turn to drop it.")
            self.turn_rows, self.turn_questions, self.turn_answers = [], [], []
            for i in range(MAX_TURNS):
                with gr.Row(visible=i < 2, elem_id=f"vital-turn-{i}") as row:
                    question = gr.Textbox(
                        label=f"Question {i + 1}",
                        lines=2,
                        max_length=MAX_TURN_CHARS,
                        placeholder="(empty: add a question here if needed)",
                        elem_id=f"vital-turn-q{i}",
                    )
                    answer = gr.Textbox(
                        label=f"Answer {i + 1}", lines=3, max_length=MAX_TURN_CHARS, elem_id=f"vital-turn-a{i}"
                    )
                self.turn_rows.append(row)
                self.turn_questions.append(question)
                self.turn_answers.append(answer)
        self.comment = gr.Textbox(
            label=f"Comment (optional, up to {MAX_COMMENT_CHARS:,} characters)",
            lines=1,
            max_length=MAX_COMMENT_CHARS,
            elem_id="vital-comment",
        )
        with gr.Row():
            self.prev = gr.Button("← Previous", elem_id="vital-prev", size="md")
            if task == "demos":
                self.reject = gr.Button("Reject (r)", variant="stop", elem_id="vital-reject", size="md")
                submit_label = "Save conversation (Enter)"
            else:
                submit_label = "Save (Enter)"
            self.submit_button = gr.Button(submit_label, variant="primary", elem_id="vital-submit", size="md")
            self.next = gr.Button("Next →", elem_id="vital-next", size="md")
        self.status = gr.Markdown(elem_id="vital-status")
        gr.Markdown(
            KEYS_HELP[task] + " · **+/−** zoom · **o** reset view · **w** brightness/contrast preset",
            elem_classes=["vital-keys"],
        )

        outputs = [self.header, self.item_id, self.image, self.context, self.status, self.comment]
        if task == "preference":
            outputs += [self.question, self.answer_a, self.answer_b, self.choice]
        elif task == "rating":
            outputs += [self.question, self.answer, self.score]
        else:
            outputs += [*self.turn_rows, *self.turn_questions, *self.turn_answers]
        common = {"outputs": outputs, "api_visibility": "private", "show_progress": "hidden"}

        def on_load(request: gr.Request, profile: gr.OAuthProfile | None = None):
            return self.load(request, profile)

        def on_prev(item_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
            return self.move(item_id, -1, request, profile)

        def on_next(item_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
            return self.move(item_id, +1, request, profile)

        if choice_input is not None:

            def on_submit(item_id, choice, comment, request: gr.Request, profile: gr.OAuthProfile | None = None):
                return self.submit(item_id, choice, comment, None, request, profile)

            submit_inputs = [self.item_id, choice_input, self.comment]
        else:

            def on_submit(data: dict, request: gr.Request, profile: gr.OAuthProfile | None = None):
                # inputs given as a set: one dict of every turn box (a fixed signature cannot name them all)
                turns = [(data[q], data[a]) for q, a in zip(self.turn_questions, self.turn_answers, strict=True)]
                return self.submit(data[self.item_id], None, data[self.comment], turns, request, profile)

            def on_reject(item_id, comment, request: gr.Request, profile: gr.OAuthProfile | None = None):
                return self.submit(item_id, None, comment, None, request, profile, reject=True)

            submit_inputs = {self.item_id, self.comment, *self.turn_questions, *self.turn_answers}
            self.reject.click(on_reject, [self.item_id, self.comment], **common)

        self._on_load = (on_load, common)
        self.prev.click(on_prev, [self.item_id], **common)
        self.next.click(on_next, [self.item_id], **common)
        self.submit_button.click(on_submit, submit_inputs, **common)

    def _build_campaign(self) -> None:
        gr.Markdown(
            "Progress, agreement so far, and the items annotators disagree on. Adjudicate a conflict by choosing the "
            "decision that stands; the answers are shown in an order drawn for you, as for the annotators."
        )
        refresh = gr.Button("Refresh", size="sm", elem_id="vital-campaign-refresh")
        gr.Markdown("### Progress")
        self.campaign_progress = gr.Dataframe(interactive=False, elem_id="vital-campaign-progress")
        gr.Markdown("### Agreement so far")
        self.campaign_agreement = gr.Markdown(elem_id="vital-campaign-agreement")
        gr.Markdown("### Conflicts to adjudicate")
        self.campaign_conflicts = gr.Dataframe(interactive=False, elem_id="vital-campaign-conflicts")
        self.campaign_item = gr.Dropdown(label="Conflict", choices=[], elem_id="vital-campaign-item")
        self.campaign_detail = gr.Markdown(elem_id="vital-campaign-detail")
        self.campaign_decision = gr.Radio(label="Decision", choices=[], elem_id="vital-campaign-decision")
        self.campaign_comment = gr.Textbox(
            label="Note (optional)", max_length=MAX_COMMENT_CHARS, elem_id="vital-campaign-comment"
        )
        decide = gr.Button("Save decision", variant="primary", elem_id="vital-campaign-decide")
        gr.Markdown("### Adjudicated set")
        export = gr.Button("Export the adjudicated set", elem_id="vital-campaign-export")
        self.campaign_file = gr.File(label="Adjudicated set (JSON Lines)", elem_id="vital-campaign-file")
        self.campaign_status = gr.Markdown(elem_id="vital-campaign-status")

        view_outputs = [
            self.campaign_tab,
            self.campaign_progress,
            self.campaign_agreement,
            self.campaign_conflicts,
            self.campaign_item,
        ]
        private = {"api_visibility": "private", "show_progress": "hidden"}

        def on_view(request: gr.Request, profile: gr.OAuthProfile | None = None):
            return self.campaign_view(request, profile)

        def on_item(item_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
            return self.campaign_item_view(item_id, request, profile)

        def on_decide(item_id, decision, comment, request: gr.Request, profile: gr.OAuthProfile | None = None):
            return self.campaign_decide(item_id, decision, comment, request, profile)

        def on_export(request: gr.Request, profile: gr.OAuthProfile | None = None):
            return self.campaign_export(request, profile)

        self._on_view = (on_view, view_outputs, private)
        refresh.click(on_view, None, view_outputs, **private)
        self.campaign_item.change(
            on_item, [self.campaign_item], [self.campaign_detail, self.campaign_decision], **private
        )
        decide.click(
            on_decide,
            [self.campaign_item, self.campaign_decision, self.campaign_comment],
            [*view_outputs, self.campaign_status],
            **private,
        )
        export.click(on_export, None, [self.campaign_file, self.campaign_status], **private)

    # -- serving ------------------------------------------------------------------------------------------------------
    def launch(
        self,
        users: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        prevent_thread_lock: bool = False,
        **kwargs: Any,
    ):
        """Serve the app. Locally ``users`` (``{name: password hash}``) is required: there is no anonymous mode.

        Every request passes `vital.annotate.auth.RequestGuard` (body size limit, sign-in throttling)."""
        if not self.space and not users:
            raise ValueError(
                "no users: pass --users users.json (or set VITAL_ANNOTATE_USERS); add one with --add_user NAME"
            )
        auth = None if self.space else make_auth(users)
        self.blocks.queue(default_concurrency_limit=8)
        app_kwargs = kwargs.pop("app_kwargs", None) or {}
        app_kwargs.setdefault("middleware", [Middleware(RequestGuard, throttle=self.throttle)])
        return self.blocks.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            auth_message=AUTH_MESSAGE if auth else None,
            prevent_thread_lock=prevent_thread_lock,
            show_error=True,
            js=keyboard_js(self.task.name),
            css=CSS,
            # system fonts: no request to a font CDN (hospital networks, offline machines)
            theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS),
            footer_links=[],
            app_kwargs=app_kwargs,
            **kwargs,
        )


def describe(annotation: Annotation) -> str:
    """A short description of a saved annotation, in the terms the annotator saw (never the answer's source)."""
    if annotation.task == "preference":
        return "same quality" if annotation.choice == "tie" else f"answer {annotation.choice} preferred"
    if annotation.task == "rating":
        return f"score {annotation.label}"
    return {"accept": "kept as shown", "edit": "corrected", "reject": "rejected"}.get(
        annotation.label, annotation.label
    )


def agreement_text(pairs: list, task: str) -> str:
    """The campaign view's agreement table: kappa with its 95 % bootstrap interval per annotator pair."""
    if not pairs:
        return "No two annotators have annotated the same two items yet: no agreement to report."
    kind = "weighted kappa (quadratic)" if task == "rating" else "Cohen's kappa"
    lines = [f"| annotators | shared items | same answer | {kind} [95 % interval] |", "|---|---|---|---|"]
    for p in pairs:
        value = "n/a" if math.isnan(p.kappa) else f"{p.kappa:.2f}"
        interval = f"[{p.low:.2f}, {p.high:.2f}]" if not math.isnan(p.low) else "(too few items for an interval)"
        lines.append(f"| {p.annotator_a} / {p.annotator_b} | {p.n} | {p.percent:.0%} | {value} {interval} |")
    lines.append("")
    lines.append(
        f"<small>Interval: percentile bootstrap over items ({BOOTSTRAP_RESAMPLES:,} resamples), from "
        f"{MIN_ITEMS_FOR_INTERVAL} shared items on. With few shared items it is wide.</small>"
    )
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]], columns: list[str]):
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)
