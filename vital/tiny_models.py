"""Tiny, randomly initialised vision-language models built fully offline, for the quickstart, tests and smoke runs.

The ``tiny_models`` stage pushes them as the quickstart's base models; ``vital.testing.tiny_models`` re-exports this
module for the tests.

Nothing here touches the Hugging Face Hub: the tokenizer is a byte-level BPE trained in memory on a small built-in
biomedical/chat corpus, and every model is built from a config with seeded random weights. Each builder runs in a
few seconds on a CPU and can save a folder that ``AutoModelForImageTextToText`` / ``AutoProcessor`` (or
``CLIPModel`` / ``CLIPProcessor``) reload.

Public API:

- :func:`build_tiny_tokenizer`: the shared local tokenizer.
- :data:`LLAVA_CHAT_TEMPLATE`, :data:`IDEFICS3_CHAT_TEMPLATE`: Jinja chat templates with ``{% generation %}`` markers
  around each assistant reply and its end-of-turn token (TRL ``assistant_only_loss=True`` works with them).
- :func:`build_tiny_llava`, :func:`build_tiny_idefics3`: ``(model, processor)`` pairs; :data:`TINY_VLM_BUILDERS`.
- :func:`build_tiny_clip`: a tiny CLIP dual encoder and its processor.
- :func:`build_tiny_qwen2_vl`: a tiny Qwen2-VL (needs torchvision).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPVisionConfig,
    GenerationConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)


__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "IDEFICS3_CHAT_TEMPLATE",
    "IDEFICS3_SPECIAL_TOKENS",
    "IMAGE_TOKEN",
    "LLAVA_CHAT_TEMPLATE",
    "PAD_TOKEN",
    "TINY_VLM_BUILDERS",
    "UNK_TOKEN",
    "build_tiny_clip",
    "build_tiny_idefics3",
    "build_tiny_llava",
    "build_tiny_qwen2_vl",
    "build_tiny_tokenizer",
    "tiny_corpus",
]

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
IMAGE_TOKEN = "<image>"
END_OF_UTTERANCE_TOKEN = "<end_of_utterance>"
# Ids 0..3 in this order. The eos id must not be 2: CLIP's text model treats eos_token_id == 2 as "legacy" and pools at
# the argmax token id instead of the first eos.
_BASE_SPECIAL_TOKENS = [PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN]
# Tokens the Idefics3 processor looks up (it adds the first three itself if missing; adding them all up front keeps the
# vocabulary, hence the embedding matrix, fixed).
IDEFICS3_SPECIAL_TOKENS = [
    "<fake_token_around_image>",
    IMAGE_TOKEN,
    END_OF_UTTERANCE_TOKEN,
    "<global-img>",
    *[f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)],
]

# ---------------------------------------------------------------------------------------------------------------------
# Corpus and tokenizer
# ---------------------------------------------------------------------------------------------------------------------

_MODALITIES = [
    "chest X-ray",
    "CT scan",
    "MRI",
    "ultrasound",
    "histology slide",
    "H&E stained section",
    "fundus photograph",
    "dermoscopy image",
    "PET scan",
    "mammogram",
    "radiograph",
    "micrograph",
]
_FINDINGS = [
    "a small nodule in the right upper lobe",
    "no acute abnormality",
    "a left pleural effusion",
    "cardiomegaly",
    "a mass with irregular margins",
    "a dense lymphocytic infiltrate",
    "frequent mitotic figures",
    "well-formed glandular architecture",
    "an enlarged liver with fatty change",
    "a fracture of the left femur",
    "ground-glass opacities in both lungs",
    "a hypoechoic lesion measuring 12 mm",
    "microaneurysms and hard exudates",
    "nuclear pleomorphism and necrosis",
    "a pigmented lesion with an atypical network",
    "calcifications in the upper outer quadrant",
]
_QUESTIONS = [
    "What does this {m} show?",
    "Describe the {m}.",
    "Which abnormality is visible in the {m}?",
    "Is there any lesion in this {m}?",
    "How many lesions are seen on the {m}?",
    "Where is the main finding in the {m}?",
    "What is the most likely diagnosis based on this {m}?",
    "Describe the findings in detail.",
]
_SENTENCES = [
    "You are a helpful biomedical assistant.",
    "You are an expert radiologist. Answer briefly.",
    "The patient is a 54-year-old man with cough and fever.",
    "The patient is a 31-year-old woman with abdominal pain.",
    "Histology shows epithelial cells, stroma and lymphocytes.",
    "The tumour cells have hyperchromatic nuclei and scant cytoplasm.",
    "Findings: consolidation in the left lower lobe; no pneumothorax.",
    "Impression: findings are consistent with pneumonia.",
    "The lesion measures 3.5 x 2.1 cm (previously 2.8 cm).",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 16 24 32 64 100 128 256 512.",
    "Punctuation: , . ; : ! ? ( ) [ ] { } - / % + = < > ' \" * #",
    "Yes. No. Maybe. Unclear. Normal. Abnormal.",
    "Compared with the prior study, the effusion has decreased.",
    "Staining with H&E reveals glands lined by columnar epithelium.",
    "Immunohistochemistry is positive for CD20 and negative for CD3.",
    "The retina shows a normal optic disc and macula.",
    "There is mild degenerative change of the spine.",
    "No focal liver lesion is identified on ultrasound.",
    "The MRI shows a hyperintense lesion on T2-weighted images.",
    "Recommend follow-up CT in 3 months.",
]


def tiny_corpus() -> list[str]:
    """Return the built-in training corpus of the tiny tokenizer (a few hundred short sentences, deterministic).

    It mixes radiology and histology vocabulary, question openers ("What", "Describe", ...), numbers, punctuation and
    the role prefixes of the chat templates in this module.
    """
    lines: list[str] = list(_SENTENCES)
    for i, (modality, finding) in enumerate(itertools.product(_MODALITIES, _FINDINGS)):
        lines.append(f"The {modality} shows {finding}.")
        if i % 3 == 0:
            lines.append(f"There is {finding} on the {modality}.")
    for modality, question in itertools.product(_MODALITIES, _QUESTIONS):
        lines.append(question.format(m=modality))
    for i, finding in enumerate(_FINDINGS):
        question = _QUESTIONS[i % len(_QUESTIONS)].format(m=_MODALITIES[i % len(_MODALITIES)])
        answer = f"The image shows {finding}."
        lines.append(f"USER: {question}\nASSISTANT: {answer}")
        lines.append(f"User: {question}\nAssistant: {answer}")
        lines.append(f"SYSTEM: You are a helpful assistant.\nUSER: {question}\nASSISTANT: {answer}")
    return lines


def build_tiny_tokenizer(
    extra_special_tokens: list[str] | None = None,
    vocab_size: int = 512,
    *,
    add_bos_token: bool = True,
    add_eos_token: bool = False,
    model_max_length: int = 1024,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on :func:`tiny_corpus` and wrap it as a ``PreTrainedTokenizerFast``.

    Special tokens get the first ids: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2 (bos), ``</s>`` 3 (eos), then
    ``extra_special_tokens`` in order. The result is deterministic for the same arguments.

    Args:
        extra_special_tokens: further special tokens (e.g. ``["<image>"]``), never split and never merged.
        vocab_size: target vocabulary size, special tokens and the 256 byte symbols included.
        add_bos_token: prepend ``<s>`` when encoding with ``add_special_tokens=True`` (as Llama tokenizers do).
        add_eos_token: append ``</s>`` when encoding with ``add_special_tokens=True`` (CLIP's text model pools there).
        model_max_length: the tokenizer's ``model_max_length``.

    Returns:
        The tokenizer; ``len(tokenizer)`` is the embedding size a model needs.
    """
    extra = [tok for tok in (extra_special_tokens or []) if tok not in _BASE_SPECIAL_TOKENS]
    extra = list(dict.fromkeys(extra))
    specials = _BASE_SPECIAL_TOKENS + extra
    if vocab_size < len(specials) + 256:
        raise ValueError(f"vocab_size={vocab_size} is too small: need at least {len(specials) + 256}")

    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tiny_corpus(), trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=extra,
        add_bos_token=add_bos_token,
        add_eos_token=add_eos_token,
        model_max_length=model_max_length,
        padding_side="right",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------------------------------

