"""Import the official clinician demonstrations from a Python file, without running it, as a ``demos`` dataset.

Usage:

    vital import-demos generate/doctor_few_shot_examples.py --image_dir data/demo_images \\
        --repo your-org/biomed-vital-demos --hub hf

The stage itself is `vital.stages.import_demos` (arguments, `main()`); this script only runs it.
"""

from vital.stages.import_demos import cli


if __name__ == "__main__":
    cli()
