"""Stage 0 — ingest: push image–caption pairs, and the clinician demonstrations written on them, to the hub.

Usage:

    python recipes/ingest.py --config recipes/quickstart/ingest.yaml
    vital ingest --config recipes/quickstart/ingest.yaml --hub local:outputs/hub

The stage itself is `vital.stages.ingest` (arguments, `main()`); this script only runs it.
"""

from vital.stages.ingest import cli


if __name__ == "__main__":
    cli()
