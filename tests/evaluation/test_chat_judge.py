"""The open visual chat judge: its prompt, re-asks of unreadable verdicts, exclusion (never a score) and both
definitions of the relative score."""

import re

import pytest

from vital.evaluation.benchmarks import chat_rows
from vital.evaluation.chat_judge import (
    CHAT_JUDGE_RETRY_NOTE,
    build_chat_judge_messages,
    chat_judge_prompt_sha,
    chat_judge_rows,
    chat_retry_job,
    plan_chat_judge_jobs,
    relative_scores,
)
from vital.evaluation.fixtures import open_chat_records, write_open_chat
from vital.llm import EndpointConfig
from vital.llm.jobs import run_jobs_sharded
from vital.testing.sample_replies import start_stand_in


def row(qid, kind, domain, reference, model):
    return {"question_id": qid, "type": kind, "domain": domain, "score_reference": reference, "score_model": model,
            "judge_error": None if reference is not None else "unparseable after 2 attempt(s): no scores"}  # fmt: skip


def test_relative_score_by_both_definitions_on_hand_computed_scores():
    rows = [
        row("1", "conversation", "ct_scan", 8, 4),  # ratio 0.5
        row("2", "conversation", "mri", 10, 10),  # ratio 1.0
        row("3", "detailed_description", "ct_scan", 5, 6),  # ratio 1.2
        row("4", "detailed_description", "mri", None, None),  # unreadable: left out, counted
    ]
    scores = relative_scores(rows)
    overall = scores["overall"]
    assert (overall["n"], overall["n_scored"], overall["n_excluded"]) == (4, 3, 1)
    assert overall["excluded_reasons"] == {"no scores": 1}
    assert overall["mean_of_ratios"] == pytest.approx(100 * (0.5 + 1.0 + 1.2) / 3)  # 90.0: LLaVA-Med's number
    assert overall["ratio_of_means"] == pytest.approx(100 * (20 / 3) / (23 / 3))  # 86.96
    assert overall["reference_mean"] == pytest.approx(23 / 3) and overall["model_mean"] == pytest.approx(20 / 3)
    conversation = scores["by_type"]["conversation"]
    assert conversation["mean_of_ratios"] == pytest.approx(75.0)
    assert conversation["ratio_of_means"] == pytest.approx(100 * 14 / 18)
    ct = scores["by_domain"]["ct_scan"]
    assert ct["mean_of_ratios"] == pytest.approx(85.0) and ct["ratio_of_means"] == pytest.approx(100 * 10 / 13)
    mri = scores["by_domain"]["mri"]
    assert (mri["n_scored"], mri["n_excluded"], mri["mean_of_ratios"]) == (1, 1, 100.0)
    nothing = relative_scores([row("9", "conversation", "gross", None, None)])["overall"]
    assert nothing["mean_of_ratios"] is None and nothing["ratio_of_means"] is None and nothing["n_excluded"] == 1


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    folder = write_open_chat(tmp_path_factory.mktemp("chat"), n=4)
    from datasets import Image

    return chat_rows(open_chat_records(4), folder / "images").cast_column("image", Image(decode=False)).to_list()


def test_the_prompt_shows_context_both_answers_and_optionally_the_image(chat):
    item = chat[0]
    messages = build_chat_judge_messages(item, "A chest radiograph with nodules.")
    text = messages[1]["content"][-1]["text"]
    assert item["fig_caption"] in text and all(m in text for m in item["in_text_mention"])
    assert f"[Assistant 1]\n{item['gpt4_answer']}\n[End of Assistant 1]" in text
    assert "[Assistant 2]\nA chest radiograph with nodules.\n[End of Assistant 2]" in text
    assert "cannot see the figure" in text and len(messages[1]["content"]) == 1
    with_image = build_chat_judge_messages(item, "x", image_url="data:image/png;base64,AAAA", retry=True)
    assert with_image[1]["content"][0]["type"] == "image_url" and "is attached" in with_image[1]["content"][1]["text"]
    assert with_image[1]["content"][1]["text"].endswith(CHAT_JUDGE_RETRY_NOTE)
    assert re.fullmatch(r"[0-9a-f]{16}", chat_judge_prompt_sha())


class ScriptedJudge:
    """Replies by the model answer in the request: a script of replies per answer, the last one repeated."""

    def __init__(self, script):
        self.script, self.seen = script, {}

    def __call__(self, request_json):
        from vital.testing.standin import _last_user_text

        text = _last_user_text(request_json)
        answer = text.split("[Assistant 2]\n", 1)[1].split("\n[End of Assistant 2]", 1)[0]
        count = self.seen[answer] = self.seen.get(answer, 0) + 1
        replies = self.script[answer]
        return replies[min(count, len(replies)) - 1]


def test_unreadable_verdicts_are_asked_again_then_excluded_and_counted(chat, tmp_path):
    predictions = {"0": "good", "1": "late", "2": "never"}  # "3" has no answer (the endpoint failed)
    judge = ScriptedJudge(
        {
            "good": ["9 6\nFine."],
            "late": ["Both answers are fine.", "8 4\nOn second thought."],
            "never": ["I would rather not grade this.", "Still no grade."],
        }
    )
    endpoint = EndpointConfig(provider="openai-compatible", base_url="http://127.0.0.1:9/v1", model="judge")
    server, endpoint = start_stand_in(endpoint, judge)
    jobs = plan_chat_judge_jobs(chat, predictions, endpoint.model)
    assert [job.record_id for job in jobs] == ["0", "1", "2"]
    items = {item["question_id"]: item for item in chat}
    try:
        results = run_jobs_sharded(
            jobs,
            endpoint,
            lambda job: build_chat_judge_messages(
                items[job.record_id], predictions[job.record_id], retry=job.task != "chat-judge"
            ),  # fmt: skip
            tmp_path,
            followup=lambda job, result: chat_retry_job(job, result, retries=1),
        )
    finally:
        server.stop()
    rows = {r["question_id"]: r for r in chat_judge_rows(chat, predictions, jobs, results, "judge", 1,
                                                          answer_errors={"3": "http 500"})}  # fmt: skip
    assert (rows["0"]["score_reference"], rows["0"]["score_model"], rows["0"]["judge_attempts"]) == (9, 6, 1)
    assert (rows["1"]["score_reference"], rows["1"]["score_model"], rows["1"]["judge_attempts"]) == (8, 4, 2)
    assert rows["1"]["judge_replies"] == ["Both answers are fine.", "8 4\nOn second thought."]
    never = rows["2"]
    assert never["score_reference"] is None and never["score_model"] is None and never["ratio"] is None
    assert never["judge_attempts"] == 2 and never["judge_error"].endswith("no scores")
    assert never["judge_replies"] == ["I would rather not grade this.", "Still no grade."]
    assert rows["3"]["judge_error"] == "no answer: http 500" and rows["3"]["judge_attempts"] == 0
    assert judge.seen == {"good": 1, "late": 2, "never": 2}  # one re-ask each, no more
    overall = relative_scores(list(rows.values()))["overall"]
    assert (overall["n_scored"], overall["n_excluded"]) == (2, 2)
    assert overall["excluded_reasons"] == {"no answer": 1, "no scores": 1}
    assert overall["mean_of_ratios"] == pytest.approx(100 * (6 / 9 + 4 / 8) / 2)
    assert {r["judge"]["prompt_sha"] for r in rows.values()} == {chat_judge_prompt_sha()}
