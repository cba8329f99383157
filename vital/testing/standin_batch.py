"""A stand-in for the OpenAI (and Azure OpenAI) Batch API on loopback, beside the chat stand-in, with injected faults.

:class:`BatchStandInServer` is a :class:`~vital.testing.standin.StandInServer` (it answers chat completions too, so
a run can mix online and batch requests) that also serves the files and batches resources the ``openai`` client uses:

- ``POST /v1/files`` (multipart upload, ``purpose=batch``), ``GET /v1/files``, ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``;
- ``POST /v1/batches``, ``GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

Azure-style paths (``/openai/files?api-version=...``) are answered the same way. A batch is answered
``batch_delay_s`` after it was created, lazily, when it is next retrieved; each input line is answered by the
responder, as the chat stand-in would answer it. Faults are scripted per batch, in creation order
(``batch_script=["failed", "ok"]`` fails the first batch and answers the rest):

- ``failed``: the batch fails as a whole (no output file);
- ``expired``: the batch expires with the first ``partial_fraction`` of its lines answered;
- ``cancelled``: the batch ends cancelled (as if someone cancelled it), its first ``partial_fraction`` answered;
- ``malformed``: the first ``malformed_lines`` output lines are not JSON (their requests have no readable result);
- ``request_error``: the first line is answered in the error file with a 500 instead of the output file.

``poll_500=n`` answers the first n batch retrievals with a 500. :attr:`BatchStandInServer.batch_stats` counts what
was submitted (by ``custom_id``, at batch creation), so a test can check that no request was submitted twice.

From a shell: ``python -m vital.testing.standin_batch --port 8124 --batch-delay-s 2``.

Public API: :class:`BatchStandInServer`, :class:`BatchStats`, :data:`BATCH_FAULTS`, :func:`start_batch_stand_in`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vital.testing.standin import SampleResponder, StandInServer, _Handler, _HTTPServer


logger = logging.getLogger(__name__)

BATCH_FAULTS = ("ok", "failed", "expired", "cancelled", "malformed", "request_error")
_TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchStats:
    """What the batch side of the server saw (read it under ``server.lock`` or after the client is done).

    Attributes:
        files: files uploaded; ``batches``: batches created.
        submitted: how many times each ``custom_id`` was submitted in a created batch.
        retrievals: batch retrievals (polls), including those answered with a 500.
        lists: batch and file listings (what a resumed run does to find its batches).
        models, urls: the ``model`` and ``url`` of every request line submitted (Azure: the deployment and
            ``/chat/completions``); ``api_versions``: the ``api-version`` query of every files and batches call.
    """

    files: int = 0
    batches: int = 0
    submitted: Counter = field(default_factory=Counter)
    retrievals: int = 0
    lists: int = 0
    models: Counter = field(default_factory=Counter)
    urls: Counter = field(default_factory=Counter)
    api_versions: Counter = field(default_factory=Counter)


@dataclass
class _Batch:
    record: dict[str, Any]
    lines: list[dict[str, Any]]
    fault: str
    ready_at: float


class _BatchHandler(_Handler):
    server: _HTTPServer

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        segments = [s for s in parts.path.split("/") if s]
        # /v1/files/x or /openai/files/x (Azure): everything from the resource name on.
        for i, segment in enumerate(segments):
            if segment in ("files", "batches"):
                return segments[i:], parse_qs(parts.query)
        return [], {}

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        route, query = self._route()
        if not route:
            super().do_GET()
            return
        owner: BatchStandInServer = self.server.owner  # type: ignore[assignment]
        owner._handle(self, "GET", route, query, b"")

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        route, query = self._route()
        if not route:
            super().do_POST()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner: BatchStandInServer = self.server.owner  # type: ignore[assignment]
        owner._handle(self, "POST", route, query, body)


class BatchStandInServer(StandInServer):
    """The chat stand-in plus the files and batches resources (see the module docstring).

    Args:
        responder: ``request_json -> reply text`` for every request line (as for the chat stand-in).
        batch_delay_s: how long after creation a batch is finished.
        batch_script: the fault of the n-th batch created (:data:`BATCH_FAULTS`); later batches are ``ok``.
        partial_fraction: the share of an expired (or cancelled) batch's lines that were answered.
        malformed_lines: how many output lines a ``malformed`` batch garbles.
        poll_500: how many batch retrievals are answered with a 500 first.
        **kwargs: :class:`~vital.testing.standin.StandInServer`'s options (latency and faults of online requests).
    """

    def __init__(
        self,
        responder: Callable[[Mapping[str, Any]], str] | None = None,
        *,
        batch_delay_s: float = 0.2,
        batch_script: Sequence[str] = (),
        partial_fraction: float = 0.5,
        malformed_lines: int = 1,
        poll_500: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(responder, **kwargs)
        unknown = [kind for kind in batch_script if kind not in BATCH_FAULTS]
        if unknown:
            raise ValueError(f"unknown batch faults {unknown}; known: {BATCH_FAULTS}")
        if not 0 <= partial_fraction <= 1:
            raise ValueError(f"partial_fraction must be in [0, 1], got {partial_fraction}")
        self.batch_delay_s = batch_delay_s
        self.batch_script = list(batch_script)
        self.partial_fraction = partial_fraction
        self.malformed_lines = malformed_lines
        self.poll_500 = poll_500
        self.batch_stats = BatchStats()
        self._files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._batches: dict[str, _Batch] = {}

    def start(self) -> BatchStandInServer:
        """Bind and serve in a daemon thread (chat, files and batches). Returns ``self``."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), _BatchHandler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="vital-batch-stand-in", daemon=True
        )
        self._thread.start()
        return self

    # -- routing ---------------------------------------------------------------------------------------------------
    def _handle(self, handler: _Handler, method: str, route: list[str], query: dict, body: bytes) -> None:
        resource, rest = route[0], route[1:]
        with self.lock:
            self.batch_stats.api_versions[(query.get("api-version") or [None])[0]] += 1
        try:
            if resource == "files":
                if method == "POST" and not rest:
                    return handler._send_json(200, self._upload(handler.headers.get("Content-Type", ""), body))
                if method == "GET" and not rest:
                    return handler._send_json(200, self._list_files(query))
                if method == "GET" and len(rest) == 1:
                    return handler._send_json(200, self._file(rest[0])[0])
                if method == "GET" and len(rest) == 2 and rest[1] == "content":
                    return handler._send(200, self._file(rest[0])[1], {"Content-Type": "application/octet-stream"})
            if resource == "batches":
                if method == "POST" and not rest:
                    return handler._send_json(200, self._create(json.loads(body or b"{}")))
                if method == "GET" and not rest:
                    return handler._send_json(200, self._list_batches())
                if method == "GET" and len(rest) == 1:
                    with self.lock:
                        self.batch_stats.retrievals += 1
                        fail = self.poll_500 > 0
                        self.poll_500 -= fail
                    if fail:
                        return handler._send_json(
                            500, {"error": {"message": "stand-in: poll failed", "type": "server"}}
                        )
                    return handler._send_json(200, self._retrieve(rest[0]))
                if method == "POST" and len(rest) == 2 and rest[1] == "cancel":
                    return handler._send_json(200, self._cancel(rest[0]))
        except KeyError as exc:
            return handler._send_json(404, {"error": {"message": f"no such object {exc}", "type": "not_found"}})
        except ValueError as exc:
            return handler._send_json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
        handler._send_json(404, {"error": {"message": f"no route {method} {handler.path}", "type": "not_found"}})

    # -- files -----------------------------------------------------------------------------------------------------
    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        record = {
            "id": f"file-{uuid.uuid4().hex[:24]}",
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self._files[record["id"]] = (record, data)
        return record

    def _upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        if "multipart/form-data" not in content_type:
            raise ValueError("a file upload is multipart/form-data")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields: dict[str, Any] = {}
        filename = "upload.jsonl"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                filename = part.get_filename()
            fields[name] = part.get_payload(decode=True)
        if "file" not in fields:
            raise ValueError("the upload has no 'file' part")
        purpose = (fields.get("purpose") or b"").decode()
        if purpose != "batch":
            raise ValueError(f"purpose must be 'batch', got {purpose!r}")
        data = fields["file"]
        for number, line in enumerate(data.splitlines(), start=1):
            request = json.loads(line)
            if not {"custom_id", "method", "url", "body"} <= set(request):
                raise ValueError(f"line {number}: a batch request needs custom_id, method, url and body")
        with self.lock:
            self.batch_stats.files += 1
            return self._store_file(data, filename, purpose)

    def _list_files(self, query: dict) -> dict[str, Any]:
        purpose = (query.get("purpose") or [None])[0]
        with self.lock:
            self.batch_stats.lists += 1
            data = [r for r, _ in self._files.values() if purpose is None or r["purpose"] == purpose]
        return {"object": "list", "data": data, "has_more": False}

    def _file(self, file_id: str) -> tuple[dict[str, Any], bytes]:
        with self.lock:
            return self._files[file_id]

    # -- batches ---------------------------------------------------------------------------------------------------
    def _create(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            record, data = self._files[request["input_file_id"]]
            lines = [json.loads(line) for line in data.splitlines() if line.strip()]
            ids = [line["custom_id"] for line in lines]
            if len(set(ids)) != len(ids):
                raise ValueError("custom_id values must be unique within a batch")
            fault = (
                self.batch_script[self.batch_stats.batches]
                if self.batch_stats.batches < len(self.batch_script)
                else "ok"
            )
            self.batch_stats.batches += 1
            self.batch_stats.submitted.update(ids)
            self.batch_stats.models.update(line["body"].get("model") for line in lines)
            self.batch_stats.urls.update(line["url"] for line in lines)
            now = int(time.time())
            batch = {
                "id": f"batch_{uuid.uuid4().hex[:24]}",
                "object": "batch",
                "endpoint": request.get("endpoint", "/v1/chat/completions"),
                "errors": None,
                "input_file_id": record["id"],
                "completion_window": request.get("completion_window", "24h"),
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": now,
                "in_progress_at": None,
                "expires_at": now + 86400,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelled_at": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "metadata": request.get("metadata"),
            }
            self._batches[batch["id"]] = _Batch(batch, lines, fault, time.monotonic() + self.batch_delay_s)
            return dict(batch)

    def _list_batches(self) -> dict[str, Any]:
        with self.lock:
            self.batch_stats.lists += 1
            data = [dict(b.record) for b in self._batches.values()]
        return {"object": "list", "data": data, "first_id": None, "last_id": None, "has_more": False}

    def _retrieve(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            batch = self._batches[batch_id]
            if batch.record["status"] not in _TERMINAL:
                if time.monotonic() >= batch.ready_at:
                    self._finish(
                        batch,
                        {"failed": "failed", "expired": "expired", "cancelled": "cancelled"}.get(
                            batch.fault, "completed"
                        ),
                    )
                else:
                    batch.record["status"] = "in_progress"
                    batch.record["in_progress_at"] = batch.record["in_progress_at"] or int(time.time())
            return dict(batch.record)

    def _cancel(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            batch = self._batches[batch_id]
            if batch.record["status"] not in _TERMINAL:
                self._finish(batch, "cancelled")
            return dict(batch.record)

    def _finish(self, batch: _Batch, status: str) -> None:
        """Answer the batch's lines (all, a part, or none) and write its output and error files; under the lock."""
        record, lines = batch.record, batch.lines
        now = int(time.time())
        record["status"] = status
        record[f"{status}_at"] = now
        if status == "failed":
            message = "stand-in: the batch failed (injected)"
            record["errors"] = {"object": "list", "data": [{"code": "stand_in_failure", "message": message}]}
            return
        answered = lines if status == "completed" else lines[: math.floor(len(lines) * self.partial_fraction)]
        outputs, errors = [], []
        for number, line in enumerate(answered):
            if batch.fault == "request_error" and number == 0:
                body = {"error": {"message": "stand-in: server error (injected)", "type": "server_error"}}
                response = {"status_code": 500, "request_id": uuid.uuid4().hex, "body": body}
                errors.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:16]}",
                        "custom_id": line["custom_id"],
                        "response": response,
                        "error": None,
                    }
                )
                continue
            text = self.responder(line["body"])
            body = self._completion(line["body"], text, refusal=False)
            response = {"status_code": 200, "request_id": uuid.uuid4().hex, "body": body}
            outputs.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:16]}",
                    "custom_id": line["custom_id"],
                    "response": response,
                    "error": None,
                }
            )
        out_lines = [json.dumps(o) for o in outputs]
        if batch.fault == "malformed":
            for i in range(min(self.malformed_lines, len(out_lines))):
                out_lines[i] = out_lines[i][: len(out_lines[i]) // 2]
        record["request_counts"] = {"total": len(lines), "completed": len(outputs), "failed": len(errors)}
        if out_lines:
            data = ("\n".join(out_lines) + "\n").encode()
            record["output_file_id"] = self._store_file(data, f"{record['id']}_output.jsonl", "batch_output")["id"]
        if errors:
            data = ("\n".join(json.dumps(e) for e in errors) + "\n").encode()
            record["error_file_id"] = self._store_file(data, f"{record['id']}_error.jsonl", "batch_output")["id"]


def start_batch_stand_in(endpoint, responder, latency_ms: float = 0.0, faults: float = 0.0, seed: int = 0, **kwargs):
    """Start a :class:`BatchStandInServer` answering with ``responder`` and point ``endpoint`` at it: the same
    online faults as :func:`vital.testing.sample_replies.start_stand_in`. Returns the running server (stop it when
    done) and the endpoint to use."""
    from vital.testing.sample_replies import start_stand_in

    return start_stand_in(endpoint, responder, latency_ms, faults, seed, server_class=BatchStandInServer, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a stand-in chat and Batch API until interrupted (``python -m vital.testing.standin_batch --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m vital.testing.standin_batch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8124, help="0 picks a free port")
    parser.add_argument("--batch-delay-s", type=float, default=1.0)
    parser.add_argument("--batch-script", default="", help="comma-separated faults of the first batches")
    parser.add_argument("--poll-500", type=int, default=0)
    parser.add_argument("--default", default="This is a stand-in reply.", help="the reply to every request")
    args = parser.parse_args(argv)
    script = [kind for kind in re.split(r"[,\s]+", args.batch_script) if kind]
    server = BatchStandInServer(
        SampleResponder({}, args.default),
        host=args.host,
        port=args.port,
        batch_delay_s=args.batch_delay_s,
        batch_script=script,
        poll_500=args.poll_500,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with server:
        logger.info("stand-in chat and Batch API at %s; Ctrl-C stops it", server.base_url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            logger.info(
                "stopping; %d batch(es), %d request(s) submitted",
                server.batch_stats.batches,
                sum(server.batch_stats.submitted.values()),
            )


if __name__ == "__main__":
    main()
