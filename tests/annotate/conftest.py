"""Fixtures for the annotation app: a local hub holding tiny answer pairs, candidates and a clusters review sample,
built from the bundled sample pairs (real images) with texts whose origin is obvious, plus a fresh store per test."""

import pytest
from datasets import Dataset, Features, Image, Value

from vital.annotate.items import load_items
from vital.annotate.store import AnnotationStore
from vital.annotate.tasks import AnnotationTask
from vital.data.sample import load_sample_pairs
from vital.data.schemas import CANDIDATE_FEATURES, PAIR_FEATURES, image_part, text_part
from vital.demos import CLUSTER_FEATURES
from vital.generation import answer_pair_features
from vital.hub import LocalHub


N_PAIRS = 4
GENERATION = {
    "model": "test",
    "endpoint": "test",
    "prompt_sha": "0" * 16,
    "demo_ids": [],
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cost_usd": 0.0,
    "stand_in": True,
}


def _user(text, image=True):
    return {"role": "user", "content": ([image_part()] if image else []) + [text_part(text)]}


def _assistant(text):
    return {"role": "assistant", "content": [text_part(text)]}


def answer_pair_rows(pairs):
    rows = []
    for pair in pairs:
        for q in range(2):
            question = f"Question {q} about {pair['id']}?"
            rows.append(
                {
                    "id": f"{pair['id']}-ap0-q{q}",
                    "pair_id": pair["id"],
                    "images": [pair["image"]],
                    "prompt": [_user(question)],
                    "answer_a": [_assistant(f"First answer to question {q} about {pair['id']}.")],
                    "answer_b": [_assistant(f"Second answer to question {q} about {pair['id']}.")],
                    "modality": pair["modality"],
                    "question": question,
                    "generation": GENERATION,
                }
            )
    return rows


def candidate_rows(pairs):
    rows = []
    for pair in pairs:
        messages = [
            _user(f"What does the figure of {pair['id']} show?"),
            _assistant(f"It shows the findings of {pair['id']}."),
            _user("Which modality is it?", image=False),
            _assistant(f"It is {pair['modality']}."),
        ]
        rows.append(
            {
                "id": f"{pair['id']}-0",
                "pair_id": pair["id"],
                "images": [pair["image"]],
                "messages": messages,
                "modality": pair["modality"],
                "caption": pair["caption"],
                "mentions": pair["mentions"],
                "generation": GENERATION,
            }
        )
    return rows


def build_hub(root) -> LocalHub:
    """pairs (4 figures with captions), answer pairs (8 questions), candidates (4, two turns each), clusters (default +
    review of 4 pairs)."""
    hub = LocalHub(root)
    pairs = load_sample_pairs().select(range(N_PAIRS)).cast_column("image", Image(decode=False))
    rows = list(pairs)
    hub.push_dataset(pairs.cast_column("image", Image()), "test/pairs")
    hub.push_dataset(Dataset.from_list(answer_pair_rows(rows), features=answer_pair_features()), "test/answer-pairs")
    hub.push_dataset(Dataset.from_list(candidate_rows(rows), features=CANDIDATE_FEATURES), "test/candidates")
    clusters = [i % 2 for i in range(N_PAIRS)]
    assignments = Dataset.from_dict(
        {
            "id": [r["id"] for r in rows],
            "modality": [r["modality"] for r in rows],
            "cluster": clusters,
            "distance": [0.1 * i for i in range(N_PAIRS)],
        },
        features=CLUSTER_FEATURES,
    )
    review_features = Features(
        {**PAIR_FEATURES, "cluster": Value("int32"), "distance": Value("float32"), "rank_in_cluster": Value("int32")}
    )
    review = [
        {**r, "cluster": c, "distance": 0.1 * i, "rank_in_cluster": i // 2}
        for i, (r, c) in enumerate(zip(rows, clusters, strict=True))
    ]
    hub.push_dataset(assignments, "test/clusters", config_name="default")
    hub.push_dataset(Dataset.from_list(review, features=review_features), "test/clusters", config_name="review")
    return hub


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    return build_hub(tmp_path_factory.mktemp("annotate-hub"))


@pytest.fixture
def make_hub():
    """``make_hub(root)``: a fresh hub like ``hub``, for tests that push new commits of its datasets."""
    return build_hub


@pytest.fixture
def store(tmp_path):
    return AnnotationStore(tmp_path / "store")


DATASETS = {
    "preference": ("test/answer-pairs@main", None),
    "rating": ("test/candidates@main", None),
    "demos": ("test/clusters@main", "test/candidates@main"),
}


@pytest.fixture
def make_task(hub, store):
    """``make_task(name)``: the task over the fixture hub's dataset for it, saving into this test's store."""

    def make(name, store=store, **kwargs):
        dataset, candidates = DATASETS[name]
        return AnnotationTask(load_items(hub, name, dataset, candidates=candidates), store, **kwargs)

    return make
