"""Generation prompts and the reply parser: every format seen from real generators, and the failures."""

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from vital.data.schemas import validate_messages
from vital.generation import (
    CAPTION_FRAME,
    CONVERSATION_SYSTEM,
    MENTIONS_FRAME,
    ParseError,
    QATurn,
    build_answer_pair_messages,
    build_generation_messages,
    conversation_to_text,
    parse_answer_pairs,
    parse_conversation,
    prompt_sha,
    turns_to_messages,
)


def pairs_of(turns):
    return [(t.question, t.answer) for t in turns]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("User: What is shown?\nAssistant: An axial CT slice.", [("What is shown?", "An axial CT slice.")]),
        (  # multi-line answer with a list, blank lines between turns
            "User: What is shown?\nAssistant: An axial CT slice.\nIt shows:\n- the liver\n- the spleen\n\n"
            "User: Any contrast?\nAssistant: Yes.",
            [
                ("What is shown?", "An axial CT slice.\nIt shows:\n- the liver\n- the spleen"),
                ("Any contrast?", "Yes."),
            ],
        ),
        (
            "**User:** What?\n**Assistant:** This.\n\n**User**: Why?\n**Assistant**: Because.",
            [("What?", "This."), ("Why?", "Because.")],
        ),
        ("1. User: q1\n   Assistant: a1\n2. User: q2\n   Assistant: a2", [("q1", "a1"), ("q2", "a2")]),
        (
            "Q1: first?\nA1: A mass is seen.\nA mass again.\nQ2: second?\nA2: ok",
            [("first?", "A mass is seen.\nA mass again."), ("second?", "ok")],
        ),
        ("Question: q?\nAnswer: a.", [("q?", "a.")]),
        ("Human: q\nGPT: a", [("q", "a")]),
        ("### User\nWhat is this?\n### Assistant\nA fundus photograph.", [("What is this?", "A fundus photograph.")]),
        (
            "Sure! Here is the conversation.\n\nUser: q\nAssistant: a\n\nI hope this helps.",
            [("q", "a\n\nI hope this helps.")],
        ),
        ("User: q1\nUser: more of q1\nAssistant: a1\nAssistant: more a1", [("q1\n\nmore of q1", "a1\n\nmore a1")]),
        ("User: q1\nAssistant: a1\nUser: dangling question", [("q1", "a1")]),
        ("User: <image>\nWhat is it?\nAssistant: A slice.", [("What is it?", "A slice.")]),
        ('```json\n{"conversation": [{"question": "q", "answer": "a"}]}\n```', [("q", "a")]),
        (
            '{"conversation": [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]}',
            [("q1", "a1"), ("q2", "a2")],
        ),
        ('[{"from": "human", "value": "<image>\\nq"}, {"from": "gpt", "value": "a"}]', [("q", "a")]),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', [("q", "a")]),
    ],
)
def test_parse_conversation_formats(reply, expected):
    assert pairs_of(parse_conversation(reply)) == expected


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (None, "empty reply"),
        ("   ", "empty reply"),
        ("I'm sorry, but I can't help with that request.", "refusal"),
        ("I cannot assist with identifying people in medical images.", "refusal"),
        ("Here is a description of the image without any turns.", "no question-answer turns"),
        ("User: only a question?", "no question-answer turns"),
        ("A mass is seen in the liver.\nA: nothing before this", "no question-answer turns"),
        ('{"conversation": []}', "no question-answer turns"),
    ],
)
def test_unusable_replies_raise_with_a_reason(reply, reason):
    with pytest.raises(ParseError) as err:
        parse_conversation(reply)
    assert err.value.reason.startswith(reason)


def test_answer_pairs():
    reply = (
        "User: What?\nAnswer 1: one\nAnswer 2: two\n\n"
        "User: Why?\n**Answer 1:** x\nmore x\n**Answer 2:** y\n"
        "User: dangling\nAnswer 1: only one answer"
    )
    assert parse_answer_pairs(reply) == [("What?", "one", "two"), ("Why?", "x\nmore x", "y")]
    with pytest.raises(ParseError, match="no question with two answers"):
        parse_answer_pairs("User: q\nAnswer 1: a")


def test_turns_to_messages_is_a_valid_conversation():
    messages = turns_to_messages([QATurn("q1", "a1"), QATurn("q2", "a2")])
    validate_messages(messages, "x", n_images=1)
    assert messages[0]["content"][0] == {"type": "image", "text": None}
    assert conversation_to_text(messages) == "User: q1\n\nAssistant: a1\n\nUser: q2\n\nAssistant: a2"
    # Round trip: what a demonstration shows the generator parses back into the same turns.
    assert pairs_of(parse_conversation(conversation_to_text(messages))) == [("q1", "a1"), ("q2", "a2")]


def test_generation_request_layout():
    image = PILImage.fromarray(np.zeros((4, 4, 3), np.uint8))
    demo = {
        "image": image,
        "caption": "Demo caption.",
        "fig_label": "Figure 1",
        "mentions": ["As Figure 1 shows."],
        "messages": turns_to_messages([QATurn("dq", "da")]),
    }
    target = {"image": image, "caption": "Target caption.", "fig_label": "", "mentions": []}
    messages = build_generation_messages(target, [demo, demo], image_url=lambda im: "data:image/png;base64,AAAA")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == CONVERSATION_SYSTEM
    assert messages[1]["content"][0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert messages[1]["content"][1]["text"] == f"{CAPTION_FRAME}\nFigure 1: Demo caption."
    assert messages[1]["content"][2]["text"] == f"{MENTIONS_FRAME}\n- As Figure 1 shows."
    assert messages[2]["content"] == "User: dq\n\nAssistant: da"
    assert messages[-1]["content"][1:] == [{"type": "text", "text": f"{CAPTION_FRAME}\nTarget caption."}]

    as_json = build_generation_messages(target, [demo], image_url=lambda im: "u", json_output=True)
    assert json.loads(as_json[2]["content"]) == {"conversation": [{"question": "dq", "answer": "da"}]}
    assert "JSON object" in as_json[0]["content"]
    assert prompt_sha() != prompt_sha(json_output=True) and len(prompt_sha()) == 16

    pair_request = build_answer_pair_messages(target, image_url=lambda im: "u", demos=0)
    assert [m["role"] for m in pair_request] == ["system", "user"] and "Answer 2" in pair_request[0]["content"]
