"""The evaluation sets in one schema: raw fixtures shaped like VQA-RAD, SLAKE and PathVQA, and LLaVA-Med's open chat."""

import logging

import pytest
from datasets import Dataset

from vital.evaluation.benchmarks import (
    CHAT_FEATURES,
    VQA_FEATURES,
    BenchmarkSpec,
    chat_domain,
    is_pinned,
    load_benchmark,
    load_open_chat,
    normalize_vqa,
    read_open_chat,
)
from vital.evaluation.fixtures import (
    open_chat_records,
    pin_fixtures,
    push_fixtures,
    raw_path_vqa,
    raw_vqa_rad,
    write_open_chat,
)
from vital.hub import HubError, LocalHub, parse_repo_ref


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return LocalHub(tmp_path_factory.mktemp("bench") / "hub")


@pytest.fixture(scope="module")
def pushed(hub):
    return push_fixtures(hub)


def spec_of(pushed, name):
    return next(s for s in pushed["benchmarks"] if s.startswith(f"{name}="))


def test_specs_fill_in_known_benchmarks_and_keep_what_is_given():
    assert BenchmarkSpec.parse("vqa-rad") == BenchmarkSpec("vqa-rad", "flaviagiammarino/vqa-rad", "main", "test")
    sha = "a" * 40
    assert BenchmarkSpec.parse(f"slake@{sha}") == BenchmarkSpec("slake", "BoKelvin/SLAKE", sha, "test")
    custom = BenchmarkSpec.parse("path-vqa=org/mirror@v1:validation")
    assert (custom.repo_id, custom.revision, custom.split, custom.display_name) == (
        "org/mirror", "v1", "validation", "PathVQA"
    )  # fmt: skip
    assert BenchmarkSpec.parse("mine=org/set").display_name == "mine"
    with pytest.raises(ValueError, match="give its repo"):
        BenchmarkSpec.parse("unknown-set")
    assert is_pinned(sha) and not is_pinned("main")


def test_vqa_rad_shape_is_normalised(hub, pushed):
    dataset, ref = load_benchmark(hub, spec_of(pushed, "vqa-rad"))
    raw = raw_vqa_rad()["test"]
    assert dataset.features == VQA_FEATURES and len(dataset) == len(raw)
    assert ref.commit == hub.resolve("fixtures/vqa-rad") and ref.revision == spec_of(pushed, "vqa-rad")[-45:-5]
    # No answer type in the source: yes/no answers are closed, everything else open.
    assert dataset["answer_type"] == ["closed" if a in ("yes", "no") else "open" for a in raw["answer"]]
    assert set(dataset["answer_type"]) == {"open", "closed"}
    assert dataset["question"] == raw["question"] and dataset["answer"] == raw["answer"]
    assert dataset["id"] == [f"vqa-rad-test-{i:05d}" for i in range(len(raw))]
    assert set(dataset["split"]) == {"test"} and set(dataset["benchmark"]) == {"vqa-rad"}
    assert dataset[0]["image"].size == raw[0]["image"].size


def test_slake_shape_keeps_english_and_reads_images_from_the_zip(hub, pushed, tmp_path):
    dataset, _ = load_benchmark(hub, spec_of(pushed, "slake"), cache_dir=tmp_path)
    assert dataset.features == VQA_FEATURES
    assert len(dataset) == 6  # the Chinese questions of the split are dropped
    assert all(q.isascii() for q in dataset["question"])
    assert set(dataset["answer_type"]) == {"open", "closed"}  # taken from the source (OPEN/CLOSED), lower-cased
    assert all(i.startswith("slake-test-") for i in dataset["id"]) and len(set(dataset["id"])) == 6
    assert dataset[0]["image"].mode in ("RGB", "L")
    extracted = list(tmp_path.rglob("source.jpg"))
    assert extracted and all(".extracted" in {p.name for p in e.parents[2].iterdir()} for e in extracted)
    again, _ = load_benchmark(hub, spec_of(pushed, "slake"), cache_dir=tmp_path, limit=2)
    assert again["id"] == dataset["id"][:2]


