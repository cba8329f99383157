"""The whole BioMed-VITAL pipeline: run each stage's recipe in order, through one hub, and print every artifact.

Usage:

    vital pipeline --config recipes/quickstart/pipeline.yaml            # offline, tiny, embedded defaults
    python recipes/pipeline.py --config recipes/quickstart/pipeline.yaml --stages ingest

The stage itself is `vital.stages.pipeline` (arguments, `main()`); this script only runs it.
"""

from vital.stages.pipeline import cli


if __name__ == "__main__":
    cli()
