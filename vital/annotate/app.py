"""The clinicians' annotation app: a Gradio front for one `AnnotationTask`.

Every click that annotates is saved before the next item appears (see `vital.annotate.store`); a returning annotator
resumes at their first unannotated item and the header shows their progress (n of N). The item being annotated is the
one whose id the page shows (sent with the click), so a double click or a slow network can never attach a choice to
an item the clinician has not seen.

Keyboard (ignored while typing in a text box; Esc leaves the box):

=============== ======================================================================================================
preference      ``1`` / ``2`` / ``3``: A, B, tie; ``Enter``: save; ``c``: comment
rating          ``0`` ... ``9``, ``t`` (10): score; ``Enter``: save; ``c``: comment
demos           ``Enter`` (or ``Ctrl+Enter`` in the text): keep the conversation as it stands in the box (accepted if
                unchanged, edited otherwise); ``r``: reject; ``e``: edit the conversation; ``c``: comment
all             ``←`` / ``→``: previous / next item (nothing is saved by moving)
=============== ======================================================================================================

Locally the app sits behind Gradio's login form (`vital.annotate.auth`); on a Space it shows ``gr.LoginButton`` and
takes the Hugging Face user. Handlers resolve the annotator on every call and refuse to write without one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # clinical deployments do not phone home

import gradio as gr  # noqa: E402

from vital.annotate.auth import make_auth, resolve_annotator
from vital.annotate.store import Annotation, AnonymousWriteError
from vital.annotate.tasks import PREFERENCE_CHOICES, SCORES, AnnotationTask
from vital.data.schemas import qa_turns
from vital.generation import ParseError, conversation_to_text, parse_conversation
from vital.rating import RUBRIC


logger = logging.getLogger(__name__)

CSS = """
#vital-answer-a, #vital-answer-b { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 12px; }
#vital-status { min-height: 1.5em; }
.vital-keys { opacity: 0.75; font-size: 0.9em; }
"""

SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")

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
        "e": {"focus": "vital-conversation"},
        "c": {"focus": "vital-comment"},
    },
}
NAVIGATION = {"ArrowLeft": {"click": "vital-prev"}, "ArrowRight": {"click": "vital-next"}}

KEYS_HELP = {
    "preference": "Keys: **1** A · **2** B · **3** tie · **Enter** save · **c** comment · **←/→** previous/next",
    "rating": "Keys: **0-9** score · **t** 10 · **Enter** save · **c** comment · **←/→** previous/next",
    "demos": "Keys: **Enter** keep the conversation (Ctrl+Enter while editing) · **r** reject · **e** edit · "
    "**c** comment · **←/→** previous/next",
}

_KEYBOARD_JS = """
() => {
  const keymap = __KEYMAP__;
  const find = (id) => document.getElementById(id);
  const press = (id) => {
    const el = find(id);
    if (!el) return;
    const button = el.tagName === 'BUTTON' ? el : el.querySelector('button');
    (button || el).click();
  };
  document.addEventListener('keydown', (e) => {
    const t = e.target || {};
    const tag = (t.tagName || '').toLowerCase();
    const typing = tag === 'textarea' || tag === 'select' || t.isContentEditable ||
      (tag === 'input' && !['radio', 'checkbox', 'range', 'button', 'submit'].includes(t.type));
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      if (keymap['Ctrl+Enter']) { e.preventDefault(); press(keymap['Ctrl+Enter'].click); }
      return;
    }
    if (typing) { if (e.key === 'Escape') t.blur(); return; }
    if (tag === 'button' && (e.key === 'Enter' || e.key === ' ')) return;  // the focused button's own click
    if (e.altKey || e.ctrlKey || e.metaKey) return;
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
    """The page script that maps keys to this task's buttons and choices."""
    return _KEYBOARD_JS.replace("__KEYMAP__", json.dumps({**KEYMAPS[task], **NAVIGATION}))


class AnnotationApp:
    """The Gradio Blocks of one task, with handlers callable without a browser (see the tests).

    Args:
        task: the task (items + store).
        space: running on a Hugging Face Space: sign-in with Hugging Face OAuth.
        allowed: on a Space, the usernames allowed to annotate (None: any signed-in user).
        title: the page title.
    """

    def __init__(
        self, task: AnnotationTask, space: bool = False, allowed: set[str] | None = None, title: str | None = None
    ):
        self.task = task
        self.space = space
        self.allowed = allowed
        self.title = title or f"BioMed-VITAL annotation: {task.name}"
        self.blocks = self._build()

    # -- who is asking ------------------------------------------------------------------------------------------------
    def annotator(self, request: Any = None, profile: Any = None) -> str | None:
        return resolve_annotator(request, profile, space=self.space, allowed=self.allowed)

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
            out.update({self.conversation: ""})
        return out

    def render(self, annotator: str, position: int, status: str = "") -> dict:
        """The component values for ``annotator`` at ``position`` (``len(task)``: the all-done page)."""
        done, total = self.task.progress(annotator)
        progress = f"**{annotator}** · {self.task.name} · **{done} of {total}** annotated"
        if position >= len(self.task):
            header = f"{progress}\n\nAll {total} items are annotated. Thank you! Use ← to review or change an answer."
            return self._blank(header, status=status)
        view = self.task.view(annotator, position)
        header = f"{progress} · item {position + 1} of {total} (`{view.item_id}`)"
        if view.previous is not None:
            header += f" · already annotated: {describe(view.previous)}"
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
                    self.question: f"### {view.question}",
                    self.answer_a: f"**A** (key 1)\n\n{view.answers['A']}",
                    self.answer_b: f"**B** (key 2)\n\n{view.answers['B']}",
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
            out.update({self.conversation: view.conversation})
        return out

    # -- handlers (the annotator is resolved on every call) ------------------------------------------------------------
    def load(self, request: gr.Request, profile: gr.OAuthProfile | None = None) -> dict:
        user = self.annotator(request, profile)
        if user is None:
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
        text: str | None,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
        reject: bool = False,
    ) -> dict:
        """Save the click on ``item_id`` and show the annotator's next open item. Refuses anonymous clicks."""
        user = self.annotator(request, profile)
        if not item_id:
            raise gr.Error("No item on screen to annotate.")
        session = getattr(request, "session_hash", "") or ""
        try:
            if self.task.name == "preference":
                if choice not in PREFERENCE_CHOICES:
                    raise ValueError("Choose A, B or tie first (keys 1, 2, 3).")
                saved = self.task.annotate(user, item_id, choice, comment=comment, session=session)
            elif self.task.name == "rating":
                if choice is None or choice == "":
                    raise ValueError("Choose a score from 0 to 10 first (keys 0-9, t for 10).")
                saved = self.task.annotate(user, item_id, score=float(choice), comment=comment, session=session)
            elif reject:
                saved = self.task.annotate(user, item_id, "reject", comment=comment, session=session)
            else:
                kind = "accept" if self._unchanged(item_id, text) else "edit"
                saved = self.task.annotate(user, item_id, kind, text=text, comment=comment, session=session)
        except AnonymousWriteError as error:
            raise gr.Error("Not signed in: annotations without a signed-in annotator are not saved.") from error
        except ValueError as error:
            raise gr.Error(str(error)) from error
        position = self.task.items.index[item_id]
        status = f"Saved `{item_id}`: {describe(saved)} at {saved.time}"
        return self.render(user, self.task.next_open(user, after=position), status)

    def _unchanged(self, item_id: str, text: str | None) -> bool:
        _, original = self.task.items.conversations.get(item_id, (None, None))
        if not original or not (text or "").strip():
            return False
        if text.strip() == conversation_to_text(original).strip():
            return True
        try:
            return [(t.question, t.answer) for t in parse_conversation(text)] == qa_turns(original)
        except ParseError:
            return False

    # -- layout -------------------------------------------------------------------------------------------------------
    def _build(self) -> gr.Blocks:
        task = self.task.name
        with gr.Blocks(title=self.title) as blocks:
            if self.space:
                gr.LoginButton()
            self.header = gr.Markdown(elem_id="vital-header")
            self.item_id = gr.Textbox(visible="hidden", elem_id="vital-item-id", label="item")
            with gr.Row():
                with gr.Column(scale=2):
                    self.image = gr.Image(
                        type="pil",
                        interactive=False,
                        label="Figure",
                        height=380,
                        elem_id="vital-image",
                        buttons=["fullscreen"],  # no download or share button: clinical images stay here
                    )
                with gr.Column(scale=3):
                    self.context = gr.Markdown(elem_id="vital-context")
            inputs_extra: list = []
            if task == "preference":
                self.question = gr.Markdown(elem_id="vital-question")
                with gr.Row(equal_height=True):
                    self.answer_a = gr.Markdown(elem_id="vital-answer-a")
                    self.answer_b = gr.Markdown(elem_id="vital-answer-b")
                self.choice = gr.Radio(
                    list(PREFERENCE_CHOICES), label="Which answer is better?", elem_id="vital-choice"
                )
                choice_input = self.choice
            elif task == "rating":
                self.question = gr.Markdown(elem_id="vital-question")
                self.answer = gr.Markdown(elem_id="vital-answer")
                with gr.Accordion("Rubric", open=True):
                    gr.Markdown(RUBRIC, elem_id="vital-rubric")
                self.score = gr.Radio(list(SCORES), label="Score (0-10)", elem_id="vital-score")
                choice_input = self.score
            else:
                self.conversation = gr.Textbox(
                    lines=14,
                    max_lines=40,
                    label="Conversation: keep it, edit it ('User: ...' / 'Assistant: ...' turns) or reject the pair",
                    elem_id="vital-conversation",
                )
                choice_input = None
                inputs_extra = [self.conversation]
            self.comment = gr.Textbox(label="Comment (optional)", lines=1, elem_id="vital-comment")
            with gr.Row():
                self.prev = gr.Button("← Previous", elem_id="vital-prev", size="md")
                if task == "demos":
                    self.reject = gr.Button("Reject (r)", variant="stop", elem_id="vital-reject", size="md")
                    submit_label = "Keep conversation (Enter)"
                else:
                    submit_label = "Save (Enter)"
                self.submit_button = gr.Button(submit_label, variant="primary", elem_id="vital-submit", size="md")
                self.next = gr.Button("Next →", elem_id="vital-next", size="md")
            self.status = gr.Markdown(elem_id="vital-status")
            gr.Markdown(KEYS_HELP[task], elem_classes=["vital-keys"])

            outputs = [self.header, self.item_id, self.image, self.context, self.status, self.comment]
            if task == "preference":
                outputs += [self.question, self.answer_a, self.answer_b, self.choice]
            elif task == "rating":
                outputs += [self.question, self.answer, self.score]
            else:
                outputs += [self.conversation]
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

                def on_submit(item_id, comment, text, request: gr.Request, profile: gr.OAuthProfile | None = None):
                    return self.submit(item_id, None, comment, text, request, profile)

                def on_reject(item_id, comment, request: gr.Request, profile: gr.OAuthProfile | None = None):
                    return self.submit(item_id, None, comment, None, request, profile, reject=True)

                submit_inputs = [self.item_id, self.comment, *inputs_extra]
                self.reject.click(on_reject, [self.item_id, self.comment], **common)

            blocks.load(on_load, None, **common)
            self.prev.click(on_prev, [self.item_id], **common)
            self.next.click(on_next, [self.item_id], **common)
            self.submit_button.click(on_submit, submit_inputs, **common)
        return blocks

    # -- serving ------------------------------------------------------------------------------------------------------
    def launch(
        self,
        users: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        prevent_thread_lock: bool = False,
        **kwargs: Any,
    ):
        """Serve the app. Locally ``users`` (``{name: password hash}``) is required: there is no anonymous mode."""
        if not self.space and not users:
            raise ValueError(
                "no users: pass --users users.json (or set VITAL_ANNOTATE_USERS); add one with --add_user NAME"
            )
        auth = None if self.space else make_auth(users)
        self.blocks.queue(default_concurrency_limit=8)
        return self.blocks.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            auth_message="BioMed-VITAL annotation: sign in with the account you were given." if auth else None,
            prevent_thread_lock=prevent_thread_lock,
            show_error=True,
            js=keyboard_js(self.task.name),
            css=CSS,
            # system fonts: no request to a font CDN (hospital networks, offline machines)
            theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS),
            footer_links=[],
            **kwargs,
        )


def describe(annotation: Annotation) -> str:
    """A short human description of a saved annotation."""
    if annotation.task == "preference":
        return "tie" if annotation.choice == "tie" else f"{annotation.choice} (= {annotation.label})"
    if annotation.task == "rating":
        return f"score {annotation.label}"
    return {"accept": "accepted", "edit": "edited", "reject": "rejected"}.get(annotation.label, annotation.label)