def test_path_vqa_shape_reads_the_requested_split(hub, pushed):
    spec = spec_of(pushed, "path-vqa")
    test, _ = load_benchmark(hub, spec)
    validation, ref = load_benchmark(hub, spec.replace(":test", ":validation"))
    assert len(test) == len(raw_path_vqa()["test"]) and len(validation) == len(raw_path_vqa()["validation"])
    assert set(validation["split"]) == {"validation"} and ref.repo_id == "fixtures/path-vqa"
    assert set(test["answer_type"]) <= {"open", "closed"}


def test_a_moving_revision_is_warned_about(hub, pushed, caplog):
    with caplog.at_level(logging.WARNING):
        load_benchmark(hub, "vqa-rad=fixtures/vqa-rad@main:test")
    assert "moving revision" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_benchmark(hub, spec_of(pushed, "vqa-rad"))
    assert "moving revision" not in caplog.text


def test_pushed_fixtures_are_named_at_the_commits_pushed(hub, pushed):
    for name in ("vqa-rad", "slake", "path-vqa"):
        spec = BenchmarkSpec.parse(spec_of(pushed, name))
        assert is_pinned(spec.revision) and spec.revision == hub.resolve(spec.repo_id)
    repo_id, revision = parse_repo_ref(pushed["chat"])
    assert is_pinned(revision) and revision == hub.resolve(repo_id)


def test_pinned_fixtures_are_read_at_their_commits_without_a_warning(hub, pushed, caplog, tmp_path):
    other = "b" * 40
    specs, chat = pin_fixtures(
        hub, ["vqa-rad=fixtures/vqa-rad@main:test", "slake=fixtures/slake", f"mine=org/set@{other}", "path-vqa"],
        "fixtures/llava-med-chat",
    )  # fmt: skip
    assert specs == [
        spec_of(pushed, "vqa-rad"), spec_of(pushed, "slake"), f"mine=org/set@{other}:test",
        "path-vqa=flaviagiammarino/path-vqa@main:test",  # not a fixture: as given
    ]  # fmt: skip
    assert chat == pushed["chat"]
    with caplog.at_level(logging.WARNING):
        load_benchmark(hub, specs[0])
    assert "moving revision" not in caplog.text
    local = tmp_path / "questions.jsonl"
    local.write_text("")
    assert pin_fixtures(hub, [], str(local)) == ([], str(local))
    with pytest.raises(HubError):  # a fixture repo that is not there is not silently read at main later
        pin_fixtures(LocalHub(tmp_path / "empty"), ["vqa-rad=fixtures/vqa-rad@main:test"], None)


def test_unknown_answer_types_and_missing_columns_are_refused():
    raw = Dataset.from_dict({"question": ["q"], "answer": ["a"], "answer_type": ["maybe"], "img_name": ["x.jpg"]})
    with pytest.raises(ValueError, match="no image folder"):
        normalize_vqa(raw, "x", "test")
    with pytest.raises(ValueError, match="answer"):
        normalize_vqa(Dataset.from_dict({"question": ["q"]}), "x", "test")


def test_open_chat_questions_from_a_repo_and_from_files(hub, pushed, tmp_path):
    chat, ref = load_open_chat(hub, pushed["chat"])
    records = open_chat_records()
    assert chat.features == CHAT_FEATURES and len(chat) == len(records)
    assert ref.commit == hub.resolve("fixtures/llava-med-chat")
    first = chat[0]
    assert first["question_id"] == "0" and first["text"] == records[0]["text"]
    assert first["gpt4_answer"] == records[0]["gpt4_answer"]
    assert first["in_text_mention"] == [m["tokens"] for m in records[0]["in_text_mention"]]
    assert first["domain"] == "chest_xray" and chat[1]["type"] == "detailed_description"
    assert first["image"].size[0] > 0
    local = read_open_chat(write_open_chat(tmp_path / "chat") / "questions.jsonl", tmp_path / "chat" / "images")
    assert local["question_id"] == chat["question_id"] and local["domain"] == chat["domain"]


def test_chat_domain_follows_llava_med():
    flags = dict.fromkeys(["chest_xray", "mri", "histology", "gross", "ct_scan"], False)
    assert chat_domain({**flags, "ct_scan": True, "mri": True}) == "mri"  # LLaVA-Med's order decides
    assert chat_domain(flags) == "other" and chat_domain("histology") == "histology"
