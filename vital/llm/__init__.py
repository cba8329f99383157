"""Talking to models over HTTP: one client for every OpenAI-compatible endpoint, and its journal.

See :mod:`vital.llm.client` (the client), :mod:`vital.llm.journal` (resume and shards), :mod:`vital.llm.limits`
(budgets and backoff) and :mod:`vital.llm.pricing` (costs). Tests run it against
:class:`vital.testing.standin.StandInServer`.
"""

from vital.llm.client import (
    AsyncLLMClient,
    ChatRequest,
    EndpointConfig,
    EndpointError,
    RunStats,
    image_to_data_url,
    request_key,
    run_sync,
)
from vital.llm.journal import CompletionResult, Journal, merge_journals, parse_shard, shard_items, shard_path
from vital.llm.pricing import DEFAULT_PRICES
from vital.llm.provenance import STAND_IN_MODEL, from_stand_in


__all__ = [
    "DEFAULT_PRICES",
    "STAND_IN_MODEL",
    "AsyncLLMClient",
    "ChatRequest",
    "CompletionResult",
    "EndpointConfig",
    "EndpointError",
    "Journal",
    "RunStats",
    "from_stand_in",
    "image_to_data_url",
    "merge_journals",
    "parse_shard",
    "request_key",
    "run_sync",
    "shard_items",
    "shard_path",
]
