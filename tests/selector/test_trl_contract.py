"""The TRL internals `SelectorTrainer` relies on: an upgrade that changes them fails here, loudly, before a run does.

`SelectorTrainer` overrides three `RewardTrainer` methods (two private) and fills its `_metrics` and
`_signature_columns`; setup.cfg pins the TRL minor version they were written for.
"""

import inspect

import trl
from packaging.version import Version
from trl import RewardTrainer

from vital.selector import SelectorTrainer


def test_the_installed_trl_is_the_pinned_minor_version():
    assert Version("1.16") <= Version(trl.__version__) < Version("1.17"), trl.__version__


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_overridden_methods_keep_their_signatures():
    expected = {
        "_prepare_dataset": ["self", "dataset", "processing_class", "args", "dataset_name"],
        "_set_signature_columns_if_needed": ["self"],
        "compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
    }
    for name, names in expected.items():
        assert parameters(getattr(RewardTrainer, name)) == names, f"RewardTrainer.{name} changed"
        assert parameters(getattr(SelectorTrainer, name)) == names, f"SelectorTrainer.{name} drifted"


def test_reward_trainer_still_prepares_datasets_and_keeps_metrics_the_way_the_subclass_expects():
    init = inspect.getsource(RewardTrainer.__init__)
    assert "self._prepare_dataset(" in init  # the hook that would drop the image and weight columns
    assert "self._metrics" in init  # compute_loss appends its metrics here
    log = inspect.getsource(RewardTrainer.log)
    assert "self._metrics" in log  # ... and log() averages and clears them


def test_reward_trainer_compute_loss_still_runs_the_model_and_records_the_metrics_the_subclass_reuses():
    # SelectorTrainer.compute_loss calls TRL's with return_outputs=True for the forward pass and TRL's metric lines,
    # then replaces only the loss: the outputs must come back, and the metrics must be recorded there.
    source = inspect.getsource(RewardTrainer.compute_loss)
    assert "outputs = model(**inputs)" in source
    assert "return (loss, outputs) if return_outputs else loss" in source
    for metric in ("min_reward", "mean_reward", "max_reward", "accuracy", "margin", "num_tokens"):
        assert f'self._metrics[mode]["{metric}"]' in source, metric
    assert 'inputs["use_cache"] = False' in source  # SelectorModel.forward accepts (and ignores) use_cache
    assert 'inputs["attention_mask"]' in source  # the collator always returns an attention mask
    assert '"margin" in inputs' in source  # the collator never sends a "margin" key (the hinge margin is args')
