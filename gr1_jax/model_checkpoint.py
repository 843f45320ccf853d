"""The on-disk model checkpoint shared by conversion, training, evaluation and the policy.

A checkpoint directory is an Orbax CheckpointManager directory. Every step holds
  params   the model's nnx.Param state as a nested dict (StandardSave)
  config   JSON: {"model": GR1Config.to_dict(), ...anything the writer adds}
and a training step additionally holds the optimizer state, the data-iterator
state and training metadata as further items (see gr1_jax.training). Anything
that only needs weights restores `params` + `config` and ignores the rest, so a
converted official checkpoint and a training workdir load the same way.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from gr1_jax import url_paths
from gr1_jax.model_config import GR1Config

PARAMS, CONFIG = "params", "config"


def resolve_checkpoint_dir(path: str) -> str:
  """Accepts a checkpoint directory or a training workdir (which keeps them in checkpoints/),
  local or a URL (gs://bucket/run)."""
  directory = url_paths.as_epath(path, "checkpoint")
  if (directory / "checkpoints").is_dir():
    return str(directory / "checkpoints")
  if not directory.is_dir():
    raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
  return str(directory)


def save_model_checkpoint(directory: str, params: Any, config: GR1Config, *, step: int = 0,
                          extra_config: dict | None = None) -> str:
  """Writes `params` (nested dict of arrays) + config as `step` of a new or existing directory."""
  directory = str(url_paths.as_epath(directory, "checkpoint"))
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False)) as manager:
    manager.save(step, args=ocp.args.Composite(**{
        PARAMS: ocp.args.StandardSave(params),
        CONFIG: ocp.args.JsonSave({"model": config.to_dict(), **(extra_config or {})}),
    }))
    manager.wait_until_finished()
  return directory


def latest_step(directory: str) -> int:
  directory = resolve_checkpoint_dir(directory)
  with ocp.CheckpointManager(directory) as manager:
    step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{directory} holds no complete checkpoint step")
  return step


def load_config(directory: str, step: int | None = None) -> tuple[GR1Config, dict]:
  """(model config, the whole stored config dict) of a checkpoint step."""
  directory = resolve_checkpoint_dir(directory)
  step = latest_step(directory) if step is None else step
  with ocp.CheckpointManager(directory) as manager:
    stored = manager.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[CONFIG]
  if "model" not in stored:
    raise ValueError(f"{directory} step {step}: config has no 'model' entry (keys: {sorted(stored)})")
  return GR1Config.from_dict(stored["model"]), dict(stored)


def abstract_model(config: GR1Config):
  from gr1_jax.modules.gr1 import GR1  # local: building a model is only needed here
  return nnx.eval_shape(lambda: GR1(config, rngs=nnx.Rngs(0)))


def load_params(directory: str, config: GR1Config, *, step: int | None = None, shardings=None):
  """Restores the `params` item; `shardings` (a matching tree of jax Shardings) places it."""
  directory = resolve_checkpoint_dir(directory)
  step = latest_step(directory) if step is None else step
  abstract = nnx.to_pure_dict(nnx.state(abstract_model(config), nnx.Param))
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  with ocp.CheckpointManager(directory) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(**{PARAMS: ocp.args.StandardRestore(target)}))
  return restored[PARAMS]


def build_model(config: GR1Config, params) -> "GR1":
  """A GR1 module holding `params` (nested dict) without materialising a random init."""
  from gr1_jax.modules.gr1 import GR1
  graphdef, param_state, rest = nnx.split(abstract_model(config), nnx.Param, ...)
  nnx.replace_by_pure_dict(param_state, params)
  # Non-parameter state (dropout RNG streams) is tiny; jit lets XLA drop the unused param init.
  rest = jax.jit(lambda: nnx.state(GR1(config, rngs=nnx.Rngs(0)), nnx.Not(nnx.Param)))()
  return nnx.merge(graphdef, param_state, rest)


def load_model(directory: str, *, step: int | None = None):
  """A ready GR1 model in eval mode from a checkpoint directory or a training workdir."""
  config, _ = load_config(directory, step)
  model = build_model(config, load_params(directory, config, step=step))
  model.eval()
  return model


def numpy_params(model) -> dict:
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
