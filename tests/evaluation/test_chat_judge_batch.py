"""The open visual chat judge in batch mode: verdicts, re-asks of unreadable ones as a second batch round, and
exclusions come out exactly as online."""

import pytest

from vital.evaluation.benchmarks import chat_rows
from vital.evaluation.chat_judge import (
    build_chat_judge_messages,
    chat_judge_rows,
    chat_retry_job,
    plan_chat_judge_jobs,
    relative_scores,
)
from vital.evaluation.fixtures import open_chat_records, write_open_chat
from vital.llm import EndpointConfig
from vital.llm.batch import BatchConfig
from vital.llm.jobs import run_jobs_sharded
from vital.testing.standin import _last_user_text
from vital.testing.standin_batch import start_batch_stand_in


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    folder = write_open_chat(tmp_path_factory.mktemp("chat"), n=4)
    from datasets import Image

    return chat_rows(open_chat_records(4), folder / "images").cast_column("image", Image(decode=False)).to_list()


class ScriptedJudge:
    """Replies by the model answer in the request: a script of replies per answer, the last one repeated."""

    def __init__(self, script):
        self.script, self.seen = script, {}

    def __call__(self, request_json):
        text = _last_user_text(request_json)
        answer = text.split("[Assistant 2]\n", 1)[1].split("\n[End of Assistant 2]", 1)[0]
        count = self.seen[answer] = self.seen.get(answer, 0) + 1
        return self.script[answer][min(count, len(self.script[answer])) - 1]


def judge_all(chat, predictions, judge, journals, batch):
    endpoint = EndpointConfig(provider="openai-compatible", base_url="http://127.0.0.1:9/v1", model="judge")
    server, endpoint = start_batch_stand_in(endpoint, judge, batch_delay_s=0.02)
    jobs = plan_chat_judge_jobs(chat, predictions, endpoint.model)
    items = {item["question_id"]: item for item in chat}
    try:
        results = run_jobs_sharded(
            jobs,
            endpoint,
            lambda job: build_chat_judge_messages(
                items[job.record_id], predictions[job.record_id], retry=job.task != "chat-judge"
            ),
            journals,
            followup=lambda job, result: chat_retry_job(job, result, retries=1),
            batch=batch,
        )
    finally:
        server.stop()
    rows = chat_judge_rows(chat, predictions, jobs, results, "judge", 1, answer_errors={"3": "http 500"})
    return {r["question_id"]: r for r in rows}, server


SCRIPT = {
    "good": ["9 6\nFine."],
    "late": ["Both answers are fine.", "8 4\nOn second thought."],
    "never": ["I would rather not grade this.", "Still no grade."],
}


@pytest.mark.slow
def test_chat_judge_in_batch_mode_equals_online(chat, tmp_path):
    predictions = {"0": "good", "1": "late", "2": "never"}  # "3" has no answer (the endpoint failed)
    config = BatchConfig(mode="batch", batch_poll_s=0.02, batch_poll_max_s=0.1)
    judge = ScriptedJudge(SCRIPT)
    rows, server = judge_all(chat, predictions, judge, tmp_path / "batch", config)
    assert server.stats.requests == 0 and server.batch_stats.batches == 2  # first asks, then the two re-asks
    assert sorted(server.batch_stats.submitted.values()) == [1] * 5
    assert judge.seen == {"good": 1, "late": 2, "never": 2}
    assert (rows["0"]["score_reference"], rows["0"]["score_model"], rows["0"]["judge_attempts"]) == (9, 6, 1)
    assert (rows["1"]["score_reference"], rows["1"]["score_model"], rows["1"]["judge_attempts"]) == (8, 4, 2)
    assert rows["2"]["score_model"] is None and rows["2"]["judge_error"].endswith("no scores")
    online, _ = judge_all(chat, predictions, ScriptedJudge(SCRIPT), tmp_path / "online", None)
    strip = ("judge",)  # the judge block holds request costs, which differ by mode
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows.values()] == [
        {k: v for k, v in r.items() if k not in strip} for r in online.values()
    ]
    assert relative_scores(list(rows.values())) == relative_scores(list(online.values()))
