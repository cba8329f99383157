"""The one HTTP client for every OpenAI-compatible chat endpoint: OpenAI, Azure OpenAI, vLLM, ``transformers serve``.

It is built for long, expensive jobs (hundreds of thousands of requests): a bounded number of requests in flight,
request- and token-per-minute budgets that never burst, exponential backoff with full jitter that honours
``Retry-After``, a per-request timeout, token and cost accounting per request and per run, and a journal so that a
killed run resumes where it stopped::

    config = EndpointConfig(model="gpt-4o", requests_per_minute=500, tokens_per_minute=300_000)
    requests = [ChatRequest(messages=[{"role": "user", "content": [
        {"type": "text", "text": prompt},
        {"type": "image_url", "image_url": {"url": image_to_data_url(image)}},
    ]}]) for prompt, image in items]
    results, stats = run_sync(config, requests, journal="runs/captions.jsonl")

Inside async code use :class:`AsyncLLMClient` directly (``await client.run(...)`` or ``await client.complete(...)``).
The SDK builds the request (URL, headers, auth) once per client and its HTTP client sends each one; the SDK's own
retries are disabled: every retry is decided here. The API key is read from the environment variable named by
``EndpointConfig.api_key_env`` and handed only to the SDK (and so to the headers it builds); it is never logged,
journaled or returned.

Public API: :class:`EndpointConfig`, :class:`ChatRequest`, :class:`CompletionResult`, :class:`RunStats`,
:class:`AsyncLLMClient`, :class:`EndpointError`, :func:`run_sync`, :func:`request_key`, :func:`image_to_data_url`.
"""

import asyncio
import base64
import contextlib
import dataclasses
import gc
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2
import openai
from tqdm.auto import tqdm

from vital.llm.journal import CompletionResult, Journal
from vital.llm.limits import Budget, backoff_delay, estimate_prompt_tokens, retry_after_seconds
from vital.llm.pricing import DEFAULT_PRICES, cost_usd


logger = logging.getLogger(__name__)

MAX_RETRIES_LIMIT = 20
# A Retry-After above this is treated as this (a server asking for hours is better answered by a failure and a rerun).
MAX_RETRY_AFTER_S = 600.0
# Statuses worth retrying: request timeout, conflict, rate limit, and every server error.
_RETRYABLE_STATUS = {408, 409, 429}
# Failures that no other request will escape either (bad key, no access, no such model or deployment): a run stops.
_FATAL_FAILURES = {"http 401", "http 403", "http 404"}
_PLACEHOLDER_KEY = "EMPTY"
_TIMEOUT = getattr(asyncio, "timeout", None)  # Python 3.11+

# The cyclic collector's youngest-generation threshold while requests run (CPython's default is 700). Each request in
# flight holds a few hundred container objects for its whole latency, so at the default they survive a young
# collection, are promoted, and keep the older generations collecting: about a tenth of the client's CPU at c=256.
# A larger young generation lets most of them die by reference counting first (docs/design.md, "LLM client
# throughput"). The older thresholds stay CPython's.
RUN_GC_THRESHOLD0 = 10_000
_gc_lock = threading.Lock()
_gc_depth = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_young_collections(threshold0: int = RUN_GC_THRESHOLD0):
    """Raise the collector's youngest-generation threshold to at least ``threshold0`` for the duration, and restore
    the process's thresholds when the last of any nested or concurrent scopes ends. Never lowers a higher threshold,
    and does nothing while the collector is disabled."""
    global _gc_depth, _gc_saved
    with _gc_lock:
        if _gc_depth == 0:
            _gc_saved = gc.get_threshold()
            if gc.isenabled() and 0 < _gc_saved[0] < threshold0:
                gc.set_threshold(threshold0, *_gc_saved[1:])
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_saved is not None:
                if gc.get_threshold()[0] == max(threshold0, _gc_saved[0]):  # unless changed meanwhile by someone else
                    gc.set_threshold(*_gc_saved)
                _gc_saved = None


class EndpointError(RuntimeError):
    """The endpoint refuses every request (401, 403 or 404): :meth:`AsyncLLMClient.run` stops rather than fail them
    all. The failed result is journaled; fix the key, model or deployment and rerun."""


