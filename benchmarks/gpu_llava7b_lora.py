"""LoRA fine-tuning speed of a LLaVA-1.5-7B-shaped model on one GPU: step time, tokens/s, MFU. No download.

    python benchmarks/gpu_llava7b_lora.py                                  # batches 4, 8, 16; 512 text tokens
    python benchmarks/gpu_llava7b_lora.py --batch-sizes 8 --text-tokens 1024 --steps 20
    python benchmarks/gpu_llava7b_lora.py --size tiny --device cpu         # smoke test of this script, any machine

The model is built from configs with random weights, in the shape of llava-hf/llava-1.5-7b-hf: a CLIP ViT-L/14 at
336 px (24 layers, hidden 1024, 576 patches + CLS; features from the second-to-last layer, CLS dropped), the
two-layer GELU projector, and a Llama text model (32 layers, hidden 4096, 32 heads, MLP 11008, vocab 32064).
Training setup as recipes/biomed_vital/sft with LoRA: bf16 weights, SDPA attention, activation (gradient)
checkpointing without reentrancy, LoRA r=16, alpha 32 on the language model's q/k/v/o and gate/up/down projections
(the vision tower and projector frozen), AdamW on the adapter. Each sample is one 336x336 image (576 image tokens in
the sequence) followed by ``--text-tokens`` text tokens, the first half prompt (label -100) and the second half
answer. Steps are timed with CUDA synchronisation after ``--warmup`` untimed steps; the table gives medians.

FLOPs and MFU (attention-score FLOPs, 12 * layers * hidden * seq per token, are left out of both):

* model FLOPs per step = 6 * (N_text + N_projector) * B * S + 6 * N_vision * B * P, the standard "6 N D"
  forward + backward approximation over ALL parameters (each part with the tokens it sees: S sequence tokens for the
  language model and projector, P = 577 patches per image for the vision tower), as if every weight were trained;
  MFU = model FLOPs per step / step time / peak bf16 FLOP/s. This is the number to compare across setups.
* executed FLOPs per step (LoRA-adjusted; HFU = executed / time / peak): the text model runs forward (2N), the
  checkpointed forward again in the backward pass (2N) and the input-gradient half of the backward (2N), but no
  weight gradients for frozen weights: 6 * N_text * B * S. The vision tower and projector run forward only, with no
  gradient (nothing before the first LoRA layer needs one): 2 * (N_vision * P + N_projector * S) * B. LoRA's own
  matmuls (r / hidden of the base ones) are ignored. For this setup the text model's two counts coincide (the 2N
  that LoRA saves, checkpointing spends); they differ on the vision tower.

Peak bf16 dense FLOP/s is read from the device name (H100 SXM / H200: 989 TFLOP/s, H100 PCIe: 756, A100: 312) or
given with ``--peak-tflops``. Without CUDA (and without ``--device cpu``) the script prints why and exits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass


LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("A100", 312.0))


@dataclass
class Shape:
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch_size: int
    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    vocab_size: int
    projection_dim: int


SHAPES = {
    # llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 + Vicuna-7B (Llama), vocab 32064 (32000 + <image> + padding)
    "7b": Shape(1024, 4096, 24, 16, 336, 14, 4096, 11008, 32, 32, 32064, 768),
    # the same structure, small enough to check this script on a CPU
    "tiny": Shape(32, 64, 2, 4, 28, 14, 64, 128, 2, 4, 512, 32),
}


def build_model(shape: Shape, device: str, dtype):
    """A LLaVA-1.5 with random weights in ``shape``, built directly on ``device`` in ``dtype``."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.projection_dim,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.text_hidden,
        intermediate_size=shape.text_intermediate,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    patches = (shape.image_size // shape.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=shape.vocab_size - 64,  # any id inside the vocabulary that text never uses
        image_seq_length=patches,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model


def parameter_counts(model) -> dict[str, int]:
    counts = {"vision": 0, "projector": 0, "text": 0}
    for name, param in model.named_parameters():
        part = "vision" if "vision_tower" in name else "projector" if "multi_modal_projector" in name else "text"
        counts[part] += param.numel()
    return counts


def add_lora(model, rank: int):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.config.use_cache = False
    return model


def synthetic_batch(model, batch_size: int, text_tokens: int, device: str, dtype):
    """``batch_size`` samples: <bos>, the image's placeholder tokens, then random text; loss on the second half."""
    import torch

    config = model.config
    patches = config.image_seq_length
    size = config.vision_config.image_size
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, config.image_token_index, (batch_size, text_tokens), generator=generator)
    bos = torch.ones(batch_size, 1, dtype=torch.long)
    image = torch.full((batch_size, patches), config.image_token_index, dtype=torch.long)
    input_ids = torch.cat([bos, image, text], dim=1)
    labels = input_ids.clone()
    labels[:, : 1 + patches + text_tokens // 2] = -100
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
        "pixel_values": torch.randn(batch_size, 3, size, size, generator=generator).to(device, dtype),
        "use_cache": False,
    }


