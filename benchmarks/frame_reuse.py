"""Training windows per second with frame reuse (config.data.frame_reuse = W) vs the per-window step.

    python -m benchmarks.frame_reuse [--variant official] [--segments 4] [--windows 10] \
        [--baseline_batch 4] [--steps 2] [--dtype float32]

Official size, as measured in docs/frame_reuse.md (float32, CPU; about 10 GB of host
memory per path; minutes):

    python -m benchmarks.frame_reuse --variant official --segments 2 --windows 10 --baseline_batch 4

Each path runs in a subprocess of its own (so each reports its own peak RSS and the
first's memory is returned before the second starts): the real jitted train step of
gr1_jax/training/train_step.py (fine-tuning layout: both cameras, all heads; CALVIN's
200 px static and 84 px wrist frames resized on device) on synthetic batches,
  per-window  --baseline_batch windows of seq_len steps (default: the same number of
              windows as the reuse step, segments x windows; at the official size that
              does not fit in this machine's memory, so pass e.g. 4: on a CPU the step
              time grows linearly with the windows once the batch is a few windows)
  reuse       --segments segments of seq_len + W - 1 frames = segments x W windows.
--compile_only compiles both steps on abstract inputs and prints only the FLOPs per window
(seconds of CPU and little memory even at the official size). Printed per path: compile time, step time (median of --steps after one warm-up step),
windows/s, peak RSS, XLA's FLOPs per window (cost analysis of the compiled step); then
the ratio of windows/s (the issue's target: >= 4x) and of FLOPs per window. The FLOP ratio
does not depend on the machine's load; the time ratio does, so the load average is
printed before and after each path.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_VARIANT = flags.DEFINE_string("variant", "official", "experiments/configs/gr1_model.py variant")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_SEGMENTS = flags.DEFINE_integer("segments", 4, "segments per reuse batch")
_WINDOWS = flags.DEFINE_integer("windows", 10, "windows per segment (config.data.frame_reuse)")
_BASELINE = flags.DEFINE_integer("baseline_batch", 0, "windows per per-window batch (0: segments x windows)")
_STEPS = flags.DEFINE_integer("steps", 2, "timed steps per path")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "compile both steps and compare FLOPs per window only "
                                  "(no parameters initialised, no step run: little memory, no timing)")
_MODE = flags.DEFINE_enum("mode", "both", ["both", "window", "reuse"], "internal: one path in this process")
_RESULT = flags.DEFINE_string("result_file", "", "internal: where a one-path run writes its JSON result")


def run_path(mode: str) -> dict:
  import jax
  from data_pipelines import frame_reuse as reuse
  from data_pipelines.synthetic import synthetic_batch
  from experiments.configs import finetune_calvin, gr1_model
  from gr1_jax import sharding
  from gr1_jax.model_config import GR1Config
  from gr1_jax.training import optimizer
  from gr1_jax.training import train_state as ts
  from gr1_jax.training.aot import cost_analysis
  from gr1_jax.training.train_step import make_train_step

  model = GR1Config.from_dict(gr1_model.get_config(_VARIANT.value).to_dict()).replace(dtype=_DTYPE.value)
  config = finetune_calvin.get_config("default")
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_train_steps)
  layout = ts.make_layout(model, tx, sharding.make_mesh({"data": -1}, jax.devices()[:1]))
  if mode == "reuse":
    frame_reuse, batch, steps = _WINDOWS.value, _SEGMENTS.value, reuse.segment_length(model.seq_len, _WINDOWS.value)
    windows = _SEGMENTS.value * _WINDOWS.value
  else:
    frame_reuse, steps = 0, model.seq_len
    batch = windows = _BASELINE.value or _SEGMENTS.value * _WINDOWS.value
  batches = [synthetic_batch(i, batch_size=batch, seq_len=steps, image_size=200, hand_size=84,
                             action_chunk=model.action_chunk, finetune=model.use_state)
             for i in range(_STEPS.value + 1)]
  step = make_train_step(layout, tx, schedule, dict(config.loss_weights), frame_reuse=frame_reuse)
  load_before = os.getloadavg()
  t = time.perf_counter()
  compiled = step.lower(layout.train_state, layout.frozen, layout.rngs, batches[0]).compile()
  compile_s = time.perf_counter() - t
  cost = cost_analysis(compiled)
  result = {"mode": mode, "windows": windows, "batch": batch, "steps_per_element": steps, "compile_s": compile_s,
            "flops_per_window": float(cost.get("flops", float("nan"))) / windows}
  print(f"  {mode}: compiled in {compile_s:.1f} s, {result['flops_per_window'] / 1e9:.1f} GFLOP per window; "
        f"load {tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
  if _COMPILE_ONLY.value:
    return result
  params, frozen, rngs = ts.init_model_state(layout, 0)
  state = ts.new_train_state(layout, tx, params)
  state, metrics = compiled(state, frozen, rngs, batches[0])      # warm-up
  jax.block_until_ready(metrics)
  times = []
  for b in batches[1:]:
    t = time.perf_counter()
    state, metrics = compiled(state, frozen, rngs, b)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  step_s = statistics.median(times)
  return {**result, "step_s": step_s, "times": times, "windows_per_s": windows / step_s,
          "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
          "loss": float(metrics["loss/total"]), "load_before": load_before, "load_after": os.getloadavg()}


def main(argv):
  del argv
  if _MODE.value != "both":
    with open(_RESULT.value, "w") as f:
      json.dump(run_path(_MODE.value), f)
    return
  flags_out = [f"--variant={_VARIANT.value}", f"--dtype={_DTYPE.value}", f"--segments={_SEGMENTS.value}",
               f"--windows={_WINDOWS.value}", f"--baseline_batch={_BASELINE.value}", f"--steps={_STEPS.value}",
               f"--compile_only={_COMPILE_ONLY.value}"]
  print(f"load average at start: {os.getloadavg()}; variant {_VARIANT.value}, {_DTYPE.value}, "
        f"{_SEGMENTS.value} segments x {_WINDOWS.value} windows vs per-window batch "
        f"{_BASELINE.value or _SEGMENTS.value * _WINDOWS.value}", flush=True)
  results = {}
  for mode in ("window", "reuse"):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "result.json")
      proc = subprocess.run([sys.executable, "-m", "benchmarks.frame_reuse", f"--mode={mode}",
                             f"--result_file={path}", *flags_out], check=False)
      if proc.returncode or not os.path.exists(path):
        sys.exit(f"{mode} path failed (exit {proc.returncode})")
      with open(path) as f:
        r = results[mode] = json.load(f)
    if _COMPILE_ONLY.value:
      print(f"{mode:>6}: {r['windows']} windows ({r['batch']} x {r['steps_per_element']} steps), compile "
            f"{r['compile_s']:.1f} s, {r['flops_per_window'] / 1e9:.1f} GFLOP/window", flush=True)
      continue
    print(f"{mode:>6}: {r['windows']} windows ({r['batch']} x {r['steps_per_element']} steps), compile "
          f"{r['compile_s']:.1f} s, step {r['step_s']:.2f} s (median of {', '.join(f'{x:.2f}' for x in r['times'])}), "
          f"{r['windows_per_s']:.3f} windows/s, {r['flops_per_window'] / 1e9:.1f} GFLOP/window, peak RSS "
          f"{r['peak_rss_gb']:.2f} GB, loss {r['loss']:.4f}; load {tuple(round(x, 2) for x in r['load_before'])} "
          f"-> {tuple(round(x, 2) for x in r['load_after'])}", flush=True)
  w, s = results["window"], results["reuse"]
  if _COMPILE_ONLY.value:
    print(f"frame reuse: {w['flops_per_window'] / s['flops_per_window']:.2f}x fewer FLOPs per window "
          f"(compile only, nothing timed); load average at end: {os.getloadavg()}")
    return
  print(f"frame reuse: {s['windows_per_s'] / w['windows_per_s']:.2f}x the per-window windows/s (target >= 4x); "
        f"{w['flops_per_window'] / s['flops_per_window']:.2f}x fewer FLOPs per window; "
        f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
  app.run(main)
