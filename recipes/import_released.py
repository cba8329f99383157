"""Import the released BioMed-VITAL / LLaVA-Med instruction data: JSON files + images -> one dataset repo, one config
per file, images embedded, so that a user writes `load_dataset(repo, "80k")`.

Usage:

    vital import --files 80k=BioMed-VITAL-80K.json 150k=BioMed-VITAL-150K.json --image_dir data/images \\
        --repo your-org/biomed-vital-released --hub hf
    vital import --files 60k=llava_med_instruct_60k.json --url_list llava_med_image_urls.jsonl \\
        --image_dir data/images --repo your-org/llava-med-60k

The stage itself is `vital.stages.import_released` (arguments, `main()`); this script only runs it.
"""

from vital.stages.import_released import cli


if __name__ == "__main__":
    cli()
