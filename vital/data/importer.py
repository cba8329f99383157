"""Bringing the released data in: BioMed-VITAL / LLaVA-Med instruction files plus their images.

Images come from a local folder, or are downloaded from an image-URL list (JSONL or CSV with ``image`` = file name and
``url``). Downloads retry with exponential backoff; links that stay dead are skipped and listed in a manifest with the
reason; the manifest is appended as each download finishes, so an interrupted import resumes where it stopped
(images already on disk and valid are not fetched again).
"""

from __future__ import annotations

import csv
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


logger = logging.getLogger(__name__)
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class DownloadOutcome:
    image: str
    url: str
    status: str  # ok | dead | invalid
    attempts: int
    error: str = ""


def read_url_list(path: str | Path) -> list[tuple[str, str]]:
    """(image file name, URL) pairs from a JSONL (``{"image": ..., "url": ...}``) or CSV with those columns."""
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
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
