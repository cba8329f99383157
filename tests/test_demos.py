"""Demo curation: embedders, k-means clusters, the clinicians' review sample and the per-request demo draw."""

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from datasets import Dataset, Features, Value
from PIL import Image as PILImage

from vital.data.errors import RecordError
from vital.data.schemas import DEMO_FEATURES, PAIR_FEATURES
from vital.demos import (
    ClipEncoder,
    DemoSampler,
    HashingTextEmbedder,
    PixelImageEmbedder,
    assign_clusters,
    cluster_pairs,
    cluster_table,
    embed_pairs,
    load_image_embedder,
    load_text_embedder,
    review_sample,
)


SOURCE = {"origin": "synthetic", "pmid": "", "url": "", "license": "CC0", "citation": ""}
CAPTIONS = {
    "chest_xray": "Frontal chest radiograph showing a right lower lobe opacity and a small pleural effusion",
    "histology": "Haematoxylin and eosin stained section with glands lined by columnar epithelium and mitoses",
}


def group_image(group: int, i: int) -> PILImage.Image:
    """Group 0: dark with bright horizontal bands; group 1: bright with a dark vertical gradient. Noise per image."""
    rng = np.random.RandomState(100 + i)
    if group == 0:
        array = np.full((24, 24), 30.0)
        array[::6] = 220
    else:
        array = np.tile(np.linspace(250, 120, 24), (24, 1))
    return PILImage.fromarray(np.clip(array + rng.randint(-8, 9, array.shape), 0, 255).astype(np.uint8))


def make_pairs(n_per_group: int = 6) -> Dataset:
    """Two well-separated groups, interleaved (pair 0 in group 0, pair 1 in group 1, ...)."""
    rows = []
    for i in range(2 * n_per_group):
        modality = ("chest_xray", "histology")[i % 2]
        rows.append(
            {
                "id": f"pair-{i:03d}",
                "image": group_image(i % 2, i),
                "caption": f"{CAPTIONS[modality]} (case {i})",
                "fig_label": f"Figure {i}",
                "mentions": [f"Figure {i} is described in case {i}."],
                "modality": modality,
                "source": SOURCE,
            }
        )
    return Dataset.from_list(rows, features=PAIR_FEATURES)


def make_demos(ids_and_modalities) -> Dataset:
    messages = [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A finding."}]},
    ]
    rows = [
        {
            "id": demo_id,
            "image": group_image(0, k),
            "caption": "c",
            "fig_label": "",
            "mentions": [],
            "modality": modality,
            "source": SOURCE,
            "messages": messages,
            "cluster": -1,
            "curated_by": "dr-test",
            "pair_id": f"pair-{k:03d}",
        }
        for k, (demo_id, modality) in enumerate(ids_and_modalities)
    ]
    return Dataset.from_list(rows, features=Features({**DEMO_FEATURES, "pair_id": Value("string")}))


@pytest.fixture(scope="module")
def pairs():
    return make_pairs()


@pytest.fixture(scope="module")
def groups(pairs):
    return np.array([0 if m == "chest_xray" else 1 for m in pairs["modality"]])


# ----------------------------------------------------------------------------------------------------------------------
# Embedders
# ----------------------------------------------------------------------------------------------------------------------
def test_pixel_embedder_is_deterministic_normalised_and_reads_any_mode():
    base = np.arange(30 * 40, dtype=np.float64).reshape(30, 40) * 50
    images = [
        group_image(0, 1),
        group_image(0, 1).convert("RGB"),
        group_image(1, 2).convert("RGBA"),
        PILImage.fromarray(base.astype(np.uint16)),  # 16-bit: rescaled to its range, not clipped at 255
        PILImage.fromarray(base.astype(np.float32), mode="F"),
        PILImage.new("L", (8, 8), 128),  # constant: only the histogram part is non-zero
    ]
    embedder = load_image_embedder("pixels")
    assert isinstance(embedder, PixelImageEmbedder)
    first, second = embedder(images), PixelImageEmbedder()(images)
    assert first.dtype == np.float32 and first.shape == (6, 16 * 16 + 32)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(first[0], first[1], atol=1e-6)  # grayscale or RGB copy of it: same features
    np.testing.assert_allclose(first[3], first[4], atol=1e-5)  # 16-bit and float versions of one ramp
    assert np.count_nonzero(first[3][-32:]) > 16  # the ramp spreads over the histogram instead of saturating


