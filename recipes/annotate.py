"""Clinician annotation — serve the annotation app for one task, or export what the clinicians saved.

Usage:

    # serve (http://127.0.0.1:7860, behind a login form). The first run without users creates the campaign lead
    # `lead` in <store>/users.json and prints its password once.
    vital annotate --task preference --dataset quickstart/answer-pairs@main --pairs quickstart/pairs@main \\
        --hub local:outputs/hub --store outputs/annotations
    vital annotate --task demos --dataset quickstart/clusters@main --candidates quickstart/candidates@main ...
    vital annotate --task rating --dataset quickstart/candidates@main ...

    # annotators (asks for the password; or set VITAL_ANNOTATE_PASSWORD); --roles annotator,campaign for a lead
    vital annotate --add_user alice --users outputs/annotations/users.json

    # export: preferences (clinician pairs for the selector), demos (for the generator), clinician ratings
    vital annotate --export --task preference --dataset quickstart/answer-pairs --hub local:outputs/hub \\
        --store outputs/annotations --output_repo quickstart/preferences --weight 1.0

The stage itself is `vital.stages.annotate` (arguments, `main()`); this script only runs it.
"""

from vital.stages.annotate import cli


if __name__ == "__main__":
    cli()
