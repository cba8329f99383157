"""Stage 3a, sweep — train the selector once per clinician weight and chart alignment against judge accuracy.

Usage:

    python recipes/sweep_clinician_weight.py --config recipes/quickstart/sweep_clinician_weight.yaml
    vital sweep_clinician_weight --config recipes/quickstart/sweep_clinician_weight.yaml --hub local:outputs/hub

    # paper settings (weights 1, 10, 100, 200, 300, 400):
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/sweep_clinician_weight.py \\
        --config recipes/biomed_vital/sweep_clinician_weight.yaml

The stage itself is `vital.stages.sweep_clinician_weight` (arguments, `main()`); this script only runs it.
"""

from vital.stages.sweep_clinician_weight import cli


if __name__ == "__main__":
    cli()
