"""A stand-in for an OpenAI-compatible chat endpoint, served on loopback, with latency and injected faults.

It speaks enough of the protocol for :class:`vital.llm.AsyncLLMClient`: ``POST /v1/chat/completions`` (no streaming),
``GET /v1/models`` and ``GET /health``. Every reply says what it is: ``model`` and ``system_fingerprint`` are
``"vital-stand-in"``, so anything built from its answers can be told apart from real model output.

In a test::

    with StandInServer(SampleResponder({"fig-7": "A chest X-ray ..."}, default="..."), fault_500=0.05) as server:
        config = EndpointConfig(provider="openai-compatible", model="gpt-4o", base_url=server.base_url)

From a shell (serves until Ctrl-C)::

    python -m vital.testing.standin --port 8123 --latency-ms 500 --fault-429 0.1 --retry-after-s 1

Faults are decided per request from a hash of ``(seed, request body, how many times this body was seen)``, so a run
is reproducible whatever the order in which concurrent requests arrive, and a retried request can draw a different
fate from its first attempt. ``fault_script`` overrides the draw by attempt number, e.g. ``["429", "500"]`` answers
the first attempt of every distinct request with a 429, the second with a 500 and the rest normally.

Public API: :class:`StandInServer`, :class:`SampleResponder`, :class:`StandInStats`, :data:`STAND_IN_MODEL`,
:data:`FAULT_KINDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vital.llm.provenance import STAND_IN_MODEL


logger = logging.getLogger(__name__)

# STAND_IN_MODEL (the model every reply names) is production code's, re-exported here.
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
# What an attempt can be answered with. "ok" is a normal reply; "refusal" is a polite 200 refusal.
ENGINES = ("threads", "asyncio")
FAULT_KINDS = ("ok", "429", "500", "503", "400", "timeout", "malformed_json", "malformed_schema", "refusal")
# Roughly OpenAI's per-image cost at low detail; enough to make usage grow with images.
_IMAGE_TOKENS = 85


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _last_user_text(request_json: Mapping[str, Any]) -> str:
    """The text parts of the last user message (an empty string if there is none)."""
    for message in reversed(request_json.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
                )
            return ""
    return ""


class SampleResponder:
    """Answers from a fixed table: the reply whose key occurs in the last user message's text, else ``default``.

    Keys are tried longest first, so ``"pair-10"`` wins over ``"pair-1"`` when both occur.

    Args:
        responses: key string (a figure caption, a pair id, ...) -> reply text.
        default: the reply when no key occurs in the message.
    """

    def __init__(self, responses: Mapping[str, str] | None = None, default: str = "This is a stand-in reply.") -> None:
        self.responses = dict(responses or {})
        self.default = default
        self._keys = sorted(self.responses, key=len, reverse=True)

    def __call__(self, request_json: Mapping[str, Any]) -> str:
        text = _last_user_text(request_json)
        for key in self._keys:
            if key in text:
                return self.responses[key]
        return self.default


@dataclass
class StandInStats:
    """What the server saw. Read it after the client is done; it is updated under ``StandInServer.lock``.

    Attributes:
        requests: chat-completion requests received.
        outcomes: attempts answered with each kind in :data:`FAULT_KINDS`.
        arrivals: ``time.monotonic()`` of each chat request's arrival (after its body was read), in order.
        in_flight: chat requests being answered right now; ``max_in_flight`` is its peak.
        prompts: how many times each last-user-message text was received (to check that nothing is re-sent).
    """

    requests: int = 0
    outcomes: Counter = field(default_factory=Counter)
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    prompts: Counter = field(default_factory=Counter)


@dataclass
class _Plan:
    kind: str
    delay_s: float


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Small replies on a kept-alive connection otherwise wait on Nagle + delayed ACK (~40 ms each).
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        logger.debug("stand-in %s - %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            # The client gave up (its timeout fired); nothing to answer.
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        if self.path.rstrip("/") == "/health":
            self._send_json(200, {"status": "ok", "model": STAND_IN_MODEL})
        elif self.path.rstrip("/") == "/v1/models":
            model = {"id": STAND_IN_MODEL, "object": "model", "created": 0, "owned_by": "vital"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0].rstrip("/")
        # Azure-style paths (/openai/deployments/<name>/chat/completions) are answered too.
        if not path.endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            request_json = json.loads(body)
            if not isinstance(request_json, dict) or not isinstance(request_json.get("messages"), list):
                raise ValueError("'messages' must be a list")
        except ValueError as exc:
            self._send_json(400, {"error": {"message": f"invalid request: {exc}", "type": "invalid_request_error"}})
            return
        self.server.owner._answer(self, body, request_json)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 refuses bursts of new connections from a concurrent client.
    request_queue_size = 1024
    owner: StandInServer


class StandInServer:
    """An OpenAI-compatible chat endpoint on ``127.0.0.1`` in a background thread (one thread per connection).

    Use it as a context manager (or call :meth:`start` / :meth:`stop`); ``base_url`` ends with ``/v1``.

    Args:
        responder: ``request_json -> reply text``; defaults to a :class:`SampleResponder` with no table.
        host, port: where to listen; port 0 picks a free one.
        latency_ms: mean time to answer a request (ok, refusal, malformed and error replies alike).
        latency: ``"fixed"``, ``"uniform"`` (mean ± ``jitter_ms``) or ``"lognormal"`` (mean ``latency_ms``,
            standard deviation ``jitter_ms``).
        jitter_ms: spread of the latency distribution.
        fault_429, fault_500, fault_timeout, fault_malformed, fault_refusal: the fraction of attempts answered with
            that fault. ``fault_malformed`` is split between an invalid JSON body and JSON without ``choices``.
        retry_after_s: the ``Retry-After`` header of a 429 (fractional values are sent as ``retry-after-ms`` too).
        timeout_hold_s: how long a "timeout" attempt is held before the server answers 504 (set it above the
            client's timeout); shortened when the server stops.
        refusal_field: also put refusals in ``message.refusal`` (as OpenAI does with structured outputs) rather than
            only in the content.
        fault_script: attempt number -> fault kind for every distinct request body; overrides the drawn fault.
        seed: seeds the fault and latency draws.
        model: the ``model`` reported in replies.
        engine: ``"threads"`` (the standard library's threading HTTP server, one thread per connection) or
            ``"asyncio"`` (one event loop thread: a lean HTTP/1.1 keep-alive responder whose waits are timers, so
            hundreds of slow requests in flight cost no threads; what the throughput benchmark uses). Both answer
            the same routes with the same faults, latencies and stats.
    """

    def __init__(
        self,
        responder: Callable[[Mapping[str, Any]], str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        latency: str = "fixed",
        jitter_ms: float = 0.0,
        fault_429: float = 0.0,
        fault_500: float = 0.0,
        fault_timeout: float = 0.0,
        fault_malformed: float = 0.0,
        fault_refusal: float = 0.0,
        retry_after_s: float = 1.0,
        timeout_hold_s: float = 30.0,
        refusal_field: bool = False,
        fault_script: Sequence[str] = (),
        seed: int = 0,
        model: str = STAND_IN_MODEL,
        engine: str = "threads",
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if latency not in ("fixed", "uniform", "lognormal"):
            raise ValueError(f"latency must be 'fixed', 'uniform' or 'lognormal', got {latency!r}")
        rates = {
            "429": fault_429,
            "500": fault_500,
            "timeout": fault_timeout,
            "malformed": fault_malformed,
            "refusal": fault_refusal,
        }
        if any(rate < 0 for rate in rates.values()) or sum(rates.values()) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {rates}")
        unknown = [kind for kind in fault_script if kind not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds in fault_script: {unknown}; known: {FAULT_KINDS}")
        self.responder = responder or SampleResponder()
        self.host, self.port = host, port
        self.latency_ms, self.latency, self.jitter_ms = latency_ms, latency, jitter_ms
        self.rates = rates
        self.retry_after_s = retry_after_s
        self.timeout_hold_s = timeout_hold_s
        self.refusal_field = refusal_field
        self.fault_script = list(fault_script)
        self.seed = seed
        self.model = model
        self.stats = StandInStats()
        self.lock = threading.Lock()
        self._seen: Counter[bytes] = Counter()
        self._stopping = threading.Event()
        self.engine = engine
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._aio: _AsyncioEngine | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what an OpenAI client takes as ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """The server root, ``http://127.0.0.1:<port>`` (for ``/health`` and Azure-style paths)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> StandInServer:
        """Bind and serve in a daemon thread. Returns ``self``."""
        if self._httpd is not None or self._aio is not None:
            return self
        self._stopping.clear()
        if self.engine == "asyncio":
            self._aio = _AsyncioEngine(self)
            self.port = self._aio.start()
            return self
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="vital-stand-in", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held "timeout" requests are released at once."""
        if self._aio is not None:
            self._aio.stop()
            self._aio = None
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset_stats(self) -> None:
        """Forget what was seen (stats and attempt counters)."""
        with self.lock:
            self.stats = StandInStats()
            self._seen.clear()

    # -- answering -------------------------------------------------------------------------------------------------
    def _plan(self, body: bytes) -> _Plan:
        """Decide the fault and latency of this attempt from (seed, body, attempt number); call under the lock."""
        attempt = self._seen[body]
        self._seen[body] += 1
        digest = hashlib.sha256(f"{self.seed}:{attempt}:".encode() + body).digest()
        u_fault = int.from_bytes(digest[:8], "big") / 2**64
        u_latency = (int.from_bytes(digest[8:16], "big") + 0.5) / 2**64
        u_split = int.from_bytes(digest[16:24], "big") / 2**64
        if attempt < len(self.fault_script):
            kind = self.fault_script[attempt]
        else:
            kind, edge = "ok", 0.0
            for name, rate in self.rates.items():
                edge += rate
                if u_fault < edge:
                    kind = name
                    break
            if kind == "malformed":
                kind = "malformed_json" if u_split < 0.5 else "malformed_schema"
        return _Plan(kind=kind, delay_s=self._latency_s(u_latency))

    def _latency_s(self, u: float) -> float:
        mean, jitter = self.latency_ms / 1000, self.jitter_ms / 1000
        if self.latency == "fixed" or jitter <= 0 or mean <= 0:
            return max(0.0, mean)
        if self.latency == "uniform":
            return max(0.0, mean + (2 * u - 1) * jitter)
        # Lognormal with the given mean and standard deviation, drawn by inverting the normal CDF.
        sigma2 = math.log(1 + (jitter / mean) ** 2)
        mu = math.log(mean) - sigma2 / 2
        return math.exp(mu + math.sqrt(sigma2) * _normal_ppf(u))

    def _admit(self, body: bytes, request_json: dict[str, Any]) -> _Plan:
        """Count a chat request in the stats and decide its fate (both engines)."""
        with self.lock:
            stats = self.stats
            stats.requests += 1
            stats.arrivals.append(time.monotonic())
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            stats.prompts[_last_user_text(request_json)] += 1
            plan = self._plan(body)
            stats.outcomes[plan.kind] += 1
        return plan

    def _done(self, stats: StandInStats) -> None:
        with self.lock:
            stats.in_flight -= 1

    def _hold_s(self, plan: _Plan) -> float:
        """How long an attempt is held before it is answered ("timeout": past the client's timeout)."""
        return max(self.timeout_hold_s, plan.delay_s) if plan.kind == "timeout" else plan.delay_s

    def _answer(self, handler: _Handler, body: bytes, request_json: dict[str, Any]) -> None:
        stats = self.stats
        plan = self._admit(body, request_json)
        try:
            self._stopping.wait(self._hold_s(plan))
            handler._send_json(*self._response(plan, request_json))
        finally:
            self._done(stats)

    def _response(self, plan: _Plan, request_json: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """``(status, JSON payload or raw bytes, extra headers)`` of an attempt whose wait is over."""
        kind = plan.kind
        if kind == "timeout":
            return 504, {"error": {"message": "stand-in: held past the client's timeout"}}, {}
        if kind == "429":
            headers = {"Retry-After": str(max(0, math.ceil(self.retry_after_s)))}
            headers["retry-after-ms"] = str(int(round(self.retry_after_s * 1000)))
            error = {"message": "stand-in: rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}
            return 429, {"error": error}, headers
        if kind in ("500", "503", "400"):
            status = HTTPStatus(int(kind))
            return status, {"error": {"message": f"stand-in: {status.phrase}", "type": "stand_in"}}, {}
        if kind == "malformed_json":
            return 200, b'{"id": "chatcmpl-standin", "choices": [{"message": ', {}
        if kind == "malformed_schema":
            return 200, {"id": "chatcmpl-standin", "object": "chat.completion", "model": self.model}, {}
        if kind == "refusal":
            text = REFUSAL_TEXT
        else:
            try:
                text = self.responder(request_json)
            except Exception as exc:  # a broken responder is a server error, not a dead server thread
                logger.exception("stand-in responder failed")
                return 500, {"error": {"message": f"stand-in responder failed: {exc}"}}, {}
        return 200, self._completion(request_json, text, refusal=kind == "refusal"), {}

    def _completion(self, request_json: dict[str, Any], text: str, *, refusal: bool) -> dict[str, Any]:
        prompt_tokens = 0
        for message in request_json.get("messages", []):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                prompt_tokens += _estimate_tokens(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "text":
                        prompt_tokens += _estimate_tokens(part.get("text", ""))
                    elif isinstance(part, dict) and part.get("type") == "image_url":
                        prompt_tokens += _IMAGE_TOKENS
        completion_tokens = _estimate_tokens(text)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if refusal and self.refusal_field:
            message = {"role": "assistant", "content": None, "refusal": text}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": STAND_IN_MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


class _AsyncioEngine:
    """The ``asyncio`` engine: one event loop in a daemon thread, a :class:`_Connection` per connection, and a timer
    (not a sleeping thread) per request in flight."""

    def __init__(self, owner: StandInServer) -> None:
        self.owner = owner
        self.loop = asyncio.new_event_loop()
        self.connections: set[_Connection] = set()
        self.pending: dict[asyncio.TimerHandle, Callable[[], None]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind, serve in a daemon thread, and return the port."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self._server = self.loop.run_until_complete(
                    self.loop.create_server(
                        lambda: _Connection(self), self.owner.host, self.owner.port, backlog=1024, reuse_address=True
                    )
                )
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                started.set()
                return
            started.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

        self._thread = threading.Thread(target=run, name="vital-stand-in-asyncio", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Answer every held request at once (as the threaded engine does), close every connection, stop the loop."""

        def shutdown() -> None:
            for handle, fire in list(self.pending.items()):
                handle.cancel()
                fire()
            self.pending.clear()
            if self._server is not None:
                self._server.close()
            for connection in list(self.connections):
                connection.transport.close()
            self.loop.call_later(0.05, self.loop.stop)  # let the last replies leave

        if self._thread is None:
            return
        self.loop.call_soon_threadsafe(shutdown)
        self._thread.join(timeout=5)
        self._thread = None

    def handle(self, connection: _Connection, method: str, target: str, body: bytes) -> None:
        """Route one request: answered at once (health, models, errors) or after its planned wait (a timer)."""
        owner = self.owner
        path = target.split("?", 1)[0].rstrip("/")
        if method == "GET":
            if path == "/health":
                return connection.respond(200, {"status": "ok", "model": STAND_IN_MODEL})
            if path == "/v1/models":
                model = {"id": STAND_IN_MODEL, "object": "model", "created": 0, "owned_by": "vital"}
                return connection.respond(200, {"object": "list", "data": [model]})
        if method != "POST" or not path.endswith("/chat/completions"):
            return connection.respond(404, {"error": {"message": f"no route {target}", "type": "not_found"}})
        try:
            request_json = json.loads(body)
            if not isinstance(request_json, dict) or not isinstance(request_json.get("messages"), list):
                raise ValueError("'messages' must be a list")
        except ValueError as exc:
            error = {"message": f"invalid request: {exc}", "type": "invalid_request_error"}
            return connection.respond(400, {"error": error})
        stats = owner.stats
        plan = owner._admit(body, request_json)
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self.pending.pop(handle, None)
            try:
                connection.respond(*owner._response(plan, request_json))
            finally:
                owner._done(stats)

        handle = self.loop.call_later(owner._hold_s(plan), fire)
        self.pending[handle] = fire


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection of the asyncio engine: requests are read one at a time (the next is parsed
    once the current one is answered), bodies by ``Content-Length``."""

    def __init__(self, engine: _AsyncioEngine) -> None:
        self.engine = engine
        self.buffer = bytearray()
        self.busy = False
        self.keep_alive = True
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.engine.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                raise ValueError("chunked request bodies are not supported")
        except ValueError as exc:
            self.keep_alive = False
            self.busy = True
            return self.respond(400, {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}})
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self.busy = True
        self.engine.handle(self, method, target, body)

    def respond(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if not self.transport.is_closing():
            lines = [f"HTTP/1.1 {int(status)} {HTTPStatus(status).phrase}", "Content-Type: application/json"]
            lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
            lines.append(f"Content-Length: {len(body)}")
            if not self.keep_alive:
                lines.append("Connection: close")
            self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.busy = False
        if not self.keep_alive:
            self.transport.close()
        elif self.buffer:
            self._next()


def _normal_ppf(p: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9)."""
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690, -30.66479806614716)
    a += (2.506628277459239,)
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
    c = (-7.784894002430293e-03, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968)
    c += (2.938163982698783,)
    d = (7.784695709041462e-03, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    if p > 1 - low:
        return -_normal_ppf(1 - p)
    q = p - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a stand-in endpoint until interrupted (``python -m vital.testing.standin --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m vital.testing.standin", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency", choices=("fixed", "uniform", "lognormal"), default="fixed")
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--fault-429", type=float, default=0.0)
    parser.add_argument("--fault-500", type=float, default=0.0)
    parser.add_argument("--fault-timeout", type=float, default=0.0)
    parser.add_argument("--fault-malformed", type=float, default=0.0)
    parser.add_argument("--fault-refusal", type=float, default=0.0)
    parser.add_argument("--retry-after-s", type=float, default=1.0)
    parser.add_argument("--timeout-hold-s", type=float, default=30.0)
    parser.add_argument("--refusal-field", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--responses", help="a JSON file mapping key strings to replies")
    parser.add_argument("--default", default="This is a stand-in reply.", help="the reply when no key matches")
    parser.add_argument("--engine", choices=ENGINES, default="threads", help="threads, or asyncio (leaner)")
    args = parser.parse_args(argv)
    responses: dict[str, str] = {}
    if args.responses:
        with open(args.responses, encoding="utf-8") as handle:
            responses = json.load(handle)
    server = StandInServer(
        SampleResponder(responses, args.default),
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        latency=args.latency,
        jitter_ms=args.jitter_ms,
        fault_429=args.fault_429,
        fault_500=args.fault_500,
        fault_timeout=args.fault_timeout,
        fault_malformed=args.fault_malformed,
        fault_refusal=args.fault_refusal,
        retry_after_s=args.retry_after_s,
        timeout_hold_s=args.timeout_hold_s,
        refusal_field=args.refusal_field,
        seed=args.seed,
        engine=args.engine,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with server:
        logger.info("stand-in OpenAI endpoint at %s (model %r); Ctrl-C stops it", server.base_url, STAND_IN_MODEL)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            logger.info("stopping; outcomes: %s", dict(server.stats.outcomes))


if __name__ == "__main__":
    main()
