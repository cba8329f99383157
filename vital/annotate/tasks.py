"""What each annotation task shows and what a click records, independent of the web UI (so it is testable alone).

`AnnotationTask` wraps the items of one task and the store: `view` builds what the screen shows for an annotator and
an item (the preference task's sides in that annotator's order), `annotate` turns a click into an `Annotation` and
saves it durably, refusing it when there is no logged-in annotator. Progress and resuming are computed from the store.

Sides in the preference task are randomised per annotator and item, deterministically: ``sha256(salt, annotator,
item id)`` decides whether ``answer_a`` or ``answer_b`` is shown as A (left). The same annotator sees the same order
after a reload or a restart, different annotators see independent orders, and every annotation records the order
(``shown = {"A": "answer_b", "B": "answer_a"}``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage

from vital.annotate.items import TaskItems, first_image
from vital.annotate.store import Annotation, AnnotationStore, check_annotator
from vital.data.schemas import message_text, qa_turns
from vital.generation import ParseError, conversation_to_text, parse_conversation, turns_to_messages


SIDE_SALT = "vital-annotate-sides-v1"
PREFERENCE_CHOICES = ("A", "B", "tie")
DEMO_CHOICES = ("accept", "reject", "edit")
SCORES = tuple(range(11))
DISPLAY_MIN_SIDE = 512


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
    conversation: str = ""  # demos: "User: ... / Assistant: ..." text
    previous: Annotation | None = None


class AnnotationTask:
    """One task's items plus the store: views, clicks, progress (see the module docstring).

    Args:
        items: the task's items (`vital.annotate.items.load_items`).
        store: where annotations are saved.
        salt: mixed into the preference side randomisation; change it to draw new orders.
    """

    def __init__(self, items: TaskItems, store: AnnotationStore, salt: str = SIDE_SALT):
        self.items = items
        self.store = store
        self.salt = salt

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
            view.context = _context(row)
        elif self.name == "rating":
            turn = self.items.turns[position]
            view.question, view.answer = qa_turns(row["messages"])[turn]
            view.shown = {"candidate_id": row["id"], "turn": turn}
            view.context = _context(row)
        else:
            candidate_id, messages = self.items.conversations.get(item_id, (None, None))
            view.shown = {"conversation_from": candidate_id}
            view.conversation = conversation_to_text(messages) if messages else ""
            if view.previous is not None and view.previous.messages:
                view.conversation = conversation_to_text(view.previous.messages)
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
        comment: str = "",
        session: str = "",
    ) -> Annotation:
        """Save one annotation of ``item_id`` by ``annotator`` and return it.

        Raises:
            AnonymousWriteError: no annotator (not logged in); nothing is written.
            ValueError: an unknown item, a choice the task does not know, a score outside 0-10, or an edited
                conversation that does not parse (the reason says why); nothing is written.
        """
        annotator = check_annotator(annotator)
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
                try:
                    turns = parse_conversation(text)
                except ParseError as error:
                    raise ValueError(f"the edited conversation does not parse: {error.reason}") from error
                record.messages = turns_to_messages(turns, n_images=1)
                if original and qa_turns(record.messages) == qa_turns(original):
                    record.label = "accept"  # saved unchanged
        return self.store.append(record)


def _assistant_text(messages: list[dict[str, Any]]) -> str:
    return "\n\n".join(message_text(m) for m in messages if m["role"] == "assistant")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    users = [m for m in messages if m["role"] == "user"]
    return message_text(users[-1]) if users else ""


def _context(row: dict[str, Any]) -> str:
    """The figure's text as markdown: label and caption, in-text mentions, modality and cluster."""
    lines = []
    caption = (row.get("caption") or "").strip()
    if caption:
        label = (row.get("fig_label") or "").strip()
        lines.append(f"**{label}** {caption}" if label else caption)
    mentions = [m.strip() for m in row.get("mentions") or [] if m and m.strip()]
    if mentions:
        lines.append("**Mentions in the article**\n\n" + "\n".join(f"- {m}" for m in mentions))
    facts = []
    if row.get("modality"):
        facts.append(f"modality `{row['modality']}`")
    if row.get("cluster") is not None:
        facts.append(f"cluster {row['cluster']}")
    if row.get("rank_in_cluster") is not None:
        facts.append(f"rank {row['rank_in_cluster']} in its cluster (distance {row.get('distance', 0):.3f})")
    if facts:
        lines.append(" · ".join(facts))
    return "\n\n".join(lines)
