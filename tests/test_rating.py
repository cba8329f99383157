"""The rubric judge: strict score parsing, one re-ask, and a null score with the error, never a default number."""

import pytest

from vital.generation import ParseError
from vital.llm import CompletionResult
from vital.llm.jobs import Job
from vital.rating import RETRY_NOTE, build_rating_messages, parse_score, rating_rows, retry_job


@pytest.mark.parametrize(
    ("reply", "score", "rationale"),
    [
        ("7\nClear and accurate.", 7.0, "Clear and accurate."),
        ("7.5", 7.5, ""),
        ("Score: 8\nGood.", 8.0, "Good."),
        ("**9**\n\nExcellent use of the image.", 9.0, "Excellent use of the image."),
        ("6/10\nVague.", 6.0, "Vague."),
        ("6 out of 10", 6.0, ""),
        ("# 3\nWrong side.", 3.0, "Wrong side."),
        ("\n\n  0\nUseless.", 0.0, "Useless."),
        ("10", 10.0, ""),
    ],
)
def test_parse_score(reply, score, rationale):
    assert parse_score(reply) == (score, rationale)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty reply"),
        (None, "empty reply"),
        ("This pair is good overall.\n8", "no score on the first line"),
        ("8 9\nTwo scores.", "more than one number"),
        ("I'd say 7, maybe 8.", "more than one number"),
        ("11\nToo high.", "outside 0-10"),
        ("-1", "outside 0-10"),
    ],
)
def test_unparseable_scores(reply, reason):
    with pytest.raises(ParseError) as err:
        parse_score(reply)
    assert err.value.reason.startswith(reason)


def result(key, text="", error=None, model="judge"):
    return CompletionResult(key=key, text=text, error=error, model=model)


def test_retry_chain_and_null_scores():
    jobs = [Job("k1", 0, "c1", "rating", 0), Job("k2", 0, "c1", "rating", 1), Job("k3", 1, "c2", "rating", 0)]
    retry1 = retry_job(jobs[1], result("k2", "looks fine"))
    retry2 = retry_job(jobs[2], result("k3", "no idea"))
    assert retry1.task == "rating-retry-1" and retry1.sample == 1 and retry1.key not in {"k1", "k2", "k3"}
    assert retry_job(jobs[0], result("k1", "7")) is None  # parsed: no follow-up
    assert retry_job(retry1, result(retry1.key, "still none")) is None  # bounded by judge_retries
    results = {
        "k1": result("k1", "7\nok"),
        "k2": result("k2", "looks fine"),
        retry1.key: result(retry1.key, "6\nbetter"),
        "k3": result("k3", "no idea"),
        retry2.key: result(retry2.key, "still no idea"),
    }
    rows = list(rating_rows(jobs, results, "judge"))
    assert [(r["candidate_id"], r["turn"], r["score"], r["judge_attempts"]) for r in rows] == [
        ("c1", 0, 7.0, 1),
        ("c1", 1, 6.0, 2),
        ("c2", 0, None, 2),
    ]
    assert rows[2]["error"].startswith("unparseable reply after 2 attempt(s): no score")
    assert rows[2]["raw"] == "still no idea" and rows[0]["error"] is None


def test_failed_request_gives_a_null_score_with_the_error():
    rows = list(
        rating_rows([Job("k", 0, "c", "rating", 0)], {"k": result("k", error="http 500 after 7 attempts")}, "j")
    )
    assert rows[0]["score"] is None and rows[0]["error"] == "request failed: http 500 after 7 attempts"


def test_rating_request_layout():
    from vital.generation import QATurn, turns_to_messages

    candidate = {
        "images": ["IMG"],
        "caption": "Axial CT.",
        "mentions": ["See Figure 1."],
        "messages": turns_to_messages([QATurn("q0", "a0"), QATurn("q1", "a1")]),
    }
    messages = build_rating_messages(candidate, 1, image_url=lambda im: f"url:{im}")
    assert messages[1]["content"][0] == {"type": "image_url", "image_url": {"url": "url:IMG"}}
    text = messages[1]["content"][1]["text"]
    assert "Question:\nq1\n\nAnswer:\na1" in text and "Figure Context:\n- See Figure 1." in text
    assert RETRY_NOTE not in text
    assert RETRY_NOTE in build_rating_messages(candidate, 1, lambda im: "u", retry=True)[1]["content"][1]["text"]
