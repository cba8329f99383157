"""Offline base models: push a tiny random vision-language model and a tiny CLIP dual encoder to the hub, so the
quickstart's tuning and selection stages start from hub repos like real runs do (`hub:quickstart/tiny-llava`).

Usage:

    vital tiny_models --config recipes/quickstart/tiny_models.yaml

The stage itself is `vital.stages.tiny_models` (arguments, `main()`); this script only runs it.
"""

from vital.stages.tiny_models import cli


if __name__ == "__main__":
    cli()
