"""A stage run on an OpenAI-compatible endpoint logs no line per HTTP request at INFO (they go to DEBUG)."""

import logging

import pytest

from vital.runner import load_recipe, setup_logging


def _per_request(records) -> list[logging.LogRecord]:
    return [
        r for r in records if r.getMessage().startswith("HTTP Request:") or r.name.startswith(("httpx", "httpcore"))
    ]


@pytest.mark.slow
def test_a_generate_run_logs_no_per_request_info_lines(tmp_path, caplog, monkeypatch, stand_in):
    caplog.set_level(logging.DEBUG)  # capture everything the loggers let through
    for name in ("httpx", "httpx2"):  # as in a fresh process, whatever earlier tests configured
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
        caplog.set_level(logging.NOTSET, logger=name)
    hub = f"local:{tmp_path}/hub"
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    args = ["--config", "recipes/quickstart/generate.yaml", "--hub", hub, "--journal_dir", str(tmp_path / "gen")]
    (candidates, *_) = load_recipe("generate").cli([*args, *stand_in(faults=0.1, latency_ms=20)])
    assert candidates.repo_id  # the run made its requests and pushed
    info = [r for r in _per_request(caplog.records) if r.levelno >= logging.INFO]
    assert info == [], [r.getMessage() for r in info[:3]]
    assert [r for r in caplog.records if r.name.startswith("vital") and r.levelno == logging.INFO]  # progress stays


def test_per_request_lines_are_debug_and_shown_only_at_debug(caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.NOTSET, logger="httpx")  # whatever an earlier test set, the filter alone decides here
    monkeypatch.setattr(logging.getLogger("httpx"), "disabled", False)  # a dictConfig elsewhere may have disabled it
    setup_logging()
    logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1/v1/chat/completions "HTTP/1.1 200 OK"')
    assert _per_request(caplog.records) == []
    setup_logging(logging.DEBUG)
    try:
        logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1/v1/chat/completions "HTTP/1.1 200 OK"')
        (record,) = _per_request(caplog.records)
        assert record.levelno == logging.DEBUG and record.levelname == "DEBUG"
        logging.getLogger("httpx").warning("connection reset")  # warnings stay warnings
        assert _per_request(caplog.records)[-1].levelno == logging.WARNING
    finally:
        setup_logging()
