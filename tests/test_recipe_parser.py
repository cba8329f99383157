"""Every `vital` parser: no prefix matching, and a credential on the command line or in a config is refused without
being repeated (issue: `--api_key sk-...` was taken as `--api_key_env`; an `api_key:` YAML key was printed back)."""

from __future__ import annotations

import pytest

from vital.cli import main as vital_main
from vital.runner import available_recipes, load_recipe


SECRET = "sk-proj-Zq81secretSECRETsecret0123456789abcd"
PLAIN_SECRET = "correct-horse-battery-staple"  # a key with no recognisable shape: refused by its name


def run_vital(argv: list[str], capsys) -> tuple[int | str | None, str]:
    with pytest.raises(SystemExit) as exit_info:
        vital_main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--api_key", SECRET],
        [f"--api_key={SECRET}"],
        ["--api-key", SECRET],
        ["--api_key_env", SECRET],  # a key where the variable's name belongs
        ["--model", "gpt-4o", "--openai_api_key", PLAIN_SECRET],
    ],
)
def test_a_key_on_the_command_line_is_refused_and_never_echoed(argv, capsys):
    code, output = run_vital(["rate", *argv], capsys)
    assert code == 2
    assert "refused" in output and "--api_key_env" in output
    assert SECRET not in output and PLAIN_SECRET not in output


@pytest.mark.parametrize(
    "yaml_text",
    [
        f"api_key: {SECRET}\n",
        f"model: gpt-4o\napi_key: {PLAIN_SECRET}\n",
        f"env:\n  OPENAI_API_KEY: {SECRET}\n",
        f'base_url: http://127.0.0.1:1/v1\nprices: \'{{"x": "{SECRET}"}}\'\n',
    ],
)
def test_a_key_in_a_config_is_refused_and_never_echoed(yaml_text, tmp_path, capsys):
    config = tmp_path / "rate.yaml"
    config.write_text(yaml_text)
    code, output = run_vital(["rate", "--config", str(config)], capsys)
    assert code == 2
    assert "refused" in output and str(config) in output
    assert SECRET not in output and PLAIN_SECRET not in output


def test_no_prefix_matching_and_unknown_arguments_are_named_without_values(tmp_path, capsys):
    code, output = run_vital(["rate", "--api_key_e", "MY_KEY_VAR"], capsys)  # once taken as --api_key_env
    assert code == 2 and "unknown arguments: --api_key_e" in output and "MY_KEY_VAR" not in output
    config = tmp_path / "rate.yaml"
    config.write_text("no_such_option: value-not-to-print\n")
    code, output = run_vital(["rate", "--config", str(config)], capsys)
    assert code == 2 and "--no_such_option" in output and "value-not-to-print" not in output


def test_the_full_names_still_parse(tmp_path):
    from vital.llm import EndpointConfig
    from vital.runner import recipe_parser

    rate = load_recipe("rate")
    config = tmp_path / "rate.yaml"
    config.write_text("requests_per_minute: 120\nhub: local:/nowhere\n")
    args, endpoint = recipe_parser((rate.RateArguments, EndpointConfig)).parse_args_and_config(
        ["--config", str(config), "--api_key_env", "AZURE_KEY", "--tokens_per_minute", "9000"]
    )
    assert endpoint.api_key_env == "AZURE_KEY" and endpoint.tokens_per_minute == 9000
    assert endpoint.requests_per_minute == 120 and args.hub == "local:/nowhere"


@pytest.mark.slow
def test_every_stage_refuses_a_key_without_echoing_it(capsys):
    """Every recipe (`vital <stage>`) parses with the same parser."""
    for stage in available_recipes():
        code, output = run_vital([stage, "--api_key", SECRET], capsys)
        assert code == 2, stage
        assert "refused" in output and SECRET not in output, (stage, output[-300:])


def test_vital_hub_takes_no_abbreviations(capsys):
    code, output = run_vital(["hub", "refs", "some/repo", "--repo", "model"], capsys)  # --repo-type abbreviated
    assert code == 2 and "unrecognized arguments" in output