def peak_tflops(device: str, given: float | None) -> float | None:
    if given:
        return given
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def measure(model, optimizer, batch, steps: int, warmup: int, device: str) -> tuple[list[float], float]:
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        sync()
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss.item()}")
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return times, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SHAPES), default="7b", help="model shape")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke test with --size tiny)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16], help="samples per step")
    parser.add_argument("--text-tokens", type=int, default=512, help="text tokens per sample, after the image")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2 r)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 dense TFLOP/s of the device")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_llava7b_lora.py needs a CUDA GPU and none is visible: nothing was run.")
        print("(`--size tiny --device cpu` runs the same code on a CPU as a smoke test.)")
        return 0
    dtype = torch.bfloat16

    started = time.perf_counter()
    model = build_model(SHAPES[args.size], args.device, dtype)
    counts = parameter_counts(model)
    model = add_lora(model, args.lora_r)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    fused = {"fused": True} if args.device == "cuda" else {}
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0, **fused)
    built = time.perf_counter() - started

    peak = peak_tflops(args.device, args.peak_tflops)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    config = model.config
    patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1  # + CLS
    total = sum(counts.values())
    print(f"device: {device_name}; peak bf16: {f'{peak:.0f} TFLOP/s' if peak else 'unknown (MFU not computed)'}")
    print(
        f"model ({args.size}, built in {built:.1f} s): {total / 1e9:.3f} B parameters = text {counts['text'] / 1e9:.3f} B"
        f" + vision {counts['vision'] / 1e6:.1f} M + projector {counts['projector'] / 1e6:.1f} M;"
        f" LoRA r={args.lora_r} trains {n_trainable / 1e6:.2f} M ({100 * n_trainable / total:.2f} %)"
    )
    print(f"torch {torch.__version__}; bf16, sdpa, activation checkpointing (non-reentrant), AdamW on the adapter\n")

    header = (
        "batch",
        "seq",
        "tokens/step",
        "step s",
        "tokens/s",
        "samples/s",
        "model TFLOP/s",
        "MFU %",
        "HFU %",
        "peak GiB",
    )
    rows = []
    for batch_size in args.batch_sizes:
        seq = 1 + config.image_seq_length + args.text_tokens
        tokens = batch_size * seq
        try:
            batch = synthetic_batch(model, batch_size, args.text_tokens, args.device, dtype)
            times, memory = measure(model, optimizer, batch, args.steps, args.warmup, args.device)
        except torch.cuda.OutOfMemoryError:
            rows.append((batch_size, seq, tokens, "OOM", "", "", "", "", "", ""))
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            continue
        step = statistics.median(times)
        model_flops = 6 * (counts["text"] + counts["projector"]) * tokens + 6 * counts["vision"] * batch_size * patches
        executed = (
            6 * counts["text"] * tokens + 2 * (counts["vision"] * patches + counts["projector"] * seq) * batch_size
        )
        tflops = model_flops / step / 1e12
        mfu = f"{100 * tflops / peak:.1f}" if peak else "n/a"
        hfu = f"{100 * executed / step / 1e12 / peak:.1f}" if peak else "n/a"
        rows.append(
            (
                batch_size,
                seq,
                tokens,
                f"{step:.3f}",
                f"{tokens / step:,.0f}",
                f"{batch_size / step:.2f}",
                f"{tflops:.1f}",
                mfu,
                hfu,
                f"{memory:.1f}",
            )
        )
        del batch

    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"\nmedian of {args.steps} steps after {args.warmup} warm-up steps; FLOP formulas in this file's docstring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