# Renders a message content that is either a string or a list of TRL / transformers typed parts.
_RENDER_CONTENT_MACRO = (
    "{%- macro render_content(content, image_text) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' -%}{{ image_text }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)

LLAVA_CHAT_TEMPLATE = (
    _RENDER_CONTENT_MACRO + "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ 'SYSTEM: ' + render_content(message['content'], '<image>\n') + '\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ 'USER: ' + render_content(message['content'], '<image>\n') + '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'ASSISTANT:' }}"
    "{%- generation -%}{{ ' ' + render_content(message['content'], '<image>\n') + eos_token }}{%- endgeneration -%}"
    "{{ '\n' }}"
    "{%- else -%}{{ raise_exception('Unsupported role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)
"""LLaVA-1.5-like template: ``<s>SYSTEM: ...\\nUSER: <image>\\nquestion\\nASSISTANT: answer</s>\\n``.

The assistant text after ``ASSISTANT:`` (leading space included) and its ``</s>`` lie inside ``{% generation %}``; the
newline that follows is outside, so the next turn's first token is never masked in.
"""

IDEFICS3_CHAT_TEMPLATE = (
    _RENDER_CONTENT_MACRO + "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ 'Assistant:' }}"
    "{%- generation -%}"
    "{{ ' ' + render_content(message['content'], '<image>') + '<end_of_utterance>' }}"
    "{%- endgeneration -%}"
    "{{ '\n' }}"
    "{%- elif message['role'] in ['system', 'user'] -%}"
    "{{ message['role'].capitalize() + ': ' + render_content(message['content'], '<image>') + '<end_of_utterance>\n' }}"
    "{%- else -%}{{ raise_exception('Unsupported role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)
"""Idefics3-like template: ``<s>User: <image>question<end_of_utterance>\\nAssistant: answer<end_of_utterance>\\n``.

The processor expands each ``<image>`` into ``<fake_token_around_image><global-img><image>*N<fake_token_around_image>``.
The assistant text and its ``<end_of_utterance>`` lie inside ``{% generation %}``.
"""

# ---------------------------------------------------------------------------------------------------------------------
# Model builders
# ---------------------------------------------------------------------------------------------------------------------

_TEXT_HIDDEN = 64
_VISION_HIDDEN = 32
_IMAGE_SIZE = 32


def _tiny_llama_config(
    tokenizer: PreTrainedTokenizerFast, eos_token_id: int | list[int], context_length: int = 512
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=2 * _TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context_length,  # rotary positions: no weight depends on it
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=False,
    )


def _generation_config(tokenizer: PreTrainedTokenizerFast, eos_token_id: int | list[int]) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=16,
    )


def _seeded_init(model_cls: type, config: Any, seed: int) -> Any:
    # fork_rng: seed the weights without disturbing the caller's global torch RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.eval()
    return model


def _maybe_save(model: Any, processor: Any, save_dir: str | Path | None) -> None:
    if save_dir is None:
        return
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(save_dir)
    processor.save_pretrained(save_dir)


def build_tiny_llava(
    save_dir: str | Path | None = None, seed: int = 0, context_length: int = 2048
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Build a random tiny LLaVA (CLIP vision tower + Llama text model) and its real ``LlavaProcessor``.

    Vision: 32x32 images, 8x8 patches (16 patches + CLS), hidden 32, 2 layers; the ``default`` feature select strategy
    drops CLS, so each ``<image>`` placeholder expands to 16 image tokens. Text: Llama with hidden 64, 2 layers,
    4 heads. The processor carries :data:`LLAVA_CHAT_TEMPLATE`. About 1 MB on disk (float32).

    Args:
        save_dir: if given, ``save_pretrained`` model and processor there, so that
            ``AutoModelForImageTextToText.from_pretrained(save_dir)`` and ``AutoProcessor.from_pretrained(save_dir)``
            reload them.
        seed: torch seed for the random weights; the same seed gives identical weights.
        context_length: the text model's context (``max_position_embeddings``, and the tokenizer's
            ``model_max_length``), which a server such as ``transformers serve`` holds requests to; the weights are
            the same for any value. The default holds the quickstart's longest training conversation (about 1,100
            tokens with its image).

    Returns:
        ``(model, processor)``, the model in eval mode.
    """
    # The chat template writes <s> itself; a tokenizer that added one too would double it when a rendered prompt is
    # passed to processor(text=...).
    tokenizer = build_tiny_tokenizer(
        extra_special_tokens=[IMAGE_TOKEN], add_bos_token=False, model_max_length=context_length
    )
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    patch_size = 8
    num_image_tokens = (_IMAGE_SIZE // patch_size) ** 2

    vision_config = CLIPVisionConfig(
        image_size=_IMAGE_SIZE,
        patch_size=patch_size,
        hidden_size=_VISION_HIDDEN,
        intermediate_size=2 * _VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=_VISION_HIDDEN,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=_tiny_llama_config(tokenizer, tokenizer.eos_token_id, context_length),
        image_token_index=image_token_id,
        image_seq_length=num_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    model = _seeded_init(LlavaForConditionalGeneration, config, seed)
    model.generation_config = _generation_config(tokenizer, tokenizer.eos_token_id)

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": _IMAGE_SIZE},
        crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        do_center_crop=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
    )
    _maybe_save(model, processor, save_dir)
    return model, processor


def build_tiny_idefics3(
    save_dir: str | Path | None = None, seed: int = 0
) -> tuple[Idefics3ForConditionalGeneration, Idefics3Processor]:
    """Build a random tiny Idefics3 (SigLIP-style vision tower + pixel-shuffle connector + Llama) and its processor.

    Vision: 32x32 images, 4x4 patches (64 patches), hidden 32, 2 layers; the connector's ``scale_factor`` 2 folds them
    into 16 image tokens per image (``image_seq_len``). Image splitting is off, so each ``<image>`` expands to
    ``<fake_token_around_image><global-img>`` + 16 ``<image>`` + ``<fake_token_around_image>``. Text: Llama with hidden
    64, 2 layers, 4 heads. Generation stops at ``</s>`` or ``<end_of_utterance>``. Works without torchvision (PIL
    image processor).

    Args:
        save_dir: if given, ``save_pretrained`` model and processor there (reloadable with the Auto classes).
        seed: torch seed for the random weights; the same seed gives identical weights.

    Returns:
        ``(model, processor)``, the model in eval mode.
    """
    # The chat template writes <s> itself; a tokenizer that added one too would double it when a rendered prompt is
    # passed to processor(text=...).
    tokenizer = build_tiny_tokenizer(extra_special_tokens=IDEFICS3_SPECIAL_TOKENS, add_bos_token=False)
    tokenizer.chat_template = IDEFICS3_CHAT_TEMPLATE
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    eos_ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN)]
    patch_size = 4
    scale_factor = 2
    image_seq_len = (_IMAGE_SIZE // patch_size) ** 2 // scale_factor**2

    vision_config = Idefics3VisionConfig(
        hidden_size=_VISION_HIDDEN,
        intermediate_size=2 * _VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=_IMAGE_SIZE,
        patch_size=patch_size,
    )
    config = Idefics3Config(
        vision_config=vision_config,
        text_config=_tiny_llama_config(tokenizer, eos_ids),
        image_token_id=image_token_id,
        scale_factor=scale_factor,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = _seeded_init(Idefics3ForConditionalGeneration, config, seed)
    model.generation_config = _generation_config(tokenizer, eos_ids)

    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": _IMAGE_SIZE},
        max_image_size={"longest_edge": _IMAGE_SIZE},
        do_image_splitting=False,
        do_pad=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    _maybe_save(model, processor, save_dir)
    return model, processor


def build_tiny_clip(save_dir: str | Path | None = None, seed: int = 0) -> tuple[CLIPModel, CLIPProcessor]:
    """Build a random tiny CLIP dual encoder (text + vision, ``projection_dim`` 16) and a real ``CLIPProcessor``.

    The tokenizer appends ``</s>`` (CLIP pools the text at the first eos token) and truncates at 64 tokens, the text
    model's ``max_position_embeddings``. Images are resized and center-cropped to 32x32.

    Args:
        save_dir: if given, ``save_pretrained`` model and processor there (``CLIPModel.from_pretrained`` /
            ``AutoProcessor.from_pretrained`` reload them).
        seed: torch seed for the random weights; the same seed gives identical weights.

    Returns:
        ``(model, processor)``, the model in eval mode.
    """
    max_positions = 64
    tokenizer = build_tiny_tokenizer(add_bos_token=True, add_eos_token=True, model_max_length=max_positions)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        projection_dim=16,
    )
    vision_config = CLIPVisionConfig(
        image_size=_IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=16,
    )
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16)
    model = _seeded_init(CLIPModel, config, seed)

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": _IMAGE_SIZE},
        crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        do_center_crop=True,
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    _maybe_save(model, processor, save_dir)
    return model, processor


TINY_VLM_BUILDERS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "llava": build_tiny_llava,
    "idefics3": build_tiny_idefics3,
}
"""Vision-language builders by name; each is called as ``builder(save_dir=None, seed=0)``."""


# Qwen2-VL-like ChatML template: images and videos become <|vision_start|><|image_pad|><|vision_end|> (the processor
# expands <|image_pad|> to one token per merged patch group). Each assistant reply and its <|im_end|> lie inside
# {% generation %}; the newline after it is outside.
_QWEN2_VL_CHAT_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}"
    "{%- generation -%}{{ render_content(message['content']) + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\n' }}"
    "{%- elif message['role'] in ['system', 'user'] -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + render_content(message['content']) + '<|im_end|>\n' }}"
    "{%- else -%}{{ raise_exception('Unsupported role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def build_tiny_qwen2_vl(save_dir: str | Path | None = None, seed: int = 0) -> tuple[Any, Any]:
    """Build a random tiny Qwen2-VL (ViT with 2D rotary + patch merger, Qwen2 text model with M-RoPE) and its real
    ``Qwen2VLProcessor`` (image and video processors).

    Needs torchvision: Qwen2-VL's image and video processors are torchvision-backed, so the Qwen2-VL classes are
    imported here, not at module level, and this builder is not in :data:`TINY_VLM_BUILDERS` (whose users must work
    without torchvision).

    Vision: 14x14 patches, ``temporal_patch_size`` 2, ``spatial_merge_size`` 2, embed 32, 2 layers, 4 heads; the image
    and video processors resize every input to about 56x56 pixels (``min_pixels`` = ``max_pixels`` = 56*56; the aspect
    ratio is roughly kept, sides rounded up to multiples of 28), so an image is a grid of 4x4 to about 4x6 patches
    and its ``<|image_pad|>`` placeholder expands to a handful of tokens (4 for a square image; exactly
    ``image_grid_thw.prod() // 4``). Text: hidden 64, 2 layers, 4 heads (head dim
    16, ``mrope_section`` [2, 3, 3] summing to 8). The tokenizer carries Qwen's special tokens (``<|im_start|>``,
    ``<|im_end|>``, ``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``, ``<|video_pad|>``, ...); its eos is
    ``<|im_end|>`` and generation also stops at ``</s>``. The ChatML-like chat template has ``{% generation %}``
    markers, so TRL's ``assistant_only_loss=True`` works.

    Args:
        save_dir: if given, ``save_pretrained`` model and processor there (reloadable with
            ``AutoModelForImageTextToText`` / ``AutoProcessor``).
        seed: torch seed for the random weights; the same seed gives identical weights.

    Returns:
        ``(model, processor)``: a ``Qwen2VLForConditionalGeneration`` in eval mode and a ``Qwen2VLProcessor``.
    """
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLTextConfig,
        Qwen2VLVideoProcessor,
        Qwen2VLVisionConfig,
    )

    qwen_specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|quad_start|>",
        "<|quad_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    # Qwen tokenizers add no bos; the chat template writes every special token itself.
    tokenizer = build_tiny_tokenizer(extra_special_tokens=qwen_specials, add_bos_token=False)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = _QWEN2_VL_CHAT_TEMPLATE
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in qwen_specials}
    eos_ids = [ids["<|im_end|>"], tokenizer.convert_tokens_to_ids(EOS_TOKEN)]

    patch_size, merge_size, temporal_patch_size = 14, 2, 2
    pixels = (2 * patch_size * merge_size) ** 2  # 56*56: about 4x4 patches, 4 image tokens
    vision_config = Qwen2VLVisionConfig(
        depth=2,
        embed_dim=_VISION_HIDDEN,
        hidden_size=_TEXT_HIDDEN,  # the merger projects into the text model's hidden size
        mlp_ratio=2,
        num_heads=4,
        patch_size=patch_size,
        spatial_merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
    )
    head_dim = _TEXT_HIDDEN // 4
    text_config = Qwen2VLTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=2 * _TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        max_window_layers=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=None,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    assert sum(text_config.rope_parameters["mrope_section"]) == head_dim // 2
    config = Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = _seeded_init(Qwen2VLForConditionalGeneration, config, seed)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=16
    )

    common = {
        "min_pixels": pixels,
        "max_pixels": pixels,
        "patch_size": patch_size,
        "temporal_patch_size": temporal_patch_size,
        "merge_size": merge_size,
    }
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**common),
        chat_template=_QWEN2_VL_CHAT_TEMPLATE,
    )
    _maybe_save(model, processor, save_dir)
    return model, processor
