"""Clustering with the paper's settings: ViT image features (6 x 6 average pooling of the last hidden state, as the
official script), text embeddings of the caption + first mention, gross and histology left out. Tiny ViT and BERT
models are built locally (no download); the OpenAI embedder is exercised through the real client on a mock transport.
"""

import json

import httpx
import numpy as np
import pytest
import torch
from datasets import Dataset

from vital.demos import (
    OpenAITextEmbedder,
    VitImageEmbedder,
    embed_pairs,
    load_image_embedder,
    load_text_embedder,
    pair_text,
)
from vital.hub import LocalHub
from vital.runner import load_recipe


WORDS = ["chest", "x-ray", "ct", "mri", "scan", "lesion", "liver", "lung", "brain", "mass", "figure", "shows"]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)  # fmt: skip
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=512)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


def test_vit_embedder_is_the_official_6x6_pooling(tiny_vit):
    from PIL import Image
    from transformers import ViTImageProcessor, ViTModel

    images = [Image.fromarray(np.full((40, 40, 3), v, np.uint8)) for v in (0, 128, 255)]
    out = load_image_embedder(f"vit:{tiny_vit}", device="cpu")(images)
    assert isinstance(load_image_embedder(f"vit:{tiny_vit}", device="cpu"), VitImageEmbedder)
    # 17 tokens x 24 hidden, pooled 6 x 6 with stride 6 -> 2 x 4 = 8 numbers per image
    assert out.shape == (3, 8) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    model = ViTModel.from_pretrained(tiny_vit).eval()
    pixels = ViTImageProcessor.from_pretrained(tiny_vit)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state  # (3, 17, 24)
    by_hand = torch.stack([hidden[:, 6 * i : 6 * i + 6, 6 * j : 6 * j + 6].mean(dim=(1, 2)) for i in range(2)
                           for j in range(4)], dim=1).numpy()  # fmt: skip
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    assert np.allclose(out, by_hand, atol=1e-5)


def test_first_mention_text_field():
    row = {"caption": "Chest x-ray.", "mentions": ["First mention.", "Second mention."]}
    assert pair_text(row, ["caption", "first_mention"]) == "Chest x-ray. First mention."
    assert pair_text(row, ["caption", "mentions"]) == "Chest x-ray. First mention. Second mention."
    assert pair_text({"caption": "c", "mentions": []}, ["caption", "first_mention"]) == "c"


def test_text_embedder_sees_caption_and_first_mention_only(tiny_bert):
    pairs = Dataset.from_dict(
        {"caption": ["ct scan", "ct scan"], "mentions": [["liver lesion"], ["liver lesion", "brain mass"]]}
    )
    first = embed_pairs(pairs, text_embedder=f"sentence:{tiny_bert}", text_fields=["caption", "first_mention"],
                        image_weight=0.0, show_progress=False)  # fmt: skip
    every = embed_pairs(pairs, text_embedder=f"sentence:{tiny_bert}", text_fields=["caption", "mentions"],
                        image_weight=0.0, show_progress=False)  # fmt: skip
    assert np.allclose(first[0], first[1])  # the second mention is not embedded
    assert not np.allclose(every[0], every[1])


def test_openai_text_embedder_through_the_client(monkeypatch):
    from openai import OpenAI

    seen = []

    def handler(request):
        body = json.loads(request.content)
        seen.append(body)
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]}
                for i, t in reversed(list(enumerate(body["input"])))]  # fmt: skip
        return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"],
                                         "usage": {"prompt_tokens": 1, "total_tokens": 1}})  # fmt: skip

    client = OpenAI(api_key="sk-test", base_url="http://embeddings.test/v1",
                    http_client=httpx.Client(transport=httpx.MockTransport(handler)))  # fmt: skip
    embedder = OpenAITextEmbedder("text-embedding-ada-002", client=client, batch_size=2)
    out = embedder(["abc", "", "abcdefgh"])
    assert [b["input"] for b in seen] == [["abc", " "], ["abcdefgh"]]  # batched; an empty text is sent as " "
    assert {b["model"] for b in seen} == {"text-embedding-ada-002"}
    expected = np.array([[3, 1, 0], [1, 1, 0], [8, 1, 0]], np.float32)
    assert np.allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True))  # back in input order
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert load_text_embedder("openai:text-embedding-ada-002").spec == "openai:text-embedding-ada-002"


def test_curate_demos_with_the_paper_embedders_leaves_out_gross_and_histology(tiny_vit, tiny_bert, tmp_path):
    hub = f"local:{tmp_path}/hub"
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    pushed = load_recipe("curate_demos").cli(
        [
            "--config",
            "recipes/quickstart/curate_demos.yaml",
            "--hub",
            hub,
            "--image_embedder",
            f"vit:{tiny_vit}",
            "--text_embedder",
            f"sentence:{tiny_bert}",
            "--text_fields",
            "caption",
            "first_mention",
            "--exclude_modalities",
            "gross",
            "histology",
            "--num_clusters",
            "3",
            "--demos_repo",
            "quickstart/demos",
        ]  # fmt: skip
    )
    local = LocalHub(tmp_path / "hub")
    pairs = local.load_dataset("quickstart/pairs", split="train")
    (commit,) = [p.commit for p in pushed if p.repo_id == "quickstart/clusters"]  # default and review: one commit
    clusters = local.load_dataset("quickstart/clusters", "default", split="train", revision=commit)
    assert clusters["id"] == pairs["id"]  # every pair has a row, the left-out ones too
    left_out = {m for m, c in zip(clusters["modality"], clusters["cluster"], strict=True) if c == -1}
    clustered = {m for m, c in zip(clusters["modality"], clusters["cluster"], strict=True) if c >= 0}
    assert left_out == {"gross", "histology"} & set(pairs["modality"]) and left_out
    assert not clustered & {"gross", "histology"} and {c for c in clusters["cluster"] if c >= 0} == {0, 1, 2}
    review = local.load_dataset("quickstart/clusters", "review", split="train", revision=commit)
    assert not set(review["modality"]) & {"gross", "histology"}
    card = (local.snapshot("quickstart/clusters", commit) / "README.md").read_text()
    n_out = sum(c == -1 for c in clusters["cluster"])
    assert f"vit:{tiny_vit}" in card and "`first_mention`" in card and "(in `default` with cluster -1)" in card
    assert f"{len(pairs) - n_out} clustered" in card
    demos = local.load_dataset("quickstart/demos", split="train", revision=pushed[-1].commit)
    assert "histology" in demos["modality"] and all(
        (c == -1) == (m in {"gross", "histology"}) for c, m in zip(demos["cluster"], demos["modality"])
    )
