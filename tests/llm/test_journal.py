"""Tests for vital.llm.journal: append and reload, crash tolerance, concurrent appends, shards."""

from __future__ import annotations

import json
import logging
import os
import threading

import pytest

from vital.llm import CompletionResult, Journal, merge_journals, parse_shard, shard_items, shard_path


def result(key: str, text: str = "reply", error: str | None = None) -> CompletionResult:
    return CompletionResult(
        key=key, text=text, prompt_tokens=10, completion_tokens=5, cost_usd=1e-4, attempts=1, error=error
    )


def test_append_then_reload(tmp_path):
    path = tmp_path / "sub" / "journal.jsonl"
    with Journal.open(path) as journal:
        assert len(journal) == 0 and journal.done("a") is None
        journal.append(result("a", "alpha"))
        journal.append(result("b", 'beta, with ünïcode and "quotes"\nand a newline'))
        assert journal.done("a").text == "alpha" and len(journal) == 2
    reloaded = Journal.open(path)
    assert sorted(reloaded.keys()) == ["a", "b"] and "a" in reloaded
    assert reloaded.done("b") == result("b", 'beta, with ünïcode and "quotes"\nand a newline')
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["key"] for r in records] == ["a", "b"] and all(r["ts"].endswith("+00:00") for r in records)
    reloaded.close()


def test_torn_last_line_is_ignored_and_cut_off(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    with Journal.open(path) as journal:
        for key in "abc":
            journal.append(result(key))
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0][:25])  # a crash in the middle of a 4th write
    with caplog.at_level(logging.WARNING), Journal.open(path) as journal:
        assert len(journal) == 3 and journal.skipped_lines == 1
        assert "torn last line" in caplog.text
        journal.append(result("d"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b", "c", "d"]  # the torn bytes are gone


def test_corrupt_middle_line_is_skipped(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    good = json.dumps(result("a").to_record())
    path.write_text(f"{good}\nnot json at all\n\n{json.dumps(result('b').to_record())}\n")
    with caplog.at_level(logging.WARNING), Journal.open(path) as journal:
        assert sorted(journal.keys()) == ["a", "b"] and journal.skipped_lines == 1
    assert "corrupt line 2" in caplog.text


def test_success_wins_over_failure_and_otherwise_the_last_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal.open(path) as journal:
        journal.append(result("k", error="http 500 after 7 attempts"))
        journal.append(result("k", "good"))
        journal.append(result("k", error="timeout after 7 attempts"))  # cannot demote a success
        journal.append(result("f", error="timeout after 7 attempts"))
        journal.append(result("f", error="http 503 after 7 attempts"))
    reloaded = Journal.open(path)
    assert reloaded.done("k").text == "good" and reloaded.done("f").error == "http 503 after 7 attempts"
    reloaded.close()


def test_a_journal_is_open_once_at_a_time(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal.open(path) as journal:
        journal.append(result("a"))
        with pytest.raises(RuntimeError, match="open in another process"):
            Journal.open(path)
        assert list(merge_journals([path])) == ["a"]  # reading a live journal is fine
    with Journal.open(path) as journal:  # released on close
        assert len(journal) == 1


def test_fsync_every(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    with Journal.open(tmp_path / "every.jsonl", group_commit=False) as journal:
        for i in range(5):
            journal.append(result(str(i)))
        assert len(calls) == 5
    calls.clear()
    with Journal.open(tmp_path / "batched.jsonl", fsync_every=4, group_commit=False) as journal:
        for i in range(10):
            journal.append(result(str(i)))
        assert len(calls) == 2
    assert len(calls) == 3  # close syncs the rest
    with pytest.raises(ValueError):
        Journal(tmp_path / "x.jsonl", fsync_every=0)


def test_concurrent_appends_from_threads_never_interleave(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal.open(path, fsync_every=50)
    text = "x" * 5000  # longer than a pipe buffer: a torn interleave would show

    def worker(index: int) -> None:
        for i in range(100):
            journal.append(result(f"{index}-{i}", text))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 800 and len({r["key"] for r in records}) == 800
    assert len(Journal.open(path)) == 800


def test_shards_partition_the_items_and_merge_back(tmp_path):
    items = list(range(10))
    for contiguous in (True, False):
        shards = [shard_items(items, i, 4, contiguous=contiguous) for i in range(4)]
        assert sorted(sum(shards, [])) == items
        assert [len(s) for s in shards] == [3, 3, 2, 2]
        assert shards == [shard_items(items, i, 4, contiguous=contiguous) for i in range(4)]  # deterministic
    assert shard_items(items, 1, 4) == [3, 4, 5] and shard_items(items, 1, 4, contiguous=False) == [1, 5, 9]

    base = tmp_path / "runs" / "captions.jsonl"
    assert shard_path(base, 1, 4) == tmp_path / "runs" / "captions-00001-of-00004.jsonl"
    assert shard_path(base, 0, 1) == base
    paths = [shard_path(base, i, 4) for i in range(4)]
    for i, path in enumerate(paths):
        with Journal.open(path) as journal:
            for item in shard_items(items, i, 4):
                journal.append(result(f"item-{item}"))
    with Journal.open(paths[0]) as journal:
        journal.append(result("item-3", error="timeout after 7 attempts"))  # also failed elsewhere; success wins
    merged = merge_journals(paths)
    assert sorted(merged) == sorted(f"item-{i}" for i in items) and merged["item-3"].ok


@pytest.mark.parametrize("spec, expected", [("0/1", (0, 1)), ("1/4", (1, 4)), ("3/4", (3, 4))])
def test_parse_shard(spec, expected):
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec", ["4/4", "-1/4", "0/0", "1", "a/b", "1/2/3"])
def test_parse_shard_rejects(spec):
    with pytest.raises(ValueError):
        parse_shard(spec)
