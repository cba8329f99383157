"""Bringing the released data in: BioMed-VITAL / LLaVA-Med instruction files plus their images.

Images come from a local folder, or are downloaded from an image-URL list in one of two layouts:

* ``{"image": "<file name>", "url": "<image URL>"}`` (JSONL or CSV): each image fetched directly (`download_images`);
* LLaVA-Med's ``{"pair_id", "image_file_path", "pmc_tar_url"}`` (JSONL): each figure lives inside a PMC article
  tarball; every tarball is downloaded once (several figures share one), the named member is extracted as
  ``<pair_id>.jpg`` with its bytes unchanged (a PNG stays a PNG under that name, as LLaVA-Med's own script copies it)
  (`download_pmc_figures`).

Downloads retry with exponential backoff; links that stay dead, archives that are truncated or corrupt and members
that are not in their archive are skipped and listed in a manifest with the reason; the manifest is appended as each
outcome is known, so an interrupted import resumes where it stopped (images on disk and valid, and archives fully
fetched, are not fetched again).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class DownloadOutcome:
    image: str
    url: str
    status: str  # ok | dead | invalid
    attempts: int
    error: str = ""
    member: str = ""  # PMC archives: the member the image was extracted from


def read_url_list(path: str | Path) -> list[tuple[str, str]]:
    """(image file name, URL) pairs from a JSONL (``{"image": ..., "url": ...}``) or CSV with those columns."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = []
            with open(path, "rb") as f:
                for line_no, raw in enumerate(f, start=1):
                    try:
                        line = raw.decode("utf-8")
                        if line.strip():
                            rows.append(json.loads(line))
                    except (UnicodeDecodeError, json.JSONDecodeError) as e:
                        raise ValueError(f"{path}: line {line_no}: {type(e).__name__}: {e}") from e
    except UnicodeDecodeError as e:  # CSV
        raise ValueError(f"{path}: not UTF-8 ({e})") from e
    out = []
    for i, row in enumerate(rows):
        image, url = row.get("image") or row.get("image_file"), row.get("url") or row.get("image_url")
        if not image or not url:
            raise ValueError(f"{path}: row {i} needs 'image' and 'url', got keys {sorted(row)}")
        if os.path.basename(image) != image:
            raise ValueError(f"{path}: row {i}: image must be a file name, got {image!r}")
        out.append((image, url))
    return out


