"""Every accelerate config loads with accelerate's own loader and says what its name promises."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType


CONFIG_DIR = Path(__file__).resolve().parent.parent / "accelerate_configs"
EXPECTED = {
    "cpu": {
        "distributed_type": DistributedType.MULTI_GPU,
        "use_cpu": True,
        "num_processes": 2,
        "mixed_precision": "no",
    },
    "multi_gpu": {"distributed_type": DistributedType.MULTI_GPU, "use_cpu": False, "mixed_precision": "bf16"},
    "deepspeed_zero2": {"distributed_type": DistributedType.DEEPSPEED, "use_cpu": False, "mixed_precision": "bf16"},
    "deepspeed_zero3": {"distributed_type": DistributedType.DEEPSPEED, "use_cpu": False, "mixed_precision": "bf16"},
    "fsdp": {"distributed_type": DistributedType.FSDP, "use_cpu": False, "mixed_precision": "bf16"},
}


def test_the_expected_configs_are_there():
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name):
    config = load_config_from_file(str(CONFIG_DIR / f"{name}.yaml"))
    assert isinstance(config, ClusterConfig)
    for key, value in EXPECTED[name].items():
        assert getattr(config, key) == value, key
    assert config.num_machines == 1 and config.machine_rank == 0
    assert config.num_processes >= 2  # every config is for more than one process


@pytest.mark.parametrize(("name", "stage"), [("deepspeed_zero2", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_stages(name, stage):
    config = load_config_from_file(str(CONFIG_DIR / f"{name}.yaml"))
    assert config.deepspeed_config["zero_stage"] == stage
    if stage == 3:  # the gathered 16-bit weights are what save_model writes under ZeRO-3
        assert config.deepspeed_config["zero3_save_16bit_model"] is True
        assert config.deepspeed_config["zero3_init_flag"] is True


def test_fsdp_shards_by_layer_and_saves_a_full_state_dict():
    config = load_config_from_file(str(CONFIG_DIR / "fsdp.yaml"))
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
