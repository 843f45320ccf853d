"""The JAX train step beside the PyTorch reference's, at equal work, in one process.

    python -m benchmarks.train_step_vs_torch [--batch_size 4] [--steps 3] [--torch_threads 2]
        [--profile_dir DIR]

Both sides train the official GR-1 (fine-tuning layout, both cameras, all heads, fp32,
random weights) on the same synthetic uint8 batches:

  JAX   : gr1_jax.training.train_step.make_train_step (the project's step, as in
          benchmarks/train_step.py).
  torch : tests/torch_reference/gr1_torch.py (the project's independent model of the
          official GR-1) in train mode (dropout 0.1), frozen CLIP/MAE (requires_grad off,
          so autograd records nothing for them, as under the official no_grad), the same
          on-the-fly torch-bicubic resize to 224 + ImageNet normalisation, the official
          losses (video t -> t+3, Smooth-L1 arm x 100, BCE gripper), clip_grad_norm 1.0
          and AdamW over the trainable parameters only (decay on matrices).

Steps alternate (JAX, torch, JAX, torch, ...) so the machine's other load hits both
alike; one warm-up step each is not timed. Printed: per-side median and fastest step,
the ratio torch / JAX (> 1: JAX faster), FLOPs and achieved FLOP/s (XLA cost analysis
of the JAX step; torch's FlopCounterMode count of one torch step, matmuls only), the
f32 2048^3 jnp.matmul rate measured between the steps, torch's thread count and the
load average. With --profile_dir, one more step of each side runs under its profiler
(jax.profiler perfetto trace, torch.profiler); benchmarks/profile_breakdown.py turns
the traces into the per-category table of docs/train_step_profile.md.
"""
from __future__ import annotations

import os
import statistics
import time

from absl import app, flags

from benchmarks.matmul_rate import matmul_timer
from benchmarks.torch_train_step import build_torch

_BATCH = flags.DEFINE_integer("batch_size", 4, "global batch (windows of 10 steps)")
_STEPS = flags.DEFINE_integer("steps", 3, "timed steps per side")
_VARIANT = flags.DEFINE_string("variant", "official", "experiments/configs/gr1_model.py variant")
_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads (the machine's cores)")
_PROFILE = flags.DEFINE_string("profile_dir", "", "write a jax and a torch profile of one step here")
_SIDES = flags.DEFINE_list("sides", ["jax", "torch"], "which sides to run (jax, torch)")
_PROFILE_SIDES = flags.DEFINE_list("profile_sides", ["jax", "torch"], "which sides --profile_dir profiles")


def build_jax(model_config, batch0):
  import jax

  from experiments.configs import finetune_calvin
  from gr1_jax import sharding
  from gr1_jax.training import optimizer
  from gr1_jax.training import train_state as ts
  from gr1_jax.training.aot import cost_analysis
  from gr1_jax.training.train_step import make_train_step

  config = finetune_calvin.get_config("default")
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_train_steps)
  layout = ts.make_layout(model_config, tx, sharding.make_mesh({"data": -1}))
  params, frozen, rngs = ts.init_model_state(layout, 0)
  state = ts.new_train_state(layout, tx, params)
  step = make_train_step(layout, tx, schedule, dict(config.loss_weights))
  t = time.perf_counter()
  compiled = step.lower(state, frozen, rngs, batch0).compile()
  compile_s = time.perf_counter() - t
  cost = cost_analysis(compiled)
  holder = {"state": state}

  def run(batch):
    holder["state"], metrics = compiled(holder["state"], frozen, rngs, batch)
    return float(jax.block_until_ready(metrics)["loss/total"])
  return run, float(cost.get("flops", float("nan"))), compile_s, compiled


def summary(name, times, flops):
  med, best = statistics.median(times), min(times)
  return (f"{name:6s} median {med:7.2f} s  fastest {best:7.2f} s  ({', '.join(f'{x:.2f}' for x in times)})"
          f"  {flops / med / 1e9:6.1f} GFLOP/s median, {flops / best / 1e9:6.1f} fastest")