def _valid_image(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # PIL raises many types for bad data
        return f"not an image ({type(e).__name__})"
    return ""


def fetch(
    url: str, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 30.0
) -> tuple[bytes | None, int, str]:
    """GET ``url``: (body, attempts, error). 404/410 are final; other failures retry with jittered backoff."""
    error = ""
    for attempt in range(1, retries + 2):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as reply:
                return reply.read(), attempt, ""
        except urllib.error.HTTPError as e:
            error = f"http {e.code}"
            if e.code in (400, 401, 403, 404, 410):
                return None, attempt, error
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if attempt <= retries:
            time.sleep(random.uniform(0, backoff_s * 2 ** (attempt - 1)))
    return None, retries + 1, error


def download_images(
    urls: Iterable[tuple[str, str]],
    image_dir: str | Path,
    workers: int = 8,
    retries: int = 4,
    backoff_s: float = 1.0,
    retry_dead: bool = False,
) -> dict[str, DownloadOutcome]:
    """Download every image not yet in ``image_dir`` (valid), appending one manifest line per outcome. Links the
    manifest already lists as dead (or serving something that is not an image) are not tried again unless
    ``retry_dead``.

    Returns the outcome of every image by file name (earlier runs' outcomes included, from the manifest).
    """
    from tqdm.auto import tqdm

    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = image_dir / MANIFEST
    outcomes: dict[str, DownloadOutcome] = {}
    if manifest_path.exists():
        for line in manifest_path.read_text(encoding="utf-8").splitlines():
            try:
                outcomes[json.loads(line)["image"]] = DownloadOutcome(**json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash: that image is simply tried again
    todo = []
    for image, url in urls:
        target = image_dir / image
        if target.exists() and not _valid_image(target.read_bytes()):
            outcomes.setdefault(image, DownloadOutcome(image, url, "ok", 0))
            continue
        if image in outcomes and outcomes[image].status != "ok" and not retry_dead:
            continue  # already known dead or invalid: listed in the manifest, not hammered again
        todo.append((image, url))

    def one(item: tuple[str, str]) -> DownloadOutcome:
        image, url = item
        data, attempts, error = fetch(url, retries, backoff_s)
        if data is None:
            return DownloadOutcome(image, url, "dead", attempts, error)
        problem = _valid_image(data)
        if problem:
            return DownloadOutcome(image, url, "invalid", attempts, problem)
        tmp = image_dir / f".{image}.part"
        tmp.write_bytes(data)
        os.replace(tmp, image_dir / image)
        return DownloadOutcome(image, url, "ok", attempts)

    with open(manifest_path, "a", encoding="utf-8") as manifest, ThreadPoolExecutor(workers) as pool:
        for outcome in tqdm(pool.map(one, todo), total=len(todo), desc="images", unit="img", disable=not todo):
            outcomes[outcome.image] = outcome
            manifest.write(json.dumps(outcome.__dict__) + "\n")
            manifest.flush()
    dead = sum(o.status != "ok" for o in outcomes.values())
    logger.info("images: %d downloaded now, %d unavailable (see %s)", len(todo), dead, manifest_path)
    return outcomes


# --------------------------------------------------------------------------------------------------------------------
# LLaVA-Med's image URL list: figures inside PMC article tarballs
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PmcFigure:
    pair_id: str
    member: str  # ``image_file_path``: the figure's path inside the extracted archive (e.g. PMC123/fig1.jpg)
    tar_url: str

    @property
    def image(self) -> str:
        """The file name the figure is saved under, as LLaVA-Med's script does: ``<pair_id>.jpg``."""
        return f"{self.pair_id}.jpg"


def is_pmc_url_list(path: str | Path) -> bool:
    """True when the first row of a JSONL URL list has LLaVA-Med's ``pmc_tar_url`` layout."""
    path = Path(path)
    if path.suffix == ".csv":
        return False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return "pmc_tar_url" in json.loads(line)
    return False


def read_pmc_url_list(path: str | Path) -> list[PmcFigure]:
    """The rows of LLaVA-Med's ``llava_med_image_urls.jsonl`` (``pair_id``, ``image_file_path``, ``pmc_tar_url``).

    Raises ValueError naming the line for a row without those keys, a line that is not UTF-8 or JSON, or a ``pair_id``
    that is not a plain file name (it names the file written).
    """
    path = Path(path)
    out = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                row = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: line {line_no}: {type(e).__name__}: {e}") from e
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k] for k in PMC_KEYS):
                raise ValueError(f"{path}: line {line_no}: needs {', '.join(PMC_KEYS)}, got {row!r:.200}")
            pair_id = row["pair_id"]
            if os.path.basename(pair_id) != pair_id or pair_id in (".", ".."):
                raise ValueError(f"{path}: line {line_no}: pair_id must be a plain file name, got {pair_id!r}")
            out.append(PmcFigure(pair_id, row["image_file_path"], row["pmc_tar_url"]))
    return out


PMC_KEYS = ("pair_id", "image_file_path", "pmc_tar_url")


def fetch_to_file(
    url: str, target: Path, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 60.0
) -> tuple[bool, int, str]:
    """GET ``url`` into ``target`` (streamed, through ``<target>.part`` and an atomic rename): (ok, attempts, error).
    404/410 and other client errors are final; other failures retry with jittered backoff."""
    import http.client
    import shutil

    error = ""
    part = target.with_name(target.name + ".part")
    for attempt in range(1, retries + 2):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as reply, open(part, "wb") as out:
                shutil.copyfileobj(reply, out, 1 << 20)
            os.replace(part, target)
            return True, attempt, ""
        except urllib.error.HTTPError as e:
            error = f"http {e.code}"
            if e.code in (400, 401, 403, 404, 410):
                return False, attempt, error
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as e:
            error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if attempt <= retries:
            time.sleep(random.uniform(0, backoff_s * 2 ** (attempt - 1)))
    part.unlink(missing_ok=True)
    return False, retries + 1, error


