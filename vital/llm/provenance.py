"""Whether replies came from a real model or from the bundled stand-in server.

The stand-in (``vital stand-in``; docs/design.md) answers every request as the model :data:`STAND_IN_MODEL`, whatever
model the request names, so a stage tells stand-in replies from model output by the replies themselves (or, before any
reply, by the configured model) and says so in its rows and cards. This module is production code: the stand-in
(in ``vital.testing``) imports the name from here, never the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


STAND_IN_MODEL = "vital-stand-in"


def from_stand_in(endpoint: Any = None, results: Iterable[Any] = ()) -> bool:
    """True when any of ``results`` (objects with a ``model``, e.g. `CompletionResult`) was answered by the stand-in,
    or when ``endpoint`` (an `EndpointConfig`) names the stand-in's model."""
    if endpoint is not None and getattr(endpoint, "model", None) == STAND_IN_MODEL:
        return True
    return any(getattr(result, "model", None) == STAND_IN_MODEL for result in results)


STAND_IN_BASE_URL = "vital stand-in (loopback)"


def recorded_endpoint(endpoint: Any, stand_in: bool) -> Any:
    """The endpoint as a lineage records it. A stand-in run's ``base_url`` is a loopback port that changes with every
    start of ``vital stand-in``: it is recorded as :data:`STAND_IN_BASE_URL`, so the same inputs and settings make the
    same card (and no new commit) whichever port served them. Any other endpoint is recorded as configured."""
    if not stand_in:
        return endpoint
    from dataclasses import asdict

    return {**asdict(endpoint), "base_url": STAND_IN_BASE_URL}
