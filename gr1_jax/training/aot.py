"""Ahead-of-time compilation of the real train step for any device list, real or abstract.

`compile_train_step(config, devices)` builds exactly what `train_and_evaluate` jits (same
config validation, mesh, state layout, shardings, donation, optimizer and losses), lowers
it on abstract inputs (nothing is allocated or initialised) and compiles it. With
`devices` from `jax.experimental.topologies.get_topology_desc(...)` this compiles for a
TPU slice on a CPU-only machine (libtpu must be installed: requirements-tpu.txt), so
memory per chip and FLOPs per step are known before a pod is rented
(experiments/compile_for.py).

The batch is the data pipelines' contract (data_pipelines/batch_spec.py): uint8 frames at
the native resolution of the stage's data (Ego4D clips at config.data.image_size; CALVIN's
200x200 static and 84x84 wrist cameras), resized on device inside the step; with
config.data.frame_reuse = W, batch_size / W segments of seq_len + W - 1 steps.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from data_pipelines import batch_spec as bs
from gr1_jax import sharding
from gr1_jax.model_config import GR1Config
from gr1_jax.training import experiment_config, optimizer
from gr1_jax.training import train_state as ts
from gr1_jax.training.train_step import make_train_step, required_keys

CALVIN_STATIC, CALVIN_GRIPPER = 200, 84


@dataclasses.dataclass
class CompiledStep:
  compiled: Any                 # jax.stages.Compiled
  model_config: GR1Config
  mesh_shape: dict[str, int]
  global_batch: int
  compile_seconds: float
  flops: float                  # per step and device (XLA's cost analysis of the partitioned program)
  bytes_accessed: float         # per step and device
  memory: dict[str, int]        # per device: arguments, outputs, temporaries, generated code, aliased, peak


def batch_shapes(config: Mapping, model: GR1Config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """(shape, dtype) of every batch key the step reads, at the stage's native resolution."""
  b, l, k = config["batch_size"], model.seq_len, model.action_chunk
  windows = config["data"].get("frame_reuse", 0)
  if windows:   # frame reuse: batch_size / W segments of seq_len + W - 1 steps
    b, l = b // windows, l + windows - 1
  stage2 = model.use_hand_rgb or model.use_state or model.act_pred
  static = CALVIN_STATIC if stage2 else config["data"]["image_size"]
  shapes = {bs.STEP_MASK: (b, l), bs.LANGUAGE_TOKENS: (b, 77), bs.RGB_STATIC: (b, l, static, static, 3),
            bs.RGB_GRIPPER: (b, l, CALVIN_GRIPPER, CALVIN_GRIPPER, 3), bs.ARM_STATE: (b, l, 6),
            bs.GRIPPER_STATE: (b, l, 2), bs.ARM_ACTION: (b, l, k, 6), bs.GRIPPER_ACTION: (b, l, k),
            bs.ACTION_MASK: (b, l, k)}
  return {key: (shapes[key], np.dtype(bs._DTYPES[key])) for key in required_keys(model)}


def cost_analysis(program) -> dict:
  """XLA's cost analysis of a lowered or compiled program as one dict ({} when XLA gives none;
  some jax versions wrap it in a one-element list)."""
  cost = program.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}


def _memory(compiled) -> dict[str, int]:
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  fields = {"arguments": "argument_size_in_bytes", "outputs": "output_size_in_bytes",
            "temporaries": "temp_size_in_bytes", "generated_code": "generated_code_size_in_bytes",
            "aliased": "alias_size_in_bytes", "peak": "peak_memory_in_bytes"}
  out = {name: int(getattr(stats, attr, 0) or 0) for name, attr in fields.items()}
  if not out["peak"]:
    # Donated state is aliased into the outputs, so it is counted once.
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"] + out["generated_code"]
  return out


def compile_train_step(config: ml_collections.ConfigDict | Mapping, devices: Sequence) -> CompiledStep:
  """Compiles the train step of `config` (a pretrain.py / finetune_calvin.py config) for `devices`."""
  config = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  # No data is read here: validate everything else, with the data source stubbed out.
  checked = dict(config, data=dict(config["data"], name="synthetic", path="", mixture=""))
  model = experiment_config.validate(checked)
  mesh = sharding.make_mesh(config["mesh"], devices)
  sharding.check_batch_size(config["batch_size"], mesh)
  if config["data"].get("frame_reuse", 0):
    sharding.check_batch_size(experiment_config.segments_per_batch(config), mesh,
                              field="config.batch_size / config.data.frame_reuse")
  tx, schedule = optimizer.make_optimizer(config["optimizer"], config["num_train_steps"])
  layout = ts.make_layout(model, tx, mesh)
  step = make_train_step(layout, tx, schedule, dict(config["loss_weights"]),
                         frame_reuse=config["data"].get("frame_reuse", 0))
  batch_sharding = sharding.batch_sharding(mesh)
  batch = {key: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
           for key, (shape, dtype) in batch_shapes(config, model).items()}
  start = time.perf_counter()
  compiled = step.lower(layout.train_state, layout.frozen, layout.rngs, batch).compile()
  seconds = time.perf_counter() - start
  cost = cost_analysis(compiled)
  return CompiledStep(compiled=compiled, model_config=model, mesh_shape=dict(mesh.shape),
                      global_batch=config["batch_size"], compile_seconds=seconds,
                      flops=float(cost.get("flops", float("nan"))),
                      bytes_accessed=float(cost.get("bytes accessed", float("nan"))),
                      memory=_memory(compiled))
