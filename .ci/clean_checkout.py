"""Run a command (the test suite) and fail if it wrote anything into the checkout.

Usage: ``python .ci/clean_checkout.py [--root DIR] -- python -m pytest tests``

Tests write under their ``tmp_path``, never into the repository. This wrapper records the checkout's state, runs the
command, and compares: a path that ``git status --porcelain --ignored`` did not list before, or a file under the
checkout modified during the run, is reported by name and the exit status is 1 (the command's own status wins when
it failed). The virtual environments, tool caches and ``__pycache__`` folders are allowed. Outside a git checkout
(an sdist, say) only the modification check runs.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
import time
from pathlib import Path


# What a test run may create or touch: virtual environments, tool caches, byte code, build metadata.
ALLOWED = (
    ".git",
    ".venv",
    ".venv-*",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
)


def allowed(path: str) -> bool:
    """Whether ``path`` (relative to the checkout) is inside something a test run may write."""
    return any(fnmatch.fnmatch(part, pattern) for part in Path(path).parts for pattern in ALLOWED)


def git_status(root: Path) -> set[str] | None:
    """``git status --porcelain --ignored`` paths (untracked, ignored, modified), or None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "-z"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    entries = [e for e in done.stdout.split("\0") if e]
    paths, skip = set(), False
    for entry in entries:
        if skip:  # the source path of a rename record
            skip = False
            continue
        status, path = entry[:2], entry[3:]
        skip = status[0] in "RC"
        paths.add(f"{status} {path}")
    return paths


def holds_only_allowed(root: Path, path: str) -> bool:
    """Whether ``path`` is a folder whose files all lie in allowed places (e.g. a new package's ``__pycache__``)."""
    folder = root / path
    if not folder.is_dir() or folder.is_symlink():
        return False
    return all(allowed(str((Path(d) / f).relative_to(root))) for d, _, files in os.walk(folder) for f in files)


def modified_since(root: Path, since: float) -> list[str]:
    """Files under ``root`` (outside the allowed folders) whose modification time is after ``since``."""
    found = []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not allowed(str(rel / d))]
        for name in files:
            path = rel / name
            if allowed(str(path)):
                continue
            try:
                if os.lstat(Path(folder, name)).st_mtime > since:
                    found.append(str(path))
            except FileNotFoundError:  # removed while walking
                continue
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    """Run the command after ``--`` and report what it wrote into the checkout; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=Path(__file__).resolve().parent.parent, type=Path, help="The checkout.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to run, after --.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    root = args.root.resolve()
    before = git_status(root)
    start = time.time()
    time.sleep(0.01)  # modification times have a coarse resolution on some file systems
    status = subprocess.call(command, cwd=os.getcwd())
    written = set(modified_since(root, start))
    after = git_status(root)
    if before is not None and after is not None:
        new = {entry[3:] for entry in after - before}
        written |= {path for path in new if not allowed(path) and not holds_only_allowed(root, path)}
    if written:
        print(f"\nThe run wrote into the checkout {root} (tests must write under tmp_path):", file=sys.stderr)
        for path in sorted(written):
            print(f"  {path}", file=sys.stderr)
        return status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
