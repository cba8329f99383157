"""The annotation store: every click durable before it returns, nothing lost on a restart or a crash mid-write,
annotators writing at once without losing or tearing a line, and anonymous writes refused."""

import json
import multiprocessing
import os
import threading

import pytest

from vital.annotate.store import (
    Annotation,
    AnnotationStore,
    AnonymousWriteError,
    check_annotator,
    iter_records,
    store_sha256,
)


DATASET = "test/answer-pairs"


def _annotation(annotator, item_id, choice="A", **kwargs):
    label = {"A": "answer_a", "B": "answer_b"}.get(choice, choice)
    return Annotation("preference", DATASET, "c0ffee", item_id, annotator, choice, label, **kwargs)


def test_append_is_fsynced_before_it_returns(store, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    store.append(_annotation("alice", "q0"))
    assert len(synced) == 1
    path = store.path("preference", DATASET, "alice")
    record = json.loads(path.read_text().splitlines()[0])
    assert record["annotator"] == "alice" and record["item_id"] == "q0" and record["label"] == "answer_a"
    assert record["time"].endswith("Z") and record["id"]


def test_a_restarted_server_sees_everything_and_the_last_click_wins(store):
    store.append(_annotation("alice", "q0", "A"))
    store.append(_annotation("alice", "q1", "B"))
    store.append(_annotation("alice", "q0", "tie"))  # a change of mind
    fresh = AnnotationStore(store.root)  # a new process after a restart
    latest = fresh.latest("preference", DATASET, "alice")
    assert {i: a.choice for i, a in latest.items()} == {"q0": "tie", "q1": "B"}
    assert [a.choice for a in fresh.history("preference", DATASET, "alice")] == ["A", "B", "tie"]
    assert fresh.annotators("preference", DATASET) == ["alice"]


def test_a_line_torn_by_a_crash_is_skipped_then_cut_off(store, caplog):
    store.append(_annotation("alice", "q0"))
    path = store.path("preference", DATASET, "alice")
    complete, hash_before = path.read_bytes(), store_sha256([path], store.root)
    with open(path, "ab") as handle:  # the server died in the middle of a write
        handle.write(b'{"task": "preference", "item_id": "q1", "annot')
    restarted = AnnotationStore(store.root)
    assert list(restarted.latest("preference", DATASET, "alice")) == ["q0"]
    assert store_sha256([path], store.root) == hash_before  # the torn tail does not count
    restarted.append(_annotation("alice", "q2"))
    assert path.read_bytes().startswith(complete)
    assert [r.item_id for r in iter_records(path)] == ["q0", "q2"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_another_process_appends_are_picked_up(store):
    store.append(_annotation("alice", "q0"))
    other = AnnotationStore(store.root)
    assert list(other.latest("preference", DATASET, "alice")) == ["q0"]
    store.append(_annotation("alice", "q1"))
    assert sorted(other.latest("preference", DATASET, "alice")) == ["q0", "q1"]


def test_concurrent_annotators_lose_nothing(store):
    annotators = ["alice", "bob", "carol"]
    per_thread = 40

    def work(annotator, thread):
        for i in range(per_thread):
            store.append(_annotation(annotator, f"t{thread}-q{i}", comment="x" * (i * 50)))

    # two threads per annotator: one clinician in two tabs, next to the others
    threads = [threading.Thread(target=work, args=(a, f"{a}{k}")) for a in annotators for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = AnnotationStore(store.root)
    for annotator in annotators:
        lines = fresh.path("preference", DATASET, annotator).read_text().splitlines()
        assert len(lines) == 2 * per_thread
        assert all(json.loads(line)["annotator"] == annotator for line in lines)
        assert len(fresh.latest("preference", DATASET, annotator)) == 2 * per_thread


def _append_from_process(root, worker, count):
    store = AnnotationStore(root)
    for i in range(count):
        long = [{"role": "assistant", "content": [{"type": "text", "text": "y" * 3000}]}] * 2  # lines over PIPE_BUF
        store.append(_annotation("alice", f"p{worker}-q{i}", comment="y" * 1000, messages=long))


def test_processes_appending_to_one_file_interleave_whole_lines(store):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_from_process, args=(store.root, w, 25)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    records = list(iter_records(store.path("preference", DATASET, "alice")))
    assert len(records) == 100
    assert len({r.item_id for r in records}) == 100


def test_anonymous_and_unsafe_annotators_are_refused(store):
    for nobody in (None, "", "   "):
        with pytest.raises(AnonymousWriteError):
            store.append(_annotation(nobody, "q0"))
    for bad in ("../etc", "a/b", "alice smith"):
        with pytest.raises(ValueError):
            store.append(_annotation(bad, "q0"))
    assert not store.root.exists() or not any(store.root.rglob("*.jsonl"))
    assert check_annotator(" alice ") == "alice"


def test_store_hash_names_the_annotations(store):
    store.append(_annotation("alice", "q0"))
    files = store.files("preference", DATASET)
    before = store_sha256(files, store.root)
    assert before == store_sha256(files, store.root)
    store.append(_annotation("bob", "q0"))
    assert store_sha256(store.files("preference", DATASET), store.root) != before
