"""Stage 1 — generate: a vision model writes multi-turn conversations about each figure, prompted with one
clinician-selected demonstration per modality; a sample of figures also gets questions with two answers each, for
the clinicians' preference task.

Usage:

    vital stand-in &                                                        # the offline stand-in endpoint, then
    vital generate --config recipes/quickstart/generate.yaml                # offline, against it
    python recipes/generate.py --config recipes/biomed_vital/generate.yaml      # GPT-4V class model (OPENAI_API_KEY)
    accelerate launch --num_processes 4 recipes/generate.py --config ...       # 4 shards, merged by process 0
    python recipes/generate.py --config ... --shard 2/8                         # one shard on one machine
    python recipes/generate.py --config ... --mode batch                        # the Batch API: half price, <= 24 h

The stage itself is `vital.stages.generate` (arguments, `main()`); this script only runs it.
"""

from vital.stages.generate import cli


if __name__ == "__main__":
    cli()
