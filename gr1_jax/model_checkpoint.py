"""The on-disk model checkpoint shared by conversion, training, evaluation and the policy.

A checkpoint directory is an Orbax CheckpointManager directory. Every step holds
  params   the model's nnx.Param state as a nested dict (StandardSave)
  config   JSON: {"model": GR1Config.to_dict(), ...anything the writer adds}
  norm_stats  optional JSON (gr1_jax/norm_stats.py): a robot's state/action mapping and
           normalisation statistics, `<step>/norm_stats/metadata`; absent = CALVIN's raw values
and a training step additionally holds the optimizer state, the data-iterator
state and training metadata as further items (see gr1_jax.training). Anything
that only needs weights restores `params` + `config` and ignores the rest, so a
converted official checkpoint and a training workdir load the same way.

Choosing a step. Every loader takes a "checkpoint path", which is one of
  a training workdir            <workdir>            (its checkpoints/ subdirectory)
  a checkpoint directory        <workdir>/checkpoints, or a converted checkpoint
  one step of either            <workdir>/checkpoints/200
and an optional `step`. Without a step (and without a step directory) the
newest step is meant. A step directory is the way to pick a step where only a
path can be given (`--config.init_from=<workdir>/checkpoints/200`), so the error
messages below suggest one.

Damage. A step whose files were truncated, deleted or otherwise cannot be read
raises DamagedCheckpointError (a UserError: one line naming the directory, the
step, what failed and the newest intact earlier step, if any). Loading never
falls back silently: a different step than asked for must be asked for. (Training
resume does fall back, with a warning: gr1_jax/training/checkpointing.py.)
Damage is found by attempting the restore, since it can sit anywhere (ocdbt
manifests, zarr chunks, _METADATA, a missing item directory).
"""
from __future__ import annotations

import functools
import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from gr1_jax import url_paths
from gr1_jax.model_config import GR1Config
from gr1_jax.user_errors import UserError

log = logging.getLogger(__name__)

PARAMS, CONFIG = "params", "config"
NORM_STATS = "norm_stats"   # optional item: gr1_jax/norm_stats.py (runs on LeRobot data)


class DamagedCheckpointError(UserError):
  """A checkpoint step that does not restore completely (truncated or missing files, a missing item).

  Attributes: directory, step, reason (short, no TensorStore dump) and intact, the
  newest intact earlier step or None.
  """

  def __init__(self, directory: str, step: int, reason: str, *, intact: int | None = None,
               how_to_use: Callable[[str], str] | None = None, message: str | None = None):
    self.directory, self.step, self.reason, self.intact = directory, step, reason, intact
    if message is not None:
      advice = None
    elif intact is None:
      advice = "it has no intact earlier step"
    else:
      step_dir = url_paths.join(directory, str(intact))
      advice = f"intact earlier step: {intact}; " + (how_to_use or use_step_directory)(step_dir)
    super().__init__(message or f"checkpoint {directory} step {step} is damaged ({reason}); {advice}")


class CheckpointMismatchError(UserError, ValueError):
  """The stored model has other parameter shapes than the one requested (e.g. another model size)."""


def use_step_directory(step_dir: str) -> str:
  return f"load {step_dir} instead (a step directory is accepted wherever a checkpoint path is)"


def _split_step_dir(directory) -> tuple[Any, int | None]:
  """(checkpoint directory, step) when `directory` is one step of it, else (directory, None)."""
  if directory.name.isdigit() and any((directory / marker).exists()
                                      for marker in ("_CHECKPOINT_METADATA", PARAMS, CONFIG)):
    return directory.parent, int(directory.name)
  return directory, None


def resolve_checkpoint_dir(path: str) -> str:
  """Accepts a checkpoint directory or a training workdir (which keeps them in checkpoints/),
  local or a URL (gs://bucket/run). A step directory (<dir>/200) is returned as it is:
  the loaders below read the step from it."""
  directory = url_paths.as_epath(path, "checkpoint")
  if (directory / "checkpoints").is_dir():
    return str(directory / "checkpoints")
  if not directory.is_dir():
    raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
  return str(directory)


def all_steps(directory: str) -> list[int]:
  """The checkpoint directory's steps, oldest first (damaged ones included: Orbax lists every
  finished step directory)."""
  with ocp.CheckpointManager(directory) as manager:
    return sorted(manager.all_steps())


