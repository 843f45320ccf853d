"""Training checkpoints: the shared model-checkpoint layout plus the optimizer and data state.

`<workdir>/checkpoints` is an Orbax CheckpointManager directory (gr1_jax/model_checkpoint.py)
whose steps hold
  params      all model parameters, frozen encoders included   (StandardSave)
  config      {"model": GR1Config.to_dict(), "experiment": the run's config}   (JSON)
  opt_state   the optimizer state of the trainable parameters  (StandardSave)
  train_meta  {"step", "nonfinite_run", "nonfinite_total"}      (JSON)
  data_iter   the Grain iterator position, one file per process
  norm_stats  (runs on LeRobot data only) the robot mapping + normalisation statistics,
              gr1_jax/norm_stats.py's JSON; GR1Policy applies them
so `load_model(workdir)` serves a training run exactly like a converted checkpoint.
Saves are asynchronous (device -> host copy is blocking, the write is not); a step
directory only appears under its final name once complete, so a run killed
mid-save resumes from the previous step. Restores take their target shardings
from the current run's layout, so a run resumes on a different mesh.

Damaged steps. Resume (`restore_newest_intact`) tries the newest step first and
falls back to older ones: a step that does not restore completely (truncated or
missing files, a missing item such as opt_state/) is skipped, and the caller logs
one warning naming it and the reason. The data iterator is rewound by the restore
that succeeds, so a run that fell back to step S continues exactly like one that
resumed from S directly. Step numbers stay training steps (the LR schedule, the
data position and `load_model(workdir, step=N)` all rely on that), so the run
continues from S with step counter S and saves S+k as usual, also while a damaged
step D > S is still the highest number in the directory. Damaged steps are left in
place and never deleted: the keep_checkpoints rotation ignores them (it keeps that
many *intact* steps). Only when the run reaches step D itself, whose name the damaged
directory occupies, is that directory renamed to `D.damaged` (`D.damaged.1`, ... if
taken; Orbax ignores such names) so the fresh step D can be written - the data is
kept, and a warning says where.

A different model size is not damage: resume compares the stored model config with
the requested one first and raises CheckpointMismatchError naming the config fields
and one parameter's stored vs requested shape.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from gr1_jax import model_checkpoint, url_paths
from gr1_jax.atomic_files import write_json  # noqa: F401  (used by the training loop)
from gr1_jax.model_config import GR1Config
from gr1_jax.model_checkpoint import CheckpointMismatchError, DamagedCheckpointError
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


@dataclasses.dataclass
class _KeepNewestIntact:
  """Orbax preservation policy: every damaged step, plus the newest `n` of the others.
  (Orbax's own LatestN would count damaged steps and, later, delete them.)"""
  n: int
  damaged: set[int]

  def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
    intact = sorted((c.step for c in checkpoints if c.step not in self.damaged), reverse=True)
    keep = set(intact[:self.n]) | self.damaged
    return [c.step in keep for c in checkpoints]


class TrainCheckpointer:
  """Saves and restores a run's TrainState + frozen params + data iterator + config."""

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.directory = url_paths.join(url_paths.absolute(workdir), "checkpoints")
    url_paths.as_epath(self.directory, "checkpoint directory")   # Orbax must be able to open it
    self.damaged: set[int] = set()   # steps found damaged by restore_newest_intact; never deleted
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True,
                                             preservation_policy=_KeepNewestIntact(keep, self.damaged)))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, frozen: dict, data_iter, experiment_config: Mapping[str, Any],
           model_config: GR1Config, norm_stats=None) -> int:
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
    if norm_stats is not None:
      items[model_checkpoint.NORM_STATS] = ocp.args.JsonSave(norm_stats.to_json())
    if step in self.damaged:
      self._move_damaged_aside(step)
    # force: Orbax would skip steps below its latest one, which a damaged higher step is.
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    return step

  def _move_damaged_aside(self, step: int) -> None:
    """Renames the damaged directory of `step` to `<step>.damaged[.k]` so this run can write
    the step; nothing is deleted."""
    self.manager.wait_until_finished()
    source = url_paths.as_epath(url_paths.join(self.directory, str(step)))
    target, k = source.parent / f"{step}.damaged", 0
    while target.exists():
      k += 1
      target = source.parent / f"{step}.damaged.{k}"
    if jax.process_index() == 0:
      source.rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"moved damaged checkpoint step {step}")
    self.manager.reload()   # Orbax caches the step list
    self.damaged.discard(step)
    # INFO: the resume's one warning already announced this move.
    log.info("checkpoint step %d: moved the damaged copy to %s (kept) to write this run's step %d",
             step, target, step)

  def restore(self, layout: StateLayout, data_iter, step: int | None = None) -> tuple[TrainState, dict]:
    """(TrainState, frozen params) of `step` (default latest), placed with layout's shardings;
    also rewinds `data_iter` to where that step left it. A step that does not restore
    completely raises DamagedCheckpointError."""
    step = self.latest_step() if step is None else step
    full = merge_params(layout.params, layout.frozen)
    items = {PARAMS: ocp.args.StandardRestore(full), OPT_STATE: ocp.args.StandardRestore(layout.opt_state),
             TRAIN_META: ocp.args.JsonRestore()}
    if data_iter is not None:
      items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = model_checkpoint.restore_items(self.directory, step, items, manager=self.manager)
    meta = restored[TRAIN_META]
    if not isinstance(meta, Mapping) or "step" not in meta:
      raise DamagedCheckpointError(self.directory, step, f"item {TRAIN_META}/ holds no step")
    if int(meta["step"]) != step:
      raise DamagedCheckpointError(self.directory, step, f"{TRAIN_META} says step {meta['step']}")
    scalar = lambda v: jax.device_put(np.int32(v), layout.train_state.step.sharding)
    params = restored[PARAMS]
    state = TrainState(step=scalar(meta["step"]), params=_split_full_params(params, layout.params),
                       opt_state=restored[OPT_STATE], nonfinite_run=scalar(meta["nonfinite_run"]),
                       nonfinite_total=scalar(meta["nonfinite_total"]))
    return state, _split_full_params(params, layout.frozen)

  def stored_model_config(self, step: int) -> GR1Config:
    """The model config a step was saved with (DamagedCheckpointError if unreadable)."""
    stored = model_checkpoint.restore_items(self.directory, step, {CONFIG: ocp.args.JsonRestore()},
                                            manager=self.manager)[CONFIG]
    if not isinstance(stored, Mapping) or not isinstance(stored.get("model"), Mapping):
      raise DamagedCheckpointError(self.directory, step, f"item {CONFIG}/ holds no model config")
    return GR1Config.from_dict(stored["model"])

  def check_model(self, step: int, model_config: GR1Config) -> None:
    """CheckpointMismatchError if `step` holds parameters of other shapes than `model_config`'s."""
    stored = self.stored_model_config(step)
    if stored == model_config:
      return
    differences = model_checkpoint.shape_differences(model_checkpoint.param_shapes(stored),
                                                     model_checkpoint.param_shapes(model_config))
    if not differences:
      return   # e.g. dtype or dropout: the stored state fits this model
    fields = model_checkpoint.config_differences(stored.to_dict(), model_config.to_dict())
    raise CheckpointMismatchError(
        f"cannot resume {self.directory} step {step}: the model differs: {'; '.join(fields[:5])}"
        f"{' (+%d more)' % (len(fields) - 5) if len(fields) > 5 else ''}; e.g. parameter {differences[0]}; "
        "resume with the stored model config, or give this model a new --workdir")

  def restore_newest_intact(self, layout: StateLayout, data_iter
                            ) -> tuple[TrainState, dict, int, list[tuple[int, str]]] | None:
    """Resume: (state, frozen, step, [(damaged step, reason), ...]) of the newest step that
    restores completely, or None when there is no step. Every process must agree on the
    step, so a step that fails on any process counts as damaged. Raises
    CheckpointMismatchError (another model) or DamagedCheckpointError (no intact step)."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    damaged: list[tuple[int, str]] = []
    checked_model = False
    for step in steps:
      try:
        if not checked_model:   # the newest readable config decides; older steps are the same run
          self.check_model(step, layout.model_config)
          checked_model = True
        state, frozen = self.restore(layout, data_iter, step)
        failure = None
      except DamagedCheckpointError as error:
        failure = error.reason
      if _any_process(failure is not None):
        damaged.append((step, failure or "damaged on another process"))
        self.damaged.add(step)
        continue
      return state, frozen, step, damaged
    reasons = "; ".join(f"step {s}: {r}" for s, r in damaged)
    raise DamagedCheckpointError(self.directory, damaged[0][0], reasons, message=(
        f"cannot resume: no step of {self.directory} restores completely ({reasons}); nothing was "
        "deleted; to start over, move that directory aside or use a new --workdir"))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def format_fallback(directory: str, step: int, damaged: Sequence[tuple[int, str]]) -> str:
  """The one warning of a resume that skipped damaged steps."""
  names = ", ".join(str(s) for s, _ in damaged)
  reasons = "; ".join(f"step {s}: {r}" for s, r in damaged)
  return (f"checkpoint step{'s' if len(damaged) > 1 else ''} {names} in {directory} "
          f"{'are' if len(damaged) > 1 else 'is'} damaged ({reasons}); resuming from step {step}, the newest "
          f"intact step. Damaged steps are left in place and never deleted; this run writes its steps "
          f"as usual, and on reaching a damaged step's number moves that copy to <step>.damaged")


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

  `path` is a checkpoint path as model_checkpoint's docstring describes: a workdir or
  checkpoint directory (its newest step) or one step directory (<workdir>/checkpoints/200).
  Parameters present in both with the same shape are loaded; parameters only in
  this model keep their fresh initialisation; parameters only in the source are
  ignored. Returns (params, frozen, report) where report lists 'loaded', 'initialised'
  and 'unused' parameter paths. A shape mismatch is a CheckpointMismatchError naming the
  parameters and config fields; a damaged step a DamagedCheckpointError that suggests
  the newest intact earlier step as a step directory for config.init_from.
  """
  source_dir, source_step = model_checkpoint.locate(path)

  def use(step_dir: str) -> str:
    return f"pass --config.init_from={step_dir} to start from it"

  try:
    source_config, _ = model_checkpoint.load_config(source_dir, source_step, suggest_intact=False)
  except DamagedCheckpointError as error:
    raise model_checkpoint.with_intact(error, use) from error.__cause__
  source_abstract = _flat(model_checkpoint.abstract_params(source_config))
  target = _flat(merge_params(layout.params, layout.frozen))
  mismatched = [f"{_name(k)}: checkpoint {source_abstract[k].shape} vs model {target[k].shape}"
                for k in sorted(set(source_abstract) & set(target), key=_name)
                if tuple(source_abstract[k].shape) != tuple(target[k].shape)]
  if mismatched:
    fields = model_checkpoint.config_differences(source_config.to_dict(), layout.model_config.to_dict())
    raise CheckpointMismatchError(
        f"config.init_from={path} (step {source_step}): parameter shapes differ from this model's "
        f"({len(mismatched)}): " + "; ".join(mismatched[:10]) + (" ..." if len(mismatched) > 10 else "")
        + f"; model config fields that differ: {'; '.join(fields[:5]) or 'none'}"
        + (" ..." if len(fields) > 5 else ""))
  shared = sorted(set(source_abstract) & set(target), key=_name)
  report = {"loaded": [_name(k) for k in shared],
            "initialised": sorted(_name(k) for k in set(target) - set(source_abstract)),
            "unused": sorted(_name(k) for k in set(source_abstract) - set(target))}
  if shared:
    subtree = _unflatten({k: target[k] for k in shared})
    # A fresh manager: the one that saved binds StandardCheckpointHandler, which
    # rejects the partial PyTreeRestore (stack.md §5).
    try:
      restored = model_checkpoint.restore_items(source_dir, source_step, {PARAMS: ocp.args.PyTreeRestore(
          item=subtree, restore_args=ocp.checkpoint_utils.construct_restore_args(subtree),
          partial_restore=True)})[PARAMS]
    except DamagedCheckpointError as error:
      raise model_checkpoint.with_intact(error, use) from error.__cause__
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