@dataclass
class EndpointConfig:
    """
    Where and how to send chat requests. Every field is a command-line flag of the API stages (`generate`, `rate`,
    `evaluate`). The offline stand-in (``vital stand-in``) is an `openai-compatible` endpoint like any other.

    Parameters:
        provider (`str`, *optional*, defaults to `"openai"`):
            `"openai"`, `"azure"` (Azure OpenAI) or `"openai-compatible"` (vLLM, `transformers serve`, the stand-in).
        model (`str`, *optional*, defaults to `"gpt-4o"`):
            Model name sent with each request (on Azure without `azure_deployment`: the deployment). Part of every
            request's journal key.
        base_url (`str` or `None`, *optional*):
            Endpoint base URL ending in `/v1` (required for `openai-compatible`; optional for `openai`).
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            Name of the environment variable holding the API key (never the key itself). An `openai-compatible`
            endpoint without that variable set gets a placeholder key.
        azure_endpoint (`str` or `None`, *optional*):
            Azure OpenAI resource URL, e.g. `https://my-resource.openai.azure.com`.
        azure_api_version (`str` or `None`, *optional*):
            Azure OpenAI api-version, e.g. `2024-10-21`.
        azure_deployment (`str` or `None`, *optional*):
            Azure OpenAI deployment name.
        timeout_s (`float`, *optional*, defaults to `120.0`):
            Per-attempt timeout in seconds.
        max_retries (`int`, *optional*, defaults to `6`):
            Retries after the first attempt (0 to `MAX_RETRIES_LIMIT`).
        backoff_base_s (`float`, *optional*, defaults to `1.0`):
            Backoff before retry k is uniform in [0, min(`backoff_max_s`, base * 2**k)] seconds.
        backoff_max_s (`float`, *optional*, defaults to `60.0`):
            Cap on one backoff delay, in seconds.
        concurrency (`int`, *optional*, defaults to `16`):
            Most requests in flight at once.
        requests_per_minute (`float`, *optional*, defaults to `0`):
            Request budget per minute of the whole run, paced evenly (0 = unlimited). The processes of one machine
            share it; with `--shard i/n` each machine takes 1/n of it.
        tokens_per_minute (`float`, *optional*, defaults to `0`):
            Token budget per minute of the whole run (prompt + `max_tokens`, estimated; 0 = unlimited), shared like
            `requests_per_minute`.
        http_transport (`str`, *optional*, defaults to `"auto"`):
            HTTP library under the SDK: `"aiohttp"` (faster at high concurrency; needs `openai[aiohttp]`), `"httpx"`,
            or `"auto"` (aiohttp when installed).
        temperature (`float` or `None`, *optional*):
            Sampling temperature; `None` leaves the server's default.
        max_tokens (`int` or `None`, *optional*, defaults to `1024`):
            Most completion tokens per reply.
        seed (`int` or `None`, *optional*):
            Sampling seed, for servers that honour one.
        response_format (`str`, *optional*, defaults to `"text"`):
            `"text"`, or `"json_object"` to ask for a JSON reply.
        prices (`dict`, `str` or `None`, *optional*):
            Prices: model -> `{prompt, completion}` in USD per 1M tokens, as a dict, JSON text or a JSON file path.
            `None`: the built-in table (`openai-compatible` models not in it cost 0).
    """

    provider: Literal["openai", "azure", "openai-compatible"] = field(
        default="openai",
        metadata={"help": "openai, azure (Azure OpenAI) or openai-compatible (vLLM, transformers serve, stand-in)."},
    )
    model: str = field(
        default="gpt-4o",
        metadata={"help": "Model name sent with each request (on Azure without azure_deployment: the deployment)."},
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": "Endpoint base URL ending in /v1 (openai-compatible: required; openai: optional)."},
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Name of the environment variable that holds the API key (never the key itself)."},
    )
    azure_endpoint: str | None = field(
        default=None, metadata={"help": "Azure OpenAI resource URL, e.g. https://my-resource.openai.azure.com."}
    )
    azure_api_version: str | None = field(
        default=None, metadata={"help": "Azure OpenAI api-version, e.g. 2024-10-21."}
    )
    azure_deployment: str | None = field(default=None, metadata={"help": "Azure OpenAI deployment name."})
    timeout_s: float = field(default=120.0, metadata={"help": "Per-attempt timeout in seconds."})
    max_retries: int = field(
        default=6, metadata={"help": f"Retries after the first attempt (0 to {MAX_RETRIES_LIMIT})."}
    )
    backoff_base_s: float = field(
        default=1.0, metadata={"help": "Backoff before retry k is uniform in [0, min(max, base * 2**k)] seconds."}
    )
    backoff_max_s: float = field(default=60.0, metadata={"help": "Cap on one backoff delay, in seconds."})
    concurrency: int = field(default=16, metadata={"help": "Most requests in flight at once."})
    requests_per_minute: float = field(
        default=0,
        metadata={
            "help": "Request budget per minute of the whole run, paced evenly (0 = unlimited). The processes of one "
            "machine share it; with --shard i/n each machine takes 1/n of it."
        },
    )
    tokens_per_minute: float = field(
        default=0,
        metadata={
            "help": "Token budget per minute of the whole run, prompt + max_tokens estimated (0 = unlimited); "
            "shared like requests_per_minute."
        },
    )
    http_transport: Literal["auto", "aiohttp", "httpx"] = field(
        default="auto",
        metadata={
            "help": "HTTP library under the SDK: aiohttp (faster at high concurrency; needs openai[aiohttp]), httpx, "
            "or auto (aiohttp when installed)."
        },
    )
    temperature: float | None = field(default=None, metadata={"help": "Sampling temperature (unset: server default)."})
    max_tokens: int | None = field(default=1024, metadata={"help": "Most completion tokens per reply."})
    seed: int | None = field(default=None, metadata={"help": "Sampling seed, for servers that honour one."})
    response_format: Literal["text", "json_object"] = field(
        default="text", metadata={"help": "text, or json_object to ask for a JSON reply."}
    )
    prices: dict | str | None = field(
        default=None,
        metadata={
            "help": "Prices: model -> {prompt, completion} in USD per 1M tokens, as a dict, JSON text or a JSON file "
            "path (unset: the built-in table; openai-compatible models not in it cost 0)."
        },
    )

    def __post_init__(self) -> None:
        if self.provider not in ("openai", "azure", "openai-compatible"):
            raise ValueError(f"provider must be openai, azure or openai-compatible, got {self.provider!r}")
        if self.http_transport not in ("auto", "aiohttp", "httpx"):
            raise ValueError(f"http_transport must be auto, aiohttp or httpx, got {self.http_transport!r}")
        if self.response_format not in ("text", "json_object"):
            raise ValueError(f"response_format must be text or json_object, got {self.response_format!r}")
        if not 0 <= self.max_retries <= MAX_RETRIES_LIMIT:
            raise ValueError(f"max_retries must be in [0, {MAX_RETRIES_LIMIT}], got {self.max_retries}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0 or self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("timeout_s must be > 0, and backoff_base_s and backoff_max_s >= 0")
        if self.requests_per_minute < 0 or self.tokens_per_minute < 0:
            raise ValueError("requests_per_minute and tokens_per_minute must be >= 0 (0 = unlimited)")
        if self.provider == "openai-compatible" and not self.base_url:
            raise ValueError("an openai-compatible endpoint needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.provider == "azure" and not (self.azure_endpoint and self.azure_api_version):
            raise ValueError("an azure endpoint needs azure_endpoint and azure_api_version")
        if isinstance(self.prices, str):
            text = self.prices.strip()
            self.prices = json.loads(text if text.startswith("{") else Path(text).read_text(encoding="utf-8"))
        if self.prices is not None:
            for model, price in self.prices.items():
                if not isinstance(price, Mapping) or not {"prompt", "completion"} <= set(price):
                    raise ValueError(f"price of {model!r} must have 'prompt' and 'completion', got {price!r}")

    @property
    def price_table(self) -> Mapping[str, Mapping[str, float]]:
        """The prices in use: ``prices`` if set, else :data:`vital.llm.pricing.DEFAULT_PRICES`."""
        return DEFAULT_PRICES if self.prices is None else self.prices


@dataclass
class ChatRequest:
    """One chat request.

    Attributes:
        messages: OpenAI chat messages; user content may be a list of ``text`` and ``image_url`` parts (data URLs).
        params: per-request overrides of the endpoint's sampling parameters, or any extra body field (``top_p``...).
        key: a stable key for the journal; ``None`` derives it from the model, messages and parameters.
    """

    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    key: str | None = None


@dataclass
class RunStats:
    """Totals of one :meth:`AsyncLLMClient.run`. Counts and usage cover the requests sent by this run; requests
    answered from the journal are counted in ``resumed`` only."""

    requests: int = 0
    resumed: int = 0
    resent_after_kill: int = 0
    resent_cost_usd: float = 0.0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    retries: int = 0
    refusals: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    failure_reasons: Counter = field(default_factory=Counter)

    def add(self, result: CompletionResult) -> None:
        """Count one result of this run."""
        if result.ok:
            self.succeeded += 1
        else:
            self.failed += 1
            self.failure_reasons[failure_category(result.error)] += 1
        if result.attempts > 1:
            self.retried += 1
            self.retries += result.attempts - 1
        self.refusals += result.refusal is not None
        if result.resent_after_kill:
            self.resent_after_kill += 1
            self.resent_cost_usd += result.cost_usd
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cost_usd += result.cost_usd

    def summary(self) -> str:
        """One line for the log."""
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.failure_reasons.most_common())
        resent = ""
        if self.resent_after_kill:
            resent = (
                f"; {self.resent_after_kill} resent after a kill (in flight when it died: paid twice if the "
                f"provider had them, at most about ${self.resent_cost_usd:.4f} extra)"
            )
        return (
            f"{self.requests} requests ({self.resumed} from the journal): {self.succeeded} succeeded, "
            f"{self.failed} failed{f' ({reasons})' if reasons else ''}; {self.retried} retried ({self.retries} "
            f"retries); {self.prompt_tokens} prompt + {self.completion_tokens} completion tokens, "
            f"${self.cost_usd:.4f}, {self.wall_s:.1f} s{resent}"
        )


def resolve_transport(choice: str) -> str:
    """``auto`` -> ``aiohttp`` when openai's aiohttp extra is installed, else ``httpx``; an explicit ``aiohttp``
    without the extra is an error naming the package to install."""
    available = getattr(openai, "DefaultAioHttpClient", None) is not None and importlib.util.find_spec("aiohttp")
    if available:
        available = getattr(openai.DefaultAioHttpClient, "__name__", "") != "_MissingAioHttpClient"
    if choice == "aiohttp" and not available:
        raise ValueError('http_transport aiohttp needs openai\'s aiohttp extra: pip install "openai[aiohttp]"')
    if choice == "auto":
        return "aiohttp" if available else "httpx"
    return choice


def failure_category(error: str | None) -> str:
    """``"http 500 after 5 attempts"`` -> ``"http 500"``; ``"malformed reply: no choices"`` -> ``"malformed reply"``."""
    if error is None:
        return ""
    return error.split(":", 1)[0].split(" after ", 1)[0].strip()


# -- keys and images -------------------------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """JSON-ready copy of ``value`` with data URLs replaced by their sha256 (same hash, far shorter text)."""
    if isinstance(value, str):
        if value.startswith("data:") and len(value) > 64:
            return {"data_url_sha256": hashlib.sha256(value.encode()).hexdigest()}
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise TypeError(f"cannot key a value of type {type(value).__name__}: {value!r:.80}")


def request_key(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    extra: Any = None,
) -> str:
    """A stable sha256 hex key of a request: model, messages (images by the hash of their data URL), parameters
    (``None`` values dropped) and any ``extra`` JSON-able value. Dict ordering does not matter."""
    payload = {
        "model": model,
        "messages": _canonical(list(messages)),
        "params": _canonical({k: v for k, v in (params or {}).items() if v is not None}),
        "extra": _canonical(extra),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def image_to_data_url(pil_image: Any, format: str = "PNG") -> str:  # noqa: A002 - PIL's own word
    """Encode a PIL image as a ``data:image/...;base64,`` URL for an ``image_url`` message part."""
    format = format.upper()
    image = pil_image
    if format in ("JPEG", "JPG"):
        format = "JPEG"
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return f"data:image/{format.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


# -- the client ------------------------------------------------------------------------------------------------------

_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_\-*]{6,}")


@dataclass
class _Failure:
    reason: str  # "http 500", "timeout", "connection error", "malformed reply"
    detail: str = ""
    retryable: bool = True
    retry_after_s: float | None = None


class AsyncLLMClient:
    """Sends chat requests to one endpoint within its limits (see the module docstring).

    Args:
        config: the endpoint and its limits.
        http_client: an ``httpx2.AsyncClient`` for the SDK, which sends every request (tests pass one with a
            ``MockTransport``); by default one of openai's on the configured transport, closed in :meth:`aclose`.
    """

    def __init__(self, config: EndpointConfig, http_client: Any = None, budget: Budget | None = None) -> None:
        self.config = config
        self._http_client = http_client
        self.transport = "custom" if http_client is not None else resolve_transport(config.http_transport)
        self._api_key = self._read_api_key()
        # The options of every chat request (the SDK's make_request_options for create()'s bearer auth and timeout).
        self._request_options = {"timeout": config.timeout_s, "security": {"bearer_auth": True}}
        self._sdk: openai.AsyncOpenAI | None = None
        self._http: Any = None  # the SDK's HTTP client (openai's transport), which sends every chat request
        # Built now, not on the first request: building them and their lazily imported resources takes ~60 ms, which
        # would otherwise delay the first request behind the rate limiter's schedule.
        self._build()
        # The URL, headers and extensions of a chat request as the SDK builds them, learnt on the first request.
        self._template: _ChatRequestTemplate | None = None
        self._template_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._budget_lock: asyncio.Lock | None = None
        self.budget = budget if budget is not None else Budget(config.requests_per_minute, config.tokens_per_minute)
        self._cooldown_until = 0.0
        self._sleep = asyncio.sleep  # how _pay waits for the budget (tests drive it with a fake clock)
        self._rng = random.Random()
        self.last_run_stats: RunStats | None = None

    def __repr__(self) -> str:
        return f"AsyncLLMClient(provider={self.config.provider!r}, model={self.config.model!r})"

    def _read_api_key(self) -> str:
        key = os.environ.get(self.config.api_key_env, "")
        if key:
            return key
        if self.config.provider == "openai-compatible":
            return _PLACEHOLDER_KEY
        raise ValueError(f"no API key: set the environment variable {self.config.api_key_env}")

    def _build(self) -> None:
        """The SDK client and the HTTP client under it (the caller's, or one on the chosen transport)."""
        self._http = self._http_client if self._http_client is not None else self._build_http_client()
        self._sdk = self._build_sdk(self._http)

    def _build_sdk(self, http_client: Any) -> openai.AsyncOpenAI:
        config = self.config
        common = {
            "api_key": self._api_key,
            "max_retries": 0,  # every retry is ours
            "timeout": config.timeout_s,
            "http_client": http_client,
        }
        if config.provider == "azure":
            return openai.AsyncAzureOpenAI(
                azure_endpoint=config.azure_endpoint,
                azure_deployment=config.azure_deployment,
                api_version=config.azure_api_version,
                **common,
            )
        return openai.AsyncOpenAI(base_url=config.base_url, **common)

    def _build_http_client(self) -> Any:
        """The SDK's HTTP client on the chosen transport, with a pool that keeps every concurrent connection alive
        (the SDK's default keeps 100, so higher concurrency would open and close connections all the time)."""
        concurrency = self.config.concurrency
        limits = httpx2.Limits(max_connections=max(concurrency, 100), max_keepalive_connections=concurrency)
        factory = openai.DefaultAioHttpClient if self.transport == "aiohttp" else openai.DefaultAsyncHttpxClient
        return factory(limits=limits, timeout=self.config.timeout_s)

    @property
    def sdk(self) -> openai.AsyncOpenAI:
        """The underlying ``openai.AsyncOpenAI`` (or ``AsyncAzureOpenAI``) client."""
        self._ensure_built()
        assert self._sdk is not None
        return self._sdk

    def _ensure_built(self) -> None:
        """Build the SDK and its HTTP client again if a new event loop or :meth:`aclose` dropped them."""
        if self._sdk is None:
            self._build()

    async def _request_template(self) -> "_ChatRequestTemplate":
        """How the SDK builds a chat request to this endpoint, learnt once (see :class:`_ChatRequestTemplate`)."""
        if self._template is None:
            assert self._template_lock is not None
            async with self._template_lock:
                if self._template is None:
                    self._template = await _ChatRequestTemplate.learn(
                        self._build_sdk, self.config.model, self._request_options
                    )
        return self._template

    def _bind_loop(self) -> None:
        """Make the semaphore and the SDK's connection pool belong to the running event loop."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is not None and self._http_client is None:
            self._sdk = self._http = None  # their pooled connections belong to a finished loop
        self._loop = loop
        self._semaphore = asyncio.Semaphore(self.config.concurrency)
        self._budget_lock = asyncio.Lock()
        self._template_lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the SDK client (and its connection pool) unless the caller supplied the HTTP client."""
        if self._sdk is not None and self._http_client is None:
            await self._sdk.close()
        self._sdk = self._http = None
        self.budget.close()

    async def __aenter__(self) -> "AsyncLLMClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- one request ---------------------------------------------------------------------------------------------------
    def params_for(self, request: ChatRequest) -> dict[str, Any]:
        """The body parameters of ``request`` besides model and messages: the endpoint's, then its overrides."""
        config = self.config
        params: dict[str, Any] = {
            "temperature": config.temperature,
            "max_tokens": config.max_tokens,
            "seed": config.seed,
        }
        if config.response_format != "text":
            params["response_format"] = {"type": config.response_format}
        params.update(request.params)
        return {name: value for name, value in params.items() if value is not None}

    def key_for(self, request: ChatRequest) -> str:
        """``request.key``, or the :func:`request_key` of the model, messages and effective parameters."""
        if request.key is not None:
            return request.key
        return request_key(self.config.model, request.messages, self.params_for(request))

    def _scrub(self, text: str) -> str:
        """Remove the API key, and anything shaped like an OpenAI key, from text bound for a result or a log."""
        if self._api_key and self._api_key != _PLACEHOLDER_KEY:
            text = text.replace(self._api_key, "***")
        return _KEY_LIKE.sub("sk-***", text)

    async def _wait_cooldown(self) -> None:
        while (delay := self._cooldown_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    async def _pay(self, tokens: int) -> None:
        """Wait out any 429 cooldown and the budget, then charge the budget: the caller sends right after, with no
        await in between, so the budget is charged when the request leaves, not when it was queued. This process's
        requests wait in line (FIFO), so a large request is not starved by small ones."""
        if self.budget.unlimited and self._cooldown_until <= time.monotonic():
            return
        assert self._budget_lock is not None
        async with self._budget_lock:
            while True:
                await self._wait_cooldown()
                wait = self.budget.try_acquire(tokens)  # no await since the cooldown check: it still holds
                if wait == 0:
                    return
                await self._sleep(wait)

    async def _attempt(self, params: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | _Failure:
        """One HTTP exchange: the parsed reply, or why it failed."""
        template = await self._request_template()
        self._ensure_built()
        request = template.build(self._http, {"model": self.config.model, "messages": messages, **params})
        try:
            # The client's timeout bounds each phase; this one bounds the whole exchange (a server trickling bytes).
            # asyncio.timeout (3.11+) does so without wrapping the exchange in a task of its own.
            if _TIMEOUT is not None:
                async with _TIMEOUT(self.config.timeout_s * 2 + 5):
                    response = await self._http.send(request)
            else:
                response = await asyncio.wait_for(self._http.send(request), self.config.timeout_s * 2 + 5)
        except (httpx2.TimeoutException, asyncio.TimeoutError) as exc:  # noqa: UP041 - distinct on Python 3.10
            refused = _refused_connection(exc)
            if refused is not None:  # the aiohttp transport reports a refused connection as a connect timeout
                return _Failure("connection error", refused)
            return _Failure("timeout")
        except Exception as exc:  # as the SDK: whatever the transport raises is a connection error, retried
            return _Failure("connection error", self._scrub(type(exc).__name__))
        if not response.is_success:
            status = response.status_code
            retryable = status in _RETRYABLE_STATUS or status >= 500
            retry_after = retry_after_seconds(response.headers) if status in (429, 503) else None
            return _Failure(f"http {status}", self._scrub(_error_message(response))[:300], retryable, retry_after)
        return _parse_reply(response.content)

    async def complete(self, request: ChatRequest, on_send: Callable[[str], None] | None = None) -> CompletionResult:
        """Send one request within the limits, retrying what is worth retrying; never raises for a failed request.
        ``on_send(key)`` is called just before the first attempt leaves (the journal marks it in flight)."""
        self._bind_loop()
        assert self._semaphore is not None
        config = self.config
        key = self.key_for(request)
        params = self.params_for(request)
        estimate = estimate_prompt_tokens(request.messages) + int(params.get("max_tokens") or 0)
        started = time.monotonic()
        attempts, latency = 0, 0.0
        while True:
            async with self._semaphore:
                await self._pay(estimate)
                if attempts == 0 and on_send is not None:
                    on_send(key)
                attempts += 1
                sent = time.monotonic()
                outcome = await self._attempt(params, request.messages)
                latency = time.monotonic() - sent
            if not isinstance(outcome, _Failure):
                return self._success(key, outcome, estimate, request, attempts, latency, time.monotonic() - started)
            if not outcome.retryable or attempts > config.max_retries:
                error = outcome.reason
                if outcome.retryable or attempts > 1:
                    error += f" after {attempts} attempt{'s' if attempts > 1 else ''}"
                if outcome.detail:
                    error += f": {outcome.detail}"
                logger.debug("request %s failed: %s", key[:12], error)
                return CompletionResult(
                    key=key,
                    attempts=attempts,
                    latency_s=latency,
                    elapsed_s=time.monotonic() - started,
                    error=error,
                    mode="online",
                )
            delay = backoff_delay(attempts - 1, config.backoff_base_s, config.backoff_max_s, self._rng)
            if outcome.retry_after_s is not None:
                retry_after = min(outcome.retry_after_s, MAX_RETRY_AFTER_S)
                delay = max(delay, retry_after)
                if outcome.reason == "http 429":
                    # A rate limit applies to every request: pause them all, not just this one.
                    self._cooldown_until = max(self._cooldown_until, time.monotonic() + retry_after)
            logger.debug("request %s: %s on attempt %d; retrying in %.2f s", key[:12], outcome.reason, attempts, delay)
            await asyncio.sleep(delay)

    def _success(
        self,
        key: str,
        reply: dict[str, Any],
        estimate: int,
        request: ChatRequest,
        attempts: int,
        latency: float,
        elapsed: float,
    ) -> CompletionResult:
        choice = reply["choices"][0]
        message = choice.get("message") or {}
        text = message_text(message.get("content"))
        usage = reply.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            # No usage reported: count the estimates rather than nothing.
            prompt_tokens = estimate_prompt_tokens(request.messages)
            completion_tokens = math.ceil(len(text) / 4)
        self.budget.refund(estimate - (prompt_tokens + completion_tokens))
        reported = reply.get("model") if isinstance(reply.get("model"), str) else None
        refusal = message.get("refusal")
        return CompletionResult(
            key=key,
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd(
                prompt_tokens,
                completion_tokens,
                model=self.config.model,
                reported_model=reported,
                prices=self.config.price_table,
                provider=self.config.provider,
            ),
            latency_s=latency,
            elapsed_s=elapsed,
            attempts=attempts,
            model=reported,
            refusal=refusal if isinstance(refusal, str) else None,
            system_fingerprint=reply.get("system_fingerprint"),
            mode="online",
        )

    async def _complete_safely(
        self, request: ChatRequest, on_send: Callable[[str], None] | None = None
    ) -> CompletionResult:
        """:meth:`complete`, turning an unexpected exception (a bug, not a failed request) into a failed result."""
        try:
            return await self.complete(request, on_send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("unexpected error in a request")
            error = self._scrub(f"client error: {type(exc).__name__}")
            return CompletionResult(key=request.key or "", error=error, mode="online")

    # -- many requests -------------------------------------------------------------------------------------------------
    async def run(
        self,
        requests: Iterable[ChatRequest],
        journal: Journal | str | os.PathLike | None = None,
        progress: bool = True,
        retry_failed: bool = True,
    ) -> list[CompletionResult]:
        """Complete every request and return the results in the same order.

        Requests whose key the journal holds are not sent: their journaled result is returned (a failed one is sent
        again when ``retry_failed``). Each new result is appended to the journal as soon as it finishes. Requests with
        the same key are sent once. Totals are left in :attr:`last_run_stats`.

        ``requests`` may be a generator: it is consumed as capacity frees up, so only a bounded window of requests
        (and their images) is alive at once, however long the run.

        Args:
            requests: what to send.
            journal: a :class:`~vital.llm.journal.Journal` or a path to open one at (closed again at the end).
            progress: show a tqdm progress bar.
            retry_failed: resend requests whose journaled result is a failure.

        Raises:
            EndpointError: a request failed with 401, 403 or 404, which every other request would meet too.
        """
        with fewer_young_collections():
            return await self._run(requests, journal, progress, retry_failed)

    async def _run(
        self,
        requests: Iterable[ChatRequest],
        journal: Journal | str | os.PathLike | None,
        progress: bool,
        retry_failed: bool,
    ) -> list[CompletionResult]:
        self._bind_loop()
        started = time.monotonic()
        own_journal = journal is not None and not isinstance(journal, Journal)
        journal_ = Journal.open(journal) if own_journal else journal
        stats = RunStats()
        self.last_run_stats = stats
        keys: list[str] = []
        results: dict[str, CompletionResult] = {}
        sent: set[str] = set()
        tasks: set[asyncio.Task] = set()
        total = len(requests) if isinstance(requests, Sized) else None
        bar = tqdm(total=total, disable=not progress, unit="req")

        on_send = journal_.mark_sent if journal_ is not None else None

        # A bounded window of tasks (not one per request): the semaphore bounds what is in flight, the extra tasks
        # keep the pipe full while others sleep in backoff. A finished task frees its slot itself, so starting the
        # next one costs O(1), not a wait over the whole window.
        window = max(2 * self.config.concurrency, self.config.concurrency + 16)
        slots = asyncio.Semaphore(window)
        errors: list[BaseException] = []

        async def one(key: str, request: ChatRequest) -> None:
            try:
                result = await self._complete_safely(request, on_send)
                if journal_ is not None:
                    if key in journal_.interrupted:
                        result = dataclasses.replace(result, resent_after_kill=True)
                    journal_.append(result)
                results[key] = result
                stats.add(result)
                if progress:
                    bar.update(1)
                    bar.set_postfix(failed=stats.failed, cost=f"${stats.cost_usd:.2f}", refresh=False)
                if failure_category(result.error) in _FATAL_FAILURES:
                    raise EndpointError(f"the endpoint refused a request ({result.error}); stopping the run")
            except Exception as exc:  # a journal that cannot be written, or an endpoint that refuses us, stops the run
                errors.append(exc)
            finally:
                slots.release()

        try:
            for request in requests:
                key = self.key_for(request)
                keys.append(key)
                if key in results or key in sent:
                    bar.update(1)  # a duplicate: answered by its first occurrence
                    continue
                previous = journal_.done(key) if journal_ is not None else None
                if previous is not None and (previous.ok or not retry_failed):
                    results[key] = previous
                    stats.resumed += 1
                    bar.update(1)
                    continue
                sent.add(key)
                await slots.acquire()
                if errors:
                    raise errors[0]
                request = request if request.key == key else dataclasses.replace(request, key=key)
                task = asyncio.create_task(one(key, request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            for _ in range(window):  # every slot back: every task finished (or one failed)
                await slots.acquire()
                if errors:
                    raise errors[0]
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            bar.close()
            stats.requests = len(keys)
            stats.wall_s = time.monotonic() - started
            if own_journal:
                journal_.close()
            elif journal_ is not None:
                journal_.sync()
            # Failed requests are a warning with their reasons (the stages record them as failures too). A run given
            # no request says nothing: its caller counts what the journals answered.
            if keys:
                logger.log(logging.WARNING if stats.failed else logging.INFO, "%s", stats.summary())
        return [results[key] for key in keys]


def _refused_connection(exc: BaseException) -> str | None:
    """The name of a connection failure (not a timeout) in ``exc``'s chain of causes, if there is one."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
            return type(exc).__name__
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


class _ChatRequestTemplate:
    """A chat completion request as the SDK builds it for this endpoint, less its body.

    The SDK's ``post()`` rebuilds the same URL (parsed and merged three times), headers and request options for every
    request, which cost about 40 % of the client's CPU per request at a few hundred in flight. The URL, headers and
    extensions (the timeout; on Azure, the origin its redirect hook checks) depend only on the client, so they are
    learnt once, from one request the SDK builds against a transport that records it and sends nothing, and each
    request is then built by the SDK's own HTTP client (openai's transport, with the hooks the SDK installed on it)
    from them and its body. Retries are ours anyway (the SDK's are off), and a static API key is the only
    authentication this client configures, so nothing the SDK would do per request is skipped
    (docs/design.md, "LLM client throughput")."""

    _PATH = "/chat/completions"
    _SKIPPED = {"host", "content-length"}  # recomputed for each request

    def __init__(self, url: httpx2.URL, headers: list[tuple[str, str]], extensions: dict[str, Any]) -> None:
        self.url, self.headers, self.extensions = url, headers, extensions

    @classmethod
    async def learn(
        cls, build_sdk: Callable[[Any], openai.AsyncOpenAI], model: str, options: Mapping[str, Any]
    ) -> "_ChatRequestTemplate":
        seen: list[httpx2.Request] = []

        def record(request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            return httpx2.Response(200, json={})

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(record)) as recorder:
            sdk = build_sdk(recorder)
            await sdk.post(cls._PATH, cast_to=httpx2.Response, body={"model": model, "messages": []}, options=options)
            defaults = recorder.headers  # the recording client's own defaults; the sending client adds its own
        (request,) = seen
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() not in cls._SKIPPED and defaults.get(name) != value
        ]
        return cls(request.url, headers, dict(request.extensions))

    def build(self, http_client: Any, body: Mapping[str, Any]) -> httpx2.Request:
        """The request carrying ``body``, serialised as the SDK serialises JSON bodies."""
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        return http_client.build_request(
            "POST", self.url, headers=self.headers, content=content, extensions=dict(self.extensions)
        )


def _error_message(response: httpx2.Response) -> str:
    """What an error response says: its JSON ``error.message`` (OpenAI's shape), else its text."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else text


def message_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, or the joined text of content parts (some servers)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _parse_reply(content: bytes) -> dict[str, Any] | _Failure:
    """The reply JSON if it is a usable chat completion, else a (retryable) malformed-reply failure."""
    try:
        reply = json.loads(content)
    except ValueError:
        return _Failure("malformed reply", "invalid JSON")
    if not isinstance(reply, dict):
        return _Failure("malformed reply", "not a JSON object")
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        return _Failure("malformed reply", "no choices")
    if not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
        return _Failure("malformed reply", "no message")
    return reply


def run_sync(
    config: EndpointConfig,
    requests: Iterable[ChatRequest],
    journal: Journal | str | os.PathLike | None = None,
    progress: bool = True,
    retry_failed: bool = True,
) -> tuple[list[CompletionResult], RunStats]:
    """Run ``requests`` from synchronous code (``asyncio.run``); returns the results in order and the run's totals."""

    async def main() -> tuple[list[CompletionResult], RunStats]:
        async with AsyncLLMClient(config) as client:
            results = await client.run(requests, journal=journal, progress=progress, retry_failed=retry_failed)
            assert client.last_run_stats is not None
            return results, client.last_run_stats

    return asyncio.run(main())
