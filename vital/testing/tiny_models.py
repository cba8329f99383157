"""The tiny random models of :mod:`vital.tiny_models`, under the name the tests and docs use.

The builders live in the package proper, since the ``tiny_models`` stage (production code) pushes them as the
quickstart's base models and production code never imports ``vital.testing``.
"""

from vital.tiny_models import (
    BOS_TOKEN,
    EOS_TOKEN,
    IDEFICS3_CHAT_TEMPLATE,
    IDEFICS3_SPECIAL_TOKENS,
    IMAGE_TOKEN,
    LLAVA_CHAT_TEMPLATE,
    PAD_TOKEN,
    TINY_VLM_BUILDERS,
    UNK_TOKEN,
    build_tiny_clip,
    build_tiny_idefics3,
    build_tiny_llava,
    build_tiny_qwen2_vl,
    build_tiny_tokenizer,
    tiny_corpus,
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
