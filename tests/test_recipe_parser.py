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
    assert code == 2 and f"in config {config}: key(s) no_such_option" in output and "value-not-to-print" not in output


def test_renamed_and_misspelt_options_say_what_was_meant_in_one_line(tmp_path, capsys):
    code, output = run_vital(["generate", "--revision", "v2", "--private", "false"], capsys)
    assert code == 2
    assert (
        "--revision (did you mean --hub_revision?)" in output
        and "--private (did you mean --hub_private_repo?)" in output
    )
    assert "v2" not in output and len(output.strip().splitlines()) == 1  # no usage dump of every option
    sft = ["sft", "--use_cpu", "true", "--bf16", "false"]
    code, output = run_vital([*sft, "--output_repo", "me/x", "--learning_rat", "1e-4"], capsys)
    assert "--output_repo (did you mean --hub_model_id?)" in output
    assert "--learning_rat (did you mean --learning_rate?)" in output
    config = tmp_path / "ingest.yaml"
    config.write_text("revision: v1\n")
    code, output = run_vital(["ingest", "--config", str(config)], capsys)
    assert code == 2 and f"in config {config}: key(s) revision (did you mean hub_revision?)" in output


def test_a_shipped_config_is_found_from_any_folder_and_a_missing_one_is_one_error_line(tmp_path, monkeypatch, capsys):
    from vital.llm import EndpointConfig
    from vital.llm.batch import BatchConfig
    from vital.resources import resource_dir
    from vital.runner import recipe_parser

    monkeypatch.chdir(tmp_path)  # an empty folder: no recipes/ here
    generate = load_recipe("generate")
    parser_types = (generate.GenerateArguments, EndpointConfig, BatchConfig)
    shipped = resource_dir("recipes") / "quickstart" / "generate.yaml"
    for name in ("quickstart/generate.yaml", "recipes/quickstart/generate.yaml"):
        args, endpoint, _ = recipe_parser(parser_types).parse_args_and_config(["--config", name])
        assert endpoint.model == "vital-stand-in" and args.pairs_repo == "quickstart/pairs", name
    assert shipped.is_file()
    code, output = run_vital(["generate", "--config", "nope.yaml"], capsys)
    assert code == 2 and "config 'nope.yaml' is neither a file nor a config shipped" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


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


def test_the_vital_command_prints_a_users_error_in_one_line(tmp_path, capsys):
    from vital.cli import console

    code = console(["select", "--hub", f"local:{tmp_path}/hub", "--candidates_repo", "nobody/candidates"])
    output = capsys.readouterr().err
    assert code == 1 and output.startswith("error: ") and "nobody/candidates" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


def test_a_mistyped_stage_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit, match=r"unknown stage 'generat'; did you mean 'generate'\?"):
        vital_main(["generat"])
    with pytest.raises(SystemExit, match=r"did you mean 'stand-in'\?"):
        vital_main(["standin"])


def test_vital_hub_says_when_the_repo_is_of_the_other_type(tmp_path, capsys):
    from vital.hub import LocalHub

    hub = LocalHub(tmp_path / "hub")
    hub.create_repo("me/model", "model")
    hub.create_branch("me/model", "main", repo_type="model")
    assert vital_main(["hub", "refs", "me/model", "--hub", f"local:{tmp_path}/hub"]) == 1
    assert "a model repo of that name exists: --repo-type model" in capsys.readouterr().err
    assert vital_main(["hub", "refs", "me/model", "--hub", f"local:{tmp_path}/hub", "--repo_type", "model"]) == 0


def test_a_stage_run_through_vital_names_itself_in_usage_and_errors(capsys):
    with pytest.raises(SystemExit):
        vital_main(["generate", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: vital generate [-h]") and "--config YAML reads these arguments" in out
    with pytest.raises(SystemExit):
        vital_main(["rate", "--no_such_flag", "1"])
    assert capsys.readouterr().err.startswith("vital rate: error: unknown arguments: --no_such_flag")