def download_pmc_figures(
    figures: Iterable[PmcFigure],
    image_dir: str | Path,
    workers: int = 4,
    retries: int = 4,
    backoff_s: float = 1.0,
    retry_dead: bool = False,
    keep_archives: bool = False,
) -> dict[str, DownloadOutcome]:
    """Download every PMC archive that holds a figure not yet in ``image_dir``, once, and extract the named members.

    Outcomes (one manifest line per figure, appended as each archive is done): ``ok``; ``dead`` (the archive's link
    failed after its retries); ``invalid`` (the archive is truncated or corrupt, or the member is not an image);
    ``missing`` (the archive has no such member). Archives are kept under ``image_dir/.pmc/`` until all their figures
    are out (``keep_archives`` keeps them after), so a run killed after a download resumes without fetching it again.
    Only the named members are read (never ``extractall``), so archive paths cannot write outside the folder.

    Returns the outcome of every figure by image file name (earlier runs' outcomes included, from the manifest).
    """
    import tarfile
    import zlib

    from tqdm.auto import tqdm

    image_dir = Path(image_dir)
    archives_dir = image_dir / ".pmc"
    archives_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = image_dir / MANIFEST
    outcomes = _read_manifest(manifest_path)
    by_archive: dict[str, list[PmcFigure]] = {}
    for figure in figures:
        target = image_dir / figure.image
        if target.exists() and not _valid_image(target.read_bytes()):
            outcomes.setdefault(
                figure.image, DownloadOutcome(figure.image, figure.tar_url, "ok", 0, "", figure.member)
            )
            continue
        known = outcomes.get(figure.image)
        if known is not None and known.status != "ok" and not retry_dead:
            continue  # known dead, corrupt or missing: listed in the manifest, not fetched again
        by_archive.setdefault(figure.tar_url, []).append(figure)

    def one(item: tuple[str, list[PmcFigure]]) -> list[DownloadOutcome]:
        url, wanted = item
        name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + (os.path.basename(url.split("?")[0]) or "archive")
        archive = archives_dir / name
        attempts = 0
        if not archive.exists():
            ok, attempts, error = fetch_to_file(url, archive, retries, backoff_s)
            if not ok:
                return [DownloadOutcome(f.image, url, "dead", attempts, error, f.member) for f in wanted]
        results = []
        try:
            with tarfile.open(archive, "r:*") as tar:
                for figure in wanted:
                    try:
                        member = tar.getmember(figure.member)
                    except KeyError:
                        results.append(
                            DownloadOutcome(
                                figure.image, url, "missing", attempts, "member not in the archive", figure.member
                            )
                        )
                        continue
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    problem = _valid_image(data) if data else "not a regular file"
                    if problem:
                        results.append(DownloadOutcome(figure.image, url, "invalid", attempts, problem, figure.member))
                        continue
                    tmp = image_dir / f".{figure.image}.part"
                    tmp.write_bytes(data)  # the member's own bytes: a PNG stays a PNG under <pair_id>.jpg
                    os.replace(tmp, image_dir / figure.image)
                    results.append(DownloadOutcome(figure.image, url, "ok", attempts, "", figure.member))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            done = {r.image for r in results}
            error = f"truncated or corrupt archive ({type(e).__name__}: {e})"
            results += [
                DownloadOutcome(f.image, url, "invalid", attempts, error, f.member)
                for f in wanted
                if f.image not in done
            ]
            archive.unlink(missing_ok=True)  # a later --retry_dead fetches it afresh
            return results
        if not keep_archives:
            archive.unlink(missing_ok=True)
        return results

    todo = list(by_archive.items())
    with open(manifest_path, "a", encoding="utf-8") as manifest, ThreadPoolExecutor(workers) as pool:
        for results in tqdm(pool.map(one, todo), total=len(todo), desc="archives", unit="tar", disable=not todo):
            for outcome in results:
                outcomes[outcome.image] = outcome
                manifest.write(json.dumps(outcome.__dict__) + "\n")
            manifest.flush()
    bad = sum(o.status != "ok" for o in outcomes.values())
    logger.info(
        "PMC figures: %d archive(s) fetched now, %d figure(s) unavailable (see %s)", len(todo), bad, manifest_path
    )
    return outcomes


