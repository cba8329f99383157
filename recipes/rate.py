"""Stage 2a — rate: a model judge scores every question–answer turn of the candidates from 0 to 10 with the paper's
rubric (model preference).

Usage:

    vital stand-in &                                                        # the offline stand-in endpoint, then
    vital rate --config recipes/quickstart/rate.yaml                        # offline, against it
    python recipes/rate.py --config recipes/biomed_vital/rate.yaml           # GPT-4V class judge (OPENAI_API_KEY)
    accelerate launch --num_processes 4 recipes/rate.py --config ...        # 4 shards, merged by process 0

The stage itself is `vital.stages.rate` (arguments, `main()`); this script only runs it.
"""

from vital.stages.rate import cli


if __name__ == "__main__":
    cli()
