"""Answering evaluation questions: batched local generation is the greedy answer of each question alone, answers are
journaled and resumed, and the endpoint path goes through the keyed-job runner."""

import pytest

from vital.evaluation import answering
from vital.evaluation.answering import (
    GenerationSettings,
    answer_with_endpoint,
    answer_with_model,
    chat_questions,
    decode_image,
    generate_answers,
    vqa_questions,
)
from vital.evaluation.benchmarks import load_benchmark, load_open_chat
from vital.evaluation.fixtures import push_fixtures
from vital.hub import LocalHub
from vital.llm import EndpointConfig
from vital.testing.eval_replies import EvalStandInResponder
from vital.testing.sample_replies import start_stand_in
from vital.testing.tiny_models import TINY_VLM_BUILDERS, build_tiny_llava


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    hub = LocalHub(tmp_path_factory.mktemp("answering") / "hub")
    pushed = push_fixtures(hub)
    vqa, _ = load_benchmark(hub, pushed["benchmarks"][0])
    chat, _ = load_open_chat(hub, pushed["chat"])
    return vqa, chat


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llava"
    model, processor = build_tiny_llava(folder)
    return folder, model, processor


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_batched_answers_equal_unbatched_greedy_answers(questions, tiny, family):
    vqa, chat = questions
    model, processor = tiny[1:] if family == "llava" else TINY_VLM_BUILDERS[family]()
    items = vqa_questions(vqa) + chat_questions(chat)
    images, texts = [decode_image(q.image) for q in items], [q.text for q in items]
    settings = GenerationSettings(max_new_tokens=8, system_prompt="You are a careful radiologist.")
    batched = generate_answers(model, processor, images, texts, settings)
    alone = [generate_answers(model, processor, [image], [text], settings)[0] for image, text in zip(images, texts)]
    assert batched == alone
    assert len({len(processor.tokenizer(t).input_ids) for t in texts}) > 1  # the batch really needed padding


def test_closed_hint_goes_to_closed_questions_only(questions):
    vqa, _ = questions
    hinted = vqa_questions(vqa, closed_hint="Answer with yes or no.")
    for question, row in zip(hinted, vqa):
        assert question.text.endswith("Answer with yes or no.") == (row["answer_type"] == "closed")
        assert question.id == f"vqa-rad/{row['id']}"


def test_local_answers_are_journaled_and_resumed(questions, tiny, tmp_path, monkeypatch):
    vqa, _ = questions
    folder, model, processor = tiny
    items = vqa_questions(vqa)
    settings = GenerationSettings(max_new_tokens=6)
    first = answer_with_model(items[:3], str(folder), "tiny@1", settings, tmp_path, batch_size=2,
                              model_and_processor=(model, processor))  # fmt: skip
    journal = tmp_path / "answers.jsonl"
    assert len(journal.read_text().splitlines()) == 3

    # A rerun over more questions answers only the new ones; nothing is asked twice.
    both = answer_with_model(items, str(folder), "tiny@1", settings, tmp_path, batch_size=4,
                             model_and_processor=(model, processor))  # fmt: skip
    assert len(journal.read_text().splitlines()) == len(items)
    assert {k: both[k] for k in first} == first

    # Everything journaled: the model is not even loaded.
    monkeypatch.setattr(answering, "load_vlm", lambda *a, **k: pytest.fail("the model was loaded"))
    assert answer_with_model(items, str(folder), "tiny@1", settings, tmp_path) == both
    # Another model commit or other settings are other answers.
    with pytest.raises(pytest.fail.Exception, match="loaded"):
        answer_with_model(items, str(folder), "tiny@2", settings, tmp_path)


def test_local_model_folder_loads_through_auto_classes(questions, tiny, tmp_path):
    vqa, _ = questions
    folder, model, processor = tiny
    items = vqa_questions(vqa)[:2]
    settings = GenerationSettings(max_new_tokens=5)
    loaded = answer_with_model(items, str(folder), "tiny@folder", settings, tmp_path, dtype="float32")
    direct = generate_answers(model, processor, [decode_image(q.image) for q in items], [q.text for q in items],
                              settings)  # fmt: skip
    assert [loaded[q.id].prediction for q in items] == direct


def test_endpoint_answers_through_the_job_runner(questions, tmp_path):
    vqa, chat = questions
    items = vqa_questions(vqa) + chat_questions(chat)
    endpoint = EndpointConfig(provider="openai-compatible", base_url="http://127.0.0.1:9/v1", model="served",
                              backoff_base_s=0.01, backoff_max_s=0.05)  # fmt: skip
    server, endpoint = start_stand_in(endpoint, EvalStandInResponder(), faults=0.2)
    try:
        answers = answer_with_endpoint(items, endpoint, GenerationSettings(), tmp_path)
        requests = server.stats.requests
        again = answer_with_endpoint(items, endpoint, GenerationSettings(), tmp_path)
        assert server.stats.requests == requests  # resumed from the journal
    finally:
        server.stop()
    assert again == answers and set(answers) == {q.id for q in items}
    for row in vqa:
        answer = answers[f"vqa-rad/{row['id']}"]
        assert answer.error is None and answer.model == "vital-stand-in"
        if row["question"].startswith("Is "):
            assert answer.prediction in ("yes", "no")
    assert answers["chat/0"].prediction == "The image shows a medical scan."