def _read_manifest(manifest_path: Path) -> dict[str, DownloadOutcome]:
    outcomes: dict[str, DownloadOutcome] = {}
    if manifest_path.exists():
        for line in manifest_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                outcomes[json.loads(line)["image"]] = DownloadOutcome(**json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash: that image is simply tried again
    return outcomes


# ----------------------------------------------------------------------------------------------------------------------
# The import: images on disk, then one dataset per released file (used by `vital import`, vital/stages/import_released)
# ----------------------------------------------------------------------------------------------------------------------
def fetch_missing_images(
    url_list: str | Path | None,
    image_dir: str | Path,
    workers: int = 8,
    retries: int = 4,
    backoff_s: float = 1.0,
    retry_dead: bool = False,
) -> int:
    """Download the images of ``url_list`` missing from ``image_dir`` (either layout: direct image URLs, or LLaVA-Med's
    PMC tarballs); returns how many could not be had (dead links, bad archives), all listed in the manifest. Without a
    URL list the images are expected on disk already and nothing is fetched (returns 0)."""
    if not url_list:
        return 0
    if is_pmc_url_list(url_list):  # LLaVA-Med: figures inside PMC article tarballs
        outcomes = download_pmc_figures(
            read_pmc_url_list(url_list), image_dir, workers, retries, backoff_s, retry_dead
        )
    else:
        outcomes = download_images(read_url_list(url_list), image_dir, workers, retries, backoff_s, retry_dead)
    return sum(o.status != "ok" for o in outcomes.values())


@dataclass
class ImportedFiles:
    """The released files converted to TRL rows: one dataset per config, the refused records of all of them (with a
    ``config`` column), the lineage inputs (path and hash of each file) and one summary row per config for the card."""

    datasets: dict[str, Any]
    quarantine: Any
    inputs: list[dict[str, str]]
    table: list[dict[str, Any]]


def convert_released_files(
    files: dict[str, str], image_dir: str | Path, errors: str = "skip", image_placement: str = "first_turn"
) -> ImportedFiles:
    """Convert each ``config -> path`` of released LLaVA / BioMed-VITAL JSON with `llava_to_messages`; bad records are
    quarantined per file (a dead link's record names its missing image file) and logged by reason."""
    from datasets import concatenate_datasets

    from vital.data.llava import llava_to_messages
    from vital.hub import sha256_file

    if not files:
        raise ValueError("no `files` given (config=path ...)")
    if "quarantine" in files:
        raise ValueError("'quarantine' is the config of the refused records: name the file's config otherwise")
    datasets, refused, inputs, table = {}, [], [], []
    for config, path in files.items():
        result = llava_to_messages(path, image_dir, errors=errors, image_placement=image_placement)
        if len(result.quarantine):
            logger.warning(
                "%s: %d record(s) quarantined, by reason: %s (rows in config 'quarantine')",
                config,
                len(result.quarantine),
                result.quarantine.summary(),
            )
        refused.append(result.quarantine.to_dataset(config=config))
        datasets[config] = result.dataset
        inputs.append({"source": str(path), "sha256": sha256_file(Path(path)), "config": config})
        table.append(
            {
                "config": config,
                "file": Path(path).name,
                "rows": len(result.dataset),
                "quarantined": len(result.quarantine),
                "inserted": sum(p == "inserted" for p in result.dataset["image_placeholder"]),
                "reasons": result.quarantine.counts_by_reason(),
            }
        )
    return ImportedFiles(datasets, concatenate_datasets(refused), inputs, table)
