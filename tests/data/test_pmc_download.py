"""LLaVA-Med's image URL list: figures inside PMC article tarballs, from a loopback server (truncated archive, missing
member, 404), each archive fetched once, PNG bytes kept under .jpg, and a resume after a kill that fetches nothing
twice."""

from __future__ import annotations

import io
import json
import multiprocessing
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image as PILImage

from vital.data.importer import MANIFEST, PmcFigure, download_pmc_figures, is_pmc_url_list, read_pmc_url_list


def image_bytes(value: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = {
    "/oa/a/PMC1.tar.gz": {"PMC1/fig1.jpg": image_bytes(10, "JPEG"), "PMC1/fig2.jpg": image_bytes(20, "PNG")},
    "/oa/b/PMC2.tar.gz": {"PMC2/panel.png": image_bytes(30, "PNG"), "PMC2/article.nxml": b"<article/>"},
    "/oa/c/PMC3.tar.gz": {"PMC3/f.jpg": image_bytes(40, "JPEG") * 50},
}


class ArchiveServer:
    """Serves the archives; PMC3 truncated to half; /oa/dead.tar.gz is 404; ``slow`` paths wait before answering."""

    def __init__(self, slow: tuple[str, ...] = ()):
        self.hits = Counter()
        server = self
        bodies = {path: tar_gz(members) for path, members in MEMBERS.items()}
        bodies["/oa/c/PMC3.tar.gz"] = bodies["/oa/c/PMC3.tar.gz"][: len(bodies["/oa/c/PMC3.tar.gz"]) // 2]
        bodies["/oa/flaky/PMC5.tar.gz"] = tar_gz({"PMC5/f.jpg": MEMBERS["/oa/a/PMC1.tar.gz"]["PMC1/fig1.jpg"]})

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                server.hits[self.path] += 1
                if self.path == "/oa/flaky/PMC5.tar.gz" and server.hits[self.path] == 1:
                    return self.send_error(503)
                if self.path in slow:
                    time.sleep(30)
                if self.path not in bodies:
                    return self.send_error(404)
                body = bodies[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def url_list(tmp_path, base):
    rows = [
        ("PMC1_F1", "PMC1/fig1.jpg", "/oa/a/PMC1.tar.gz"),
        ("PMC1_F2", "PMC1/fig2.jpg", "/oa/a/PMC1.tar.gz"),  # PNG bytes, saved as PMC1_F2.jpg
        ("PMC1_F9", "PMC1/fig9.jpg", "/oa/a/PMC1.tar.gz"),  # not in the archive
        ("PMC2_F1", "PMC2/panel.png", "/oa/b/PMC2.tar.gz"),
        ("PMC3_F1", "PMC3/f.jpg", "/oa/c/PMC3.tar.gz"),  # truncated archive
        ("PMC4_F1", "PMC4/x.jpg", "/oa/dead.tar.gz"),  # 404
        ("PMC5_F1", "PMC5/f.jpg", "/oa/flaky/PMC5.tar.gz"),  # 503 once, then served
    ]
    path = tmp_path / "llava_med_image_urls.jsonl"
    path.write_text(
        "".join(json.dumps({"pair_id": p, "image_file_path": m, "pmc_tar_url": base + u}) + "\n" for p, m, u in rows)
    )
    return path


@pytest.fixture
def server():
    s = ArchiveServer()
    yield s
    s.httpd.shutdown()


def test_each_archive_is_fetched_once_and_every_failure_is_listed(server, tmp_path):
    urls = url_list(tmp_path, server.url)
    assert is_pmc_url_list(urls)
    figures = read_pmc_url_list(urls)
    images = tmp_path / "images"
    outcomes = download_pmc_figures(figures, images, workers=2, retries=1, backoff_s=0.01)
    status = {name: (o.status, o.error) for name, o in outcomes.items()}
    assert {k: v[0] for k, v in status.items()} == {
        "PMC1_F1.jpg": "ok",
        "PMC1_F2.jpg": "ok",
        "PMC1_F9.jpg": "missing",
        "PMC2_F1.jpg": "ok",
        "PMC3_F1.jpg": "invalid",
        "PMC4_F1.jpg": "dead",
        "PMC5_F1.jpg": "ok",
    }
    assert outcomes["PMC5_F1.jpg"].attempts == 2
    assert "truncated or corrupt archive" in status["PMC3_F1.jpg"][1] and status["PMC4_F1.jpg"][1] == "http 404"
    assert server.hits["/oa/a/PMC1.tar.gz"] == 1  # three figures, one download
    assert (images / "PMC1_F2.jpg").read_bytes() == MEMBERS["/oa/a/PMC1.tar.gz"]["PMC1/fig2.jpg"]
    with PILImage.open(images / "PMC1_F2.jpg") as im:
        assert im.format == "PNG"
    assert (images / "PMC2_F1.jpg").read_bytes() == MEMBERS["/oa/b/PMC2.tar.gz"]["PMC2/panel.png"]
    assert not any((images / ".pmc").iterdir())  # archives removed once their figures are out
    manifest = [json.loads(line) for line in (images / MANIFEST).read_text().splitlines()]
    assert {m["image"]: m["member"] for m in manifest}["PMC1_F9.jpg"] == "PMC1/fig9.jpg"

    hits = sum(server.hits.values())
    download_pmc_figures(figures, images, retries=1, backoff_s=0.01)  # rerun: nothing fetched again
    assert sum(server.hits.values()) == hits
    download_pmc_figures(figures, images, retries=0, backoff_s=0.01, retry_dead=True)
    assert server.hits["/oa/dead.tar.gz"] == 2 and server.hits["/oa/c/PMC3.tar.gz"] == 2
    assert server.hits["/oa/a/PMC1.tar.gz"] == 2  # its missing member is retried, so is its archive
    assert server.hits["/oa/b/PMC2.tar.gz"] == 1


def _run(figures, images):
    download_pmc_figures(figures, images, workers=1, retries=0, backoff_s=0.01)


def test_a_killed_run_resumes_without_fetching_a_finished_archive_again(tmp_path):
    server = ArchiveServer(slow=("/oa/b/PMC2.tar.gz",))
    try:
        figures = [f for f in read_pmc_url_list(url_list(tmp_path, server.url)) if "PMC3" not in f.pair_id]
        images = tmp_path / "images"
        child = multiprocessing.get_context("spawn").Process(target=_run, args=(figures, images))
        child.start()
        manifest = images / MANIFEST
        deadline = time.monotonic() + 60
        while not (manifest.exists() and "PMC1_F2" in manifest.read_text()) or not server.hits["/oa/b/PMC2.tar.gz"]:
            assert time.monotonic() < deadline and child.is_alive()
            time.sleep(0.05)
        child.kill()  # killed while the second archive is in flight
        child.join()
        server.slow = ()
    finally:
        server.httpd.shutdown()
    fresh = ArchiveServer()
    try:
        moved = [PmcFigure(f.pair_id, f.member, f.tar_url.replace(server.url, fresh.url)) for f in figures]
        outcomes = download_pmc_figures(moved, images, workers=1, retries=0, backoff_s=0.01)
        assert fresh.hits["/oa/a/PMC1.tar.gz"] == 0  # finished before the kill: not fetched again
        assert fresh.hits["/oa/b/PMC2.tar.gz"] == 1 and outcomes["PMC2_F1.jpg"].status == "ok"
        assert outcomes["PMC1_F1.jpg"].status == "ok"
    finally:
        fresh.httpd.shutdown()


def test_import_takes_the_pmc_url_list(server, tmp_path):
    from vital.cli import main as vital_main
    from vital.hub import LocalHub

    records = [
        {
            "id": pair_id,
            "image": f"{pair_id}.jpg",
            "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A."}],
        }
        for pair_id in ("PMC1_F1", "PMC1_F2", "PMC4_F1")
    ]
    data = tmp_path / "60k.json"
    data.write_text(json.dumps(records))
    args = ["import", "--files", f"60k={data}", "--url_list", str(url_list(tmp_path, server.url))]
    args += ["--image_dir", str(tmp_path / "images"), "--repo", "org/med", "--hub", f"local:{tmp_path}/hub"]
    assert vital_main([*args, "--retries", "0", "--backoff_s", "0.01"]) == 0
    hub = LocalHub(tmp_path / "hub")
    assert hub.load_dataset("org/med", "60k", split="train")["id"] == ["PMC1_F1", "PMC1_F2"]
    (row,) = hub.load_dataset("org/med", "quarantine", split="train")
    assert row["record_id"] == "PMC4_F1" and "image file not found" in row["reason"]
    manifest = hub.read_file("org/med", "download_manifest.jsonl")
    assert '"status": "dead"' in manifest and '"member": "PMC4/x.jpg"' in manifest
