"""The pairwise win rate: every question judged twice with the answers swapped, agreeing verdicts count, disagreeing
ones are a tie, unreadable ones are left out and counted."""

import pytest

from vital.evaluation.judge_parsing import parse_verdict
from vital.evaluation.win_rate import (
    MODEL_FIRST,
    MODEL_SECOND,
    build_win_rate_job_messages,
    plan_win_rate_jobs,
    summarize_win_rate,
    verdict_retry_job,
    win_rate_items,
    win_rate_prompt_sha,
    win_rate_rows,
)
from vital.llm import EndpointConfig
from vital.llm.jobs import run_jobs_sharded
from vital.testing.eval_replies import EvalStandInResponder, verdict_reply
from vital.testing.sample_replies import start_stand_in


def item(item_id, benchmark, prediction, other):
    return {"id": item_id, "benchmark": benchmark, "question": f"Question {item_id}?", "reference": "left lung mass",
            "prediction": prediction, "other_prediction": other, "other_model": "base"}  # fmt: skip


class PairJudge:
    """Verdicts scripted by the two answers as shown (A, B); a missing pair is unreadable."""

    def __init__(self, verdicts):
        self.verdicts, self.calls = verdicts, 0

    def __call__(self, request_json):
        from vital.testing.standin import _last_user_text

        self.calls += 1
        text = _last_user_text(request_json)
        a = text.split("[Assistant A]\n", 1)[1].split("\n[End of Assistant A]", 1)[0]
        b = text.split("[Assistant B]\n", 1)[1].split("\n[End of Assistant B]", 1)[0]
        verdict = self.verdicts.get((a, b))
        return f"My reasoning.\n[[{verdict}]]" if verdict else "Both have merits."


def run(items, judge, tmp_path):
    endpoint = EndpointConfig(provider="openai-compatible", base_url="http://127.0.0.1:9/v1", model="judge")
    server, endpoint = start_stand_in(endpoint, judge)
    jobs = plan_win_rate_jobs(items, endpoint.model)
    try:
        results = run_jobs_sharded(jobs, endpoint, lambda job: build_win_rate_job_messages(items[job.index], job),
                                   tmp_path, followup=lambda job, r: verdict_retry_job(job, r, 1))  # fmt: skip
    finally:
        server.stop()
    return jobs, win_rate_rows(items, jobs, results, endpoint.model, 1)


def test_every_item_is_two_jobs_with_the_answers_swapped():
    items = [item("q1", "vqa-rad", "ours", "theirs")]
    jobs = plan_win_rate_jobs(items, "judge")
    assert [(j.record_id, j.sample) for j in jobs] == [("q1", MODEL_FIRST), ("q1", MODEL_SECOND)]
    assert jobs[0].key != jobs[1].key
    first = build_win_rate_job_messages(items[0], jobs[0])[1]["content"][-1]["text"]
    second = build_win_rate_job_messages(items[0], jobs[1])[1]["content"][-1]["text"]
    assert "[Assistant A]\nours\n" in first and "[Assistant B]\ntheirs\n" in first
    assert "[Assistant A]\ntheirs\n" in second and "[Assistant B]\nours\n" in second
    assert "[Reference answer]\nleft lung mass\n" in first and len(win_rate_prompt_sha()) == 16


