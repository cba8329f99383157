"""Stage 4 — tune: supervised fine-tuning of a vision-language model on the selected instructions, with TRL.

Usage:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py --config recipes/quickstart/sft.yaml
    python recipes/sft.py --config recipes/quickstart/sft.yaml
    python recipes/sft.py --config recipes/quickstart/sft_lora.yaml --max_steps 10
    vital sft --config recipes/quickstart/sft.yaml --hub local:outputs/hub

    # paper settings, 8 GPUs:
    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/sft.py \\
        --config recipes/biomed_vital/sft/config_llava15_7b.yaml

The quickstart trains a tiny random LLaVA from a local folder on the demos that `vital ingest` pushes; build the
model once with ``python -c "from vital.testing.tiny_models import build_tiny_llava as b; b('outputs/models/tiny-llava')"``.

The data is one dataset or a weighted mixture (``repo@revision:config:weight``), each read at a pinned commit, in
TRL's ``messages`` + ``images`` format, LLaVA ``conversations`` or image-caption pairs (see `vital.sft`). Rows whose
image placeholders do not match their images, or with empty answers, are rejected before training. The model is a
local folder, a Hugging Face Hub id, or ``hub:<repo>@<revision>`` on the recipe's hub (e.g. an earlier stage's run).
Each run pushes to its own branch of ``output_repo``; a branch that holds a finished run is not overwritten unless
``overwrite_branch: true``. A killed run resumes from the last checkpoint in ``output_dir``, with every tensor of it,
but only if the checkpoint belongs to this run: the run fingerprint (inputs at their commits, config, seed, world size,
effective batch) is written into ``output_dir`` and each checkpoint, and an ``output_dir`` left by another run is moved
to ``<output_dir>.superseded-<sha12>`` before a fresh start. A run that trained steps but whose weights equal the base
model's is refused before the push.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field

from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed
from trl import ModelConfig, SFTConfig, get_peft_config, get_quantization_config

from vital.cards import Lineage, model_card
from vital.hub import PushResult, get_hub
from vital.runner import artifact_table, recipe_parser, setup_logging
from vital.runs import FingerprintCallback, check_not_base_weights, prepare_output_dir, run_figures, run_fingerprint
from vital.sft import (
    FREEZE_CHOICES,
    SKIPPED_ROWS_FILE,
    SFTRunTrainer,
    ThroughputCallback,
    base_model_folder,
    base_reference,
    check_cpu_launch,
    check_run_branch,
    check_sft_rows,
    count_parameters,
    default_run_branch,
    describe_run,
    freeze_modules,
    load_sft_mixture,
    model_lineage,
    parse_dataset_specs,
    record_adapter_base,
    resolve_model,
    same_finished_run,
    skipped_rows_note,
    stage_output,
    write_skipped_rows,
)


logger = logging.getLogger("vital.sft")


@dataclass
class ScriptArguments:
    hub: str | None = field(
        default=None,
        metadata={"help": "Where artifacts live: 'local:<dir>' or 'hf'. Default: $VITAL_HUB, else ~/.cache."},
    )
    dataset: list[str] | None = field(
        default=None,
        metadata={
            "help": "Dataset repo id, or a mixture: one or more 'repo[@revision][:config[:weight]]' (weight: the "
            "fraction of the dataset's rows drawn; above 1 repeats it)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Config for inputs that do not name one."})
    dataset_revision: str = field(default="main", metadata={"help": "Revision for inputs that do not name one."})
    dataset_split: str = field(default="train", metadata={"help": "Split trained on."})
    dataset_eval_split: str | None = field(
        default=None, metadata={"help": "Split evaluated on after training (same inputs, unweighted); none: no eval."}
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
    output_repo: str = field(default="quickstart/sft", metadata={"help": "Model repo id the run is pushed to."})
    run_branch: str | None = field(
        default=None, metadata={"help": "Branch of output_repo this run pushes to. Default: output_dir's name."}
    )
    overwrite_branch: bool = field(
        default=False, metadata={"help": "Replace a finished run already on run_branch instead of refusing."}
    )
    push: bool = field(default=True, metadata={"help": "Push the trained model and its card to output_repo."})
    private: bool = field(default=True, metadata={"help": "Create the model repo private."})

    def __post_init__(self):
        if isinstance(self.dataset, str):  # `dataset: repo` in a YAML file: a mixture of one
            self.dataset = [self.dataset]


def main(script_args: ScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> list[PushResult]:
    # 1. Logging on every process (warnings only off the main one); refuse the two-independent-runs launch trap.
    check_cpu_launch(training_args.use_cpu)
    setup_logging(main_process=training_args.should_log)
    set_seed(training_args.seed)
    if training_args.push_to_hub:
        logger.warning("push_to_hub is ignored: the recipe pushes to `output_repo` through the hub layer")
        training_args.push_to_hub = False
    if script_args.errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {script_args.errors!r}")
    if not model_args.model_name_or_path:
        raise ValueError("no `model_name_or_path` given")
    if script_args.freeze != "none" and model_args.use_peft:
        raise ValueError("freeze is for full fine-tuning; with LoRA choose modules with lora_target_modules")

    # 2. Hub: this run's branch (checked once the inputs are known, below).
    hub = get_hub(script_args.hub)
    run_branch = script_args.run_branch or default_run_branch(training_args.output_dir)

    # 3. Data, at pinned commits, checked before training.
    if not script_args.dataset:
        raise ValueError("no `dataset` given")
    specs = parse_dataset_specs(
        script_args.dataset, script_args.dataset_revision, script_args.dataset_config, script_args.dataset_split
    )
    with training_args.main_process_first(desc="load and check the SFT data"):
        train_dataset, data_refs = load_sft_mixture(hub, specs, seed=training_args.seed)
        train_dataset, quarantine = check_sft_rows(train_dataset, script_args.errors)
        eval_dataset = None
        if script_args.dataset_eval_split:
            eval_dataset, _ = load_sft_mixture(hub, specs, training_args.seed, script_args.dataset_eval_split, False)
            eval_dataset, eval_quarantine = check_sft_rows(eval_dataset, script_args.errors)
            quarantine.extend(eval_quarantine)
    if len(quarantine):
        logger.warning(
            "%d row(s) skipped, by reason: %s (listed in %s of the pushed model)",
            len(quarantine),
            quarantine.summary(),
            SKIPPED_ROWS_FILE,
        )
    logger.info("training on %d rows from %s", len(train_dataset), ", ".join(map(str, data_refs)))

    # 4. Processor and model (optionally quantized for QLoRA; optionally partly frozen).
    source = resolve_model(hub, model_args.model_name_or_path, model_args.model_revision)
    trust = training_args.trust_remote_code
    processor = AutoProcessor.from_pretrained(source.path, revision=source.revision, trust_remote_code=trust)
    quantization_config = get_quantization_config(model_args)
    model_kwargs = {
        "revision": source.revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": trust,
        "quantization_config": quantization_config,
        # QLoRA: each process holds its quantized copy on its own GPU.
        "device_map": {"": training_args.local_process_index} if quantization_config is not None else None,
        **(training_args.model_init_kwargs or {}),
    }
    training_args.model_init_kwargs = None  # consumed here; the trainer would warn that it ignores them
    model = AutoModelForImageTextToText.from_pretrained(source.path, **model_kwargs)
    freeze_modules(model, script_args.freeze)

    # Unchanged inputs and config: the finished run on this branch is the result (idempotent reruns).
    planned = Lineage(
        stage="sft",
        inputs=[model_lineage(source, model), *data_refs],
        config={"script": script_args, "training": training_args, "model": model_args},
        seed=training_args.seed,
    )
    planned_config = planned.to_dict()["config"]  # now: the trainer adjusts a few fields of the args it is given
    world_size = training_args.world_size
    effective_batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    fingerprint = run_fingerprint(
        stage="sft",
        inputs=planned.inputs,
        config=planned.config,
        seed=training_args.seed,
        world_size=world_size,
        effective_batch=effective_batch * world_size,
    )
    if script_args.push:
        done = same_finished_run(hub, script_args.output_repo, run_branch, planned, world_size)
        if done is not None:
            logger.info(
                "%s@%s already holds this run (same inputs and config): nothing to do",
                script_args.output_repo,
                run_branch,
            )
            location = str(hub.snapshot(script_args.output_repo, done, "model"))
            return [PushResult(script_args.output_repo, "model", run_branch, done, location, created=False)]
        # A branch holding a different finished run is refused unless overwriting was asked for (as open-r1 does).
        check_run_branch(hub, script_args.output_repo, run_branch, script_args.overwrite_branch)
        if training_args.process_index == 0:
            hub.create_repo(script_args.output_repo, "model", script_args.private)
            hub.create_branch(script_args.output_repo, run_branch, repo_type="model")

    # 5. Resume: only a checkpoint of this very run (same fingerprint); an output_dir left by another run is moved
    #    aside and this one starts fresh.
    with training_args.main_process_first(local=training_args.save_on_each_node, desc="bind output_dir to the run"):
        checkpoint = prepare_output_dir(
            training_args.output_dir,
            fingerprint,
            training_args.resume_from_checkpoint,
            main_process=training_args.should_save,
        )
    if checkpoint is not None:
        logger.info("resuming this run from %s", checkpoint)

    # 6. Trainer: assistant-only loss and the vision collator come from the SFTConfig; full checkpoints reload
    #    tensor for tensor (SFTRunTrainer).
    throughput = ThroughputCallback()
    trainer = SFTRunTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
        callbacks=[throughput, FingerprintCallback(fingerprint)],
    )
    parameters = count_parameters(trainer.model)  # after peft: what this run trains
    logger.info("trainable parameters: %d of %d", parameters["trainable"], parameters["total"])

    # 7. Train.
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    # The loss figures come from the trainer state of this run (a resumed run's history starts at its step 1); the
    # Trainer's own train_loss covers only the steps of this process. Speeds and runtime are this session's.
    metrics = {**train_result.metrics, **throughput.summary, "train_rows": len(train_dataset)}
    figures = run_figures(trainer.state.log_history)
    metrics["final_loss"] = figures.get("final_loss", float("nan"))
    if checkpoint and "train_loss" in figures:
        metrics["train_loss"] = figures["train_loss"]
    metrics["train_steps"] = trainer.state.global_step
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    # 8. Save: full weights or the LoRA adapter, the processor (chat template included) and the trainer state.
    trainer.save_model(training_args.output_dir)
    if model_args.use_peft and trainer.is_world_process_zero():  # the adapter names its base by repo id and commit
        record_adapter_base(trainer.model, source, training_args.output_dir)
    trainer.save_state()

    # 9. Card and push, from the main process only.
    pushed: list[PushResult] = []
    if trainer.is_world_process_zero():
        adapter = model_args.use_peft
        # Never ship the base model as a trained one (e.g. a resume that restored no weights).
        if script_args.push:
            check_not_base_weights(
                training_args.output_dir, base_model_folder(source), trainer.state.global_step, bool(adapter)
            )
        # Skip mode drops nothing silently: every skipped row, with its reason, travels with the weights.
        write_skipped_rows(quarantine, training_args.output_dir)
        card = model_card(
            "model",
            lineage=Lineage(
                stage="sft",
                inputs=[model_lineage(source, model), *data_refs],
                config=planned_config,
                seed=training_args.seed,
                extra={
                    "run_branch": run_branch,
                    "world_size": world_size,
                    "effective_batch": fingerprint["effective_batch"],
                    "run_fingerprint": fingerprint["sha256"],
                    "resumed_from": os.path.basename(checkpoint) if checkpoint else None,
                    "mixture": [str(s) for s in specs],
                    "adapter": adapter,
                    "freeze": script_args.freeze,
                    "parameters": parameters,
                    "skipped_rows": len(quarantine),
                    "metrics": {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
                },
            ),
            model_name=script_args.output_repo.split("/")[-1],
            base_model=source.base_model,
            datasets=sorted({ref.repo_id for ref in data_refs}),
            pipeline_tag="image-text-to-text",
            tags=["sft", "trl", *(["lora"] if adapter else [])],
            description=describe_run(
                source.base_model or source.path,
                adapter,
                metrics,
                len(train_dataset),
                resumed_from=os.path.basename(checkpoint) if checkpoint else None,
            )
            + skipped_rows_note(quarantine),
            repo_id=script_args.output_repo,
            revision=run_branch,
            adapter=adapter,
            **dict(zip(("base_model_path", "base_revision"), base_reference(source, model))),
        )
        card.save(os.path.join(training_args.output_dir, "README.md"))
        if script_args.push:
            with tempfile.TemporaryDirectory() as staging:
                stage_output(training_args.output_dir, staging)
                pushed.append(
                    hub.push_folder(
                        staging,
                        script_args.output_repo,
                        "model",
                        revision=run_branch,
                        commit_message=f"SFT run {run_branch}: final loss {metrics['final_loss']:.4f}",
                        delete_patterns=["*"],  # the branch holds exactly this run
                    )
                )
            headline = {script_args.output_repo: f"final loss {metrics['final_loss']:.4f}"}
            print(artifact_table(pushed, headline))
    trainer.accelerator.wait_for_everyone()
    trainer.end()
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    parser = recipe_parser((ScriptArguments, SFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    return main(script_args, training_args, model_args)


if __name__ == "__main__":
    cli()