def locate(path: str, step: int | None = None) -> tuple[str, int]:
  """(checkpoint directory, step) for a checkpoint path (module docstring) and optional step."""
  directory, from_path = _split_step_dir(url_paths.as_epath(resolve_checkpoint_dir(path), "checkpoint"))
  directory = str(directory)
  if from_path is not None and step is not None and step != from_path:
    raise UserError(f"checkpoint {path} is step {from_path}, but step {step} was requested")
  step = from_path if step is None else step
  steps = all_steps(directory)
  if step is None:
    if not steps:
      raise FileNotFoundError(f"{directory} holds no complete checkpoint step")
    return directory, steps[-1]
  if step not in steps:
    raise UserError(f"checkpoint {directory} has no step {step} (steps: "
                    f"{', '.join(map(str, steps)) or 'none'})")
  return directory, step


def latest_step(directory: str) -> int:
  """The newest step (or the step of a step directory); it may be damaged, see newest_intact_step."""
  return locate(directory)[1]


# ---------------------------------------------------------------------------- damage
_TS_CODE = re.compile(r"^[A-Z_]+: ")
_TS_DATABASE = re.compile(r' in OCDBT database at local file "[^"]*"')


def _file_problems(root, items: Sequence[str]) -> list[str]:
  """Damage visible without reading arrays: missing item directories, missing or unparsable
  JSON files (item metadata, the pytree _METADATA index, per-process iterator states)."""
  problems = []
  for item in items:
    if not (root / item).is_dir():
      problems.append(f"item {item}/ is missing")
      continue
    files = [p for p in (root / item).iterdir() if p.name in ("metadata", "_METADATA") or p.name.endswith(".json")]
    if (root / item / "manifest.ocdbt").exists() and not (root / item / "_METADATA").exists():
      problems.append(f"{item}/_METADATA is missing")
    for path in files:
      try:
        json.loads(path.read_text())
      except (ValueError, OSError):
        problems.append(f"{item}/{path.name} is not valid JSON (truncated?)")
  return problems


def describe_failure(step_dir: str, error: BaseException, items: Sequence[str]) -> str:
  """A short reason why restoring `items` of `step_dir` failed: file-level damage if some is
  visible, else the innermost error of the chain (the one naming the file or array) without
  the TensorStore spec the outer errors wrap around it."""
  root = url_paths.as_epath(step_dir, "checkpoint step")
  problems = _file_problems(root, items)
  if problems:
    return "; ".join(problems)
  chain, x = [], error
  while x is not None and x not in chain:
    chain.append(x)
    x = x.__cause__ or x.__context__
  innermost = next((x for x in reversed(chain) if str(x).strip()), error)
  text = str(innermost).split("[tensorstore_spec")[0].split("See full TensorStore details")[0]
  text = text.strip().splitlines()[0] if text.strip() else type(innermost).__name__
  text = _TS_DATABASE.sub("", _TS_CODE.sub("", text)).replace(str(root) + "/", "").strip(" .")
  mentioned = " ".join(str(x) for x in chain)
  where = [item for item in items if f"{root}/{item}" in mentioned]
  if where and not text.startswith(where[0]):
    text = f"{where[0]}: {text}"
  if "Requested byte range" in text or "Truncated" in text:   # how a short or absent data file reads
    text += " (a data file is truncated or missing)"
  return text if len(text) <= 300 else text[:297] + "..."


def _is_closed_loop_callback(unraisable) -> bool:
  """A TensorStore read finishing after Orbax closed the event loop of a failed restore."""
  if unraisable.exc_type is not RuntimeError or str(unraisable.exc_value) != "Event loop is closed":
    return False
  frames = traceback.extract_tb(unraisable.exc_traceback)
  return any(f.name == "call_soon_threadsafe" and "asyncio" in f.filename for f in frames)


def _silence_closed_loop_callbacks() -> None:
  """When one array of a restore fails, Orbax closes its event loop while TensorStore still
  reads the others; each of those then reports 'RuntimeError: Event loop is closed' from a
  C++ thread through sys.unraisablehook (dozens of tracebacks after the one real error).
  Drop exactly those, pass everything else on; installed once, on the first failed restore."""
  previous = sys.unraisablehook
  if getattr(previous, "_gr1_closed_loop_filter", False):
    return

  def hook(unraisable):
    if not _is_closed_loop_callback(unraisable):
      previous(unraisable)

  hook._gr1_closed_loop_filter = True
  sys.unraisablehook = hook


