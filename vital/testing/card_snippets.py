"""Run the "use" snippets of cards in tests: the ```python blocks of a card, executed as written against a local hub.

A snippet names repos the way the Hub resolves them (``"org/name", ..., revision="branch-or-commit"``); here each such
reference becomes the local hub's snapshot folder of that repo at that revision, and everything else runs unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from vital.hub import LocalHub


__all__ = ["python_blocks", "run_on_local_hub"]

_LOAD_CALL = re.compile(r'"(?P<repo>[\w.-]+/[\w.-]+)"(?P<middle>[^()]*?), revision="(?P<rev>[^"]+)"')


def python_blocks(card_text: str) -> list[str]:
    """The ```python blocks of a card or template, in order."""
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.DOTALL)


def run_on_local_hub(
    code: str, hub: LocalHub, repo_type: str, namespace: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Execute ``code`` with each ``"org/name", ..., revision="rev"`` replaced by that repo's snapshot folder at
    ``rev`` on ``hub`` (a revision that does not exist fails). Returns the snippet's namespace.

    Raises AssertionError when the snippet names no repo at a revision or still holds a ``<placeholder>``.
    """
    if not _LOAD_CALL.search(code):
        raise AssertionError(f"no repo id with a revision in:\n{code}")
    if re.search(r"<[a-z][^>]*>", code):
        raise AssertionError(f"a placeholder is left in:\n{code}")

    def local(match: re.Match) -> str:
        folder = hub.snapshot(match["repo"], match["rev"], repo_type)
        return f'"{folder}"{match["middle"]}'

    scope = dict(namespace or {})
    exec(compile(_LOAD_CALL.sub(local, code), "<card snippet>", "exec"), scope)  # noqa: S102 - a test helper
    return scope
