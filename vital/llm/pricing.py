"""What a chat completion costs: a price table in USD per million tokens, and the lookup rules.

Prices are looked up for the model the request asked for, then for the model the server reports (Azure deployments
have their own names), by exact name and then by the longest table entry that prefixes it (``gpt-4o-2024-08-06`` is
priced as ``gpt-4o``, ``gpt-4o-mini-2024-07-18`` as ``gpt-4o-mini``). A model with no price costs 0: silently on an
``openai-compatible`` endpoint (a local vLLM or ``transformers serve``), with a one-time warning on OpenAI and Azure.

The defaults are OpenAI's list prices for standard (online) requests; check them against your contract and pass
your own table to :class:`vital.llm.EndpointConfig` (``prices``) when they differ. Requests sent through the Batch API
(``--mode batch``) are priced by an entry's ``batch_prompt`` and ``batch_completion`` when it has them, else at
:data:`BATCH_DISCOUNT` times its online prices (OpenAI and Azure's Global Batch both charge half).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping


logger = logging.getLogger(__name__)

# model -> {"prompt": USD per 1M prompt tokens, "completion": USD per 1M completion tokens}
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o": {"prompt": 2.50, "completion": 10.00},
    "gpt-4o-2024-05-13": {"prompt": 5.00, "completion": 15.00},
    "gpt-4o-mini": {"prompt": 0.15, "completion": 0.60},
    "gpt-4-turbo": {"prompt": 10.00, "completion": 30.00},
    "gpt-4-vision-preview": {"prompt": 10.00, "completion": 30.00},
    "gpt-4-1106-vision-preview": {"prompt": 10.00, "completion": 30.00},
    "gpt-4.1": {"prompt": 2.00, "completion": 8.00},
    "gpt-4.1-mini": {"prompt": 0.40, "completion": 1.60},
    "gpt-4.1-nano": {"prompt": 0.10, "completion": 0.40},
    "text-embedding-ada-002": {"prompt": 0.10, "completion": 0.0},  # embeddings (the paper's clustering text)
}

# The Batch API's price as a share of the online price, for table entries without their own batch prices.
BATCH_DISCOUNT = 0.5

_warned: set[str] = set()


def find_price(models: list[str | None], prices: Mapping[str, Mapping[str, float]]) -> Mapping[str, float] | None:
    """The first price found for ``models`` (tried in order): exact name first, then the longest prefixing entry."""
    names = [model for model in models if model]
    for model in names:
        if model in prices:
            return prices[model]
    for model in names:
        prefixes = [name for name in prices if model.startswith(name)]
        if prefixes:
            return prices[max(prefixes, key=len)]
    return None


def cost_usd(
    prompt_tokens: int,
    completion_tokens: int,
    *,
    model: str,
    reported_model: str | None = None,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    provider: str = "openai",
    batch: bool = False,
) -> float:
    """The cost in USD of one completion.

    Args:
        prompt_tokens, completion_tokens: the usage the server reported.
        model: the model (or Azure deployment) the request named.
        reported_model: the model the server says answered, tried after ``model``.
        prices: a price table (see :data:`DEFAULT_PRICES`); ``None`` uses the defaults.
        provider: ``"openai-compatible"`` endpoints cost 0 without a warning when the model has no price.
        batch: price the request as sent through the Batch API (see :func:`batch_price`).
    """
    price = find_price([model, reported_model], DEFAULT_PRICES if prices is None else prices)
    if price is None:
        if provider != "openai-compatible" and model not in _warned:
            _warned.add(model)
            logger.warning("no price for model %r (reported %r): its cost is counted as 0", model, reported_model)
        return 0.0
    if batch:
        price = batch_price(price)
    return (prompt_tokens * float(price["prompt"]) + completion_tokens * float(price["completion"])) / 1_000_000


def batch_price(price: Mapping[str, float]) -> dict[str, float]:
    """The Batch API price of a table entry: its ``batch_prompt``/``batch_completion`` if given, else
    :data:`BATCH_DISCOUNT` times its online ``prompt``/``completion`` price."""
    return {
        side: float(price.get(f"batch_{side}", BATCH_DISCOUNT * float(price[side])))
        for side in ("prompt", "completion")
    }
