"""`train_and_evaluate(config, workdir)`: the one training loop for both GR-1 stages.

The stage is decided by the model config alone: the pretraining layout (no
state, no [ACT], static camera) has only the video loss; the fine-tuning layout
has all of them. Phases, in order:

  1. setup       validate the config (data paths and init_from included), build the mesh,
                 optimizer and state layout
  2. data        per-process Grain iterators (train; validation for evaluation)
  3. state       resume the workdir's latest intact checkpoint, else config.init_from
                 (partial: loaded / fresh / unused parameters are logged), else scratch;
                 only now are the workdir and its checkpoints/ created, and the
                 TensorBoard writer only once the state exists, so a run that fails
                 to start leaves the workdir as it found it
  4. loop        one jitted step per global batch; the non-finite counter of the
                 previous step is checked while the current one runs
                 (K consecutive skipped steps stop the run); progress line,
                 evaluation + frame grids, asynchronous checkpoints
  5. stop        at num_train_steps, or on SIGTERM (checkpoint, then a clean return)

The workdir ends up holding
  checkpoints/               Orbax steps (gr1_jax/training/checkpointing.py); `load_model(workdir)` works
  tensorboard/               event files: train/*, eval/*, progress/*, frame grids, the config
  images/                    predicted_vs_real_<step>.png (+ predicted_vs_real_hand_<step>.png, wrist camera)
  config.json, summary.json  the run's config; final step, last metrics, how it was initialised
  init_from_report.json      loaded / freshly initialised / unused parameters (with init_from)
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from gr1_jax import mae_weights, model_checkpoint, sharding, url_paths, visualization
from gr1_jax.training import checkpointing, experiment_config, input_pipeline, metric_writers, optimizer
from gr1_jax.training import train_state as ts
from gr1_jax.training import video_baselines
from gr1_jax.training.eval_step import make_eval_step
from gr1_jax.training.preemption import StopRequest
from gr1_jax.training.progress import Progress, format_line
from gr1_jax.training.train_step import make_train_step, required_keys
from gr1_jax.user_errors import ConfigError

log = logging.getLogger("gr1_jax.train")


class NonFiniteError(FloatingPointError):
  """Too many consecutive steps had a non-finite loss or gradient."""


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  fetched = jax.device_get(history)
  out = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
  out["nonfinite"] = float(sum(m["nonfinite"] for m in fetched))   # skipped steps in the interval
  out.pop("nonfinite_run", None)
  return out


def evaluate(eval_step, state, frozen, rngs, eval_ds, config, layout, keys) -> tuple[dict, dict]:
  iterator = iter(eval_ds)
  history, sample = [], None
  for _ in range(config["eval_batches"]):
    batch = input_pipeline.to_global(next(iterator), keys, layout.mesh)
    metrics, first = eval_step(state.params, frozen, rngs, batch)
    history.append(metrics)
    sample = first if sample is None else sample
  fetched = jax.device_get(history)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}, jax.device_get(sample)


PREDICTION_IMAGES = {"predicted_vs_real": ("rgb", "obs_preds"),            # static camera
                     "predicted_vs_real_hand": ("hand_rgb", "obs_hand_preds")}  # wrist camera


def prediction_image(sample: Mapping, model_config, camera: str = "predicted_vs_real") -> np.ndarray:
  frames, preds = PREDICTION_IMAGES[camera]
  real, predicted, valid = visualization.window_prediction_frames(
      sample[frames], sample[preds], step_mask=sample["step_mask"],
      patch_size=model_config.mae.patch_size, fwd_pred_next_n=model_config.fwd_pred_next_n,
      norm_pix=model_config.norm_pix_loss)
  scale = max(1, 96 // real.shape[1])   # tiny demo frames are upscaled to stay visible
  return visualization.prediction_grid(visualization.upscale_nearest(real, scale),
                                       visualization.upscale_nearest(predicted, scale), step_valid=valid)


def _init_state(config, layout, tx, checkpointer, train_iter, workdir):
  """Phase 3: resume -> init_from -> scratch. Returns (state, frozen, rngs, how)."""
  rngs = ts.init_rngs(layout, config["seed"])
  # A damaged newest step falls back to the newest intact one (one warning); another model
  # size stops here, before anything is compiled (checkpointing.py's docstring).
  resumed = checkpointer.restore_newest_intact(layout, train_iter)
  if resumed is not None:
    state, frozen, step, damaged = resumed
    if damaged:
      log.warning(checkpointing.format_fallback(checkpointer.directory, step, damaged))
    return state, frozen, rngs, f"resumed from {checkpointer.directory} step {step}"
  params, frozen, _ = ts.init_model_state(layout, config["seed"])
  how = f"initialised from scratch (seed {config['seed']})"
  if config["init_from"]:
    params, frozen, report = checkpointing.restore_init_from(config["init_from"], layout, params, frozen)
    how = checkpointing.format_init_report(config["init_from"], report)
    if jax.process_index() == 0:
      checkpointing.write_json(url_paths.join(workdir, "init_from_report.json"),
                               {"init_from": config["init_from"], **report})
  return ts.new_train_state(layout, tx, params), frozen, rngs, how


def _check_init_from(init_from: str) -> None:
  """config.init_from must name a checkpoint (checked before the run creates anything)."""
  if not init_from:
    return
  what = ("set it to a stage-1 training workdir or a checkpoint directory written by "
          "`python -m experiments.convert from-official`, or to '' to start from scratch")
  if not url_paths.is_url(init_from) and not os.path.exists(init_from):
    raise ConfigError(f"config.init_from={init_from} does not exist; {what}")
  try:
    model_checkpoint.latest_step(init_from)
  except FileNotFoundError as exc:
    raise ConfigError(f"config.init_from={init_from}: {exc}; {what}") from None


@contextlib.contextmanager
def _removed_if_failed(*paths: str):
  """Local directories among `paths` that do not exist yet are removed again (if still
  empty) when the block raises. _init_state needs the checkpoint manager, whose
  construction creates checkpoints/, before it knows whether the state can be built
  (a damaged init_from fails only when read)."""
  new = [p for p in paths if not url_paths.is_url(p) and not os.path.exists(p)]
  try:
    yield
  except BaseException:
    for path in reversed(new):   # innermost first
      with contextlib.suppress(OSError):
        os.rmdir(path)           # only ever removes an empty directory
    raise


def train_and_evaluate(config: ml_collections.ConfigDict | Mapping, workdir: str) -> dict[str, Any]:
  """Trains until config.num_train_steps (or SIGTERM); returns a summary of the run."""
  # ---- 1. setup: every check comes before anything is created --------------------------
  config = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  model_config = experiment_config.validate(config)
  workdir = url_paths.absolute(workdir)
  primary = jax.process_index() == 0
  # Every process checks, so a missing gcsfs stops the whole pod now rather than
  # process 0 alone at its first TensorBoard write while the others wait for it.
  url_paths.as_epath(workdir, "workdir")
  mesh = sharding.make_mesh(config["mesh"])
  sharding.check_batch_size(config["batch_size"], mesh)
  frame_reuse = config["data"]["frame_reuse"]
  if frame_reuse:   # the training batch's leading dimension is batch_size / W segments
    sharding.check_batch_size(experiment_config.segments_per_batch(config), mesh,
                              field=f"config.batch_size / config.data.frame_reuse = {config['batch_size']} / {frame_reuse}")
  _check_init_from(config["init_from"])
  total = config["num_train_steps"]
  tx, schedule = optimizer.make_optimizer(config["optimizer"], total)
  layout = ts.make_layout(model_config, tx, mesh)
  weights = dict(config["loss_weights"])

  # ---- 2. data --------------------------------------------------------------------------
  keys = required_keys(model_config)
  train_ds = input_pipeline.make_dataset(config["data"], model_config, global_batch=config["batch_size"],
                                         seed=config["seed"], train=True)
  eval_ds = input_pipeline.make_dataset(config["data"], model_config, global_batch=config["batch_size"],
                                        seed=config["seed"], train=False)
  train_iter = iter(train_ds)
  norm = input_pipeline.norm_stats(config["data"], model_config)   # LeRobot runs: saved with every step
  if norm is not None:
    log.info("robot mapping and %s normalisation (%s) are saved with every checkpoint", norm.mode,
             norm.source or "no statistics")
  log.info("%s; global batch %d (%d per process)%s", sharding.describe(mesh), config["batch_size"],
           config["batch_size"] // jax.process_count(),
           f", frame reuse: {experiment_config.segments_per_batch(config)} segments of "
           f"{model_config.seq_len + frame_reuse - 1} frames x {frame_reuse} windows" if frame_reuse else "")

  # ---- 3. state -------------------------------------------------------------------------
  with _removed_if_failed(workdir, url_paths.join(workdir, "checkpoints")):
    if not url_paths.is_url(workdir):   # object stores have no directories to create
      os.makedirs(workdir, exist_ok=True)
    checkpointer = checkpointing.TrainCheckpointer(workdir, keep=config["keep_checkpoints"],
                                                   async_save=config["async_checkpointing"])
    try:
      resumed = checkpointer.latest_step() is not None
      state, frozen, rngs, how = _init_state(config, layout, tx, checkpointer, train_iter, workdir)
      if config["mae_from"] and not resumed:   # over init_from's MAE; a resumed run has it in its checkpoint
        frozen = mae_weights.replace_in_frozen(config["mae_from"], model_config.mae, frozen, layout.frozen)
        how += f"; frozen MAE from {config['mae_from']}"
    except BaseException:
      checkpointer.close()
      raise
  # Created only now: a failed resume adds no event file to the workdir.
  writer = metric_writers.create_writer(url_paths.join(workdir, "tensorboard"), active=primary)
  start = int(jax.device_get(state.step))
  log.info("%s; %s trainable + %s frozen parameters", how, f"{ts.count_params(layout.params):,}",
           f"{ts.count_params(layout.frozen):,}")
  if primary and start == 0:
    writer.write_hparams(config)
    checkpointing.write_json(url_paths.join(workdir, "config.json"), config)

  def save(reason: str) -> None:
    step = checkpointer.save(state, frozen, train_iter, config, model_config, norm_stats=norm)
    log.info("checkpoint step %d (%s) -> %s", step, reason, checkpointer.directory)

  # ---- 4. loop --------------------------------------------------------------------------
  train_step = make_train_step(layout, tx, schedule, weights, frame_reuse=frame_reuse)
  eval_step = make_eval_step(layout, weights)
  progress = Progress(total_steps=total, global_batch=config["batch_size"], start_step=start)
  history, previous, last_train, last_eval, baselines = [], None, {}, {}, None
  stopped_by = None
  step = start
  t_start = time.perf_counter()
  with StopRequest() as stop, contextlib.ExitStack() as cleanup:
    cleanup.callback(writer.close)
    cleanup.callback(checkpointer.close)    # runs first: waits for the last asynchronous save
    while step < total:
      batch = input_pipeline.to_global(next(train_iter), keys, mesh)
      state, metrics = train_step(state, frozen, rngs, batch)
      step += 1
      if step == start + 1:
        log.info("first step (compilation included) took %.1f s", time.perf_counter() - t_start)
        progress.reset_clock(step)
      if previous is not None:
        run = int(jax.device_get(previous["nonfinite_run"]))
        if run >= config["max_consecutive_nonfinite"]:
          raise NonFiniteError(
              f"{run} consecutive steps (up to step {step - 1}) had a non-finite loss or gradient; their "
              f"updates were skipped (config.max_consecutive_nonfinite={config['max_consecutive_nonfinite']}). "
              f"The last checkpoint in {checkpointer.directory} is finite.")
        if int(jax.device_get(previous["nonfinite"])):
          log.warning("step %d: non-finite loss or gradient; update skipped", step - 1)
      previous = metrics
      history.append(metrics)

      if step % config["log_every"] == 0 or step == total:
        last_train = _mean_metrics(history)
        history = []
        rates = progress.update(step)
        log.info(format_line(step, total, last_train["loss/total"], rates))
        writer.write_scalars(step, {f"train/{k}": v for k, v in last_train.items()}
                            | {f"progress/{k}": v for k, v in rates.items()})

      if step % config["eval_every"] == 0 or step == total:
        last_eval, sample = evaluate(eval_step, state, frozen, rngs, eval_ds, config, layout, keys)
        if baselines is None:   # the same batches at every evaluation: computed once
          baselines = video_baselines.compute(eval_ds, config["eval_batches"], model_config,
                                              lambda b: input_pipeline.to_global(b, keys, mesh))
        last_eval.update(baselines)
        if primary and video_baselines.comparison_line(step, last_eval):
          log.info(video_baselines.comparison_line(step, last_eval))
        writer.write_scalars(step, {f"eval/{k}": v for k, v in last_eval.items()})
        if primary and sample and (step % config["image_every"] == 0 or step == total):
          for name, (_, preds) in PREDICTION_IMAGES.items():
            if preds in sample:
              image = prediction_image(sample, model_config, name)
              writer.write_images(step, {f"eval/{name}": image})
              visualization.save_png(url_paths.join(workdir, "images", f"{name}_{step:07d}.png"), image)
        writer.flush()
        progress.reset_clock(step)

      saved = step % config["checkpoint_every"] == 0 or step == total
      if saved:
        save("periodic" if step < total else "final")
        progress.reset_clock(step)
      if step < total and stop.should_stop(step):
        stopped_by = stop.signal_name
        if not saved:
          save(f"stop requested by {stopped_by}")
        break

  # ---- 5. stop --------------------------------------------------------------------------
  summary = {"step": step, "start_step": start, "stopped_by": stopped_by, "train": last_train,
             "eval": last_eval, "init": how, "seconds": time.perf_counter() - t_start}
  if primary:
    checkpointing.write_json(url_paths.join(workdir, "summary.json"), summary)
  log.info("done at step %d (%s)", step, f"stopped by {stopped_by}" if stopped_by else "finished")
  return summary
