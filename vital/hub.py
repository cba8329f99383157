"""Versioned artifacts: push, load and resolve datasets and models by repo id and revision.

Every stage reads ``repo_id@revision`` and writes a new commit of its own repo (``docs/design.md``, Hub layer). One
interface, two backends:

* `HfHub`: the Hugging Face Hub (or any ``HF_ENDPOINT``), through ``datasets.push_to_hub`` and ``HfApi``.
* `LocalHub`: the embedded default, a directory laid out as a Hugging Face cache, so ``snapshot_download`` and
  ``from_pretrained(repo_id, revision=..., cache_dir=<dir>, local_files_only=True)`` and ``scan_cache_dir(<dir>)``
  read it by repo id. Commits are immutable snapshots named by a hash; branches and tags are refs; history and tags
  are kept beside the cache. Writes are atomic and serialised per repo by a file lock, so two processes pushing to
  one repo both land, one after the other, and a crash never leaves a half-written commit behind a ref.

Pick a backend with `get_hub`: ``"local:<dir>"`` or ``"hf"``; the ``VITAL_HUB`` environment variable sets the default.

Example::

    hub = get_hub("local:outputs/hub")
    pushed = hub.push_dataset(pairs, "quickstart/pairs", card=card)
    pairs = hub.load_dataset("quickstart/pairs", revision=pushed.commit, split="train")
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextlib import suppress as _suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock
from huggingface_hub import DatasetCard, RepoCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id, yaml_dump


logger = logging.getLogger(__name__)
_VERIFIED: dict[tuple, str] = {}  # (path, inode, size, mtime, ctime) -> the sha256 it was found to have

RepoType = Literal["dataset", "model"]
DEFAULT_HUB = "local:~/.cache/vital/hub"
CARD_FILE = "README.md"
_SHA_RE = re.compile(r"[0-9a-f]{7,40}")  # a full or abbreviated commit id (always with fullmatch)
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")  # what a ref file holds
_BLOB_RE = re.compile(r"[0-9a-f]{64}")  # a blob's sha256
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_REF_CHARS_RE = re.compile(r"[A-Za-z0-9_.+/-]+")
_CONFIG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPLIT_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")  # `datasets.naming`'s split rule, ASCII only
_PATH_BAD_CHARS_RE = re.compile(r"[\x00-\x1f\x7f\\]")
_META = ".vital"  # a repo's history, tag markers, settings, lock and staging: ignored by the HF libraries
_WRITER_PREFIX = "w-"  # tmp/w-<id>/: one writer's staging folder; tmp/w-<id>.lock is held while it lives


class HubError(RuntimeError):
    """A repo, revision or file that does not exist, a name the hub refuses, or an operation the repo refuses."""


class HubIntegrityError(HubError):
    """Stored bytes differ from what their commit records: a blob, snapshot file, commit record or ref was altered or
    damaged. Names the repo, the commit and the file."""

    def __init__(self, repo_id: str, commit: str | None, file: str, problem: str):
        self.repo_id, self.commit, self.file, self.problem = repo_id, commit, file, problem
        at = f"@{commit}" if commit else ""
        super().__init__(f"{repo_id}{at}: {file}: {problem}")


# ----------------------------------------------------------------------------------------------------------------------
# Names that become paths: one validation, with the Hub's own rules where it has them
# ----------------------------------------------------------------------------------------------------------------------
NameKind = Literal["repo_id", "branch", "tag", "revision", "config", "split", "path", "commit"]


def validate_name(kind: NameKind, value: Any) -> str:
    """Check a name that becomes part of a path in a hub and return it; raise `HubError` saying why it is refused.

    * ``repo_id``: ``huggingface_hub``'s `validate_repo_id` (``name`` or ``namespace/name``; no ``--`` or ``..``),
      ASCII letters, digits, ``_.-`` only.
    * ``branch`` / ``tag``: git's ref-name rules (``git check-ref-format``): no component that starts with ``.`` or ends
      with ``.lock``, no ``..``, ``//``, ``@{``, trailing ``/`` or ``.``, no control characters, spaces or ``~^:?*[\\``;
      here also ASCII ``[A-Za-z0-9_.+/-]`` only.
    * ``revision``: a branch or tag name, or a (short) commit id.
    * ``commit``: 40 lowercase hex digits (what a ref file holds).
    * ``config``: one path component: ``[A-Za-z0-9][A-Za-z0-9_.-]*``, no ``..``.
    * ``split``: `datasets`' split rule (``\\w+(\\.\\w+)*``), ASCII.
    * ``path``: a relative POSIX path inside a repo: no empty, ``.`` or ``..`` component, no leading ``/``, no
      backslash or control character.
    """

    def refuse(why: str):
        raise HubError(f"invalid {kind.replace('_', ' ')} {value!r}: {why}")

    if not isinstance(value, str):
        refuse(f"expected a string, not {type(value).__name__}")
    if not value:
        refuse("empty")
    if kind == "repo_id":
        try:
            validate_repo_id(value)
        except HFValidationError as e:
            refuse(str(e))
        if not _REPO_ID_RE.fullmatch(value):
            refuse("expected 'name' or 'namespace/name' of ASCII letters, digits, '_', '.', '-'")
    elif kind in ("branch", "tag"):
        problem = _ref_name_problem(value)
        if problem:
            refuse(problem)
    elif kind == "revision":
        problem = None if _SHA_RE.fullmatch(value) else _ref_name_problem(value)
        if problem:
            refuse(f"neither a commit id nor a valid branch or tag name: {problem}")
    elif kind == "commit":
        if not _COMMIT_RE.fullmatch(value):
            refuse("not a commit id (40 lowercase hex digits)")
    elif kind == "config":
        if not _CONFIG_RE.fullmatch(value) or ".." in value:
            refuse("a config name is one path component of ASCII letters, digits, '_', '.', '-' (no '..')")
    elif kind == "split":
        if not _SPLIT_RE.fullmatch(value):
            refuse("a split name matches \\w+(\\.\\w+)* (ASCII)")
    elif kind == "path":
        if _PATH_BAD_CHARS_RE.search(value):
            refuse("no backslash or control character")
        if value.startswith("/"):
            refuse("an absolute path; paths in a repo are relative")
        if any(part in ("", ".", "..") for part in value.split("/")):
            refuse("no empty, '.' or '..' component")
    else:
        raise ValueError(f"unknown name kind {kind!r}")
    return value


def _ref_name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid branch or tag name (git's ref-name rules, ASCII), or None."""
    if not _REF_CHARS_RE.fullmatch(value):
        return "only ASCII letters, digits and '_.+/-' are allowed"
    if value.startswith("/") or value.endswith("/") or "//" in value:
        return "no leading, trailing or double '/'"
    if ".." in value or "@{" in value or value == "@" or value.endswith("."):
        return "no '..', '@{', lone '@' or trailing '.' (git ref-name rules)"
    if any(part.startswith(".") or part.endswith(".lock") for part in value.split("/")):
        return "no component may start with '.' or end with '.lock' (git ref-name rules)"
    return None


def _confined(base: Path, *parts: str) -> Path:
    """``base / parts``, refusing anything that would resolve outside ``base`` (defence in depth after
    `validate_name`: a symlink planted inside a hub cannot lead out of it either)."""
    path = base.joinpath(*parts)
    resolved, root = path.resolve(), base.resolve()
    if resolved != root and root not in resolved.parents:
        raise HubError(f"{'/'.join(parts)!r} resolves outside {base}")
    return path


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact at one commit: what a stage records as its input lineage."""

    repo_id: str
    repo_type: RepoType
    revision: str  # what was asked for: a branch, tag or commit
    commit: str  # what it resolved to
    config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.commit[:12]}" + (f" ({self.config})" if self.config else "")


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    repo_type: RepoType
    revision: str  # the branch written to
    commit: str  # the commit that now holds the artifact
    location: str  # a local folder or a Hub URL
    created: bool = True  # False when the content was already there and no commit was made

    def ref(self, config: str | None = None) -> ArtifactRef:
        return ArtifactRef(self.repo_id, self.repo_type, self.revision, self.commit, config)

    @property
    def oid(self) -> str:
        """The commit, under `huggingface_hub.CommitInfo`'s name."""
        return self.commit


