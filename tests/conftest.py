"""Shared fixtures. The environment is made offline before transformers/datasets are imported anywhere."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


import pytest  # noqa: E402


@pytest.fixture
def stand_in():
    """Start stand-in endpoints in this process for a test: ``stand_in(latency_ms=..., faults=..., seed=...,
    batch_delay_s=...)`` starts one (`vital.testing.serve.start_server`, chat and Batch API) and returns the stage
    flags that point at it; ``stand_in.servers`` holds the servers started, all stopped after the test."""
    from vital.testing.serve import stage_args, start_server

    servers = []

    def start(**options):
        servers.append(start_server(**options))
        return stage_args(servers[-1])

    start.servers = servers
    yield start
    for server in servers:
        server.stop()
