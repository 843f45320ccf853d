"""Training checkpoints: the shared model-checkpoint layout plus the optimizer and data state.

`<workdir>/checkpoints` is an Orbax CheckpointManager directory (gr1_jax/model_checkpoint.py)
whose steps hold
  params      all model parameters, frozen encoders included   (StandardSave)
  config      {"model": GR1Config.to_dict(), "experiment": the run's config}   (JSON)
  opt_state   the optimizer state of the trainable parameters  (StandardSave)
  train_meta  {"step", "nonfinite_run", "nonfinite_total"}      (JSON)
  data_iter   the Grain iterator position, one file per process
so `load_model(workdir)` serves a training run exactly like a converted checkpoint.
Saves are asynchronous (device -> host copy is blocking, the write is not); a step
directory only appears under its final name once complete, so a run killed
mid-save resumes from the previous step. Restores take their target shardings
from the current run's layout, so a run resumes on a different mesh.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from gr1_jax import model_checkpoint, url_paths
from gr1_jax.atomic_files import write_json  # noqa: F401  (used by the training loop)
from gr1_jax.model_config import GR1Config
from gr1_jax.training.train_state import StateLayout, TrainState, merge_params

log = logging.getLogger(__name__)

PARAMS, CONFIG = model_checkpoint.PARAMS, model_checkpoint.CONFIG
OPT_STATE, TRAIN_META, DATA_ITER = "opt_state", "train_meta", "data_iter"


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _split_full_params(full: dict, like: dict) -> dict:
  """The sub-dict of `full` with exactly the keys of `like` (nested)."""
  return {k: _split_full_params(full[k], v) if isinstance(v, dict) else full[k] for k, v in like.items()}


class TrainCheckpointer:
  """Saves and restores a run's TrainState + frozen params + data iterator + config."""

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.directory = url_paths.join(url_paths.absolute(workdir), "checkpoints")
    url_paths.as_epath(self.directory, "checkpoint directory")   # Orbax must be able to open it
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, frozen: dict, data_iter, experiment_config: Mapping[str, Any],
           model_config: GR1Config) -> int:
    step, run, total = (int(x) for x in jax.device_get((state.step, state.nonfinite_run, state.nonfinite_total)))
    if not bool(_all_finite((state.params, state.opt_state))):
      raise FloatingPointError(f"refusing to write checkpoint step {step} to {self.directory}: "
                               "the train state holds non-finite values")
    items = {
        PARAMS: ocp.args.StandardSave(merge_params(state.params, frozen)),
        CONFIG: ocp.args.JsonSave({"model": model_config.to_dict(), "experiment": dict(experiment_config)}),
        OPT_STATE: ocp.args.StandardSave(state.opt_state),
        TRAIN_META: ocp.args.JsonSave({"step": step, "nonfinite_run": run, "nonfinite_total": total}),
    }
    if data_iter is not None:
      items[DATA_ITER] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    return step

  def restore(self, layout: StateLayout, data_iter, step: int | None = None) -> tuple[TrainState, dict]:
    """(TrainState, frozen params) of `step` (default latest), placed with layout's shardings;
    also rewinds `data_iter` to where that step left it."""
    step = self.latest_step() if step is None else step
    full = merge_params(layout.params, layout.frozen)
    items = {PARAMS: ocp.args.StandardRestore(full), OPT_STATE: ocp.args.StandardRestore(layout.opt_state),
             TRAIN_META: ocp.args.JsonRestore()}
    if data_iter is not None:
      items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    meta = restored[TRAIN_META]
    if int(meta["step"]) != step:
      raise ValueError(f"{self.directory} step {step}: train_meta says step {meta['step']}")
    scalar = lambda v: jax.device_put(np.int32(v), layout.train_state.step.sharding)
    params = restored[PARAMS]
    state = TrainState(step=scalar(meta["step"]), params=_split_full_params(params, layout.params),
                       opt_state=restored[OPT_STATE], nonfinite_run=scalar(meta["nonfinite_run"]),
                       nonfinite_total=scalar(meta["nonfinite_total"]))
    return state, _split_full_params(params, layout.frozen)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _flat(tree) -> dict[tuple, Any]:
  return {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflatten(flat: Mapping[tuple, Any]) -> dict:
  out: dict = {}
  for path, leaf in flat.items():
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf
  return out


def _name(path: tuple) -> str:
  return "/".join(str(k) for k in path)


def restore_init_from(path: str, layout: StateLayout, params: dict, frozen: dict
                      ) -> tuple[dict, dict, dict[str, list[str]]]:
  """Partial initialisation from another checkpoint (a stage-1 workdir or a converted official one).

  Parameters present in both with the same shape are loaded; parameters only in
  this model keep their fresh initialisation; parameters only in the source are
  ignored. Returns (params, frozen, report) where report lists 'loaded', 'initialised'
  and 'unused' parameter paths. A shape mismatch is an error naming the parameter.
  """
  source_dir = model_checkpoint.resolve_checkpoint_dir(path)
  source_step = model_checkpoint.latest_step(source_dir)
  source_config, _ = model_checkpoint.load_config(source_dir, source_step)
  from flax import nnx
  source_abstract = _flat(nnx.to_pure_dict(nnx.state(model_checkpoint.abstract_model(source_config), nnx.Param)))
  target = _flat(merge_params(layout.params, layout.frozen))
  mismatched = [f"{_name(k)}: checkpoint {source_abstract[k].shape} vs model {target[k].shape}"
                for k in sorted(set(source_abstract) & set(target), key=_name)
                if tuple(source_abstract[k].shape) != tuple(target[k].shape)]
  if mismatched:
    raise ValueError(f"config.init_from={path}: parameter shapes differ from this model's "
                     f"({len(mismatched)}): " + "; ".join(mismatched[:10]))
  shared = sorted(set(source_abstract) & set(target), key=_name)
  report = {"loaded": [_name(k) for k in shared],
            "initialised": sorted(_name(k) for k in set(target) - set(source_abstract)),
            "unused": sorted(_name(k) for k in set(source_abstract) - set(target))}
  if shared:
    subtree = _unflatten({k: target[k] for k in shared})
    # A fresh manager: the one that saved binds StandardCheckpointHandler, which
    # rejects the partial PyTreeRestore (stack.md §5).
    with ocp.CheckpointManager(source_dir) as manager:
      restored = manager.restore(source_step, args=ocp.args.Composite(**{PARAMS: ocp.args.PyTreeRestore(
          item=subtree, restore_args=ocp.checkpoint_utils.construct_restore_args(subtree),
          partial_restore=True)}))[PARAMS]
    loaded = _flat(restored)
    full = _flat(merge_params(params, frozen))
    full.update({k: loaded[k] for k in shared})
    full = _unflatten(full)
    params, frozen = _split_full_params(full, layout.params), _split_full_params(full, layout.frozen)
  return params, frozen, report


def format_init_report(path: str, report: Mapping[str, list[str]]) -> str:
  def modules(keys):
    names = sorted({"/".join(k.split("/")[:2]) if k.split("/")[0] in ("transformer", "decoder")
                    else k.split("/")[0] for k in keys})
    return ", ".join(names) or "-"
  return (f"init_from {path}: loaded {len(report['loaded'])} tensors [{modules(report['loaded'])}]; "
          f"initialised fresh {len(report['initialised'])} [{modules(report['initialised'])}]; "
          f"unused from checkpoint {len(report['unused'])} [{modules(report['unused'])}]")


