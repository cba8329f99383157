"""Importing the released data: downloads that retry, dead links in a manifest, resume, one config per file."""

import io
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image as PILImage

from vital.cli import main as vital_main
from vital.hub import LocalHub


def png(value: int) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class ImageServer:
    """Serves /img<i>.png; /dead.png is 404, /flaky.png fails with 500 once, /garbage.png is not an image."""

    def __init__(self):
        self.hits = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                server.hits[self.path] += 1
                if self.path == "/dead.png":
                    return self.send_error(404)
                if self.path == "/flaky.png" and server.hits[self.path] == 1:
                    return self.send_error(500)
                body = b"not an image" if self.path == "/garbage.png" else png(len(self.path) * 10 % 255)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = ImageServer()
    yield s
    s.httpd.shutdown()


def record(i, image):
    return {
        "id": f"r{i}",
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\nWhat is shown in figure {i}?"},
            {"from": "gpt", "value": f"Figure {i} shows a sample."},
        ],
    }


def test_import_with_downloads_dead_links_and_resume(server, tmp_path):
    images = ["img1.png", "img2.png", "flaky.png", "dead.png", "garbage.png"]
    url_list = tmp_path / "urls.jsonl"
    url_list.write_text("\n".join(json.dumps({"image": n, "url": f"{server.url}/{n}"}) for n in images))
    small = tmp_path / "small.json"
    small.write_text(json.dumps([record(0, "img1.png"), record(1, "dead.png")]))
    large = tmp_path / "large.json"
    large.write_text(json.dumps([record(i, name) for i, name in enumerate(images)]))
    args = ["import", "--files", f"10k={small}", f"60k={large}", "--url_list", str(url_list)]
    args += ["--image_dir", str(tmp_path / "images"), "--repo", "org/released", "--hub", f"local:{tmp_path}/hub"]
    args += ["--backoff_s", "0.01", "--retries", "2"]
    assert vital_main(args) == 0

    hub = LocalHub(tmp_path / "hub")
    small_ds = hub.load_dataset("org/released", "10k", split="train")
    large_ds = hub.load_dataset("org/released", "60k", split="train")
    assert small_ds["id"] == ["r0"]  # the dead link's record is quarantined
    assert sorted(large_ds["id"]) == ["r0", "r1", "r2"]  # img1, img2, flaky (after one retry)
    assert large_ds[0]["messages"][0]["content"][0] == {"type": "image", "text": None}
    manifest = [json.loads(line) for line in hub.read_file("org/released", "download_manifest.jsonl").splitlines()]
    status = {m["image"]: (m["status"], m["attempts"]) for m in manifest}
    assert status["dead.png"] == ("dead", 1) and status["garbage.png"][0] == "invalid"
    assert status["flaky.png"] == ("ok", 2)
    assert "http 404" in next(m["error"] for m in manifest if m["image"] == "dead.png")
    card = hub.read_card("org/released")
    assert "| `60k` | `large.json` | 3 | 2 |" in card.text

    # Resume: nothing already downloaded (or known dead) is fetched again, and the push makes no new commit.
    hits = sum(server.hits.values())
    commit = hub.resolve("org/released")
    assert vital_main(args) == 0
    assert sum(server.hits.values()) == hits
    assert hub.resolve("org/released") == commit
    # Asked to, it tries the dead links again (and they are still dead).
    assert vital_main([*args, "--retry_dead", "true"]) == 0
    assert server.hits["/dead.png"] == 2 and server.hits["/img1.png"] == 1


def test_push_to_hub_false_converts_and_pushes_nothing(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(png(10))
    released = tmp_path / "released.json"
    released.write_text(json.dumps([record(0, "a.png"), record(1, "missing.png")]))
    hub_dir = tmp_path / "hub"
    args = ["import", "--files", f"80k={released}", "--image_dir", str(images), "--repo", "org/released"]
    assert vital_main([*args, "--hub", f"local:{hub_dir}", "--push_to_hub", "false"]) == 0
    assert "nothing pushed: 80k 1; 1 quarantined" in capsys.readouterr().out
    assert not hub_dir.exists()
    # The same import pushed: one config and the quarantine, on the branch asked for.
    assert vital_main([*args, "--hub", f"local:{hub_dir}", "--hub_revision", "v1"]) == 0
    hub = LocalHub(hub_dir)
    assert hub.load_dataset("org/released", "80k", revision="v1", split="train")["id"] == ["r0"]
    assert hub.load_dataset("org/released", "quarantine", revision="v1", split="train")["record_id"] == ["r1"]
