"""The argument dataclass every stage shares: where artifacts live and how a stage's outputs are pushed.

The names are those of `transformers.TrainingArguments` / TRL's configs (``push_to_hub``, ``hub_revision``,
``hub_private_repo``), so a stage without a trainer and a training stage are configured with the same words. A stage's
own argument class derives from :class:`HubArguments`; the training stages (``sft``, ``train_selector``) take the
three push fields from their TRL config, where the same names already exist, and only ``hub`` from here
(:meth:`HubArguments.from_training_args` gathers them into one object).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class HubLocation:
    """
    Where a stage's inputs and outputs live.

    Parameters:
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` (a folder laid out as a Hugging Face cache, with history, branches and tags beside it) or
            `"hf"` (the Hugging Face Hub). Default: `$VITAL_HUB`, else `~/.cache/vital/hub`.
    """

    hub: str | None = field(
        default=None,
        metadata={
            "help": "Where artifacts live: 'local:<dir>' or 'hf'. Default: $VITAL_HUB, else ~/.cache/vital/hub."
        },
    )


@dataclass
class HubArguments(HubLocation):
    """
    Where a stage's inputs and outputs live, and how its outputs are pushed. Every stage's arguments derive from this
    class (the training stages read the push fields from their TRL config instead, under the same names).

    Parameters:
        hub (`str` or `None`, *optional*):
            `"local:<dir>"` (a folder laid out as a Hugging Face cache) or `"hf"` (the Hugging Face Hub). Default:
            `$VITAL_HUB`, else `~/.cache/vital/hub`.
        push_to_hub (`bool`, *optional*, defaults to `True`):
            Push the stage's outputs and their cards. `False` runs the stage and writes nothing to the hub.
        hub_revision (`str`, *optional*, defaults to `"main"`):
            Branch the outputs are pushed to (created from the default branch if missing). Inputs name their own
            revisions (`<input>_revision`).
        hub_private_repo (`bool`, *optional*, defaults to `True`):
            Create the output repos private. An existing repo keeps its visibility.
    """

    push_to_hub: bool = field(default=True, metadata={"help": "Push the outputs and their cards."})
    hub_revision: str = field(default="main", metadata={"help": "Branch the outputs are pushed to."})
    hub_private_repo: bool = field(default=True, metadata={"help": "Create the output repos private."})

    @classmethod
    def from_training_args(cls, hub: str | None, training_args: Any, default_revision: str = "main") -> HubArguments:
        """The hub options of a training stage: ``hub`` from its script arguments, the push fields from its
        `TrainingArguments`-derived config. ``hub_private_repo`` left unset (the Trainer's ``None``) means private,
        as everywhere in this project; ``hub_revision`` left unset means ``default_revision``."""
        private = getattr(training_args, "hub_private_repo", None)
        return cls(
            hub=hub,
            push_to_hub=bool(getattr(training_args, "push_to_hub", True)),
            hub_revision=getattr(training_args, "hub_revision", None) or default_revision,
            hub_private_repo=True if private is None else bool(private),
        )