def restore_items(directory: str, step: int, items: Mapping[str, Any], *,
                  manager: ocp.CheckpointManager | None = None) -> dict:
  """manager.restore(step, Composite(**items)); a failure is a DamagedCheckpointError (without
  an intact step: callers that suggest one look it up). The original error stays chained and
  is logged at debug level."""
  try:
    if manager is not None:
      return manager.restore(step, args=ocp.args.Composite(**items))
    with ocp.CheckpointManager(directory) as own:
      return own.restore(step, args=ocp.args.Composite(**items))
  except Exception as error:   # noqa: BLE001 - any failure to read a step is damage of that step
    _silence_closed_loop_callbacks()
    reason = describe_failure(url_paths.join(directory, str(step)), error, list(items))
    log.debug("restoring %s step %d failed", directory, step, exc_info=True)
    raise DamagedCheckpointError(directory, step, reason) from error


def _model_items_reason(directory: str, step: int) -> str | None:
  """None if the step's config and params restore completely, else why not."""
  try:
    config, _ = load_config(directory, step, suggest_intact=False)
    load_params(directory, config, step=step, suggest_intact=False)
  except DamagedCheckpointError as error:
    return error.reason
  return None


def newest_intact_step(directory: str, below: int | None = None,
                       reason: Callable[[str, int], str | None] = _model_items_reason) -> int | None:
  """The newest step (under `below`) for which `reason(directory, step)` finds nothing wrong;
  by default one whose config and params restore completely."""
  for step in reversed(all_steps(directory)):
    if (below is None or step < below) and reason(directory, step) is None:
      return step
  return None


def with_intact(error: DamagedCheckpointError, how_to_use=None) -> DamagedCheckpointError:
  intact = newest_intact_step(error.directory, below=error.step)
  return DamagedCheckpointError(error.directory, error.step, error.reason, intact=intact, how_to_use=how_to_use)


# ---------------------------------------------------------------------------- mismatch
def config_differences(stored: Mapping, requested: Mapping, prefix: str = "config.model") -> list[str]:
  """'<prefix>.<field>: checkpoint A, this run B' for every differing (nested) field."""
  out = []
  for key in sorted(set(stored) | set(requested)):
    a, b = stored.get(key, "<absent>"), requested.get(key, "<absent>")
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out += config_differences(a, b, f"{prefix}.{key}")
    elif a != b:
      out.append(f"{prefix}.{key}: checkpoint {a}, this run {b}")
  return out


@functools.lru_cache(maxsize=8)
def _abstract_params(config: GR1Config) -> dict:
  # Tracing the model takes seconds, and a load traces it up to three times (shape check,
  # restore target, the intact-step probe); ShapeDtypeStructs are immutable, so share them.
  return nnx.to_pure_dict(nnx.state(abstract_model(config), nnx.Param))


def abstract_params(config: GR1Config) -> dict:
  """Nested dict of jax.ShapeDtypeStruct: the parameters of a model with `config`."""
  return jax.tree.map(lambda a: a, _abstract_params(config))   # a fresh container for the caller


def param_shapes(config: GR1Config) -> dict[str, tuple]:
  """{'a/b/c': shape} of every parameter of a model with `config` (no arrays are made)."""
  flat = jax.tree_util.tree_flatten_with_path(_abstract_params(config))[0]
  return {"/".join(str(k.key) for k in path): tuple(leaf.shape) for path, leaf in flat}


def shape_differences(stored: Mapping[str, tuple], requested: Mapping[str, tuple]) -> list[str]:
  """'<param>: checkpoint S vs model R' for parameters in both with different shapes, then
  those only in one of them."""
  shared = sorted(set(stored) & set(requested))
  out = [f"{k}: checkpoint {stored[k]} vs model {requested[k]}" for k in shared if stored[k] != requested[k]]
  out += [f"{k}: only in the checkpoint" for k in sorted(set(stored) - set(requested))]
  out += [f"{k}: only in this model" for k in sorted(set(requested) - set(stored))]
  return out