def test_hashing_embedder_is_deterministic_normalised_and_unsalted():
    texts = ["Axial CT of the abdomen", "", "T2-weighted MRI of the brain"]
    vectors = load_text_embedder("hashing")(texts)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), [1, 0, 1], atol=1e-6)
    np.testing.assert_array_equal(vectors, HashingTextEmbedder()(texts))
    assert load_text_embedder("hashing:64")(texts).shape == (3, 64)
    # Another interpreter with another string-hash salt gives the same vector.
    code = (
        "from vital.demos import HashingTextEmbedder as H; print(H()(['Axial CT of the abdomen'])[0].tobytes().hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == vectors[0].tobytes().hex()


def test_hashing_puts_near_duplicate_captions_closer_than_unrelated_ones():
    caption = "Contrast-enhanced axial CT shows a hypodense liver lesion with peripheral enhancement."
    near = "Contrast enhanced axial CT showing a hypodense lesion of the liver with peripheral enhancement"
    unrelated = "Photomicrograph of a lymph node with sheets of atypical lymphocytes (H&E, x400)."
    a, b, c = HashingTextEmbedder()([caption, near, unrelated])
    assert a @ b > 0.6 > a @ c
    assert np.linalg.norm(a - b) < np.linalg.norm(a - c)


def test_unknown_embedder_specs_are_refused():
    with pytest.raises(ValueError, match="unknown image embedder"):
        load_image_embedder("resnet")
    with pytest.raises(ValueError, match="unknown text embedder"):
        load_text_embedder("tfidf")
    with pytest.raises(ValueError, match="integer"):
        load_text_embedder("hashing:big")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from vital.testing.tiny_models import build_tiny_clip

    path = tmp_path_factory.mktemp("tiny-clip")
    build_tiny_clip(save_dir=path)
    return str(path)


def test_clip_embedders_share_one_encoder_and_give_normalised_features(tiny_clip_dir, pairs):
    image_embedder = load_image_embedder(f"clip:{tiny_clip_dir}", device="cpu")
    text_embedder = load_text_embedder(f"clip:{tiny_clip_dir}", device="cpu")
    assert image_embedder.encoder is text_embedder.encoder is ClipEncoder.load(tiny_clip_dir, "cpu")
    images = [pairs[i]["image"] for i in range(3)] + [PILImage.new("I;16", (20, 20))]
    image_features = image_embedder(images)
    text_features = text_embedder(["a chest radiograph", "an H&E section of a gland " * 40])  # longer than 64 tokens
    assert image_features.shape == (4, 16) and text_features.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(image_features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(image_embedder(images[:1]), image_features[:1], atol=1e-5)
    embeddings = embed_pairs(pairs, image_embedder, text_embedder, batch_size=5, show_progress=False)
    assert embeddings.shape == (len(pairs), 32)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_sentence_embedder_mean_pools_a_local_encoder(tmp_path):
    from transformers import BertConfig, BertModel

    from vital.testing.tiny_models import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(model_max_length=64)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    embedder = load_text_embedder(f"sentence:{tmp_path}", device="cpu")
    vectors = embedder(["short", "a much longer sentence about a chest radiograph"])
    assert vectors.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Padding does not leak into the mean: a text alone and in a batch with a longer one embed the same.
    np.testing.assert_allclose(embedder(["short"])[0], vectors[0], atol=1e-5)


def test_embed_pairs_weights_and_batches(pairs):
    both = embed_pairs(pairs, batch_size=5, show_progress=False)
    assert both.shape == (len(pairs), 800) and both.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(both, embed_pairs(pairs, batch_size=64, show_progress=False))
    image_only = embed_pairs(pairs, image_weight=1.0, show_progress=False)
    text_only = embed_pairs(pairs, image_weight=0.0, text_fields=["caption"], show_progress=False)
    assert image_only.shape == (len(pairs), 288) and text_only.shape == (len(pairs), 512)
    np.testing.assert_allclose(both[:, :288], np.sqrt(0.5) * image_only, atol=1e-6)
    with pytest.raises(ValueError, match="no column"):
        embed_pairs(pairs, text_fields=["abstract"], show_progress=False)
    with pytest.raises(ValueError, match="image_weight"):
        embed_pairs(pairs, image_weight=1.5, show_progress=False)


# ----------------------------------------------------------------------------------------------------------------------
# Clusters and the review sample
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_weight", [0.0, 0.5, 1.0])
def test_two_clusters_recover_two_separated_groups(pairs, groups, image_weight):
    embeddings = embed_pairs(pairs, image_weight=image_weight, show_progress=False)
    result = cluster_pairs(embeddings, k=2, seed=0)
    # Clusters are numbered by first appearance, and pair 0 is in group 0: labels equal the groups exactly.
    np.testing.assert_array_equal(result.labels, groups)
    assert result.labels.dtype == np.int32 and result.centroids.shape == (2, embeddings.shape[1])
    assert result.sizes() == [6, 6] and result.algorithm == "KMeans"
    np.testing.assert_allclose(
        result.distances, np.linalg.norm(embeddings - result.centroids[result.labels], axis=1), rtol=1e-5
    )
    again = cluster_pairs(embeddings, k=2, seed=0)
    np.testing.assert_array_equal(again.labels, result.labels)
    np.testing.assert_array_equal(again.centroids, result.centroids)


def test_minibatch_kmeans_above_the_threshold(pairs, groups):
    embeddings = embed_pairs(pairs, show_progress=False)
    result = cluster_pairs(embeddings, k=2, seed=0, minibatch_threshold=4)
    assert result.algorithm == "MiniBatchKMeans"
    np.testing.assert_array_equal(result.labels, groups)


def test_k_is_clipped_to_the_number_of_pairs():
    embeddings = np.eye(3, 5, dtype=np.float32)
    with pytest.warns(UserWarning, match="clipped to k=3"):
        result = cluster_pairs(embeddings, k=60, seed=0)
    assert result.k == 3 and sorted(result.labels.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(result.distances, 0, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        cluster_pairs(np.zeros((0, 4)), k=2)


def test_review_sample_takes_the_pairs_nearest_each_centroid(pairs, groups):
    clusters = cluster_pairs(embed_pairs(pairs, show_progress=False), k=2, seed=0)
    sample = review_sample(pairs, clusters, per_cluster=2, seed=0)
    assert len(sample) == 4 and sample.column_names == [*pairs.column_names, "cluster", "distance", "rank_in_cluster"]
    assert sample.features["cluster"] == Value("int32") and sample.features["distance"] == Value("float32")
    assert list(sample["cluster"]) == [0, 0, 1, 1] and list(sample["rank_in_cluster"]) == [0, 1, 0, 1]
    index = {pair_id: i for i, pair_id in enumerate(pairs["id"])}
    for c in (0, 1):
        members = np.flatnonzero(clusters.labels == c)
        expected = [pairs[int(i)]["id"] for i in members[np.argsort(clusters.distances[members], kind="stable")][:2]]
        got = [row["id"] for row in sample if row["cluster"] == c]
        assert got == expected
        assert all(groups[index[pair_id]] == c for pair_id in got)
    np.testing.assert_allclose(sample["distance"], [clusters.distances[index[i]] for i in sample["id"]], rtol=1e-6)
    assert isinstance(sample[0]["image"], PILImage.Image)  # images travel with the sample

    table = cluster_table(list(pairs["modality"]), clusters)
    assert [row["modalities"] for row in table] == [{"chest_xray": 6}, {"histology": 6}]


def test_random_review_sample_is_seeded(pairs):
    clusters = cluster_pairs(embed_pairs(pairs, show_progress=False), k=2, seed=0)
    first = review_sample(pairs, clusters, per_cluster=3, seed=7, strategy="random")
    assert list(first["id"]) == list(review_sample(pairs, clusters, per_cluster=3, seed=7, strategy="random")["id"])
    assert Counter(first["cluster"]) == {0: 3, 1: 3}
    for c in (0, 1):  # within a cluster, nearest first
        ranks = [row["rank_in_cluster"] for row in first if row["cluster"] == c]
        assert ranks == sorted(ranks)
    seeds = {tuple(review_sample(pairs, clusters, 3, seed, "random")["id"]) for seed in range(5)}
    assert len(seeds) > 1
    with pytest.raises(ValueError, match="strategy"):
        review_sample(pairs, clusters, 3, 0, "farthest")


def test_assign_clusters_sets_int32_cluster_and_names_an_unknown_pair():
    demos = make_demos([("demo-a", "ct"), ("demo-b", "mri")])
    updated = assign_clusters(demos, ["pair-000", "pair-001", "pair-002"], np.array([2, 0, 1]))
    assert list(updated["cluster"]) == [2, 0] and updated.features == demos.features
    assert updated.column_names == demos.column_names
    with pytest.raises(RecordError, match="pair_id") as error:
        assign_clusters(demos, ["pair-000"], np.array([0]))
    assert error.value.record_id == "demo-b" and error.value.field == "pair_id"


# ----------------------------------------------------------------------------------------------------------------------
# Drawing demos per request
# ----------------------------------------------------------------------------------------------------------------------
DEMO_SET = [
    ("ct-1", "ct"),
    ("ct-2", "ct"),
    ("ct-3", "ct"),
    ("mri-1", "mri"),
    ("mri-2", "mri"),
    ("cxr-1", "chest_xray"),
]


@pytest.fixture(scope="module")
def demos():
    return make_demos(DEMO_SET)


def test_demo_sampler_draws_one_demo_per_modality_reproducibly(demos):
    sampler = DemoSampler(demos, seed=0)
    assert sampler.modalities == ["chest_xray", "ct", "mri"] and len(sampler) == 6
    rows = sampler.sample("cand-1")
    assert [row["modality"] for row in rows] == ["chest_xray", "ct", "mri"]
    assert [row["id"] for row in rows] == sampler.demo_ids("cand-1")
    assert isinstance(rows[0]["image"], PILImage.Image) and rows[0]["messages"][0]["role"] == "user"
    # Same key, same draw: from a new sampler, and from the demos in another row order.
    assert DemoSampler(demos, seed=0).demo_ids("cand-1") == sampler.demo_ids("cand-1")
    shuffled = demos.select(list(range(len(demos)))[::-1])
    keys = [f"cand-{i}" for i in range(200)]
    assert [DemoSampler(shuffled, seed=0).demo_ids(k) for k in keys] == [sampler.demo_ids(k) for k in keys]
    # Different keys draw differently, and over many keys every demo is used, roughly uniformly within a modality.
    draws = Counter(demo_id for k in keys for demo_id in sampler.demo_ids(k))
    assert set(draws) == {demo_id for demo_id, _ in DEMO_SET}
    assert len({tuple(sampler.demo_ids(k)) for k in keys}) == 6  # 3 ct x 2 mri x 1 chest_xray combinations
    assert all(40 <= draws[f"ct-{i}"] <= 95 for i in (1, 2, 3))
    # Another seed, another draw.
    assert [DemoSampler(demos, seed=1).demo_ids(k) for k in keys] != [sampler.demo_ids(k) for k in keys]


def test_demo_sampler_options(demos):
    sampler = DemoSampler(demos, seed=0, modalities=["mri", "ct"])
    assert [demo_id.split("-")[0] for demo_id in sampler.demo_ids("x")] == ["mri", "ct"]
    two = DemoSampler(demos, seed=0, per_modality=2)
    ids = two.demo_ids("x")
    assert Counter(i.split("-")[0] for i in ids) == {"cxr": 1, "ct": 2, "mri": 2}  # fewer where a modality has fewer
    assert len(set(ids)) == 5
    with pytest.raises(ValueError, match="histology"):
        DemoSampler(demos, modalities=["histology"])
    with pytest.raises(ValueError, match="unique"):
        DemoSampler(make_demos([("d", "ct"), ("d", "ct")]))
