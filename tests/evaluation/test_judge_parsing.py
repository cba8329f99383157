"""Judge replies as they come back in the wild: the chat judge's two scores and the pairwise verdicts."""

import pytest

from vital.evaluation.judge_parsing import ParseError, combine_swapped, parse_pair_scores, parse_verdict


EXPLANATION = "\nAssistant 1 describes the lesion in detail, while Assistant 2 misses the effusion."

# ---------------------------------------------------------------------------------------------------------------------
# chat judge: (score_reference, score_model) = (Assistant 1, Assistant 2)

PAIR_CASES = {
    "space_separated": ("8 7" + EXPLANATION, (8, 7)),
    "comma_separated": ("8, 7" + EXPLANATION, (8, 7)),
    "labelled_line_with_and": ("Scores: 8 and 7" + EXPLANATION, (8, 7)),
    "bold_scores": ("**8** **7**" + EXPLANATION, (8, 7)),
    "out_of_ten": ("8/10 7/10" + EXPLANATION, (8, 7)),
    "parenthesised": ("(8, 7)" + EXPLANATION, (8, 7)),
    "decimals": ("7.5 8" + EXPLANATION, (7.5, 8)),
    "bounds": ("10 1" + EXPLANATION, (10, 1)),
    "per_assistant_lines": ("Assistant 1: 8\nAssistant 2: 7" + EXPLANATION, (8, 7)),
    "per_assistant_lines_swapped_order": ("Assistant 2: 7\nAssistant 1: 8" + EXPLANATION, (8, 7)),
    "per_assistant_bold_out_of_ten": ("**Assistant 1:** 8/10\n**Assistant 2:** 6.5/10" + EXPLANATION, (8, 6.5)),
    "per_assistant_one_line": ("Assistant 1: 9, Assistant 2: 4." + EXPLANATION, (9, 4)),
    "score_for_assistant": ("Score for Assistant 2: 3\nScore for Assistant 1: 9" + EXPLANATION, (9, 3)),
    "assistant_with_role": ("Assistant 1 (reference) = 8\nAssistant 2 (model) = 5" + EXPLANATION, (8, 5)),
    "preamble_then_pair": ("Here is my evaluation of the two answers.\n\n9 6\n" + EXPLANATION, (9, 6)),
    "preamble_with_a_number": ("Sure, I compared the 2 assistants.\n8 7" + EXPLANATION, (8, 7)),
    "markdown_heading": ("### Scores\n8 7" + EXPLANATION, (8, 7)),
    # The first line is the requested format; numbers in the explanation do not override it.
    "numbers_later_in_explanation": ("8 3\nAssistant 2: 3 of the 5 findings are wrong.", (8, 3)),
    # A refusal quoted from an answer is not the judge refusing.
    "quoted_refusal_in_explanation": ('8 2\nAssistant 2 said "I\'m sorry, I cannot see the image."', (8, 2)),
}


@pytest.mark.parametrize("reply, expected", PAIR_CASES.values(), ids=PAIR_CASES.keys())
def test_parse_pair_scores(reply, expected):
    assert parse_pair_scores(reply) == expected


PAIR_FAILURES = {
    "empty": ("", "empty"),
    "blank": ("  \n ", "empty"),
    "no_scores": ("Assistant 1 gave the better answer." + EXPLANATION, "no scores"),
    "one_score_on_first_line": ("8" + EXPLANATION, "one score"),
    "one_labelled_score": ("Assistant 1: 8\nAssistant 2 did not answer the question.", "one score"),
    "score_above_ten": ("12 7" + EXPLANATION, "out of range"),
    "score_zero": ("0 5" + EXPLANATION, "out of range"),
    "labelled_score_above_ten": ("Assistant 1: 11\nAssistant 2: 7", "out of range"),
    "refusal": ("I'm sorry, but I can't evaluate medical images.", "refusal"),
    "refusal_curly_apostrophe": ("I\u2019m sorry, I can\u2019t help with that.", "refusal"),
    "refusal_mentioning_the_scale": ("I cannot rate these 2 answers on a scale of 1 to 10.", "refusal"),
    "same_assistant_two_scores": ("Assistant 1: 8\nAssistant 2: 7\nOn reflection, Assistant 1: 6", "ambiguous"),
}


