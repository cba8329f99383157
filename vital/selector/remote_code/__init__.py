"""Self-contained copies of the selector's config and model, written into every saved selector folder.

A saved selector's ``config.json`` carries an ``auto_map`` that points at ``configuration_vital_selector.py`` and
``modeling_vital_selector.py`` beside it, so anyone loads it with plain transformers calls and no biomed-vital
install::

    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained("org/selector", revision="<commit>", trust_remote_code=True)
    processor = AutoProcessor.from_pretrained("org/selector", revision="<commit>", trust_remote_code=True)
    inputs = processor(text=["Q: ...\\nA: ..."], images=[image], return_tensors="pt", padding=True)
    score = model(**inputs).logits.squeeze(-1)

The two files import only torch and transformers (open_clip optionally). They mirror
:mod:`vital.selector.modeling`; ``tests/selector/test_remote_code.py`` checks that both score identically.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


__all__ = ["AUTO_MAP", "REMOTE_CODE_FILES", "write_remote_code"]

REMOTE_CODE_DIR = Path(__file__).resolve().parent
REMOTE_CODE_FILES = ("configuration_vital_selector.py", "modeling_vital_selector.py")
AUTO_MAP = {
    "AutoConfig": "configuration_vital_selector.SelectorConfig",
    "AutoModel": "modeling_vital_selector.SelectorModel",
    "AutoModelForSequenceClassification": "modeling_vital_selector.SelectorModel",
}
"""``config.json``'s ``auto_map``: which class of the folder's own code each Auto class loads."""


def write_remote_code(save_directory: str | os.PathLike) -> list[Path]:
    """Copy the self-contained configuration and modeling files into ``save_directory``; returns their paths."""
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in REMOTE_CODE_FILES:
        target = save_directory / name
        shutil.copyfile(REMOTE_CODE_DIR / name, target)
        written.append(target)
    return written
