"""``vital stand-in``: the bundled stand-in endpoint, served on loopback for the API stages (offline runs and tests).

One server answers every request the API stages send (``generate``, ``rate``, ``evaluate``), through OpenAI chat
completions and the Batch API (files and batches), so a stage talks to it as to any OpenAI-compatible server::

    vital stand-in --port 8123                                   # prints http://127.0.0.1:8123/v1; Ctrl-C stops it
    vital generate --config recipes/quickstart/generate.yaml --base_url http://127.0.0.1:8123/v1
    python -m vital.testing.serve --port 0 --url_file /tmp/url    # a free port, its URL written for a launcher

`vital pipeline` starts it for a run when the pipeline YAML has a ``stand_in:`` key. Every reply names the model
:data:`vital.llm.STAND_IN_MODEL`, which is how the stages' rows and cards say that their data came from the stand-in.

What it answers (:class:`StandInResponder`, dispatched on the request's text):

* generation and two-answer requests about the bundled sample figures: the maintainers' replies
  (:class:`vital.testing.sample_replies.SampleDataResponder`; a figure it has no reply for gets an unusable one);
* the rating judge's rubric requests: :func:`vital.testing.sample_replies.judge_reply`;
* the evaluation stage's open-chat judge, pairwise judge and questions for the evaluated model:
  :class:`vital.testing.eval_replies.EvalStandInResponder`.

Injected faults (``--faults``) are split evenly over 429 (a short Retry-After), 500 and malformed replies, drawn from
``--seed``: what the fault tests and the quickstart use to show that retries and the journal hold.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vital.testing.standin import _last_user_text


logger = logging.getLogger("vital.stand_in")

DEFAULT_PORT = 8123


class StandInResponder:
    """``request_json -> reply text`` for every request of the API stages (see the module docstring).

    Args:
        pairs: the pairs whose captions key the generation replies (default: the bundled sample pairs).
    """

    def __init__(self, pairs=None) -> None:
        from vital.testing.eval_replies import EvalStandInResponder
        from vital.testing.sample_replies import SampleDataResponder

        self.generation = SampleDataResponder(pairs)
        self.evaluation = EvalStandInResponder()

    def __call__(self, request_json: Mapping[str, Any]) -> str:
        from vital.generation import CAPTION_FRAME

        text = _last_user_text(request_json)
        judged = ("[Assistant 1]" in text and "[Assistant 2]" in text) or (
            "[Reference answer]" in text and "[Assistant A]" in text
        )
        if not judged and ("Give the pair ONE score" in text or CAPTION_FRAME in text):
            return self.generation(request_json)  # generation, two-answer and rubric-judge requests
        return self.evaluation(request_json)  # evaluation judges, and questions for the evaluated model


def start_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    latency_ms: float = 0.0,
    faults: float = 0.0,
    seed: int = 0,
    batch_delay_s: float = 0.2,
    responder=None,
    **kwargs: Any,
):
    """Start the stand-in (chat completions and the Batch API) in a background thread and return the running
    `BatchStandInServer` (``base_url`` is what a stage takes as ``--base_url``; call ``stop()`` when done).

    Args:
        host, port: where to listen; port 0 picks a free one.
        latency_ms: mean time to answer a request.
        faults: the share of attempts answered with a fault, split evenly over 429, 500 and malformed replies.
        seed: seeds the fault and latency draws.
        batch_delay_s: how long after creation a batch is finished.
        responder: ``request_json -> reply text`` (default: :class:`StandInResponder`).
        **kwargs: further `BatchStandInServer` options (``batch_script``, ``fault_script``, ``poll_500``, ...).
    """
    from vital.testing.standin_batch import BatchStandInServer

    rate = faults / 3
    options = {"fault_429": rate, "fault_500": rate, "fault_malformed": rate, "retry_after_s": 0.05, **kwargs}
    return BatchStandInServer(
        responder if responder is not None else StandInResponder(),
        host=host,
        port=port,
        latency_ms=latency_ms,
        seed=seed,
        batch_delay_s=batch_delay_s,
        **options,
    ).start()


@contextlib.contextmanager
def running_stand_in(**options: Any) -> Iterator[Any]:
    """:func:`start_server` as a context manager: the running server, stopped on exit."""
    server = start_server(**options)
    try:
        yield server
    finally:
        server.stop()


def stage_args(server) -> list[str]:
    """The flags that point an API stage (generate, rate, evaluate) at a running stand-in ``server``: what
    ``vital pipeline`` passes for the stand-in it starts."""
    from vital.llm import STAND_IN_MODEL

    return ["--provider", "openai-compatible", "--base_url", server.base_url, "--model", STAND_IN_MODEL]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vital stand-in",
        description="Serve the bundled stand-in endpoint (chat completions and Batch API) on loopback until killed.",
        allow_abbrev=False,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"0 picks a free port (default {DEFAULT_PORT})")
    parser.add_argument("--latency_ms", type=float, default=0.0, help="mean time to answer a request")
    parser.add_argument("--faults", type=float, default=0.0, help="fault rate, split over 429/500/malformed")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fault and latency draws")
    parser.add_argument("--batch_delay_s", type=float, default=0.2, help="how long a batch takes to finish")
    parser.add_argument("--url_file", default=None, help="also write the base URL to this file (for launchers)")
    parser.add_argument(
        "--exit_with_parent",
        action="store_true",
        help="stop when the process that started this one is gone, even if it was killed (for launchers)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; print the base URL (and write it to ``--url_file``) once it listens."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = start_server(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        faults=args.faults,
        seed=args.seed,
        batch_delay_s=args.batch_delay_s,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.exit_with_parent:
        parent = os.getppid()

        def watch() -> None:  # a SIGKILLed launcher cannot stop us: its death re-parents this process
            while not stop.wait(0.5):
                if os.getppid() != parent:
                    stop.set()

        threading.Thread(target=watch, name="vital-stand-in-parent", daemon=True).start()
    try:
        print(server.base_url, flush=True)
        if args.url_file:
            path = Path(args.url_file)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            tmp.write_text(server.base_url + "\n", encoding="utf-8")
            tmp.replace(path)  # a launcher polling the file never reads half a URL
        logger.info("stand-in endpoint (chat and Batch API) at %s; answers as model 'vital-stand-in'", server.base_url)
        while not stop.wait(3600):
            pass
    finally:
        server.stop()
        logger.info("stopped; %s", served(server))
    return 0


def served(server: Any) -> str:
    """What a stopped server answered: chat requests by outcome, and what came through its Batch API."""
    text = f"chat requests by outcome: {dict(server.stats.outcomes)}"
    batch = getattr(server, "batch_stats", None)
    if batch is not None:
        text += (
            f"; Batch API: {batch.files} file(s) uploaded, {batch.batches} batch(es) created, "
            f"{sum(batch.submitted.values())} request(s) submitted"
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
