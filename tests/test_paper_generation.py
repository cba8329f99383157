"""Generation with the paper's settings: the final official prompt's requirements, text-only demonstrations, one
demonstration per domain flag (a demo may carry two flags), the caption and mentions framed as such, and one worked
example before a two-answer request."""

import numpy as np
import pytest
from datasets import Dataset
from PIL import Image as PILImage

from vital.demos import DemoSampler
from vital.generation import (
    ANSWER_PAIR_DEMO,
    ANSWER_PAIRS_SYSTEM,
    CAPTION_FRAME,
    MENTIONS_FRAME,
    PAPER_CONVERSATION_SYSTEM,
    QATurn,
    build_answer_pair_messages,
    build_generation_messages,
    conversation_system,
    parse_answer_pairs,
    prompt_sha,
    turns_to_messages,
)


PAPER_FLAGS = ["chest_xray", "mri", "ct", "histology", "gross"]

# Every requirement of the final official generation prompt, as words our paper prompt must hold (any of each group).
REQUIREMENTS = {
    "extract visual details": ["visual detail"],
    "integrate the supplementary text": ["supplementary text"],
    "text-visual connections": ["relate"],
    "dialogue User/Assistant, both looking at the image": ["(User)", "(Assistant)", "both looking at the image"],
    "question type: modality": ["modality"],
    "question type: organ": ["organ"],
    "question type: location": ["location"],
    "question type: disease": ["disease"],
    "question type: size": ["size"],
    "question type: count": ["number of elements"],
    "question type: yes/no and open-ended": ["yes/no", "open-ended"],
    "complex reasoning": ["complex reasoning"],
    "every question answered": ["each question its answer"],
    "at least 4-5 exchanges, more for rich content": ["at least 4-5", "write more"],
    "expertise and terminology of the text": ["expertise", "specialised terminology"],
    "no vague answers": ["no vague answers", "not with vague"],
    "no overconfidence": ["no overconfidence"],
    "start with the User's question": ["Begin with a question from the User"],
    "the data trains another medical model": ["training another large medical model"],
}


def _flatten(words):
    return [w for group in words.values() for w in group]


@pytest.mark.parametrize("requirement", sorted(REQUIREMENTS))
def test_paper_prompt_covers_every_official_requirement(requirement):
    system = conversation_system("paper")
    assert system == PAPER_CONVERSATION_SYSTEM
    for phrase in REQUIREMENTS[requirement]:
        assert phrase.lower() in system.lower(), f"{requirement}: {phrase!r} missing"


def test_ours_prompt_keeps_the_question_types_and_adds_its_two_rules():
    ours = conversation_system("ours")
    for word in ("modality", "organ", "location", "disease", "size", "yes/no", "terminology", "vague", "train"):
        assert word in ours
    assert "only the text could reveal" in ours and "medical advice" in ours
    assert "medical advice" not in PAPER_CONVERSATION_SYSTEM  # the final official prompt dropped it
    with pytest.raises(ValueError, match="prompt_style"):
        conversation_system("official")


def _image():
    return PILImage.fromarray(np.zeros((4, 4, 3), np.uint8))


def _demo(demo_id, modality, domains=()):
    return {
        "id": demo_id,
        "pair_id": f"pair-{demo_id}",
        "image": _image(),
        "caption": f"Caption of {demo_id}.",
        "fig_label": "Figure 1",
        "mentions": [f"As {demo_id} shows.", "A second mention."],
        "modality": modality,
        "domains": list(domains),
        "messages": turns_to_messages([QATurn(f"q {demo_id}", f"a {demo_id}")]),
    }


def test_paper_request_demonstrations_are_text_only_and_framed():
    target = {"image": _image(), "caption": "Target caption.", "fig_label": "Fig. 2", "mentions": ["See Fig. 2."]}
    demos = [_demo("d1", "ct"), _demo("d2", "mri")]
    urls = []

    def image_url(image):
        urls.append(image)
        return "data:image/png;base64,AAAA"

    messages = build_generation_messages(target, demos, image_url, prompt_style="paper", demo_images=False)
    assert messages[0]["content"] == PAPER_CONVERSATION_SYSTEM
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    user_turns = [m for m in messages if m["role"] == "user"]
    images = [[p for p in m["content"] if p["type"] == "image_url"] for m in user_turns]
    assert [len(i) for i in images] == [0, 0, 1]  # only the target figure carries an image
    assert urls == [target["image"]]  # no demo image is even encoded
    assert user_turns[0]["content"] == [
        {"type": "text", "text": f"{CAPTION_FRAME}\nFigure 1: Caption of d1."},
        {"type": "text", "text": f"{MENTIONS_FRAME}\n- As d1 shows.\n- A second mention."},
    ]
    assert user_turns[-1]["content"][1:] == [
        {"type": "text", "text": f"{CAPTION_FRAME}\nFig. 2: Target caption."},
        {"type": "text", "text": f"{MENTIONS_FRAME}\n- See Fig. 2."},
    ]
    with_images = build_generation_messages(target, demos, image_url, prompt_style="ours", demo_images=True)
    assert sum(p["type"] == "image_url" for m in with_images if m["role"] == "user" for p in m["content"]) == 3
    assert prompt_sha(prompt_style="paper", demo_images=False) != prompt_sha(prompt_style="paper", demo_images=True)
    assert prompt_sha(prompt_style="paper") != prompt_sha(prompt_style="ours")


