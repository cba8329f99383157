"""Stage 4 — tune: supervised fine-tuning of a vision-language model on the selected instructions, with TRL.

Usage:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py --config recipes/quickstart/sft.yaml
    python recipes/sft.py --config recipes/quickstart/sft.yaml
    python recipes/sft.py --config recipes/quickstart/sft_lora.yaml --max_steps 10
    vital sft --config recipes/quickstart/sft.yaml --hub local:outputs/hub

    # paper settings, 8 GPUs:
    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/sft.py \\
        --config recipes/biomed_vital/sft/config_llava15_7b.yaml

The quickstart trains the tiny random LLaVA that the `tiny_models` stage pushes (``hub:quickstart/tiny-llava``; run
``vital tiny_models --config recipes/quickstart/tiny_models.yaml --hub local:outputs/hub`` once) on the selected
candidates.

The arguments are TRL's ``sft.py`` ones: `ScriptArguments` (``dataset_name``, ``dataset_config``, plus
``dataset_revision``), `trl.SFTConfig`, `trl.ModelConfig` and a mixture in the shape of TRL's `DatasetMixtureConfig`
(`vital.sft.SFTDatasetMixtureConfig`: a ``datasets:`` list of ``path``/``name``/``revision``/``split``/``weight``).
The data is one dataset or that weighted mixture, each read at a pinned commit, in TRL's ``messages`` + ``images``
format, LLaVA ``conversations`` or image-caption pairs (see `vital.sft`). Rows whose image placeholders do not match
their images, or with empty answers, are rejected before training. The model is a local folder, a Hugging Face Hub id,
or ``hub:<repo>@<revision>`` on the recipe's hub (e.g. an earlier stage's run). With ``push_to_hub: true`` each run
pushes, through the hub layer (local or hf), to its own branch ``hub_revision`` of ``hub_model_id``, created private
unless ``hub_private_repo: false``; a branch that holds a finished run is not overwritten unless
``overwrite_branch: true``. The Trainer itself never pushes. A killed run resumes from the last checkpoint in
``output_dir``, with every tensor of it, but only if the checkpoint belongs to this run: the run fingerprint (inputs
at their commits, config, seed, world size, effective batch) is written into ``output_dir`` and each checkpoint, and
an ``output_dir`` left by another run is moved to ``<output_dir>.superseded-<sha12>`` before a fresh start. A run that trained steps but whose weights equal the base
model's is refused before the push.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from transformers import set_seed
from trl import ModelConfig, SFTConfig, get_peft_config

from vital.arguments import HubLocation
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging
from vital.runs import FingerprintCallback, check_not_base_weights, log_not_pushed, prepare_output_dir
from vital.sft import (
    FREEZE_CHOICES,
    SFTDatasetMixtureConfig,
    SFTRunTrainer,
    ThroughputCallback,
    base_model_folder,
    chat_template_input,
    check_cpu_launch,
    claim_branch,
    count_parameters,
    load_model,
    load_sft_data,
    model_lineage,
    plan_run,
    push_run,
    record_adapter_base,
    run_metrics,
    run_target,
    sft_card,
    training_datasets,
    write_skipped_rows,
)


logger = logging.getLogger("vital.sft")


@dataclass
class ScriptArguments(HubLocation):
    """
    The SFT stage's own arguments, in the words of TRL's `ScriptArguments` (the push options are `trl.SFTConfig`'s
    `push_to_hub`, `hub_model_id`, `hub_revision` and `hub_private_repo`; a mixture is `SFTDatasetMixtureConfig`).

    Parameters:
        hub (`str`, *optional*):
            `"local:<dir>"` or `"hf"`: where the data, the base model (`hub:<repo>@<revision>`) and the output live.
            Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
        dataset_name (`str`, *optional*):
            Dataset repo id on the hub trained on. Leave unset when `datasets` lists a mixture.
        dataset_config (`str`, *optional*):
            Configuration of `dataset_name` (e.g. `top40`); unset: the default one.
        dataset_revision (`str`, *optional*, defaults to `"main"`):
            Branch, tag or commit of `dataset_name`; resolved to a commit before loading, and recorded in the card.
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split of `dataset_name` trained on.
        dataset_test_split (`str`, *optional*):
            Split evaluated on after training, read from every dataset trained on (unweighted); unset: no evaluation.
        errors (`str`, *optional*, defaults to `"raise"`):
            Bad rows: `"raise"` stops before training naming the row; `"skip"` drops them and lists them in
            `skipped_rows.jsonl` of the pushed model.
        freeze (`str`, *optional*, defaults to `"none"`):
            What does not train: `"none"`, `"vision_tower"` (projector and language model train) or
            `"all_but_projector"` (concept alignment: only the projector trains). Full fine-tuning only.
        overwrite_branch (`bool`, *optional*, defaults to `False`):
            Replace a finished run already on `hub_revision` instead of refusing.
    """

    dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset repo id trained on (unset when `datasets` lists a mixture)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration of dataset_name."})
    dataset_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of dataset_name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split of dataset_name trained on."})
    dataset_test_split: str | None = field(
        default=None,
        metadata={"help": "Split evaluated on after training (every dataset, unweighted); none: no eval."},
    )
    errors: str = field(
        default="raise", metadata={"help": "Bad rows: 'raise' stops before training naming the row; 'skip' drops."}
    )
    freeze: str = field(
        default="none",
        metadata={
            "help": "What does not train: 'none', 'vision_tower' (projector + LLM train) or 'all_but_projector' "
            "(concept alignment: only the projector trains). Full fine-tuning only; with LoRA leave 'none'.",
            "choices": list(FREEZE_CHOICES),
        },
    )
    overwrite_branch: bool = field(
        default=False, metadata={"help": "Replace a finished run already on hub_revision instead of refusing."}
    )

    def __post_init__(self):
        self.dataset_config = self.dataset_config or None  # `--dataset_config ""`: the default configuration


def main(
    script_args: ScriptArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    dataset_args: SFTDatasetMixtureConfig | None = None,
) -> list[PushResult]:
    # 1. Logging on every process (warnings only off the main one); refuse the two-independent-runs launch trap.
    check_cpu_launch(training_args.use_cpu)
    setup_logging(main_process=training_args.should_log)
    set_seed(training_args.seed)
    hub, target = get_hub(script_args.hub), run_target(training_args)
    datasets = training_datasets(script_args, dataset_args or SFTDatasetMixtureConfig())

    # 2. Data at pinned commits, checked before training; processor and model (QLoRA, freezing: vital.sft.model).
    with training_args.main_process_first(desc="load and check the SFT data"):
        data = load_sft_data(hub, datasets, training_args.seed, script_args.dataset_test_split, script_args.errors)
    source, model, processor = load_model(hub, model_args, training_args, script_args.freeze)

    # 3. The run's identity: unchanged inputs and config on a finished branch are the result (idempotent reruns); a
    #    branch holding another finished run is refused unless overwrite_branch.
    config = {"script": script_args, "training": training_args, "model": model_args, "mixture": dataset_args}
    template, template_file = chat_template_input(training_args.chat_template_path)  # an input, by its content
    inputs = [model_lineage(source, model), *data.refs, *([template] if template else [])]
    planned, fingerprint = plan_run(inputs, config, training_args)
    planned.config = planned.to_dict()["config"]  # as the user set it: the trainer adjusts a few fields of its args
    done = claim_branch(
        hub, target, planned, training_args.world_size, script_args.overwrite_branch, training_args.process_index == 0
    )
    if done is not None:
        return [done]

    # 4. Resume: only a checkpoint of this very run (same fingerprint); another run's output_dir is moved aside.
    with training_args.main_process_first(local=training_args.save_on_each_node, desc="bind output_dir to the run"):
        checkpoint = prepare_output_dir(
            training_args.output_dir, fingerprint, training_args.resume_from_checkpoint, training_args.should_save
        )
    if checkpoint is not None:
        logger.info("resuming this run from %s", checkpoint)

    # 5. Trainer (assistant-only loss, vision collator: SFTConfig; exact resume, no pushes of its own) and training.
    if template_file:
        training_args.chat_template_path = template_file  # a shipped template when not found here (recorded as set)
    throughput = ThroughputCallback()
    trainer = SFTRunTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
        callbacks=[throughput, FingerprintCallback(fingerprint)],
    )
    parameters = count_parameters(trainer.model)  # after peft: what this run trains
    logger.info("trainable parameters: %d of %d", parameters["trainable"], parameters["total"])
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = run_metrics(trainer, train_result, throughput, len(data.train), resumed=checkpoint is not None)
    if data.eval is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    # 6. Save: full weights or the LoRA adapter (naming its base by repo id and commit), processor, trainer state.
    trainer.save_model(training_args.output_dir)
    if model_args.use_peft and trainer.is_world_process_zero():
        record_adapter_base(trainer.model, source, training_args.output_dir)
    trainer.save_state()

    # 7. Card and push, from the main process only; never the base model as a trained one.
    pushed: list[PushResult] = []
    if trainer.is_world_process_zero():
        adapter = bool(model_args.use_peft)
        if target.push:
            check_not_base_weights(
                training_args.output_dir, base_model_folder(source), trainer.state.global_step, adapter
            )
        write_skipped_rows(data.quarantine, training_args.output_dir)
        extra = {
            "world_size": training_args.world_size,
            "effective_batch": fingerprint["effective_batch"],
            "run_fingerprint": fingerprint["sha256"],
            "freeze": script_args.freeze,
            "parameters": parameters,
        }
        resumed_from = os.path.basename(checkpoint) if checkpoint else None
        card = sft_card(planned, target, source, model, data, metrics, extra, adapter, resumed_from)
        card.save(os.path.join(training_args.output_dir, "README.md"))
        if target.push:
            pushed.append(push_run(hub, target, training_args.output_dir, metrics["final_loss"]))
            print(artifact_table(pushed, {target.repo_id: f"final loss {metrics['final_loss']:.4f}"}))
        else:
            log_not_pushed("the model", training_args.output_dir, target.repo_id)
    trainer.accelerator.wait_for_everyone()
    trainer.end()
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    parser = recipe_parser((ScriptArguments, SFTConfig, ModelConfig, SFTDatasetMixtureConfig))
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(argv)
    return main(script_args, training_args, model_args, dataset_args)


if __name__ == "__main__":
    cli()
