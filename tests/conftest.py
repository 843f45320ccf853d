"""Shared test setup: 8 virtual CPU devices for the sharding tests, tiny model configs."""
import os

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest  # noqa: E402

from experiments.configs import gr1_model  # noqa: E402
from gr1_jax.model_config import GR1Config  # noqa: E402


def tiny_config(variant: str = "tiny", **overrides) -> GR1Config:
  return GR1Config.from_dict(gr1_model.get_config(variant).to_dict()).replace(**overrides)


@pytest.fixture
def tiny():
  return tiny_config()


@pytest.fixture(scope="session")
def finetune_xla_cache(tmp_path_factory):
  """One persistent XLA cache for the CLI runs of the training tests (test_train_loop.py,
  test_damaged_checkpoints.py): they compile the same debug program, so the suite pays once."""
  return str(tmp_path_factory.mktemp("xla_cache"))


def debug_config(**changes) -> dict:
  """finetune_calvin.py:debug as a dict, with dotted keys changed: debug_config(**{"mesh.fsdp": 3})."""
  from experiments.configs import finetune_calvin
  c = finetune_calvin.get_config("debug").to_dict()
  for key, value in changes.items():
    node = c
    *parents, last = key.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  return c
