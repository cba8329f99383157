"""Versioned artifacts: push, load and resolve datasets and models by repo id and revision.

Every stage reads ``repo_id@revision`` and writes a new commit of its own repo (``DESIGN.md`` §4). One interface, two
backends:

* `HfHub`: the Hugging Face Hub (or any ``HF_ENDPOINT``), through ``datasets.push_to_hub`` and ``HfApi``.
* `LocalHub`: the embedded default, a directory with the same repo layout. Commits are immutable snapshots named by a
  hash; branches and tags are refs; a snapshot folder is what ``datasets.load_dataset(path, name=...)`` and
  ``from_pretrained(path)`` read directly. Writes are atomic and serialised per repo by a file lock, so two processes
  pushing to one repo both land, one after the other, and a crash never leaves a half-written commit behind a ref.

Pick a backend with `get_hub`: ``"local:<dir>"`` or ``"hf"``; the ``VITAL_HUB`` environment variable sets the default.

Example::

    hub = get_hub("local:outputs/hub")
    pushed = hub.push_dataset(pairs, "quickstart/pairs", card=card)
    pairs = hub.load_dataset("quickstart/pairs", revision=pushed.commit, split="train")
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock
from huggingface_hub import DatasetCard, RepoCard
from huggingface_hub.utils import yaml_dump


logger = logging.getLogger(__name__)

RepoType = Literal["dataset", "model"]
DEFAULT_HUB = "local:~/.cache/vital/hub"
CARD_FILE = "README.md"
_SHA_RE = re.compile(r"^[0-9a-f]{7,64}$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_REF_RE = re.compile(r"^[\w.-]+(/[\w.-]+)*$")


class HubError(RuntimeError):
    """A repo, revision or file that does not exist, or an operation the repo refuses."""


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


def parse_repo_ref(spec: str, default_revision: str = "main") -> tuple[str, str]:
    """Split ``"org/name@revision"`` into ``("org/name", "revision")``; no ``@`` means ``default_revision``."""
    repo_id, sep, revision = spec.partition("@")
    if not sep:
        revision = default_revision
    if not _REPO_ID_RE.match(repo_id):
        raise HubError(f"invalid repo id {repo_id!r} in {spec!r} (expected 'name' or 'namespace/name')")
    if not revision:
        raise HubError(f"empty revision in {spec!r}")
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
    def create_tag(self, repo_id: str, tag: str, revision: str = "main", repo_type: RepoType = "dataset") -> None:
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
    def _push_dataset_files(
        self, dataset, repo_id, config_name, split, revision, private, message, card: RepoCard | None
    ) -> PushResult:
        """Write the parquet shards, the ``configs`` / ``dataset_info`` metadata of one config and the card."""

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
        that describe every config in the repo. Returns the commit that holds both.
        """
        from datasets import Dataset, DatasetDict

        if not isinstance(dataset, Dataset | DatasetDict):
            raise TypeError(f"push_dataset takes a Dataset or DatasetDict, not {type(dataset).__name__}")
        if isinstance(dataset, Dataset):
            split = split or str(dataset.split or "train")
        message = commit_message or f"Push {config_name} config"
        self.create_repo(repo_id, "dataset", private)
        if revision != "main":
            self.create_branch(repo_id, revision, repo_type="dataset")
        return self._push_dataset_files(dataset, repo_id, config_name, split, revision, private, message, card)

    def delete_config(self, repo_id: str, config_name: str, revision: str = "main") -> PushResult | None:
        """Remove a dataset config (its files and its card metadata) in a new commit; None if it is not there.

        `datasets` cannot load an empty split, so a stage whose side output (e.g. ``failures``) is empty this time
        deletes the config instead of leaving a stale one from an earlier run.
        """
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            current = self.read_file(repo_id, CARD_FILE, revision, "dataset")
        except (HubError, RepositoryNotFoundError, RevisionNotFoundError):
            return None
        card = DatasetCard(current or "---\nconfigs: []\n---\n")
        configs = card.data.to_dict().get("configs") or []
        if not any(c.get("config_name") == config_name for c in configs):
            return None
        card.data["configs"] = [c for c in configs if c.get("config_name") != config_name]
        infos = card.data.to_dict().get("dataset_info")
        if isinstance(infos, list):
            card.data["dataset_info"] = [i for i in infos if i.get("config_name") != config_name]
        data_dir = "data" if config_name == "default" else config_name
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, CARD_FILE).write_text(str(card), encoding="utf-8")
            return self.upload_folder(
                tmp,
                repo_id,
                "dataset",
                revision,
                commit_message=f"Delete {config_name} config",
                delete_patterns=[f"{data_dir}/*"],
            )

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
class LocalHub(Hub):
    """A hub in a local directory, laid out per repo as::

        <root>/<datasets|models>/<namespace>/<name>/
            refs/heads/<branch>        commit hash (text)
            refs/tags/<tag>            commit hash (text)
            commits/<hash>.json        parents, message, time, tree {path: blob sha256}
            snapshots/<hash>/...       the files of that commit (read-only; load_dataset / from_pretrained read here)
            blobs/<sha256>             file contents, shared between commits
            repo.json                  repo settings (private, created)

    A commit whose file tree equals its parent's is not made: pushing the same content twice is a no-op.
    """

    name = "local"

    def __init__(self, root: str | Path):
        self.root = Path(os.path.expanduser(str(root))).resolve()

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r})"

    # -- paths --------------------------------------------------------------------------------------------------------
    def repo_dir(self, repo_id: str, repo_type: RepoType = "dataset") -> Path:
        if repo_type not in ("dataset", "model"):
            raise HubError(f"unknown repo type {repo_type!r}")
        if not _REPO_ID_RE.match(repo_id):
            raise HubError(f"invalid repo id {repo_id!r} (expected 'name' or 'namespace/name')")
        return self.root / f"{repo_type}s" / repo_id

    def _existing_repo(self, repo_id: str, repo_type: RepoType) -> Path:
        path = self.repo_dir(repo_id, repo_type)
        if not (path / "repo.json").exists():
            raise HubError(f"{repo_type} repo {repo_id!r} not found in {self.root}")
        return path

    @contextmanager
    def _lock(self, repo: Path) -> Iterator[None]:
        with FileLock(str(repo / ".lock"), timeout=600):
            yield

    # -- refs ---------------------------------------------------------------------------------------------------------
    def create_repo(self, repo_id: str, repo_type: RepoType = "dataset", private: bool | None = None) -> None:
        repo = self.repo_dir(repo_id, repo_type)
        if (repo / "repo.json").exists():
            return
        for sub in ("refs/heads", "refs/tags", "commits", "snapshots", "blobs", "tmp"):
            (repo / sub).mkdir(parents=True, exist_ok=True)
        settings = {"repo_id": repo_id, "repo_type": repo_type, "private": True if private is None else private}
        _atomic_write(repo / "repo.json", json.dumps(settings, indent=2))

    def _read_ref(self, repo: Path, kind: str, name: str) -> str | None:
        path = repo / "refs" / kind / name
        return path.read_text().strip() if path.is_file() else None

    def list_refs(self, repo_id: str, repo_type: RepoType = "dataset") -> dict[str, dict[str, str]]:
        """``{"branches": {name: commit}, "tags": {name: commit}}``."""
        repo = self._existing_repo(repo_id, repo_type)
        out = {}
        for kind, key in (("heads", "branches"), ("tags", "tags")):
            base = repo / "refs" / kind
            out[key] = {
                p.relative_to(base).as_posix(): p.read_text().strip() for p in sorted(base.rglob("*")) if p.is_file()
            }
        return out

    def resolve(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> str:
        repo = self._existing_repo(repo_id, repo_type)
        for kind in ("heads", "tags"):
            commit = self._read_ref(repo, kind, revision) if _REF_RE.match(revision) else None
            if commit:
                return commit
        if _SHA_RE.match(revision):
            if (repo / "commits" / f"{revision}.json").exists():
                return revision
            matches = [p.stem for p in (repo / "commits").glob(f"{revision}*.json")]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise HubError(f"revision {revision!r} of {repo_id!r} is ambiguous ({len(matches)} commits match)")
        raise HubError(f"revision {revision!r} not found in {repo_type} repo {repo_id!r}")

    def create_branch(
        self, repo_id: str, branch: str, revision: str | None = None, repo_type: RepoType = "dataset", exist_ok=True
    ) -> None:
        repo = self._existing_repo(repo_id, repo_type)
        _check_ref_name(branch)
        with self._lock(repo):
            if self._read_ref(repo, "heads", branch) is not None:
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
                _atomic_write(repo / "refs" / "heads" / branch, commit)

    def create_tag(self, repo_id: str, tag: str, revision: str = "main", repo_type: RepoType = "dataset") -> None:
        repo = self._existing_repo(repo_id, repo_type)
        _check_ref_name(tag)
        with self._lock(repo):
            if self._read_ref(repo, "tags", tag) is not None:
                raise HubError(f"tag {tag!r} already exists in {repo_id!r}; tags never move")
            _atomic_write(repo / "refs" / "tags" / tag, self.resolve(repo_id, revision, repo_type))

    def commit_info(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> dict[str, Any]:
        """The commit record: ``sha``, ``parents``, ``message``, ``time``, ``tree``."""
        repo = self._existing_repo(repo_id, repo_type)
        commit = self.resolve(repo_id, revision, repo_type)
        return json.loads((repo / "commits" / f"{commit}.json").read_text())

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

    # -- files --------------------------------------------------------------------------------------------------------
    def snapshot(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> Path:
        repo = self._existing_repo(repo_id, repo_type)
        return repo / "snapshots" / self.resolve(repo_id, revision, repo_type)

    def read_file(
        self, repo_id: str, path: str, revision: str = "main", repo_type: RepoType = "dataset"
    ) -> str | None:
        file = self.snapshot(repo_id, revision, repo_type) / path
        return file.read_text(encoding="utf-8") if file.is_file() else None

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
        self.create_repo(repo_id, repo_type, private)
        repo = self.repo_dir(repo_id, repo_type)
        _check_ref_name(revision)
        prefix = path_in_repo.strip("/")
        # Blobs first, outside the lock: they are content-addressed, so concurrent writers cannot clash.
        additions = {}
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = file.relative_to(folder).as_posix()
            additions[f"{prefix}/{rel}" if prefix else rel] = self._store_blob(repo, file)
        with self._lock(repo):
            parent = self._read_ref(repo, "heads", revision)
            if parent is None and revision != "main":
                parent = self._read_ref(repo, "heads", "main")  # a new branch starts from main, as on the Hub
            tree = dict(json.loads((repo / "commits" / f"{parent}.json").read_text())["tree"]) if parent else {}
            for pattern in delete_patterns or []:
                for path in [p for p in tree if fnmatch.fnmatch(p, pattern)]:
                    del tree[path]
            tree.update(additions)
            location = str(repo / "snapshots")
            if parent is not None and tree == json.loads((repo / "commits" / f"{parent}.json").read_text())["tree"]:
                logger.info("%s@%s already holds this content: no new commit", repo_id, revision)
                _atomic_write(repo / "refs" / "heads" / revision, parent)
                return PushResult(repo_id, repo_type, revision, parent, f"{location}/{parent}", created=False)
            record = {
                "parents": [parent] if parent else [],
                "message": commit_message,
                "time": time.time(),
                "tree": dict(sorted(tree.items())),
            }
            commit = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()
            record = {"sha": commit, **record}
            # Materialise the snapshot in tmp/, then rename it into place: readers never see a partial snapshot.
            staging = repo / "tmp" / f"snapshot-{uuid.uuid4().hex}"
            for path, blob in tree.items():
                target = staging / path
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(repo / "blobs" / blob, target)
            staging.mkdir(parents=True, exist_ok=True)
            os.replace(staging, repo / "snapshots" / commit)
            _atomic_write(repo / "commits" / f"{commit}.json", json.dumps(record, indent=1))
            _atomic_write(repo / "refs" / "heads" / revision, commit)  # the commit becomes visible here
        logger.info("pushed %s %s@%s -> %s", repo_type, repo_id, revision, commit[:12])
        return PushResult(repo_id, repo_type, revision, commit, f"{location}/{commit}")

    def _store_blob(self, repo: Path, file: Path) -> str:
        digest = sha256_file(file)
        blob = repo / "blobs" / digest
        if not blob.exists():
            tmp = repo / "tmp" / f"blob-{uuid.uuid4().hex}"
            shutil.copyfile(file, tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, blob)
        return digest

    # -- datasets -----------------------------------------------------------------------------------------------------
    def _push_dataset_files(self, dataset, repo_id, config_name, split, revision, private, message, card):
        from datasets import Dataset

        data_dir = "data" if config_name == "default" else config_name
        splits = {split: dataset} if isinstance(dataset, Dataset) else dict(dataset)
        if len({str(ds.features) for ds in splits.values()}) > 1:
            raise ValueError(f"the splits of config {config_name!r} differ in features; push each as its own config")
        with tempfile.TemporaryDirectory() as tmp:
            split_infos = {name: _write_parquet_shards(ds, Path(tmp, data_dir), name) for name, ds in splits.items()}
            # Replace this config's pushed splits (all of them for a DatasetDict), keep everything else.
            delete = [f"{data_dir}/*"] if not isinstance(dataset, Dataset) else [f"{data_dir}/{split}-*"]
            try:
                current = self.read_file(repo_id, CARD_FILE, revision, "dataset")
            except HubError:
                current = None
            features = next(iter(splits.values())).features
            readme = _card_with_config(current, config_name, data_dir, split_infos, features, replace_all=not split)
            if card is not None:
                readme = merge_card(readme, card)
            Path(tmp, CARD_FILE).write_text(readme, encoding="utf-8")
            return self.upload_folder(tmp, repo_id, "dataset", revision, "", message, delete, private)

    def _load_dataset(self, repo_id, name, commit, split, **kwargs):
        import datasets

        path = self.repo_dir(repo_id, "dataset") / "snapshots" / commit
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

    def resolve(self, repo_id: str, revision: str = "main", repo_type: RepoType = "dataset") -> str:
        return self.api.repo_info(repo_id, revision=revision, repo_type=repo_type).sha

    def create_branch(
        self, repo_id: str, branch: str, revision: str | None = None, repo_type: RepoType = "dataset", exist_ok=True
    ) -> None:
        self.api.create_branch(repo_id, branch=branch, revision=revision, repo_type=repo_type, exist_ok=exist_ok)

    def create_tag(self, repo_id: str, tag: str, revision: str = "main", repo_type: RepoType = "dataset") -> None:
        self.api.create_tag(repo_id, tag=tag, revision=revision, repo_type=repo_type)

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

    def _push_dataset_files(self, dataset, repo_id, config_name, split, revision, private, message, card):
        from datasets import Dataset

        kwargs = {"split": split} if isinstance(dataset, Dataset) else {}
        info = dataset.push_to_hub(
            repo_id,
            config_name=config_name,
            revision=revision,
            private=True if private is None else private,
            token=self.token,
            commit_message=message,
            **kwargs,
        )
        pushed = PushResult(repo_id, "dataset", revision, info.oid, info.commit_url)
        if card is None:
            return pushed
        # push_to_hub wrote the configs / dataset_info metadata; keep them and put our card around them.
        readme = merge_card(self.read_file(repo_id, CARD_FILE, pushed.commit, "dataset"), card)
        carded = self.api.upload_file(
            path_or_fileobj=readme.encode("utf-8"),
            path_in_repo=CARD_FILE,
            repo_id=repo_id,
            repo_type="dataset",
            revision=revision,
            commit_message=f"{message}: card",
            parent_commit=pushed.commit,
        )
        return PushResult(repo_id, "dataset", revision, carded.oid, carded.commit_url)

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


def _check_ref_name(name: str) -> None:
    if not _REF_RE.match(name) or ".." in name:
        raise HubError(f"invalid branch or tag name {name!r}")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