# ---------------------------------------------------------------------------- save / load
def save_model_checkpoint(directory: str, params: Any, config: GR1Config, *, step: int = 0,
                          extra_config: dict | None = None, norm_stats=None) -> str:
  """Writes `params` (nested dict of arrays) + config (+ a gr1_jax.norm_stats.NormStats) as
  `step` of a new or existing directory."""
  directory = str(url_paths.as_epath(directory, "checkpoint"))
  items = {PARAMS: ocp.args.StandardSave(params),
           CONFIG: ocp.args.JsonSave({"model": config.to_dict(), **(extra_config or {})})}
  if norm_stats is not None:
    items[NORM_STATS] = ocp.args.JsonSave(norm_stats.to_json())
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False)) as manager:
    manager.save(step, args=ocp.args.Composite(**items))
    manager.wait_until_finished()
  return directory


def load_config(directory: str, step: int | None = None, *, suggest_intact: bool = True) -> tuple[GR1Config, dict]:
  """(model config, the whole stored config dict) of a checkpoint step (default: the newest).
  `directory` is any checkpoint path (module docstring)."""
  directory, step = locate(directory, step)
  try:
    stored = restore_items(directory, step, {CONFIG: ocp.args.JsonRestore()})[CONFIG]
    if not isinstance(stored, Mapping):   # an unreadable JSON item restores as None
      raise DamagedCheckpointError(directory, step, f"item {CONFIG}/ holds no JSON object")
  except DamagedCheckpointError as error:
    if not suggest_intact:
      raise
    raise with_intact(error) from error.__cause__
  if "model" not in stored:
    raise ValueError(f"{directory} step {step}: config has no 'model' entry (keys: {sorted(stored)})")
  return GR1Config.from_dict(stored["model"]), dict(stored)


def load_norm_stats(directory: str, step: int | None = None):
  """The step's gr1_jax.norm_stats.NormStats, or None when the step has no norm_stats item."""
  from gr1_jax.norm_stats import NormStats
  directory, step = locate(directory, step)
  if not (url_paths.as_epath(directory, "checkpoint") / str(step) / NORM_STATS).exists():
    return None
  stored = restore_items(directory, step, {NORM_STATS: ocp.args.JsonRestore()})[NORM_STATS]
  try:
    return NormStats.from_json(stored)
  except (KeyError, TypeError, ValueError) as exc:
    raise DamagedCheckpointError(directory, step, f"item {NORM_STATS}/ is unusable: {exc}") from None


def abstract_model(config: GR1Config):
  from gr1_jax.modules.gr1 import GR1  # local: building a model is only needed here
  return nnx.eval_shape(lambda: GR1(config, rngs=nnx.Rngs(0)))


def load_params(directory: str, config: GR1Config, *, step: int | None = None, shardings=None,
                suggest_intact: bool = True):
  """Restores the `params` item; `shardings` (a matching tree of jax Shardings) places it."""
  directory, step = locate(directory, step)
  abstract = abstract_params(config)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  try:
    return restore_items(directory, step, {PARAMS: ocp.args.StandardRestore(target)})[PARAMS]
  except DamagedCheckpointError as error:
    if not suggest_intact:
      raise
    raise with_intact(error) from error.__cause__


def build_model(config: GR1Config, params) -> "GR1":
  """A GR1 module holding `params` (nested dict) without materialising a random init."""
  from gr1_jax.modules.gr1 import GR1
  graphdef, param_state, rest = nnx.split(abstract_model(config), nnx.Param, ...)
  nnx.replace_by_pure_dict(param_state, params)
  # Non-parameter state (dropout RNG streams) is tiny; jit lets XLA drop the unused param init.
  rest = jax.jit(lambda: nnx.state(GR1(config, rngs=nnx.Rngs(0)), nnx.Not(nnx.Param)))()
  return nnx.merge(graphdef, param_state, rest)


def load_model(directory: str, *, step: int | None = None):
  """A ready GR1 model in eval mode from a checkpoint path (module docstring) and optional step.
  A damaged step raises DamagedCheckpointError naming the newest intact earlier step."""
  directory, step = locate(directory, step)
  config, _ = load_config(directory, step)
  model = build_model(config, load_params(directory, config, step=step))
  model.eval()
  return model


def numpy_params(model) -> dict:
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
