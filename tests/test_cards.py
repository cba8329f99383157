"""Cards: Hub metadata, the lineage block, secrets kept out."""

from dataclasses import dataclass

import pytest
from huggingface_hub import DatasetCard, EvalResult, ModelCard

from vital import __version__
from vital.cards import REDACTED, Lineage, dataset_card, lineage_of, model_card, redact_secrets
from vital.hub import ArtifactRef


@dataclass
class Args:
    model: str = "gpt-4o"
    api_key: str = "sk-test-should-not-leak"
    base_url: str = "http://127.0.0.1:8000/v1"
    seed: int = 3


PAIRS = ArtifactRef("org/pairs", "dataset", "main", "a" * 40)


def render_pairs(**kw):
    return dataset_card(
        "pairs",
        lineage=Lineage(
            stage="ingest", inputs=[PAIRS, {"source": "sample", "sha256": "f" * 64}], config=Args(), seed=3
        ),
        pretty_name="Pairs",
        description="Some pairs.",
        repo_id="org/pairs",
        num_rows=12,
        modalities={"ct": 4, "mri": 8},
        sources="| file | licence |",
        quarantined=0,
        **kw,
    )


def test_dataset_card_metadata_and_lineage():
    card = render_pairs()
    again = DatasetCard(str(card))  # parses back as a Hub card
    data = again.data.to_dict()
    assert data["pretty_name"] == "Pairs" and "biomedical" in data["tags"] and data["language"] == ["en"]
    lineage = lineage_of(again)
    assert lineage["stage"] == "ingest" and lineage["seed"] == 3
    assert lineage["inputs"][0] == {
        "repo_id": "org/pairs",
        "repo_type": "dataset",
        "revision": "main",
        "commit": "a" * 40,
    }
    assert lineage["versions"]["biomed-vital"] == __version__ and "transformers" in lineage["versions"]
    # The same lineage is readable by people in the text.
    assert f"`{'a' * 40}`" in again.text and f"`{'f' * 64}`" in again.text
    assert "ct 4, mri 8" in again.text and "seed `3`" in again.text


def test_secrets_never_reach_the_card(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret-123")

    @dataclass
    class WithEnvSecret(Args):
        header: str = "Bearer sk-env-secret-123"

    card = dataset_card(
        "demos",
        lineage=Lineage(stage="t", config=WithEnvSecret(), extra={"token": "hf_abc"}),
        pretty_name="Demos",
        description="",
        num_rows=1,
        modalities={},
        curators=["a"],
    )
    text = str(card)
    assert "sk-test-should-not-leak" not in text and "sk-env-secret-123" not in text and "hf_abc" not in text
    assert lineage_of(card)["config"]["api_key"] == REDACTED
    assert lineage_of(card)["config"]["header"] == f"Bearer {REDACTED}"
    assert lineage_of(card)["config"]["base_url"] == "http://127.0.0.1:8000/v1"


def test_redact_secrets_walks_nested_values():
    out = redact_secrets({"a": [{"password": "x"}], "hf_token": "t", "ok": "fine", "n": 3})
    assert out == {"a": [{"password": REDACTED}], "hf_token": REDACTED, "ok": "fine", "n": 3}


@pytest.mark.parametrize("key", ["token", "hub_token", "hubToken", "HF_TOKEN", "access-token", "api_key", "apiKey",
                                 "client_secret", "Authorization", "azure_ad_token", "push_token_x"])  # fmt: skip
def test_credentials_are_redacted_by_their_name(key):
    assert redact_secrets({key: "value"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["eos_token", "pad_token", "bos_token", "image_token", "include_num_input_tokens_seen",
                                 "tokenizer_name", "max_new_tokens", "special_tokens"])  # fmt: skip
def test_tokenizer_settings_are_kept(key):
    # A run's tokenizer settings are needed to rebuild it: "token" in a name is not enough to hide its value.
    assert redact_secrets({key: "<|end|>"}) == {key: "<|end|>"}


def test_model_card_with_base_model_datasets_and_model_index():
    result = EvalResult(
        task_type="visual-question-answering",
        dataset_type="org/vqa-rad",
        dataset_name="VQA-RAD",
        dataset_split="test",
        dataset_revision="b" * 40,
        metric_type="accuracy",
        metric_name="closed accuracy (strict)",
        metric_value=61.5,
    )
    card = model_card(
        "model",
        lineage=Lineage(stage="sft", inputs=[PAIRS], config={"learning_rate": 2e-5}, seed=42),
        model_name="tiny-vital",
        base_model="org/base",
        datasets=["org/selected"],
        eval_results=[result],
        description="A test model.",
        repo_id="org/tiny-vital",
    )
    again = ModelCard(str(card))
    assert again.data.base_model == "org/base" and again.data.datasets == ["org/selected"]
    assert again.data.eval_results[0].metric_value == 61.5
    assert again.data.to_dict()["model-index"][0]["results"][0]["dataset"]["revision"] == "b" * 40
    assert "Fine-tuned from `org/base`" in again.text and lineage_of(again)["seed"] == 42
