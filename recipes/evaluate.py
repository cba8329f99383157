"""Stage 5 — evaluate: a model answers VQA-RAD, SLAKE and PathVQA (scored with LLaVA-Med's metric and the strict one)
and, optionally, LLaVA-Med's open-chat questions (scored by a judge against the reference answers) and a pairwise
judge compares its answers with another model's (win rate). Results go to an eval dataset and the model's card.

Usage:

    python -c "from vital.testing.tiny_models import build_tiny_llava as b; b('outputs/models/tiny-llava')"
    vital stand-in &                                                        # the offline stand-in endpoint, then
    vital evaluate --config recipes/quickstart/evaluate.yaml                # offline, against it
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/evaluate.py \\
        --config recipes/biomed_vital/evaluate.yaml                           # the paper's benchmarks, GPT-4 judge
    python recipes/evaluate.py --config ... --model_name_or_path hub:org/sft@main --compare_with org/eval-base@<sha>

The stage itself is `vital.stages.evaluate` (arguments, `main()`); this script only runs it.
"""

from vital.stages.evaluate import cli


if __name__ == "__main__":
    cli()
