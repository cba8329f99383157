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
