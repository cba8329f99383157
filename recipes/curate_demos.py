"""Stage 1 — curate demos: embed and cluster the pairs, and put a few pairs of each cluster before the clinicians.

Usage:

    python recipes/curate_demos.py --config recipes/quickstart/curate_demos.yaml
    vital curate_demos --config recipes/biomed_vital/curate_demos.yaml --hub hf

The stage itself is `vital.stages.curate_demos` (arguments, `main()`); this script only runs it.
"""

from vital.stages.curate_demos import cli


if __name__ == "__main__":
    cli()