def test_swapped_verdicts_combine_and_unreadable_ones_are_excluded(tmp_path):
    items = [
        item("win", "vqa-rad", "w-ours", "w-theirs"),  # ours better in both orders
        item("loss", "vqa-rad", "l-ours", "l-theirs"),  # theirs better in both orders
        item("biased", "vqa-rad", "b-ours", "b-theirs"),  # the judge always says A: disagreement -> tie
        item("tie", "slake", "t-ours", "t-theirs"),  # two agreeing ties
        item("mute", "slake", "m-ours", "m-theirs"),  # the second order never yields a verdict
        item("late", "slake", "z-ours", "z-theirs"),  # the first order needs a re-ask, then a win
    ]
    verdicts = {
        ("w-ours", "w-theirs"): "A", ("w-theirs", "w-ours"): "B",
        ("l-ours", "l-theirs"): "B", ("l-theirs", "l-ours"): "A",
        ("b-ours", "b-theirs"): "A", ("b-theirs", "b-ours"): "A",
        ("t-ours", "t-theirs"): "C", ("t-theirs", "t-ours"): "C",
        ("m-ours", "m-theirs"): "A",
        ("z-theirs", "z-ours"): "B",
    }  # fmt: skip

    class LateJudge(PairJudge):
        late = 0

        def __call__(self, request_json):
            from vital.testing.standin import _last_user_text

            if "[Assistant A]\nz-ours\n" in _last_user_text(request_json):
                self.late += 1
                return "Thinking..." if self.late == 1 else "[[A]]"
            return super().__call__(request_json)

    judge = LateJudge(verdicts)
    jobs, rows = run(items, judge, tmp_path)
    by_id = {r["id"]: r for r in rows}
    assert {k: by_id[k]["outcome"] for k in by_id} == {
        "win": "win", "loss": "loss", "biased": "tie", "tie": "tie", "mute": None, "late": "win"
    }  # fmt: skip
    assert (by_id["biased"]["verdict_model_first"], by_id["biased"]["verdict_model_second"]) == ("A", "A")
    mute = by_id["mute"]
    assert mute["verdict_model_second"] is None and "model second" in mute["judge_error"]
    assert mute["replies_model_second"] == ["Both have merits.", "Both have merits."]  # asked twice, no guess
    assert by_id["late"]["judge_attempts"] == 3 and by_id["late"]["replies_model_first"] == ["Thinking...", "[[A]]"]
    assert judge.calls + judge.late == 2 * len(items) + 2  # one re-ask each for "mute" and "late", nothing more

    summary = summarize_win_rate(rows)
    vqa_rad, slake, overall = summary["by_benchmark"]["vqa-rad"], summary["by_benchmark"]["slake"], summary["overall"]
    assert (vqa_rad["wins"], vqa_rad["ties"], vqa_rad["losses"], vqa_rad["n_unparsed"]) == (1, 1, 1, 0)
    assert vqa_rad["win_rate"] == pytest.approx(100 / 3) and vqa_rad["win_rate_excluding_ties"] == 50.0
    assert vqa_rad["n_disagreed"] == 1
    assert (slake["wins"], slake["ties"], slake["losses"], slake["n_unparsed"]) == (1, 1, 0, 1)
    assert slake["win_rate"] == 50.0 and slake["win_rate_excluding_ties"] == 100.0 and slake["n_disagreed"] == 0
    assert slake["unparsed_reasons"] == {"no verdict": 1}
    assert (overall["n"], overall["n_judged"], overall["wins"], overall["ties"], overall["losses"]) == (6, 5, 2, 2, 1)
    assert overall["win_rate"] == 40.0 and overall["win_rate_excluding_ties"] == pytest.approx(200 / 3)


def test_win_rate_items_keep_open_questions_both_models_answered():
    ours = {
        "vqa-rad": [
            {"id": "1", "question": "q1", "answer": "a1", "answer_type": "open", "prediction": "p1", "answer_error": None},
            {"id": "2", "question": "q2", "answer": "yes", "answer_type": "closed", "prediction": "no", "answer_error": None},
            {"id": "3", "question": "q3", "answer": "a3", "answer_type": "open", "prediction": "", "answer_error": "http 500"},
            {"id": "4", "question": "q4", "answer": "a4", "answer_type": "open", "prediction": "p4", "answer_error": None},
        ],
        "chat": [{"question_id": "7", "question": "c7", "reference": "r7", "prediction": "p7", "answer_error": None}],
    }  # fmt: skip
    theirs = {
        "vqa-rad": [{"id": i, "prediction": f"o{i}", "answer_error": None} for i in ("1", "2", "3")],
        "chat": [{"question_id": "7", "prediction": "o7", "answer_error": None}],
    }
    items = win_rate_items(ours, theirs, {"vqa-rad/1": {"bytes": b"x"}}, "base")
    assert [(i["id"], i["prediction"], i["other_prediction"]) for i in items] == [
        ("vqa-rad/1", "p1", "o1"),  # 2 is closed, 3 failed, 4 the other model never answered
        ("chat/7", "p7", "o7"),
    ]
    assert items[0]["reference"] == "a1" and items[1]["reference"] == "r7" and items[0]["image"] == {"bytes": b"x"}
    both = win_rate_items(ours, theirs, {}, "base", answer_types=("open", "closed"))
    assert [i["id"] for i in both] == ["vqa-rad/1", "vqa-rad/2", "chat/7"]


def test_the_stand_in_judge_is_position_consistent_except_on_near_ties():
    def request(a, b):
        return (f"[Question]\nq\n\n[Reference answer]\nleft lung mass\n[End of reference answer]\n\n"
                f"[Assistant A]\n{a}\n[End of Assistant A]\n\n[Assistant B]\n{b}\n[End of Assistant B]\n\nrules")  # fmt: skip

    clear = [verdict_reply(request("left lung mass", "heart")), verdict_reply(request("heart", "left lung mass"))]
    readable = [v for v in clear if "[[" in v]
    assert all(parse_verdict(v) in "AB" for v in readable)
    near = verdict_reply(request("heart", "liver"))
    assert "[[" not in near or parse_verdict(near) == "A"
    assert EvalStandInResponder()({"messages": [{"role": "user", "content": "Is there a mass?"}]}) in ("yes", "no")