def main(argv):
  del argv
  import jax
  import torch

  from data_pipelines.synthetic import synthetic_batch
  from experiments.configs import finetune_calvin, gr1_model
  from gr1_jax.losses import DEFAULT_WEIGHTS
  from gr1_jax.model_config import GR1Config

  torch.set_num_threads(_THREADS.value)
  sides = set(_SIDES.value)
  print(f"load average at start: {os.getloadavg()}; jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  model = GR1Config.from_dict(gr1_model.get_config(_VARIANT.value).to_dict()).replace(dtype="float32")
  config = finetune_calvin.get_config("default")
  batches = [synthetic_batch(i, batch_size=_BATCH.value, seq_len=model.seq_len, image_size=200, hand_size=84,
                             finetune=True) for i in range(_STEPS.value + 2)]
  runners, flops = {}, {}
  if "jax" in sides:
    runners["jax"], flops["jax"], compile_s, compiled = build_jax(model, batches[0])
    if _PROFILE.value:  # the optimized HLO names the ops of the trace (profile_breakdown.py)
      os.makedirs(_PROFILE.value, exist_ok=True)
      with open(os.path.join(_PROFILE.value, "jax_hlo.txt"), "w") as f:
        f.write(compiled.as_text())
    print(f"jax compile {compile_s:.1f} s; XLA cost analysis {flops['jax'] / 1e12:.3f} TFLOP per step")
  if "torch" in sides:
    runners["torch"], count_flops = build_torch(model, config.optimizer, {**DEFAULT_WEIGHTS, **config.loss_weights})
    t = time.perf_counter()
    flops["torch"] = count_flops(batches[0])  # doubles as torch's warm-up step
    print(f"torch warm-up (FlopCounterMode) {time.perf_counter() - t:.1f} s; "
          f"{flops['torch'] / 1e12:.3f} TFLOP per step (matmul/conv only)")
  measure_matmul = matmul_timer(2048)
  if "jax" in runners:
    runners["jax"](batches[0])  # warm-up
  times = {name: [] for name in runners}
  cpu_times = {name: [] for name in runners}   # process CPU seconds: less sensitive to other jobs
  losses = {name: [] for name in runners}
  matmul_rates = measure_matmul(3)
  for batch in batches[1:_STEPS.value + 1]:
    for name, run in runners.items():  # interleaved: jax, torch, jax, torch, ...
      t, c = time.perf_counter(), time.process_time()
      losses[name].append(run(batch))
      times[name].append(time.perf_counter() - t)
      cpu_times[name].append(time.process_time() - c)
    matmul_rates += measure_matmul(3)
  print(f"config: {_VARIANT.value}, float32, batch {_BATCH.value} x {model.seq_len} steps, static 200px + "
        f"wrist 84px -> {model.mae.image_size}px, both cameras, all heads")
  for name in runners:
    print(summary(name, times[name], flops[name]) + f"  losses {', '.join(f'{x:.3f}' for x in losses[name])}")
    print(f"       CPU time (all threads) per step: {', '.join(f'{x:.1f}' for x in cpu_times[name])} s")
  if len(runners) == 2:
    ratio_med = statistics.median(times["torch"]) / statistics.median(times["jax"])
    ratio_best = min(times["torch"]) / min(times["jax"])
    pairs = [t / j for t, j in zip(times["torch"], times["jax"])]
    print(f"ratio torch/jax: median {ratio_med:.2f}x, fastest {ratio_best:.2f}x, per interleaved pair "
          f"{', '.join(f'{x:.2f}' for x in pairs)} (> 1: JAX faster)")
    print(f"ratio of CPU seconds torch/jax: median "
          f"{statistics.median(cpu_times['torch']) / statistics.median(cpu_times['jax']):.2f}x")
    print(f"equal-work rate (torch's matmul FLOPs / time): jax "
          f"{flops['torch'] / statistics.median(times['jax']) / 1e9:.1f}, torch "
          f"{flops['torch'] / statistics.median(times['torch']) / 1e9:.1f} GFLOP/s (median)")
  print(f"f32 matmul 2048^3 (jnp): median {statistics.median(matmul_rates) / 1e9:.1f} GFLOP/s "
        f"(range {min(matmul_rates) / 1e9:.0f}-{max(matmul_rates) / 1e9:.0f})")
  print(f"load average at end: {os.getloadavg()}")
  if _PROFILE.value:
    profile({k: v for k, v in runners.items() if k in _PROFILE_SIDES.value}, batches[-1], _PROFILE.value)


def profile(runners, batch, out_dir):
  os.makedirs(out_dir, exist_ok=True)
  if "jax" in runners:
    import jax
    jax.profiler.start_trace(os.path.join(out_dir, "jax"), create_perfetto_trace=True)
    runners["jax"](batch)
    jax.profiler.stop_trace()
  if "torch" in runners:
    import torch.profiler as tp
    with tp.profile(activities=[tp.ProfilerActivity.CPU], with_stack=False, record_shapes=True) as prof:
      runners["torch"](batch)
    prof.export_chrome_trace(os.path.join(out_dir, "torch_trace.json"))
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    with open(os.path.join(out_dir, "torch_ops.txt"), "w") as f:
      f.write(table)
    print(table)
  print(f"profiles written to {out_dir}; load average {os.getloadavg()}")


if __name__ == "__main__":
  app.run(main)
