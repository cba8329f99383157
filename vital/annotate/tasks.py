"""What each annotation task shows and what a click records, independent of the web UI (so it is testable alone).

`AnnotationTask` wraps the items of one task and the store: `view` builds what the screen shows for an annotator and
an item (the preference task's sides in that annotator's order), `annotate` turns a click into an `Annotation` and
saves it durably, refusing it when there is no logged-in annotator. Progress and resuming are computed from the store.

Sides in the preference task are randomised per annotator and item, deterministically: ``sha256(salt, annotator,
item id)`` decides whether ``answer_a`` or ``answer_b`` is shown as A (left). The same annotator sees the same order
after a reload or a restart, different annotators see independent orders, and every annotation records the order
(``shown = {"A": "answer_b", "B": "answer_a"}``). The order is recorded, never shown: nothing on screen names the
column (or the model) an answer came from.

Every annotation records the version of the guidelines on screen (`vital.annotate.guidelines`), and every field is
checked against its size limit (`vital.annotate.store`) before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage

from vital.annotate.guidelines import Guidelines, load_guidelines
from vital.annotate.items import TaskItems, first_image
from vital.annotate.store import (
    MAX_COMMENT_CHARS,
    MAX_TURN_CHARS,
    MAX_TURNS,
    Annotation,
    AnnotationStore,
    FieldTooLongError,
    check_annotator,
    check_length,
)
from vital.data.schemas import message_text, qa_turns
from vital.generation import ParseError, QATurn, conversation_to_text, parse_conversation, turns_to_messages


SIDE_SALT = "vital-annotate-sides-v1"
PREFERENCE_CHOICES = ("A", "B", "tie")
DEMO_CHOICES = ("accept", "reject", "edit")
SCORES = tuple(range(11))
DISPLAY_MIN_SIDE = 512
MODALITY_WORDS = {
    "chest_xray": "chest X-ray",
    "mri": "MRI",
    "ct": "CT",
    "histology": "histology (microscopy)",
    "gross": "gross pathology (photograph)",
}


def shown_order(annotator: str, item_id: str, salt: str = SIDE_SALT) -> tuple[str, str]:
    """The columns shown as (A, B) to ``annotator`` for ``item_id``: ``("answer_a", "answer_b")`` or swapped."""
    digest = hashlib.sha256(f"{salt}\x1f{annotator}\x1f{item_id}".encode()).digest()
    return ("answer_b", "answer_a") if digest[0] & 1 else ("answer_a", "answer_b")


def display_image(image: Any, min_side: int = DISPLAY_MIN_SIDE) -> PILImage.Image | None:
    """An 8-bit RGB view of a dataset image for the browser: 16-bit and float images rescaled to their range, small
    images enlarged (bicubic) so that their longer side is ``min_side`` pixels. The dataset image is not changed."""
    if image is None:
        return None
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        image = PILImage.fromarray((scaled * 255).round().astype(np.uint8), mode="L")
    image = image.convert("RGB")
    if max(image.size) < min_side:
        factor = min_side / max(image.size)
        size = (round(image.width * factor), round(image.height * factor))
        image = image.resize(size, PILImage.Resampling.BICUBIC)
    return image


@dataclass
class ItemView:
    """Everything the screen shows for one item."""

    position: int
    item_id: str
    image: PILImage.Image | None = None
    context: str = ""  # markdown: caption, mentions, cluster
    question: str = ""
    answers: dict[str, str] = field(default_factory=dict)  # preference: {"A": text, "B": text}
    shown: dict[str, Any] = field(default_factory=dict)
    answer: str = ""  # rating: the answer being scored
    turns: list[tuple[str, str]] = field(default_factory=list)  # demos: (question, answer) per turn
    previous: Annotation | None = None

    @property
    def conversation(self) -> str:
        """Demos: the turns as "User: ... / Assistant: ..." text."""
        return conversation_to_text(turns_to_messages([QATurn(q, a) for q, a in self.turns])) if self.turns else ""


class AnnotationTask:
    """One task's items plus the store: views, clicks, progress (see the module docstring).

    Args:
        items: the task's items (`vital.annotate.items.load_items`).
        store: where annotations are saved.
        salt: mixed into the preference side randomisation; change it to draw new orders.
        guidelines: what the annotators read (default: the task's own, `vital.annotate.guidelines`); its version is
            recorded with every annotation.
    """

    def __init__(
        self, items: TaskItems, store: AnnotationStore, salt: str = SIDE_SALT, guidelines: Guidelines | None = None
    ):
        self.items = items
        self.store = store
        self.salt = salt
        self.guidelines = guidelines or load_guidelines(items.task)
        if self.guidelines.task != items.task:
            raise ValueError(f"guidelines for {self.guidelines.task!r} given to the {items.task!r} task")

    @property
    def name(self) -> str:
        return self.items.task

    @property
    def dataset(self) -> str:
        return self.items.ref.repo_id

    def __len__(self) -> int:
        return len(self.items)

    # -- progress -----------------------------------------------------------------------------------------------------
    def done(self, annotator: str) -> dict[str, Annotation]:
        """The annotator's latest annotation of each item that is among this task's items."""
        latest = self.store.latest(self.name, self.dataset, check_annotator(annotator))
        return {i: a for i, a in latest.items() if i in self.items.index}

    def progress(self, annotator: str) -> tuple[int, int]:
        """(items annotated by ``annotator``, items in the task)."""
        return len(self.done(annotator)), len(self.items)

    def next_open(self, annotator: str, after: int = -1) -> int:
        """The first item after position ``after`` (wrapping round) that ``annotator`` has not annotated; ``len(self)``
        when every item is done. ``next_open(annotator)`` is where a returning annotator resumes."""
        done = self.done(annotator)
        n = len(self.items)
        for step in range(1, n + 1):
            position = (after + step) % n
            if self.items.ids[position] not in done:
                return position
        return n

    # -- what the screen shows ----------------------------------------------------------------------------------------
    def view(self, annotator: str, position: int) -> ItemView:
        annotator = check_annotator(annotator)
        item_id = self.items.ids[position]
        row = self.items.row(position)
        view = ItemView(position, item_id, display_image(first_image(row)))
        view.previous = self.done(annotator).get(item_id)
        if self.name == "preference":
            order = shown_order(annotator, item_id, self.salt)
            view.shown = {"A": order[0], "B": order[1]}
            view.question = row.get("question") or _last_user_text(row["prompt"])
            view.answers = {side: _assistant_text(row[column]) for side, column in view.shown.items()}
            view.context = _context({**self.items.figure_text(position), **row})
        elif self.name == "rating":
            turn = self.items.turns[position]
            view.question, view.answer = qa_turns(row["messages"])[turn]
            view.shown = {"candidate_id": row["id"], "turn": turn}
            view.context = _context(row)
        else:
            candidate_id, messages = self.items.conversations.get(item_id, (None, None))
            view.shown = {"conversation_from": candidate_id}
            view.turns = qa_turns(messages) if messages else []
            if view.previous is not None and view.previous.messages:
                view.turns = qa_turns(view.previous.messages)
            view.context = _context(row)
        return view

    # -- a click ------------------------------------------------------------------------------------------------------
    def annotate(
        self,
        annotator: str | None,
        item_id: str,
        choice: str | None = None,
        *,
        score: float | None = None,
        text: str | None = None,
        turns: Sequence[tuple[str, str]] | None = None,
        comment: str = "",
        session: str = "",
    ) -> Annotation:
        """Save one annotation of ``item_id`` by ``annotator`` and return it.

        Raises:
            AnonymousWriteError: no annotator (not logged in); nothing is written.
            ValueError: an unknown item, a choice the task does not know, a score outside 0-10, an edited
                conversation that does not parse or has a question without an answer, or a field over its size
                limit (`FieldTooLongError`; the reason says which); nothing is written.

        An edited conversation comes as ``turns`` (``(question, answer)`` pairs; a pair left empty is dropped) or as
        ``text`` ("User: ... / Assistant: ...").
        """
        annotator = check_annotator(annotator)
        check_length("comment", comment, MAX_COMMENT_CHARS)
        if item_id not in self.items.index:
            raise ValueError(f"item {item_id!r} is not among the {len(self.items)} items of {self.items.ref}")
        position = self.items.index[item_id]
        record = Annotation(
            task=self.name,
            dataset=self.dataset,
            commit=self.items.ref.commit,
            item_id=item_id,
            annotator=annotator,
            choice="",
            label="",
            comment=(comment or "").strip(),
            session=session or "",
            guidelines=self.guidelines.version,
        )
        if self.name == "preference":
            choice = {"a": "A", "b": "B", "tie": "tie"}.get(str(choice or "").strip().lower())
            if choice is None:
                raise ValueError(f"choose one of {PREFERENCE_CHOICES}")
            order = shown_order(annotator, item_id, self.salt)
            record.shown = {"A": order[0], "B": order[1]}
            record.choice = choice
            record.label = "tie" if choice == "tie" else record.shown[choice]
        elif self.name == "rating":
            if score is None or isinstance(score, bool) or not 0 <= float(score) <= 10:
                raise ValueError(f"a score from 0 to 10 is needed, got {score!r}")
            record.choice, record.score = "score", float(score)
            record.label = f"{float(score):g}"
            record.shown = {"candidate_id": item_id.rsplit("#t", 1)[0], "turn": self.items.turns[position]}
        else:
            choice = str(choice or "").strip().lower()
            if choice not in DEMO_CHOICES:
                raise ValueError(f"choose one of {DEMO_CHOICES}")
            candidate_id, original = self.items.conversations.get(item_id, (None, None))
            record.shown = {"conversation_from": candidate_id}
            record.choice = record.label = choice
            if choice == "accept":
                if not original:
                    raise ValueError("there is no conversation to accept: write one and save it as an edit")
                record.messages = original
            elif choice == "edit":
                if turns is not None:
                    parsed = structured_turns(turns)
                else:
                    check_length("edited conversation", text, 2 * MAX_TURNS * MAX_TURN_CHARS)
                    try:
                        parsed = parse_conversation(text)
                    except ParseError as error:
                        raise ValueError(f"the edited conversation does not parse: {error.reason}") from error
                record.messages = turns_to_messages(parsed, n_images=1)
                if original and qa_turns(record.messages) == qa_turns(original):
                    record.label = "accept"  # saved unchanged
        return self.store.append(record)


def structured_turns(turns: Sequence[tuple[str | None, str | None]]) -> list[QATurn]:
    """The turns of a turn-by-turn edit: empty turns dropped; a question without an answer (or the reverse), more
    than `MAX_TURNS` turns, a text over `MAX_TURN_CHARS` or no turn at all refused with the turn's number."""
    out = []
    for number, (question, answer) in enumerate(turns, start=1):
        question, answer = (question or "").strip(), (answer or "").strip()
        check_length(f"question of turn {number}", question, MAX_TURN_CHARS)
        check_length(f"answer of turn {number}", answer, MAX_TURN_CHARS)
        if not question and not answer:
            continue
        if not question or not answer:
            missing = "question" if not question else "answer"
            raise ValueError(f"turn {number} has no {missing}: fill it in, or empty both boxes to drop the turn")
        out.append(QATurn(question, answer))
    if not out:
        raise ValueError("the conversation is empty: write at least one question and its answer, or reject it")
    if len(out) > MAX_TURNS:
        raise FieldTooLongError(f"the conversation has {len(out)} turns; the limit is {MAX_TURNS}")
    return out


def _assistant_text(messages: list[dict[str, Any]]) -> str:
    return "\n\n".join(message_text(m) for m in messages if m["role"] == "assistant")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    users = [m for m in messages if m["role"] == "user"]
    return message_text(users[-1]) if users else ""


def _context(row: dict[str, Any]) -> str:
    """The figure's text as markdown, worded for clinicians: label and caption, in-text mentions, image type."""
    lines = []
    caption = (row.get("caption") or "").strip()
    if caption:
        label = (row.get("fig_label") or "").strip()
        lines.append(f"**{label}** {caption}" if label else caption)
    mentions = [m.strip() for m in row.get("mentions") or [] if m and m.strip()]
    if mentions:
        lines.append("**Mentions in the article**\n\n" + "\n".join(f"- {m}" for m in mentions))
    if not caption and not mentions:
        lines.append("*No caption or article text is available for this figure.*")
    if row.get("modality") and row["modality"] != "other":
        lines.append(f"**Image type:** {MODALITY_WORDS.get(row['modality'], row['modality'])}")
    return "\n\n".join(lines)
