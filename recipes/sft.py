"""Stage 4 — tune: supervised fine-tuning of a vision-language model on the selected instructions, with TRL.

Usage:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py --config recipes/quickstart/sft.yaml
    python recipes/sft.py --config recipes/quickstart/sft.yaml
    python recipes/sft.py --config recipes/quickstart/sft_lora.yaml --max_steps 10
    vital sft --config recipes/quickstart/sft.yaml --hub local:outputs/hub

    # paper settings, 8 GPUs:
    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/sft.py \\
        --config recipes/biomed_vital/sft/config_llava15_7b.yaml

The stage itself is `vital.stages.sft` (arguments, `main()`); this script only runs it.
"""

from vital.stages.sft import cli


if __name__ == "__main__":
    cli()
