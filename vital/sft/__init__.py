"""The tuning stage's library: data for TRL's `SFTTrainer`, the model's provenance, freezing, run branches, the card.

`vital.stages.sft` reads top to bottom (parse, load, build, train, push) and calls these; each concern has its module:

- `vital.sft.data`: the formats an SFT input may come in, their normalisation to `SFT_FEATURES`, the row checks.
- `vital.sft.mixture`: one dataset or a weighted mixture in TRL's shape (`SFTDatasetMixtureConfig`), each read at a
  pinned commit (`load_sft_data`).
- `vital.sft.model`: where the base model comes from and what the card records about it, loading, freezing.
- `vital.sft.runs`: the run's place on the hub (`RunTarget`: ``hub_model_id``, ``hub_revision``,
  ``hub_private_repo``, ``push_to_hub``), its identity (fingerprint, finished runs, branch refusal), the trainer and
  callbacks.
- `vital.sft.card`: the model card, the skipped rows and the files pushed.

Example::

    hub = get_hub("local:outputs/hub")
    mixture = SFTDatasetMixtureConfig(datasets=[{"path": "quickstart/selected", "name": "top40"}])
    data = load_sft_data(hub, mixture.datasets, seed=0)
"""

from vital.sft.card import (
    NOT_PUSHED,
    SKIPPED_ROWS_FILE,
    describe_run,
    push_run,
    sft_card,
    skipped_rows_note,
    stage_output,
    write_skipped_rows,
)
from vital.sft.data import (
    CAPTION_PROMPTS,
    SFT_FEATURES,
    check_sft_rows,
    detect_format,
    pairs_to_caption_conversations,
    source_name,
    to_sft_rows,
)
from vital.sft.mixture import (
    SFTData,
    SFTDatasetConfig,
    SFTDatasetMixtureConfig,
    load_sft_data,
    load_sft_dataset,
    load_sft_mixture,
    mix_datasets,
    mixture_record,
    training_datasets,
)
from vital.sft.model import (
    FREEZE_CHOICES,
    ModelSource,
    base_model_folder,
    base_reference,
    chat_template_input,
    count_parameters,
    display_name,
    folder_fingerprint,
    freeze_modules,
    load_model,
    model_lineage,
    record_adapter_base,
    resolve_model,
)
from vital.sft.runs import (
    RunBranchError,
    RunTarget,
    SFTRunTrainer,
    ThroughputCallback,
    check_cpu_launch,
    check_run_branch,
    claim_branch,
    default_run_branch,
    finished_run,
    plan_run,
    run_metrics,
    run_target,
    same_finished_run,
)


__all__ = [
    "CAPTION_PROMPTS",
    "FREEZE_CHOICES",
    "NOT_PUSHED",
    "SFT_FEATURES",
    "SKIPPED_ROWS_FILE",
    "ModelSource",
    "RunBranchError",
    "RunTarget",
    "SFTData",
    "SFTDatasetConfig",
    "SFTDatasetMixtureConfig",
    "SFTRunTrainer",
    "ThroughputCallback",
    "base_model_folder",
    "base_reference",
    "chat_template_input",
    "check_cpu_launch",
    "check_run_branch",
    "check_sft_rows",
    "claim_branch",
    "count_parameters",
    "default_run_branch",
    "describe_run",
    "detect_format",
    "display_name",
    "finished_run",
    "folder_fingerprint",
    "freeze_modules",
    "load_model",
    "load_sft_data",
    "load_sft_dataset",
    "load_sft_mixture",
    "mix_datasets",
    "mixture_record",
    "model_lineage",
    "pairs_to_caption_conversations",
    "plan_run",
    "push_run",
    "record_adapter_base",
    "resolve_model",
    "run_metrics",
    "run_target",
    "same_finished_run",
    "sft_card",
    "skipped_rows_note",
    "source_name",
    "stage_output",
    "to_sft_rows",
    "training_datasets",
    "write_skipped_rows",
]
