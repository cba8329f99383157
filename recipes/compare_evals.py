"""Compare evaluated models: the headline numbers of several eval datasets (the `evaluate` stage's output) side by
side, as a markdown table and a bar chart, pushed as a small dataset with its card.

Usage:

    vital compare_evals --hub local:outputs/hub --eval_repos quickstart/eval@main quickstart/eval-base@main \\
        --output_repo quickstart/eval-comparison
    python recipes/compare_evals.py --hub hf --eval_repos your-org/eval-sft@<commit> your-org/eval-base@<commit> \\
        --output_repo your-org/eval-comparison

The stage itself is `vital.stages.compare_evals` (arguments, `main()`); this script only runs it.
"""

from vital.stages.compare_evals import cli


if __name__ == "__main__":
    cli()