def test_one_demo_per_domain_flag_and_a_demo_may_carry_two_flags():
    rows = [
        _demo("cxr", "chest_xray"),
        _demo("ct-mri", "ct", domains=["mri"]),  # the only MRI demonstration carries two flags
        _demo("ct2", "ct"),
        _demo("histo", "histology"),
        _demo("gross", "gross"),
        _demo("other", "other"),
    ]
    demos = Dataset.from_list([{k: v for k, v in r.items() if k != "image"} for r in rows])
    sampler = DemoSampler(demos, seed=0, modalities=PAPER_FLAGS, per_modality=1)
    drawn_for_ct = set()
    for key in range(40):
        ids = sampler.demo_ids(f"pair-{key}")
        assert len(ids) == len(PAPER_FLAGS)  # one per flag, none for `other`
        assert ids[0] == "cxr" and ids[1] == "ct-mri" and ids[3:] == ["histo", "gross"]
        drawn_for_ct.add(ids[2])
    assert drawn_for_ct == {"ct-mri", "ct2"}  # the two-flag demo is drawn for either of its flags
    assert len(sampler) == 6 - 1  # distinct demos in the five groups (`other` is not a paper flag)
    without_flags = DemoSampler(demos.remove_columns("domains"), modalities=["ct"], per_modality=2)
    assert sorted(without_flags.demo_ids("k")) == ["ct-mri", "ct2"]
    with pytest.raises(ValueError, match="no approved demo"):
        DemoSampler(demos.remove_columns("domains"), modalities=PAPER_FLAGS)  # no MRI demo without the flag


def test_two_answer_request_shows_one_text_only_demonstration():
    target = {"image": _image(), "caption": "Target.", "fig_label": "", "mentions": []}
    messages = build_answer_pair_messages(target, lambda im: "u", demos=1)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == ANSWER_PAIRS_SYSTEM
    assert all(p["type"] == "text" for p in messages[1]["content"])
    assert messages[2]["content"] == ANSWER_PAIR_DEMO["reply"]
    assert len(parse_answer_pairs(ANSWER_PAIR_DEMO["reply"])) == 3  # the demo is in the format it teaches
    assert messages[-1]["content"][0] == {"type": "image_url", "image_url": {"url": "u"}}
    assert [m["role"] for m in build_answer_pair_messages(target, lambda im: "u", demos=0)] == ["system", "user"]
    assert prompt_sha(ANSWER_PAIRS_SYSTEM, answer_pair_demos=1) != prompt_sha(ANSWER_PAIRS_SYSTEM, answer_pair_demos=0)


@pytest.mark.slow
def test_generate_recipe_sends_the_paper_requests(tmp_path, monkeypatch, stand_in):
    """The generate recipe with the paper profile's generation settings, on the bundled sample and stand-in: every
    conversation request is the paper prompt with text-only demonstrations, one per flag the sample covers; every
    two-answer request shows one worked example first; the card says so."""
    from pathlib import Path

    import yaml

    from vital.hub import LocalHub
    from vital.runner import load_recipe
    from vital.testing.sample_replies import SampleDataResponder

    paper = yaml.safe_load((Path(__file__).parents[1] / "recipes/biomed_vital/generate.yaml").read_text())
    requests = []
    original = SampleDataResponder.__call__

    def record(self, request_json):
        requests.append(request_json)
        return original(self, request_json)

    monkeypatch.setattr(SampleDataResponder, "__call__", record)
    hub = f"local:{tmp_path}/hub"
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    flags = [f for f in paper["demo_modalities"] if f != "gross"]  # the sample has no gross demonstration
    pushed = load_recipe("generate").cli(
        [
            "--config",
            "recipes/quickstart/generate.yaml",
            "--hub",
            hub,
            "--journal_dir",
            str(tmp_path / "j"),
            *stand_in(),
            "--prompt_style",
            paper["prompt_style"],
            "--demo_images",
            str(paper["demo_images"]).lower(),
            "--answer_pair_demos",
            str(paper["answer_pair_demos"]),
            "--demo_modalities",
            *flags,
        ]  # fmt: skip
    )
    conversations = [r for r in requests if r["messages"][0]["content"].startswith(PAPER_CONVERSATION_SYSTEM)]
    pairs = [r for r in requests if r["messages"][0]["content"] == ANSWER_PAIRS_SYSTEM]
    assert len(conversations) == 15 and len(pairs) == 6 and len(requests) == 21
    for request in conversations:
        users = [m for m in request["messages"] if m["role"] == "user"]
        assert len(users) == len(flags) + 1 or len(users) == len(flags)  # a figure is never its own demo
        images = [p for m in users for p in m["content"] if p["type"] == "image_url"]
        assert len(images) == 1 and images[0] in users[-1]["content"]
    for request in pairs:
        assert [m["role"] for m in request["messages"]] == ["system", "user", "assistant", "user"]
    local = LocalHub(tmp_path / "hub")
    card = (local.snapshot("quickstart/candidates", pushed[0].commit) / "README.md").read_text()
    assert "prompt style | `paper`" in card and "text only (only the target figure carries an image)" in card
    rows = local.load_dataset("quickstart/candidates", split="train", revision=pushed[0].commit)
    assert {g["prompt_sha"] for g in rows["generation"]} == {prompt_sha(prompt_style="paper", demo_images=False)}
