"""Stage 3b — select (`vital select`): score every candidate with the trained selector and keep the best at each ratio.

Usage:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/select_data.py --config recipes/quickstart/select.yaml
    python recipes/select_data.py --config recipes/quickstart/select.yaml
    vital select --config recipes/quickstart/select.yaml --hub local:outputs/hub

    # paper settings (top 10 / 40 / 80 / 90 %, the 150K and 210K mixtures with LLaVA-Med's data), GPUs:
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/select_data.py \\
        --config recipes/biomed_vital/select.yaml

The stage itself is `vital.stages.select` (arguments, `main()`); this script only runs it.
"""

from vital.stages.select import cli


if __name__ == "__main__":
    cli()
