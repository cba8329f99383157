"""`vital pipeline --dry_run`: requests, tokens and cost of every API stage, and nothing sent or written."""

from vital.runner import load_recipe


def test_paper_pipeline_dry_run_sends_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may appear here: no journals, no hub
    # The shipped profile by name: its stage configs are read from its own folder, not the current one.
    estimates = load_recipe("pipeline").cli(
        ["--config", "biomed_vital", "--dry_run", "true", "--hub", f"local:{tmp_path}/hub"]
    )
    by_task = {(e.stage, e.task): e for e in estimates}
    assert set(by_task) == {
        ("curate_demos", "text embeddings"),  # the paper embeds captions with text-embedding-ada-002
        ("generate", "conversation"),
        ("generate", "answer pairs"),
        ("rate", "rubric score"),
        ("evaluate", "chat judge"),
    }
    assert by_task["generate", "conversation"].requests == 60_000  # expected_pairs, since no pairs repo exists
    assert by_task["rate", "rubric score"].requests == 300_000
    # gpt-4o list prices: $2.50 / $10.00 per million prompt / completion tokens
    gen = by_task["generate", "conversation"]
    assert abs(gen.cost_usd - (gen.prompt_tokens * 2.5 + gen.completion_tokens * 10) / 1e6) < 1e-6
    assert gen.prompt_tokens / gen.requests > 1000  # the target figure and the demonstrations' conversations
    embed = by_task["curate_demos", "text embeddings"]
    assert embed.requests == 60_000 // 256 + 1 and embed.completion_tokens == 0  # 256 texts a request
    assert abs(embed.cost_usd - embed.prompt_tokens * 0.10 / 1e6) < 1e-9
    assert "Dry run: nothing was sent" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