def parse_repo_ref(spec: str, default_revision: str = "main") -> tuple[str, str]:
    """Split ``"org/name@revision"`` into ``("org/name", "revision")``; no ``@`` means ``default_revision``."""
    repo_id, sep, revision = spec.partition("@")
    if not sep:
        revision = default_revision
    if not _REPO_ID_RE.fullmatch(repo_id):
        raise HubError(f"invalid repo id {repo_id!r} in {spec!r} (expected 'name' or 'namespace/name')")
    if not revision:
        raise HubError(f"empty revision in {spec!r}")
    validate_name("repo_id", repo_id)
    validate_name("revision", revision)
    return repo_id, revision


# ----------------------------------------------------------------------------------------------------------------------
# The interface
# ----------------------------------------------------------------------------------------------------------------------
class Hub(ABC):
    """Push, load and resolve versioned artifacts. Subclasses implement the storage; the dataset and card logic is
    shared so that both backends leave the same files in a repo."""

    name: str

    @abstractmethod
    def create_repo(self, repo_id: str, repo_type: RepoType = "dataset", private: bool | None = None) -> None:
        """Create the repo if it does not exist (private unless ``private=False``)."""

    @abstractmethod
    def resolve(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> str:
        """The commit hash that ``revision`` (branch, tag or commit) points to."""

    @abstractmethod
    def create_branch(
        self, repo_id: str, branch: str, revision: str | None = None, repo_type: RepoType = "dataset", exist_ok=True
    ) -> None:
        """Create ``branch`` at ``revision`` (default: the head of ``main``)."""

    @abstractmethod
    def create_tag(
        self,
        repo_id: str,
        tag: str,
        revision: str = "main",
        repo_type: RepoType = "dataset",
        tag_message: str | None = None,
        exist_ok: bool = False,
    ) -> None:
        """Tag the commit that ``revision`` points to. Tags never move."""

    @abstractmethod
    def upload_folder(
        self,
        folder: str | Path,
        repo_id: str,
        repo_type: RepoType = "dataset",
        revision: str = "main",
        path_in_repo: str = "",
        commit_message: str = "Upload folder",
        delete_patterns: list[str] | None = None,
        private: bool | None = None,
    ) -> PushResult:
        """Add (or replace) the files of ``folder`` under ``path_in_repo`` in a new commit on branch ``revision``,
        after deleting the repo files that match ``delete_patterns``. The branch is created if needed."""

    @abstractmethod
    def snapshot(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> Path:
        """A local folder holding the repo's files at ``revision``, for ``from_pretrained`` and friends."""

    @abstractmethod
    def read_file(
        self, repo_id: str, path: str, revision: str = "main", repo_type: RepoType = "dataset"
    ) -> str | None:
        """The text of one file at ``revision``, or None if the file does not exist there."""

    @abstractmethod
    def _commit_folder(
        self,
        folder: Path,
        repo_id: str,
        repo_type: RepoType,
        revision: str,
        message: str,
        delete_patterns: Sequence[str] = (),
        edit_card: Callable[[str | None], str] | None = None,
        private: bool | None = None,
    ) -> PushResult:
        """ONE commit on branch ``revision``: delete the files matching ``delete_patterns`` from the head's tree, add
        the files of ``folder`` and, if ``edit_card`` is given, replace ``README.md`` by ``edit_card(<the head's
        README or None>)``. The head read is the one the commit replaces (no other writer can slip in between)."""

    @abstractmethod
    def _load_dataset(self, repo_id: str, name: str | None, commit: str, split: str | None, **kwargs):
        """`datasets.load_dataset` at one commit."""

    # -- shared logic -------------------------------------------------------------------------------------------------
    def ref(
        self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset", config: str | None = None
    ) -> ArtifactRef:
        """Resolve ``revision`` now and return the lineage record for it."""
        return ArtifactRef(repo_id, repo_type, revision, self.resolve(repo_id, revision, repo_type), config)

    def load_dataset(
        self, repo_id: str, name: str | None = None, revision: str = "main", split: str | None = None, **kwargs
    ):
        """Load a dataset config at ``revision`` (resolved to a commit first, so the read is pinned)."""
        if name is not None:
            validate_name("config", name)
        commit = self.resolve(repo_id, revision, "dataset")
        return self._load_dataset(repo_id, name, commit, split, **kwargs)

    def push_dataset(
        self,
        dataset,
        repo_id: str,
        config_name: str = "default",
        split: str | None = None,
        revision: str = "main",
        card: RepoCard | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
    ) -> PushResult:
        """Push a `Dataset` (as ``split``, default ``train``) or a `DatasetDict` as config ``config_name``.

        The repo's card becomes ``card``'s metadata and text, keeping the ``configs`` and ``dataset_info`` metadata
        that describe every config in the repo. Returns the one commit that holds both.
        """
        from datasets import Dataset

        value = (dataset, split) if isinstance(dataset, Dataset) and split is not None else dataset
        message = commit_message or f"Push {config_name} config"
        return self.push_datasets({config_name: value}, repo_id, revision, card, private, message)

    def push_datasets(
        self,
        configs: Mapping[str, Any],
        repo_id: str,
        revision: str = "main",
        card: RepoCard | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
        delete_configs: Sequence[str] = (),
        files: Mapping[str, str | Path] | None = None,
    ) -> PushResult:
        """Push several dataset configs, the card and any extra files as ONE commit: what one stage run writes.

        ``configs`` maps a config name to a `Dataset` (pushed as its own split, default ``train``), a
        ``(Dataset, split)`` pair, or a `DatasetDict` (replaces all the config's splits). ``delete_configs`` are
        removed (files and card metadata) in the same commit; ``files`` maps paths in the repo to local files (a
        chart, a manifest). The card's ``configs`` / ``dataset_info`` metadata is rebuilt against the head the commit
        replaces, so concurrent pushes of other configs are never lost. On the Hugging Face Hub this is one
        ``HfApi.create_commit`` with every operation.
        """
        from datasets import Dataset, DatasetDict

        validate_name("repo_id", repo_id)
        validate_name("branch", revision)
        plan, delete = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for config_name, value in configs.items():
                validate_name("config", config_name)
                split = None
                if isinstance(value, tuple):
                    value, split = value
                if not isinstance(value, Dataset | DatasetDict):
                    raise TypeError(
                        f"config {config_name!r}: push a Dataset or DatasetDict, not {type(value).__name__}"
                    )
                if isinstance(value, Dataset) and split is None:
                    split = str(value.split or "train")
                splits = {split: value} if isinstance(value, Dataset) else dict(value)
                for name in splits:
                    validate_name("split", name)
                if len({str(ds.features) for ds in splits.values()}) > 1:
                    raise ValueError(
                        f"the splits of config {config_name!r} differ in features; push each as its own config"
                    )
                data_dir = _data_dir(config_name)
                infos = {name: _write_parquet_shards(ds, Path(tmp, data_dir), name) for name, ds in splits.items()}
                # Replace this config's pushed splits (all of them for a DatasetDict), keep everything else.
                delete.append(f"{data_dir}/*" if isinstance(value, DatasetDict) else f"{data_dir}/{split}-*")
                features = next(iter(splits.values())).features
                plan.append((config_name, data_dir, infos, features, isinstance(value, DatasetDict)))
            for config_name in delete_configs:
                validate_name("config", config_name)
                delete.append(f"{_data_dir(config_name)}/*")
            for path_in_repo, local in (files or {}).items():
                target = Path(tmp, validate_name("path", path_in_repo))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local, target)

            def edit_card(current: str | None) -> str:
                readme = current
                for config_name in delete_configs:
                    readme = _card_without_config(readme, config_name)
                for config_name, data_dir, infos, features, replace_all in plan:
                    readme = _card_with_config(readme, config_name, data_dir, infos, features, replace_all)
                if readme is None:
                    readme = str(DatasetCard("---\nconfigs: []\n---\n"))
                return merge_card(readme, card) if card is not None else readme

            names = ", ".join(c[0] for c in plan) or "no"
            message = commit_message or f"Push {names} config{'s' if len(plan) != 1 else ''}"
            return self._commit_folder(Path(tmp), repo_id, "dataset", revision, message, delete, edit_card, private)

    def delete_config(self, repo_id: str, config_name: str, revision: str = "main") -> PushResult | None:
        """Remove a dataset config (its files and its card metadata) in a new commit; None if it is not there.

        `datasets` cannot load an empty split, so a stage whose side output (e.g. ``failures``) is empty this time
        deletes the config instead of leaving a stale one from an earlier run. (`push_datasets` takes
        ``delete_configs`` to do this in the same commit as the rest of a run.)
        """
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        validate_name("config", config_name)
        try:
            current = self.read_file(repo_id, CARD_FILE, revision, "dataset")
        except (HubError, RepositoryNotFoundError, RevisionNotFoundError):
            return None
        configs = DatasetCard(current or "---\nconfigs: []\n---\n").data.to_dict().get("configs") or []
        if not any(c.get("config_name") == config_name for c in configs):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return self._commit_folder(
                Path(tmp),
                repo_id,
                "dataset",
                revision,
                f"Delete {config_name} config",
                [f"{_data_dir(config_name)}/*"],
                lambda current: _card_without_config(current, config_name) or "",
            )

    def update_card(
        self,
        repo_id: str,
        edit: Callable[[str | None], str],
        revision: str = "main",
        repo_type: RepoType = "dataset",
        commit_message: str = "Update card",
    ) -> PushResult:
        """Replace ``README.md`` by ``edit(<current README or None>)`` in one commit, read and written against the same
        head (a read-modify-write no concurrent push can interleave with)."""
        with tempfile.TemporaryDirectory() as tmp:
            return self._commit_folder(Path(tmp), repo_id, repo_type, revision, commit_message, (), edit)

    def push_folder(
        self,
        folder: str | Path,
        repo_id: str,
        repo_type: RepoType = "model",
        revision: str = "main",
        card: RepoCard | None = None,
        private: bool | None = None,
        commit_message: str = "Upload folder",
        delete_patterns: list[str] | None = None,
    ) -> PushResult:
        """Push a ``save_pretrained`` folder (or any folder) with its card as one commit."""
        if card is not None:
            Path(folder, CARD_FILE).write_text(str(card), encoding="utf-8")
        self.create_repo(repo_id, repo_type, private)
        return self.upload_folder(
            folder, repo_id, repo_type, revision, commit_message=commit_message, delete_patterns=delete_patterns
        )

    def content_commit(self, repo_id: str, revision: str = "main", repo_type: RepoType = "model") -> str:
        """The commit that last changed anything but the card, on ``revision``: what a model's weights are, when
        later commits only added results to its card. Backends that cannot tell return the revision's commit."""
        return self.resolve(repo_id, revision, repo_type)

    def read_card(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> RepoCard | None:
        text = self.read_file(repo_id, CARD_FILE, revision, repo_type)
        return None if text is None else RepoCard(text)


def merge_card(current: str | None, card: RepoCard) -> str:
    """``card`` with the ``configs`` / ``dataset_info`` metadata of ``current`` (which `datasets` maintains)."""
    data = card.data.to_dict()
    if current is not None:
        current_data = RepoCard(current).data.to_dict()
        for key in ("configs", "dataset_info"):
            if key in current_data:
                data[key] = current_data[key]
    body = card.text.lstrip("\n")
    return f"---\n{yaml_dump(data, sort_keys=False).strip()}\n---\n\n{body}"


# ----------------------------------------------------------------------------------------------------------------------
# Local directory backend
# ----------------------------------------------------------------------------------------------------------------------
def warn_if_visibility_differs(
    hub: Any, repo_id: str, repo_type: str, existing: Any, asked: bool | None, how: str
) -> None:
    """Warn (once per repo of ``hub``) when a push asks for another visibility than the existing repo has: a push never
    changes a repo's visibility (``create_repo`` keeps an existing repo as it is). ``how``: how to change it."""
    if asked is None or not isinstance(existing, bool) or existing == asked:
        return
    warned = hub.__dict__.setdefault("_visibility_warned", set())
    if (repo_id, repo_type) in warned:
        return
    warned.add((repo_id, repo_type))
    logger.warning(
        "the %s repo %s exists as %s and its visibility is unchanged (hub_private_repo=%s asked for a %s one): %s",
        repo_type,
        repo_id,
        "private" if existing else "public",
        asked,
        "private" if asked else "public",
        how,
    )


class LocalHub(Hub):
    """A hub in a local directory laid out as a Hugging Face cache, so ``snapshot_download``, ``from_pretrained``,
    ``hf_hub_download`` (``cache_dir=<root>, local_files_only=True``) and ``scan_cache_dir(<root>)`` read it by repo
    id, with its history, branches and tags kept beside it in a ``.vital`` folder the Hugging Face libraries ignore::

        <root>/<datasets|models>--<namespace>--<name>/
            refs/<branch or tag>       commit id (40 hex digits, no newline: what the HF libraries read)
            snapshots/<id>/<path>      a relative symlink to ../../blobs/<sha256> per file of commit <id>
            blobs/<sha256>             file contents (read-only), shared between commits
            .vital/repo.json           repo settings (private, created)
            .vital/commits/<id>.json   parents, message, time, tree {path: blob sha256}; <id> = sha1 of the record
            .vital/tags/<tag>          the commit a tag was made at: which refs are tags (they never move)
            .vital/tmp/w-<x>/, w-<x>.lock  one writer's staging folder, and the lock it holds while it is alive
            .vital/lock                the repo's write lock
            .vital/datasets/           the `datasets` cache of this repo (never shared with another hub)

    A branch and a tag share the ``refs/`` namespace (as in the Hugging Face cache), so a name is one or the other.

    Guarantees: every read-modify-write of a commit (tree, card, metadata) happens under the repo's lock against the
    branch head it replaces; a ref moves last, so a killed writer leaves no visible trace (its staging folder is
    reclaimed by the next writer or `gc`); every file is checked against the sha256 its commit records before it is
    served (`HubIntegrityError` names repo, commit and file); every name that becomes a path passes `validate_name`.
    A commit whose file tree equals its parent's is not made: pushing the same content twice is a no-op.
    """

    name = "local"
    _migrating = False

    def __init__(self, root: str | Path):
        self.root = Path(os.path.expanduser(str(root))).resolve()

    def old_layout_repos(self) -> list[Path]:
        """The repo folders of the layout before the Hugging Face cache one (``<root>/datasets/<org>/<name>``), which
        `migrate` converts."""
        return sorted(p.parent for kind in ("datasets", "models") for p in (self.root / kind).glob("**/repo.json"))

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r})"

    # -- paths --------------------------------------------------------------------------------------------------------
    def repo_dir(self, repo_id: str, repo_type: RepoType = "dataset") -> Path:
        """``<root>/<repo_type>s--<namespace>--<name>``: the Hugging Face cache's folder for the repo."""
        if repo_type not in ("dataset", "model"):
            raise HubError(f"unknown repo type {repo_type!r}")
        validate_name("repo_id", repo_id)
        old_dirs = (self.root / "datasets").is_dir() or (self.root / "models").is_dir()
        if old_dirs and not self._migrating and self.old_layout_repos():
            raise HubError(
                f"{self.root} is a hub in the old layout (<hub>/datasets/<org>/<name>): run "
                f"`vital hub migrate --hub local:{self.root}` once to convert it to the Hugging Face cache layout"
            )
        return _confined(self.root, f"{repo_type}s--" + repo_id.replace("/", "--"))

    def _existing_repo(self, repo_id: str, repo_type: RepoType) -> Path:
        path = self.repo_dir(repo_id, repo_type)
        if not (path / _META / "repo.json").is_file():
            raise HubError(f"{repo_type} repo {repo_id!r} not found in {self.root}")
        return path

    def datasets_cache(self, repo_id: str) -> Path:
        """The `datasets` cache a dataset repo loads through: inside the repo's folder, so another hub (a copy, a
        tampered copy) with the same commit ids can never serve its rows here."""
        return self.repo_dir(repo_id, "dataset") / _META / "datasets"

    @contextmanager
    def _lock(self, repo: Path) -> Iterator[None]:
        (repo / _META).mkdir(parents=True, exist_ok=True)
        with FileLock(str(repo / _META / "lock"), timeout=600):
            yield

    @contextmanager
    def _writer(self, repo: Path) -> Iterator[Path]:
        """A staging folder ``tmp/w-<x>`` (same file system as the repo, so renames are atomic) whose lock file
        ``tmp/w-<x>.lock`` this process holds until it is done: a folder whose lock can be taken belongs to a dead
        writer and is reclaimed."""
        tmp = repo / _META / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for _attempt in range(10):
            name = f"{_WRITER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
            lock_path, staging = tmp / f"{name}.lock", tmp / name
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # a reclaimer may have taken and removed the file between its creation and our lock: start over
                if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise HubError(f"could not take a writer lock in {tmp}")
        try:
            staging.mkdir()
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with _suppress(FileNotFoundError):
                os.unlink(lock_path)
            os.close(fd)

    def _reclaim_temps(self, repo: Path, min_age_s: float = 0.0) -> tuple[int, int]:
        """Remove what killed writers left: staging folders whose lock no live process holds, and stray temp files
        of older versions (``tmp/*``, ``.<name>.<x>.tmp``) older than ``min_age_s``. Returns (entries, bytes)."""
        count = size = 0
        tmp = repo / _META / "tmp"
        now = time.time()
        entries = sorted(tmp.iterdir()) if tmp.is_dir() else []
        for lock_path in [p for p in entries if p.name.startswith(_WRITER_PREFIX) and p.suffix == ".lock"]:
            staging = lock_path.with_suffix("")
            fd = _try_flock(lock_path)
            if fd is None:
                continue  # a live writer
            try:
                size += _tree_size(staging)
                shutil.rmtree(staging, ignore_errors=True)
                with _suppress(FileNotFoundError):
                    os.unlink(lock_path)
                count += 1
            finally:
                os.close(fd)
        # List first, then the live writers: a writer takes its lock before it makes its folder, so a folder in this
        # listing whose writer is alive has its lock file in the glob below.
        candidates = [p for p in (tmp.iterdir() if tmp.is_dir() else []) if p.suffix != ".lock"]
        live = {p.with_suffix("").name for p in tmp.glob(f"{_WRITER_PREFIX}*.lock")} if tmp.is_dir() else set()
        strays = [p for p in candidates if p.name not in live]
        for kind in ("refs", f"{_META}/tags", f"{_META}/commits"):
            base = repo / kind
            strays += list(base.rglob(".*.tmp")) if base.is_dir() else []
        for stray in strays:
            try:
                if now - stray.lstat().st_mtime < min_age_s:
                    continue
            except FileNotFoundError:
                continue
            size += _tree_size(stray)
            if stray.is_dir() and not stray.is_symlink():
                shutil.rmtree(stray, ignore_errors=True)
            else:
                with _suppress(FileNotFoundError):
                    stray.unlink()
            count += 1
        return count, size

    # -- refs and commits ---------------------------------------------------------------------------------------------
    def create_repo(self, repo_id: str, repo_type: RepoType = "dataset", private: bool | None = None) -> None:
        repo = self.repo_dir(repo_id, repo_type)
        if (repo / _META / "repo.json").exists():
            settings = json.loads((repo / _META / "repo.json").read_text(encoding="utf-8"))
            how = f'set "private" in {repo / _META / "repo.json"} to change it'
            warn_if_visibility_differs(self, repo_id, repo_type, settings.get("private"), private, how)
            return
        for sub in ("refs", "snapshots", "blobs", f"{_META}/commits", f"{_META}/tags", f"{_META}/tmp"):
            (repo / sub).mkdir(parents=True, exist_ok=True)
        settings = {"repo_id": repo_id, "repo_type": repo_type, "private": True if private is None else private}
        with self._lock(repo):
            if not (repo / _META / "repo.json").exists():
                with self._writer(repo) as staging:
                    _atomic_write(repo / _META / "repo.json", json.dumps(settings, indent=2), staging)

    def _read_commit_file(self, repo: Path, rel: str, repo_id: str) -> str | None:
        """The commit id a ref file (``refs/<name>`` or ``.vital/tags/<name>``) holds, checked; None if absent."""
        path = _confined(repo, *rel.split("/"))
        if not path.is_file():
            return None
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise HubIntegrityError(repo_id or repo.name, None, rel, f"unreadable ({e})") from e
        if not _COMMIT_RE.fullmatch(text):
            raise HubIntegrityError(repo_id or repo.name, None, rel, f"holds {text[:80]!r}, not a commit id")
        return text

    def _is_tag(self, repo: Path, name: str) -> bool:
        return _confined(repo / _META / "tags", *name.split("/")).is_file()

    def _read_ref(self, repo: Path, kind: str, name: str, repo_id: str = "") -> str | None:
        """The commit the branch (``kind="heads"``) or tag (``kind="tags"``) ``name`` points at, checked: a ref file
        holding anything but a commit id is a named error. ``refs/<name>`` is the ref; ``.vital/tags/<name>`` marks
        it as a tag."""
        validate_name("branch" if kind == "heads" else "tag", name)
        if (kind == "tags") != self._is_tag(repo, name):
            return None
        return self._read_commit_file(repo, f"refs/{name}", repo_id)

    def _ref_names(self, repo: Path) -> list[str]:
        """Every valid ref name in ``refs/`` (a file that is not one, a temporary a killed writer of an older version
        left, is never a ref)."""
        base = repo / "refs"
        names = (p.relative_to(base).as_posix() for p in sorted(base.rglob("*")) if p.is_file())
        return [name for name in names if _is_valid("branch", name)]

    def list_refs(self, repo_id: str, repo_type: RepoType = "dataset") -> dict[str, dict[str, str]]:
        """``{"branches": {name: commit}, "tags": {name: commit}}``."""
        repo = self._existing_repo(repo_id, repo_type)
        out: dict[str, dict[str, str]] = {"branches": {}, "tags": {}}
        for name in self._ref_names(repo):
            commit = self._read_commit_file(repo, f"refs/{name}", repo_id)
            out["tags" if self._is_tag(repo, name) else "branches"][name] = commit
        return out

    def resolve(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> str:
        repo = self._existing_repo(repo_id, repo_type)
        validate_name("revision", revision)
        if _is_valid("branch", revision):
            commit = self._read_commit_file(repo, f"refs/{revision}", repo_id)
            if commit:
                return commit
        if _SHA_RE.fullmatch(revision):
            commits = repo / _META / "commits"
            if (commits / f"{revision}.json").is_file():
                return revision
            matches = [p.stem for p in commits.glob(f"{revision}*.json") if _is_valid("commit", p.stem)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise HubError(f"revision {revision!r} of {repo_id!r} is ambiguous ({len(matches)} commits match)")
        raise HubError(f"revision {revision!r} not found in {repo_type} repo {repo_id!r}")

    def create_branch(
        self, repo_id: str, branch: str, revision: str | None = None, repo_type: RepoType = "dataset", exist_ok=True
    ) -> None:
        """`HfApi.create_branch` on the local hub: ``branch`` at ``revision`` (default: the head of ``main``)."""
        repo = self._existing_repo(repo_id, repo_type)
        validate_name("branch", branch)
        with self._lock(repo), self._writer(repo) as staging:
            if self._is_tag(repo, branch):
                raise HubError(f"{repo_id}: {branch!r} is a tag; a branch cannot have a tag's name")
            if self._read_ref(repo, "heads", branch, repo_id) is not None:
                if exist_ok:
                    return
                raise HubError(f"branch {branch!r} already exists in {repo_id!r}")
            source = revision or "main"
            try:
                commit = self.resolve(repo_id, source, repo_type)
            except HubError:
                if revision is not None:
                    raise
                commit = None  # empty repo: the branch starts with its first commit
            if commit:
                _atomic_write(repo / "refs" / branch, commit, staging)

    def create_tag(
        self,
        repo_id: str,
        tag: str,
        revision: str = "main",
        repo_type: RepoType = "dataset",
        tag_message: str | None = None,
        exist_ok: bool = False,
    ) -> None:
        """`HfApi.create_tag` on the local hub: tag the commit ``revision`` points at. Tags never move."""
        repo = self._existing_repo(repo_id, repo_type)
        validate_name("tag", tag)
        with self._lock(repo), self._writer(repo) as staging:
            commit = self.resolve(repo_id, revision or "main", repo_type)
            current = self._read_commit_file(repo, f"refs/{tag}", repo_id)
            if current is not None and not self._is_tag(repo, tag):
                raise HubError(f"{repo_id}: {tag!r} is a branch; a tag cannot have a branch's name")
            if current is not None:
                if exist_ok and current == commit:
                    return
                raise HubError(f"tag {tag!r} already exists in {repo_id!r}; tags never move")
            # The marker first, the ref last: a killed writer leaves a marker without a ref, which is no tag.
            _atomic_write(_confined(repo / _META / "tags", *tag.split("/")), commit, staging)
            _atomic_write(repo / "refs" / tag, commit, staging)

    def _record(self, repo: Path, repo_id: str, commit: str) -> dict[str, Any]:
        """The commit record of ``commit``, checked: parseable, its id the hash of its content, every tree path a
        valid path and every blob id a sha256. Errors name the repo, the commit and the file."""
        validate_name("commit", commit)
        file = f"{_META}/commits/{commit}.json"
        try:
            record = json.loads((repo / file).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise HubIntegrityError(repo_id, commit, file, "missing") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HubIntegrityError(repo_id, commit, file, f"corrupt commit record ({e})") from e
        if not isinstance(record, dict) or not isinstance(record.get("tree"), dict):
            raise HubIntegrityError(repo_id, commit, file, "corrupt commit record (no tree)")
        body = {k: v for k, v in record.items() if k != "sha"}
        if record.get("sha") != commit or _commit_id(body) != commit:
            raise HubIntegrityError(repo_id, commit, file, "its content does not hash to its commit id")
        for path, blob in record["tree"].items():
            if not _is_valid("path", path) or not isinstance(blob, str) or not _BLOB_RE.fullmatch(blob):
                raise HubIntegrityError(repo_id, commit, file, f"invalid tree entry {path!r}")
        return record

    def commit_info(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> dict[str, Any]:
        """The commit record: ``sha``, ``parents``, ``message``, ``time``, ``tree``."""
        repo = self._existing_repo(repo_id, repo_type)
        return self._record(repo, repo_id, self.resolve(repo_id, revision, repo_type))

    def content_commit(self, repo_id: str, revision: str = "main", repo_type: RepoType = "model") -> str:
        def files(info):
            return {k: v for k, v in info["tree"].items() if k != CARD_FILE}

        history = self.history(repo_id, revision, repo_type)
        commit = history[0]
        for parent in history[1:]:
            if files(parent) != files(commit):
                break
            commit = parent
        return commit["sha"]

    def history(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> list[dict[str, Any]]:
        """Commits reachable from ``revision``, newest first (first parents only)."""
        out, info = [], self.commit_info(repo_id, revision, repo_type)
        while True:
            out.append(info)
            if not info["parents"]:
                return out
            info = self.commit_info(repo_id, info["parents"][0], repo_type)

    # -- verified reads -----------------------------------------------------------------------------------------------
    def _verify_file(self, repo: Path, repo_id: str, commit: str, path: str, blob: str) -> Path:
        """The snapshot file ``path`` of ``commit`` after checking that its bytes hash to ``blob``: either the symlink
        to ``blobs/<blob>`` (the layout this hub writes) or a regular file with those bytes (what the Hugging Face
        cache writes where symlinks are unavailable, and what a ``cp -r`` of a hub leaves)."""
        file = repo / "snapshots" / commit / path
        where = f"snapshots/{commit}/{path}"
        try:
            target = os.readlink(file)
        except FileNotFoundError as e:
            raise HubIntegrityError(repo_id, commit, path, f"missing ({where})") from e
        except OSError:  # not a link: a copy of the blob is fine if it holds exactly the committed bytes
            target = None
        if target is None:
            checked = file
        elif target != _blob_link(path, blob):
            raise HubIntegrityError(
                repo_id, commit, path, f"links to {target!r}, not to its blob {blob[:12]} ({where})"
            )
        else:
            checked = repo / "blobs" / blob
        what = f"its blob {blob[:12]}" if target is not None else f"the file ({where})"
        try:
            st = checked.lstat()
        except FileNotFoundError as e:
            raise HubIntegrityError(repo_id, commit, path, f"{what} is missing") from e
        if not stat.S_ISREG(st.st_mode):
            raise HubIntegrityError(repo_id, commit, path, f"{what} is not a regular file")
        blob_file = checked
        key = (str(blob_file), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if _VERIFIED.get(key) != blob:
            digest = sha256_file(blob_file)
            if digest != blob:
                raise HubIntegrityError(
                    repo_id, commit, path, f"content sha256 {digest[:12]} differs from the recorded {blob[:12]}"
                )
            _VERIFIED[key] = blob
        return file

    def verify(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> Path:
        """Check every file of the commit ``revision`` resolves to against its recorded sha256, and that the snapshot
        holds nothing else; return the snapshot folder. Raises `HubIntegrityError` on the first problem."""
        repo = self._existing_repo(repo_id, repo_type)
        commit = self.resolve(repo_id, revision, repo_type)
        record = self._record(repo, repo_id, commit)
        snapshot = repo / "snapshots" / commit
        if not snapshot.is_dir() or snapshot.is_symlink():
            raise HubIntegrityError(repo_id, commit, f"snapshots/{commit}", "the snapshot folder is missing")
        for path, blob in record["tree"].items():
            self._verify_file(repo, repo_id, commit, path, blob)
        extra = sorted(
            p.relative_to(snapshot).as_posix()
            for p in snapshot.rglob("*")
            if not p.is_dir() or p.is_symlink()
            if p.relative_to(snapshot).as_posix() not in record["tree"]
        )
        if extra:
            raise HubIntegrityError(repo_id, commit, extra[0], f"not part of the commit ({len(extra)} such files)")
        return snapshot

    def snapshot(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> Path:
        """The commit's folder, after `verify` (so ``from_pretrained`` reads exactly the committed bytes)."""
        return self.verify(repo_id, revision, repo_type)

    def read_file(
        self, repo_id: str, path: str, revision: str = "main", repo_type: RepoType = "dataset"
    ) -> str | None:
        validate_name("path", path)
        repo = self._existing_repo(repo_id, repo_type)
        commit = self.resolve(repo_id, revision, repo_type)
        blob = self._record(repo, repo_id, commit)["tree"].get(path)
        if blob is None:
            return None
        file = self._verify_file(repo, repo_id, commit, path, blob)
        try:
            return file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise HubError(f"{repo_id}@{commit}: {path} is not UTF-8 text ({e})") from e

    # -- writes -------------------------------------------------------------------------------------------------------
    def upload_folder(
        self,
        folder: str | Path,
        repo_id: str,
        repo_type: RepoType = "dataset",
        revision: str = "main",
        path_in_repo: str = "",
        commit_message: str = "Upload folder",
        delete_patterns: list[str] | None = None,
        private: bool | None = None,
    ) -> PushResult:
        folder = Path(folder)
        if not folder.is_dir():
            raise HubError(f"{folder} is not a folder")
        return self._commit_folder(
            folder, repo_id, repo_type, revision, commit_message, delete_patterns or (), None, private, path_in_repo
        )

    def _commit_folder(
        self,
        folder: Path,
        repo_id: str,
        repo_type: RepoType,
        revision: str,
        message: str,
        delete_patterns: Sequence[str] = (),
        edit_card: Callable[[str | None], str] | None = None,
        private: bool | None = None,
        path_in_repo: str = "",
        expected_head: str | None = None,
    ) -> PushResult:
        validate_name("branch", revision)
        prefix = path_in_repo.strip("/")
        if prefix:
            validate_name("path", prefix)
        files = {}
        for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            rel = file.relative_to(folder).as_posix()
            files[validate_name("path", f"{prefix}/{rel}" if prefix else rel)] = file
        self.create_repo(repo_id, repo_type, private)
        repo = self.repo_dir(repo_id, repo_type)
        with self._writer(repo) as staging:
            # Hash and copy the files into the staging folder outside the lock (the slow part)...
            (staging / "blobs").mkdir()
            additions = {path: _stage_blob(file, staging / "blobs") for path, file in files.items()}
            with self._lock(repo):
                # ...and everything that reads or moves the head under it, against the head it replaces.
                self._reclaim_temps(repo, min_age_s=3600)
                if self._is_tag(repo, revision):
                    raise HubError(f"{repo_id}: {revision!r} is a tag, and tags never move: push to a branch")
                parent = self._read_ref(repo, "heads", revision, repo_id)
                if parent is None and revision != "main":
                    parent = self._read_ref(repo, "heads", "main", repo_id)  # a new branch starts from main
                if expected_head is not None and parent != expected_head:
                    raise HubError(
                        f"{repo_id}@{revision} is at {parent}, not at the parent commit {expected_head} this commit "
                        "was made against: read the new head and commit again"
                    )
                parent_tree = self._record(repo, repo_id, parent)["tree"] if parent else {}
                tree = dict(parent_tree)
                for pattern in delete_patterns:
                    for path in [p for p in tree if fnmatch.fnmatch(p, pattern)]:
                        del tree[path]
                tree.update(additions)
                if edit_card is not None:
                    current = None
                    if CARD_FILE in parent_tree:
                        card_file = self._verify_file(repo, repo_id, parent, CARD_FILE, parent_tree[CARD_FILE])
                        current = card_file.read_text(encoding="utf-8")
                    card_path = staging / "card" / CARD_FILE
                    card_path.parent.mkdir()
                    card_path.write_text(edit_card(current), encoding="utf-8")
                    tree[CARD_FILE] = _stage_blob(card_path, staging / "blobs")
                location = str(repo / "snapshots")
                if parent is not None and tree == parent_tree:
                    logger.info("%s@%s already holds this content: no new commit", repo_id, revision)
                    if self._read_ref(repo, "heads", revision, repo_id) != parent:
                        _atomic_write(repo / "refs" / revision, parent, staging)
                    return PushResult(repo_id, repo_type, revision, parent, f"{location}/{parent}", created=False)
                for blob in set(tree.values()) - set(parent_tree.values()):
                    if not (repo / "blobs" / blob).is_file() and (staging / "blobs" / blob).is_file():
                        os.replace(staging / "blobs" / blob, repo / "blobs" / blob)
                record = {
                    "parents": [parent] if parent else [],
                    "message": message,
                    "time": time.time(),
                    "tree": dict(sorted(tree.items())),
                }
                commit = _commit_id(record)
                record = {"sha": commit, **record}
                # Materialise the snapshot in staging, then rename it into place: readers never see a partial one.
                snapshot = staging / "snapshot"
                snapshot.mkdir()
                for path, blob in tree.items():
                    target = snapshot / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(_blob_link(path, blob), target)  # relative: valid once renamed into snapshots/
                if (repo / "snapshots" / commit).exists():  # a leftover of a writer killed before its ref moved
                    shutil.rmtree(repo / "snapshots" / commit)
                os.replace(snapshot, repo / "snapshots" / commit)
                _atomic_write(repo / _META / "commits" / f"{commit}.json", json.dumps(record, indent=1), staging)
                _atomic_write(repo / "refs" / revision, commit, staging)  # the commit becomes visible here
        logger.info("pushed %s %s@%s -> %s", repo_type, repo_id, revision, commit[:12])
        return PushResult(repo_id, repo_type, revision, commit, f"{location}/{commit}")

    # -- Hugging Face Hub vocabulary ----------------------------------------------------------------------------------
    def create_commit(
        self,
        repo_id: str,
        operations: Sequence[Any],
        commit_message: str,
        repo_type: RepoType = "dataset",
        revision: str = "main",
        parent_commit: str | None = None,
        private: bool | None = None,
    ) -> PushResult:
        """`HfApi.create_commit` on the local hub: ``CommitOperationAdd`` / ``CommitOperationDelete`` operations as one
        commit; with ``parent_commit``, refused (`HubError`) if the branch has moved since, as the Hub does."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        deletes = []
        with tempfile.TemporaryDirectory() as tmp:
            for op in operations:
                if isinstance(op, CommitOperationAdd):
                    target = Path(tmp, validate_name("path", op.path_in_repo))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with op.as_file() as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                elif isinstance(op, CommitOperationDelete):
                    path = validate_name("path", op.path_in_repo.rstrip("/"))
                    deletes.append(glob.escape(path) + ("/*" if op.is_folder else ""))
                else:
                    raise HubError(f"{repo_id}: the local hub does not support {type(op).__name__}")
            if parent_commit is not None:
                validate_name("commit", parent_commit)
            return self._commit_folder(
                Path(tmp), repo_id, repo_type, revision, commit_message, deletes, None, private, "", parent_commit
            )

    def list_repo_refs(self, repo_id: str, repo_type: RepoType = "dataset"):
        """`HfApi.list_repo_refs` on the local hub: a `huggingface_hub.GitRefs` (`list_refs` gives a plain dict)."""
        from huggingface_hub.hf_api import GitRefInfo, GitRefs

        refs = self.list_refs(repo_id, repo_type)
        return GitRefs(
            branches=[GitRefInfo(n, f"refs/heads/{n}", c) for n, c in refs["branches"].items()],
            converts=[],
            tags=[GitRefInfo(n, f"refs/tags/{n}", c) for n, c in refs["tags"].items()],
        )

    def list_repo_commits(self, repo_id: str, repo_type: RepoType = "dataset", revision: str = "main"):
        """`HfApi.list_repo_commits` on the local hub: `huggingface_hub.GitCommitInfo` s, newest first (`history`
        gives the raw records)."""
        from datetime import UTC, datetime

        from huggingface_hub.hf_api import GitCommitInfo

        return [
            GitCommitInfo(
                commit_id=info["sha"],
                authors=[],
                created_at=datetime.fromtimestamp(info["time"], tz=UTC),
                title=info["message"].split("\n")[0],
                message=info["message"],
                formatted_title=None,
                formatted_message=None,
            )
            for info in self.history(repo_id, revision, repo_type)
        ]

    # -- maintenance --------------------------------------------------------------------------------------------------
    def fsck(self, repo_id: str, repo_type: RepoType = "dataset") -> list[str]:
        """Everything wrong with a repo, one line each (empty when it is sound): refs that are not valid names or do
        not hold a commit id, tags that moved, commit records that are corrupt or do not hash to their id, blobs whose
        bytes differ from their recorded sha256, snapshot files that are not links to their blob, missing or extra
        files, temporaries a killed writer left."""
        repo = self._existing_repo(repo_id, repo_type)
        problems: list[str] = []
        base = repo / "refs"
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            name = path.relative_to(base).as_posix()
            if not _is_valid("branch", name):
                problems.append(f"refs/{name}: not a valid ref name (a leftover temporary?)")
                continue
            try:
                commit = self._read_commit_file(repo, f"refs/{name}", repo_id)
                if not (repo / _META / "commits" / f"{commit}.json").is_file():
                    problems.append(f"refs/{name}: points at a missing commit {commit}")
                if self._is_tag(repo, name):
                    tagged = self._read_commit_file(repo, f"{_META}/tags/{name}", repo_id)
                    if tagged != commit:
                        problems.append(f"refs/{name}: the tag was made at {tagged} but points at {commit}")
            except HubError as e:
                problems.append(str(e))
        tags = repo / _META / "tags"
        for path in sorted(p for p in tags.rglob("*") if p.is_file()):
            name = path.relative_to(tags).as_posix()
            if _is_valid("tag", name) and not (repo / "refs" / name).is_file():
                problems.append(f"{_META}/tags/{name}: a tag marker without its ref (a killed `create_tag`?)")
        blobs_checked: set[str] = set()
        for record_file in sorted((repo / _META / "commits").glob("*.json")):
            commit = record_file.stem
            if not _is_valid("commit", commit):
                problems.append(f"{_META}/commits/{record_file.name}: not a commit record name")
                continue
            try:
                tree = self._record(repo, repo_id, commit)["tree"]
            except HubError as e:
                problems.append(str(e))
                continue
            for path, blob in tree.items():
                blob_file = repo / "blobs" / blob
                if blob not in blobs_checked:
                    blobs_checked.add(blob)
                    if not blob_file.is_file():
                        problems.append(f"{repo_id}@{commit}: {path}: blob {blob[:12]} is missing")
                    elif sha256_file(blob_file) != blob:
                        problems.append(f"{repo_id}@{commit}: {path}: blob {blob[:12]} is corrupt")
            try:
                self.verify(repo_id, commit, repo_type)
            except HubError as e:
                problems.append(str(e))
        tmp = repo / _META / "tmp"
        leftovers = [p.name for p in tmp.iterdir()] if tmp.is_dir() else []
        if leftovers:
            problems.append(f"{_META}/tmp/: {len(leftovers)} leftover temporaries (run `vital hub gc`)")
        return problems

    def gc(self, repo_id: str, repo_type: RepoType = "dataset") -> dict[str, int]:
        """Reclaim what killed writers left and what no ref can reach: staging folders of dead writers, stray temp
        files, commits (and their snapshots) unreachable from every branch and tag, and blobs no commit uses.
        Returns counts and the bytes freed."""
        repo = self._existing_repo(repo_id, repo_type)
        out = {"temporaries": 0, "commits": 0, "snapshots": 0, "blobs": 0, "bytes": 0}
        with self._lock(repo):
            out["temporaries"], out["bytes"] = self._reclaim_temps(repo)
            reachable: set[str] = set()
            refs = self.list_refs(repo_id, repo_type)
            for commit in [*refs["branches"].values(), *refs["tags"].values()]:
                while commit and commit not in reachable:
                    reachable.add(commit)
                    parents = self._record(repo, repo_id, commit)["parents"]
                    commit = parents[0] if parents else None
            used: set[str] = set()
            for record_file in sorted((repo / _META / "commits").glob("*.json")):
                if record_file.stem in reachable:
                    used.update(self._record(repo, repo_id, record_file.stem)["tree"].values())
                    continue
                out["bytes"] += record_file.stat().st_size
                record_file.unlink()
                out["commits"] += 1
            for snapshot in sorted((repo / "snapshots").iterdir()):
                if snapshot.name not in reachable:
                    shutil.rmtree(snapshot)  # symlinks: the bytes are counted with the blobs
                    out["snapshots"] += 1
            for blob in sorted((repo / "blobs").iterdir()):
                if blob.name not in used:
                    out["bytes"] += blob.stat().st_size
                    blob.unlink()
                    out["blobs"] += 1
        return out

    def migrate(self) -> list[str]:
        """Convert every repo of the old layout (``<root>/datasets/<org>/<name>`` with ``refs/heads``, ``refs/tags``,
        ``commits``, hard-linked snapshots) to the Hugging Face cache layout. Commit ids, history, branches and tags
        are kept; each converted repo must pass `fsck` before its old folder is removed, so a failure (or a kill)
        leaves the old repo whole and the migration can run again. Returns the ``<type>:<repo_id>`` converted."""
        done = []
        for old in self.old_layout_repos():
            settings = json.loads((old / "repo.json").read_text(encoding="utf-8"))
            repo_id, repo_type = settings["repo_id"], settings["repo_type"]
            validate_name("repo_id", repo_id)
            new = _confined(self.root, f"{repo_type}s--" + repo_id.replace("/", "--"))
            shutil.rmtree(new, ignore_errors=True)  # a previous, interrupted run's partial copy
            refs = {}
            for kind in ("heads", "tags"):
                base = old / "refs" / kind
                for path in sorted(p for p in base.rglob("*") if p.is_file()):
                    name = path.relative_to(base).as_posix()
                    if not _is_valid("branch", name):
                        continue  # a temporary a killed writer left
                    if name in refs:
                        raise HubError(
                            f"{repo_type} repo {repo_id!r}: {name!r} is both a branch and a tag, and the Hugging Face "
                            f"cache has one namespace for both: delete or rename one in {old / 'refs'} and run again"
                        )
                    refs[name] = (kind, path.read_text(encoding="utf-8").strip())
            for sub in ("refs", "snapshots", "blobs", f"{_META}/commits", f"{_META}/tags", f"{_META}/tmp"):
                (new / sub).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(old / "repo.json", new / _META / "repo.json")
            for blob in (old / "blobs").iterdir():
                if _BLOB_RE.fullmatch(blob.name):
                    _link_or_copy(blob, new / "blobs" / blob.name)
            for record_file in (old / "commits").glob("*.json"):
                if not _is_valid("commit", record_file.stem):
                    continue
                shutil.copyfile(record_file, new / _META / "commits" / record_file.name)
                record = self._record(new, repo_id, record_file.stem)
                snapshot = new / "snapshots" / record_file.stem
                for path, blob in record["tree"].items():
                    (snapshot / path).parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(_blob_link(path, blob), snapshot / path)
            for name, (kind, commit) in refs.items():
                if kind == "tags":
                    _atomic_write(_confined(new / _META / "tags", *name.split("/")), commit)
                _atomic_write(new / "refs" / name, commit)
            self._migrating = True  # repo_dir serves the new folder while old ones remain
            try:
                problems = self.fsck(repo_id, repo_type)
            finally:
                self._migrating = False
            if problems:
                shutil.rmtree(new, ignore_errors=True)
                raise HubError(f"{repo_type} repo {repo_id!r} did not convert cleanly, left as it was: {problems[0]}")
            shutil.rmtree(old)
            done.append(f"{repo_type}:{repo_id}")
        for kind in ("datasets", "models"):  # the now empty namespace folders
            for folder in sorted((self.root / kind).glob("**/"), key=lambda p: -len(p.parts)):
                with _suppress(OSError):
                    folder.rmdir()
        shutil.rmtree(self.root / ".cache" / "datasets", ignore_errors=True)  # the old hub-wide `datasets` cache
        with _suppress(OSError):
            (self.root / ".cache").rmdir()
        return done

    # -- datasets -----------------------------------------------------------------------------------------------------
    def _load_dataset(self, repo_id, name, commit, split, **kwargs):
        import datasets

        path = self.verify(repo_id, commit, "dataset")
        kwargs.setdefault("cache_dir", str(self.datasets_cache(repo_id)))
        return datasets.load_dataset(str(path), name=name, split=split, **kwargs)


def _write_parquet_shards(dataset, out_dir: Path, split: str, max_shard_bytes: int = 500 << 20):
    """Write ``dataset`` as ``<split>-0000i-of-0000n.parquet`` with images embedded; returns its `SplitInfo`."""
    from datasets import SplitInfo
    from datasets.table import embed_table_storage

    out_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, -(-(dataset._estimate_nbytes() or 0) // max_shard_bytes)) if len(dataset) else 1
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
        shard = shard.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True)
        shard.with_format(None).to_parquet(str(out_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"))
    return SplitInfo(name=split, num_bytes=dataset.data.nbytes, num_examples=len(dataset))


def _card_with_config(current: str | None, config_name, data_dir, split_infos, features, replace_all: bool) -> str:
    """The README with this config's ``configs`` entry and ``dataset_info`` updated, as ``push_to_hub`` writes them."""
    from datasets import DatasetInfo, SplitDict
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    card = DatasetCard(current or "---\nconfigs: []\n---\n")
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    split_paths = {}
    info = infos.get(config_name)
    if config_name in configs and not replace_all:
        split_paths = {f["split"]: f["path"] for f in configs[config_name].get("data_files", [])}
    if info is None or replace_all or info.features != features:
        info = DatasetInfo(config_name=config_name, features=features, splits=SplitDict())
    for name, split_info in split_infos.items():
        split_paths[name] = f"{data_dir}/{name}-*"
        info.splits[name] = split_info
    info.dataset_size = sum(s.num_bytes for s in info.splits.values())
    entry = {"data_files": [{"split": s, "path": p} for s, p in split_paths.items()]}
    if configs.get(config_name, {}).get("default"):
        entry["default"] = True
    MetadataConfigs({config_name: entry}).to_dataset_card_data(card.data)
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card.data)
    return str(card)


# ----------------------------------------------------------------------------------------------------------------------
# Hugging Face Hub backend
# ----------------------------------------------------------------------------------------------------------------------
class HfHub(Hub):
    """The Hugging Face Hub, or a self-hosted / mirrored one at ``HF_ENDPOINT``; the token comes from ``HF_TOKEN``
    (or the login cache) unless given. Repos are created private unless ``private=False``."""

    name = "hf"

    def __init__(self, endpoint: str | None = None, token: str | None = None, api=None):
        from huggingface_hub import HfApi

        self.endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
        self.token = token or os.environ.get("HF_TOKEN") or None
        self.api = api or HfApi(endpoint=self.endpoint, token=self.token, library_name="biomed-vital")

    def __repr__(self) -> str:  # never print the token
        return f"HfHub(endpoint={self.endpoint!r})"

    def create_repo(self, repo_id: str, repo_type: RepoType = "dataset", private: bool | None = None) -> None:
        self.api.create_repo(repo_id, repo_type=repo_type, private=True if private is None else private, exist_ok=True)
        if private is not None:  # an existing repo keeps its visibility: say so when it is not the one asked for
            try:
                existing = self.api.repo_info(repo_id, repo_type=repo_type).private
            except Exception as error:  # noqa: BLE001 (only a warning depends on it)
                logger.debug("could not read the visibility of %s: %s", repo_id, error)
            else:
                how = "change it on the repo's settings page on the Hub"
                warn_if_visibility_differs(self, repo_id, repo_type, existing, private, how)

    def resolve(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> str:
        return self.api.repo_info(repo_id, revision=revision, repo_type=repo_type).sha

    def create_branch(
        self, repo_id: str, branch: str, revision: str | None = None, repo_type: RepoType = "dataset", exist_ok=True
    ) -> None:
        self.api.create_branch(repo_id, branch=branch, revision=revision, repo_type=repo_type, exist_ok=exist_ok)

    def create_tag(
        self,
        repo_id: str,
        tag: str,
        revision: str = "main",
        repo_type: RepoType = "dataset",
        tag_message: str | None = None,
        exist_ok: bool = False,
    ) -> None:
        self.api.create_tag(
            repo_id, tag=tag, tag_message=tag_message, revision=revision, repo_type=repo_type, exist_ok=exist_ok
        )

    def upload_folder(
        self,
        folder: str | Path,
        repo_id: str,
        repo_type: RepoType = "dataset",
        revision: str = "main",
        path_in_repo: str = "",
        commit_message: str = "Upload folder",
        delete_patterns: list[str] | None = None,
        private: bool | None = None,
    ) -> PushResult:
        self.create_repo(repo_id, repo_type, private)
        if revision != "main":
            self.create_branch(repo_id, revision, repo_type=repo_type)
        info = self.api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            path_in_repo=path_in_repo or None,
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message,
            delete_patterns=delete_patterns,
        )
        return PushResult(repo_id, repo_type, revision, info.oid, info.commit_url)

    def snapshot(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> Path:
        commit = self.resolve(repo_id, revision, repo_type)
        return Path(self.api.snapshot_download(repo_id, repo_type=repo_type, revision=commit))

    def read_file(
        self, repo_id: str, path: str, revision: str = "main", repo_type: RepoType = "dataset"
    ) -> str | None:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            local = self.api.hf_hub_download(repo_id, path, repo_type=repo_type, revision=revision)
        except EntryNotFoundError:
            return None
        return Path(local).read_text(encoding="utf-8")

    def _commit_folder(
        self,
        folder: Path,
        repo_id: str,
        repo_type: RepoType,
        revision: str,
        message: str,
        delete_patterns: Sequence[str] = (),
        edit_card: Callable[[str | None], str] | None = None,
        private: bool | None = None,
    ) -> PushResult:
        """One ``HfApi.create_commit`` holding every operation (adds, deletes, the card), with ``parent_commit`` set
        to the head the card was read at, so a concurrent push makes the Hub refuse this one instead of losing its
        changes."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self.create_repo(repo_id, repo_type, private)
        if revision != "main":
            self.create_branch(repo_id, revision, repo_type=repo_type)
        head = self.resolve(repo_id, revision, repo_type)
        adds = {
            validate_name("path", p.relative_to(folder).as_posix()): p
            for p in sorted(Path(folder).rglob("*"))
            if p.is_file()
        }
        operations: list = []
        if delete_patterns:
            existing = self.api.list_repo_files(repo_id, revision=head, repo_type=repo_type)
            operations += [
                CommitOperationDelete(path_in_repo=path)
                for path in existing
                if path not in adds and any(fnmatch.fnmatch(path, pattern) for pattern in delete_patterns)
            ]
        operations += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(file)) for path, file in adds.items()]
        if edit_card is not None:
            readme = edit_card(self.read_file(repo_id, CARD_FILE, head, repo_type))
            operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=readme.encode("utf-8")))
        info = self.api.create_commit(
            repo_id,
            operations=operations,
            commit_message=message,
            repo_type=repo_type,
            revision=revision,
            parent_commit=head,
        )
        return PushResult(repo_id, repo_type, revision, info.oid, info.commit_url)

    def _load_dataset(self, repo_id, name, commit, split, **kwargs):
        import datasets

        return datasets.load_dataset(repo_id, name=name, revision=commit, split=split, token=self.token, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
def get_hub(spec: str | Hub | None = None) -> Hub:
    """``"local:<dir>"`` -> `LocalHub`; ``"hf"`` -> `HfHub` (``HF_ENDPOINT`` and ``HF_TOKEN`` honoured).

    ``None`` reads ``VITAL_HUB``, then falls back to a local hub in ``~/.cache/vital/hub``.
    """
    if isinstance(spec, Hub):
        return spec
    spec = spec or os.environ.get("VITAL_HUB") or DEFAULT_HUB
    if spec == "hf":
        return HfHub()
    if spec.startswith("hf:"):
        return HfHub(endpoint=spec[3:])
    if spec.startswith("local:"):
        return LocalHub(spec[len("local:") :])
    raise ValueError(f"unknown hub {spec!r}: use 'local:<dir>' or 'hf'")


def _is_valid(kind: NameKind, value: Any) -> bool:
    try:
        validate_name(kind, value)
    except HubError:
        return False
    return True


def _data_dir(config_name: str) -> str:
    """Where a config's parquet files live in a dataset repo (as ``push_to_hub`` lays them out)."""
    return "data" if config_name == "default" else validate_name("config", config_name)


def _card_without_config(current: str | None, config_name: str) -> str | None:
    """The README without ``config_name``'s ``configs`` and ``dataset_info`` entries."""
    if current is None:
        return None
    card = DatasetCard(current)
    configs = card.data.to_dict().get("configs") or []
    card.data["configs"] = [c for c in configs if c.get("config_name") != config_name]
    infos = card.data.to_dict().get("dataset_info")
    if isinstance(infos, list):
        card.data["dataset_info"] = [i for i in infos if i.get("config_name") != config_name]
    elif isinstance(infos, dict) and infos.get("config_name", "default") == config_name:
        card.data["dataset_info"] = None
    return str(card)


def _commit_id(record: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _stage_blob(file: Path, blobs: Path) -> str:
    """Copy ``file`` into the staging ``blobs`` folder under its sha256 (read-only); return the sha256."""
    tmp = blobs / f".{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    with open(file, "rb") as src, open(tmp, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            dst.write(chunk)
    os.chmod(tmp, 0o444)
    os.replace(tmp, blobs / digest.hexdigest())
    return digest.hexdigest()


def _try_flock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None when another process holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _tree_size(path: Path) -> int:
    try:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    except FileNotFoundError:
        return 0


def _atomic_write(path: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary in ``tmp_dir`` (a writer's staging folder, so a kill never
    leaves a temporary among refs or commits) and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = (tmp_dir or path.parent) / f".{path.name}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o444)


def _blob_link(path: str, blob: str) -> str:
    """The relative symlink target of snapshot file ``path`` (in ``snapshots/<commit>/``): ``../../blobs/<blob>``,
    one more ``../`` per folder in ``path``, as the Hugging Face cache writes it."""
    return "../" * (path.count("/") + 2) + f"blobs/{blob}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
