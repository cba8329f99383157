"""Stage 3a — train the selector: distil the judge's and the clinicians' preferences into one image+text scorer.

Usage:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/train_selector.py \\
        --config recipes/quickstart/train_selector.yaml
    python recipes/train_selector.py --config recipes/quickstart/train_selector.yaml
    vital train_selector --config recipes/quickstart/train_selector.yaml --hub local:outputs/hub

    # the official settings (30,000 judge pairs, clinician weight 400, hinge loss, Adam 1e-5, 6 epochs), GPUs:
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/train_selector.py \\
        --config recipes/biomed_vital/train_selector.yaml
    # ours (every difference explained in the README's "Paper vs ours"):
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/train_selector.py \\
        --config recipes/biomed_vital_plus/train_selector.yaml

The stage itself is `vital.stages.train_selector` (arguments, `main()`); this script only runs it.
"""

from vital.stages.train_selector import cli


if __name__ == "__main__":
    cli()
