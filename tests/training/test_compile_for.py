"""Ahead-of-time compilation of the real train step (gr1_jax/training/aot.py, experiments/compile_for.py)."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest

from data_pipelines.synthetic import synthetic_batch
from experiments.configs import pretrain
from gr1_jax.training import aot, tpu_topologies
from gr1_jax.user_errors import UserError

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


@pytest.mark.parametrize("name, grid, chips", [
    ("v5e-16", "v5e:4x4", 16), ("v5e-256", "v5e:16x16", 256), ("v4-32", "v4:2x2x4", 16),
    ("v5p-128", "v5p:4x4x4", 64), ("v6e-8", "v6e:2x4", 8), ("v5e:2x4", "v5e:2x4", 8)])
def test_slice_names_map_to_chip_grids(name, grid, chips):
  # v4/v5p slices count TensorCores (2 per megacore chip), v5e/v6e count chips.
  topology = tpu_topologies.parse(name)
  assert (topology.topology_name, topology.num_chips) == (grid, chips)


@pytest.mark.parametrize("name, message", [
    ("v4-33", "v4 slices count TensorCores"), ("v5e-12", "known sizes: v5e-1, v5e-4"),
    ("tpu-8", "expected a slice like v5e-16")])
def test_unknown_slices_are_refused_by_name(name, message):
  with pytest.raises(UserError, match=message):
    tpu_topologies.parse(name)


def test_batch_shapes_are_the_pipelines_contract():
  """The abstract batch has the keys, shapes and dtypes the data pipelines yield for the stage."""
  config = pretrain.get_config("debug")
  config.batch_size = 4
  model = aot.experiment_config.validate(config.to_dict())
  shapes = aot.batch_shapes(config.to_dict(), model)
  real = synthetic_batch(0, batch_size=4, seq_len=model.seq_len, image_size=config.data.image_size,
                         hand_size=84, finetune=False)
  assert shapes == {k: (v.shape, v.dtype) for k, v in real.items() if k in shapes}


def test_cpu_compile_reports_memory_and_flops():
  """The same code path as a TPU compile, on the CPU devices at hand: the train step compiles
  without allocating anything, and the reported figures are those of the compiled program."""
  config = pretrain.get_config("debug")
  config.mesh.update(data=2, fsdp=1, tensor=1)
  config.batch_size = 4
  result = aot.compile_train_step(config, jax.devices()[:2])
  assert result.mesh_shape == {"data": 2, "fsdp": 1, "tensor": 1}
  assert result.flops > 0
  # The donated train state and the frozen encoders are arguments: at least the bytes of
  # every parameter (replicated over 'data', so whole on each device).
  model = result.model_config
  param_bytes = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                    for x in jax.tree.leaves(jax.eval_shape(lambda: _all_params(model))))
  assert result.memory["arguments"] >= param_bytes > 0


def _all_params(model_config):
  from flax import nnx

  from gr1_jax.modules.gr1 import GR1
  return nnx.to_pure_dict(nnx.state(GR1(model_config, rngs=nnx.Rngs(0)), nnx.Param))


def test_missing_libtpu_is_one_line(monkeypatch):
  monkeypatch.setattr(tpu_topologies, "libtpu_available", lambda: False)
  with pytest.raises(UserError, match="pip install -r requirements-tpu.txt"):
    tpu_topologies.devices(tpu_topologies.parse("v5e-4"))


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (optional: pip install -r requirements-tpu.txt)")
def test_compile_for_a_tpu_slice(tmp_path):
  out = tmp_path / "figures.jsonl"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.compile_for", "--topology", "v5e:2x2",
       "--config", "experiments/configs/pretrain.py:debug", "--config.mesh.data=2", "--config.mesh.fsdp=2",
       "--config.batch_size=8", "--json", str(out)], capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stderr[-2000:]
  figures = json.loads(out.read_text())
  assert figures["chips"] == 4 and figures["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
  assert figures["fits"] and figures["flops_per_chip"] > 0 and figures["memory_gib"]["peak"] > 0
