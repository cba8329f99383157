"""What clinicians read: a short instruction above each task and a guidelines page, versioned with the campaign.

Each task ships default guidelines written for clinicians (below). A campaign may replace them with its own Markdown
file (``vital annotate --guidelines campaign-guidelines.md``); its first line may declare a version
(``version: 2025-03 cardiology``). The version recorded with every annotation is the declared version (or the task's
default name) plus the first 12 hex digits of the text's SHA-256, so any change to the words, even unannounced, gives
a new version. On launch the app writes the text to ``<store>/guidelines/<version>.md`` so that every recorded version
can be read back later.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path


INSTRUCTIONS = {
    "preference": (
        "Read the question about the figure, then the two answers. Choose the answer you would rather give a "
        "colleague or a trainee, or **Same quality** when neither is better. Judge medical accuracy first, then "
        "whether the answer addresses the question and uses what the figure shows."
    ),
    "rating": (
        "Read the question about the figure and the answer. Score the answer from **0** (wrong or harmful) to "
        "**10** (what an expert would write). The guidelines describe each band of the scale."
    ),
    "demos": (
        "Decide whether this question-and-answer conversation about the figure is a good teaching example. "
        "**Keep** it as it is, **correct** it turn by turn (edit a question or an answer; empty a turn to drop it; "
        "use an empty turn to add one), or **reject** it."
    ),
}

_PREFERENCE = """\
# Guidelines: which answer is better?

**What you see.** A figure from a published article, its caption and the sentences of the article that mention it,
one question about the figure, and two answers. The two answers come in an order drawn for you alone: whether an
answer is shown first or second tells you nothing about where it came from.

**What to choose.**
- **Answer A** or **Answer B**: the answer you would rather give a colleague or a trainee.
- **Same quality**: both are equally good, or equally poor, and you cannot separate them.

**How to judge, in this order.**
1. *Medical accuracy.* A wrong statement, an unsafe recommendation or an invented finding outweighs style.
2. *Does it answer the question?* An accurate answer to a different question is not a good answer.
3. *Use of the figure.* Prefer the answer that describes what is actually visible, consistent with the caption.
4. *Clarity.* Plain, precise and appropriately brief.

**When unsure.** Zoom in, adjust brightness and contrast, read the caption and mentions. If the figure cannot be
judged (unreadable, wrong figure), choose **Same quality** and say why in the comment.

**Comments** are optional; they help most when you chose *Same quality* or found an error in both answers.
"""

_RATING = """\
# Guidelines: scoring an answer from 0 to 10

**What you see.** A figure from a published article, its caption and the sentences of the article that mention it,
one question about the figure and one answer.

**The scale.**

| score | meaning |
|---|---|
| 0-2 | wrong, unsafe or unrelated to the question |
| 3-4 | partly right, with an important error or omission |
| 5-6 | acceptable: right in substance but vague, incomplete or not based on the figure |
| 7-8 | good: accurate, answers the question, uses what the figure shows |
| 9-10 | what an expert would write: accurate, complete, precise and clear |

**How to judge.** Medical accuracy first, then whether the answer addresses the question, then its use of the figure
and the caption, then clarity. An answer that states more than the figure and caption can support is an error.

**Comments** are optional; please add one for scores of 4 or below (what is wrong).
"""

_DEMOS = """\
# Guidelines: choosing teaching conversations

**Why.** The conversations you keep are shown to the model that writes new conversations about other figures, as
examples of what a good one looks like. A handful of well-chosen examples shapes thousands of generated ones.

**What you see.** A figure, its caption and the sentences of the article that mention it, and a proposed conversation:
questions a user might ask about the figure and the answers.

**What to do.**
- **Keep** when every answer is accurate, supported by the figure or the caption, and the questions are ones a
  clinician or a student would ask.
- **Correct** when it is close: edit the question or the answer of any turn. Empty both boxes of a turn to drop it;
  fill an empty turn to add one. Saving a corrected conversation records it as edited.
- **Reject** when the figure is not suitable (unreadable, not a medical image) or the conversation would take more
  rewriting than it is worth. Say why in the comment.

**A good conversation** asks about what is visible (findings, location, modality, comparison) before asking for
interpretation, and never answers beyond what the figure and caption support.
"""

DEFAULT_TEXTS = {"preference": _PREFERENCE, "rating": _RATING, "demos": _DEMOS}
DEFAULT_NAMES = {task: f"vital-{task}-1" for task in DEFAULT_TEXTS}
IMAGE_TOOLS_HELP = (
    "**Image tools.** Zoom with **+** / **−** (or the mouse wheel), drag to move, **o** resets the view. "
    "**w** steps through the brightness/contrast presets. Figures are exported pictures, not DICOM: the presets stretch "
    "the grey levels of the picture and cannot recover detail that the export removed."
)
_VERSION_LINE = re.compile(r"^\s*version\s*:\s*(\S.*?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Guidelines:
    """The guidelines of one task: ``text`` (Markdown), ``instructions`` (the line above the task) and ``version``."""

    task: str
    text: str
    instructions: str
    version: str

    def save(self, store_root: str | os.PathLike) -> Path:
        """Write the text to ``<store>/guidelines/<version>.md`` (once; the version names the text)."""
        path = Path(store_root) / "guidelines" / f"{self.version}.md"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.text, encoding="utf-8")
        return path


def text_version(name: str, text: str) -> str:
    """``<name>+<first 12 hex digits of sha256(text)>``, with ``name`` made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "guidelines"
    return f"{safe[:64]}+{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def load_guidelines(task: str, path: str | os.PathLike | None = None) -> Guidelines:
    """The task's default guidelines, or the campaign's own Markdown file at ``path`` (see the module docstring)."""
    if task not in DEFAULT_TEXTS:
        raise ValueError(f"unknown task {task!r} (expected one of {tuple(DEFAULT_TEXTS)})")
    if path is None:
        text, name = DEFAULT_TEXTS[task], DEFAULT_NAMES[task]
    else:
        text = Path(path).read_text(encoding="utf-8")
        first, _, rest = text.partition("\n")
        declared = _VERSION_LINE.match(first)
        name = declared.group(1) if declared else Path(path).stem
        if declared:
            text = rest.lstrip("\n")
        if not text.strip():
            raise ValueError(f"{path}: the guidelines are empty")
    return Guidelines(task, text, INSTRUCTIONS[task], text_version(name, text))