@pytest.mark.parametrize("reply, reason", PAIR_FAILURES.values(), ids=PAIR_FAILURES.keys())
def test_parse_pair_scores_rejects(reply, reason):
    with pytest.raises(ParseError) as err:
        parse_pair_scores(reply)
    assert err.value.reason == reason


# ---------------------------------------------------------------------------------------------------------------------
# win-rate judge

VERDICT_CASES = {
    "bare": ("[[A]]", "A"),
    "after_explanation": ("Assistant B names the correct structure and is more careful.\n\n[[B]]", "B"),
    "first_then_explanation": ("[[B]]\nAssistant B is more accurate about the lesion.", "B"),
    "bold": ("Final verdict: **[[C]]**", "C"),
    "bold_inside": ("Final verdict: [[**A**]]", "A"),
    "lowercase": ("my verdict is [[a]]", "A"),
    "inner_spaces": ("Verdict: [[ B ]]", "B"),
    "trailing_period": ("Both are equally good: [[C]].", "C"),
    "same_token_repeated": ("[[A]] Assistant A is correct, so again: [[A]]", "A"),
    # Different tokens: the format restated, then the decision at the very end.
    "format_restated_then_verdict": ('Following the format "[[A]]", "[[B]]" or "[[C]]", my verdict is: [[B]]', "B"),
    "changed_mind_at_the_end": ("At first [[A]] seemed right, but on reflection [[B]]", "B"),
    # A refusal quoted from an answer, with a verdict: the verdict counts.
    "quoted_refusal": ('Assistant A says "I\'m sorry, I cannot see the image", B answers. [[B]]', "B"),
}


@pytest.mark.parametrize("reply, expected", VERDICT_CASES.values(), ids=VERDICT_CASES.keys())
def test_parse_verdict(reply, expected):
    assert parse_verdict(reply) == expected


VERDICT_FAILURES = {
    "empty": ("", "no verdict"),
    "no_token": ("Assistant A is better.", "no verdict"),
    "single_brackets": ("[A]", "no verdict"),
    "unknown_letter": ("[[D]]", "no verdict"),
    "refusal": ("I'm sorry, I can't help with comparing these answers.", "refusal"),
    "refusal_as_an_ai": ("As an AI, I am unable to judge medical content.", "refusal"),
    "different_tokens_not_at_the_end": ("[[A]] is tempting but [[B]] is more careful overall.", "ambiguous"),
    "last_token_inside_an_aside": ("My verdict: [[B]]\n(Earlier I considered [[A]].)", "ambiguous"),
}


@pytest.mark.parametrize("reply, reason", VERDICT_FAILURES.values(), ids=VERDICT_FAILURES.keys())
def test_parse_verdict_rejects(reply, reason):
    with pytest.raises(ParseError) as err:
        parse_verdict(reply)
    assert err.value.reason == reason


def test_parse_verdict_never_defaults_to_a_tie():
    for reply, _ in VERDICT_FAILURES.values():
        with pytest.raises(ParseError):
            parse_verdict(reply)


# ---------------------------------------------------------------------------------------------------------------------
# the two orders (the model is A first, B after the swap)

SWAP_CASES = {
    "win_in_both_orders": ("A", "B", "win"),
    "loss_in_both_orders": ("B", "A", "loss"),
    "tie_in_both_orders": ("C", "C", "tie"),
    "position_bias_first_slot": ("A", "A", "tie"),
    "position_bias_second_slot": ("B", "B", "tie"),
    "win_then_tie": ("A", "C", "tie"),
    "tie_then_win": ("C", "B", "tie"),
    "loss_then_tie": ("B", "C", "tie"),
}


@pytest.mark.parametrize("v_ab, v_ba, expected", SWAP_CASES.values(), ids=SWAP_CASES.keys())
def test_combine_swapped(v_ab, v_ba, expected):
    assert combine_swapped(v_ab, v_ba) == expected


@pytest.mark.parametrize("bad", ["D", "a", None, ""])
def test_combine_swapped_rejects_non_verdicts(bad):
    with pytest.raises(ValueError):
        combine_swapped("A", bad)
    with pytest.raises(ValueError):
        combine_swapped(bad, "A")
