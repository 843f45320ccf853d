"""Shared test setup: 8 virtual CPU devices for the sharding tests, tiny model configs."""
import os

# Must happen before jax is imported anywhere in the test session. Tests compile hundreds of
# small programs, and with LLVM's optimisations off (backend level 0) compiling takes about half
# as long while the tiny programs run no slower to matter (2026-12-05, load 4-8, one process:
# test_frame_reuse + test_sharding_equality 298 s -> 138 s wall; test_policy + test_bf16_train_step
# + test_conversion + test_readme 455 -> 274 s wall, 240 -> 177 CPU s; the whole quiet suite
# 616.6 -> 437 s on 2 workers). What a test checks never depends
# on code generation: equalities are between two programs built the same way, and comparisons
# with other implementations carry tolerances.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")

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
