"""Train-step speed of the official GR-1 (fine-tuning layout, both cameras) on this machine.

    python -m benchmarks.train_step [--batch_size 8] [--steps 3] [--variant official] [--dtype float32]

Prints compile time, step time (median of --steps after one warm-up step), examples/s,
peak host memory (max RSS; the CPU backend has no device memory statistics), the
step's FLOPs from XLA's cost analysis, the achieved FLOP/s, and that as a fraction of
this machine's f32 matmul FLOP/s (2048^3 jnp.matmul, runs interleaved with the timed
steps, so both see the same machine load). On a shared machine both figures swing
with other jobs; the headline ratio compares best with best (fastest step vs fastest
matmul), the median ratio is printed beside it. The load average is printed too.
"""
from __future__ import annotations

import os
import resource
import statistics
import time

from absl import app, flags

from benchmarks.matmul_rate import matmul_timer

_BATCH = flags.DEFINE_integer("batch_size", 8, "global batch (windows of 10 steps)")
_STEPS = flags.DEFINE_integer("steps", 3, "timed steps")
_VARIANT = flags.DEFINE_string("variant", "official", "experiments/configs/gr1_model.py variant")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "side of the reference f32 matmul")


def main(argv):
  del argv
  import jax
  from data_pipelines.synthetic import synthetic_batch
  from experiments.configs import finetune_calvin, gr1_model
  from gr1_jax import sharding
  from gr1_jax.model_config import GR1Config
  from gr1_jax.training import optimizer
  from gr1_jax.training import train_state as ts
  from gr1_jax.training.aot import cost_analysis
  from gr1_jax.training.train_step import make_train_step

  print(f"load average at start: {os.getloadavg()}; {jax.device_count()} {jax.devices()[0].platform} device(s)")
  model = GR1Config.from_dict(gr1_model.get_config(_VARIANT.value).to_dict()).replace(dtype=_DTYPE.value)
  config = finetune_calvin.get_config("default")
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_train_steps)
  layout = ts.make_layout(model, tx, sharding.make_mesh({"data": -1}))
  t = time.perf_counter()
  params, frozen, rngs = ts.init_model_state(layout, 0)
  state = ts.new_train_state(layout, tx, params)
  jax.block_until_ready(state)
  print(f"init (compile + run): {time.perf_counter() - t:.1f} s; "
        f"{ts.count_params(layout.params):,} trainable + {ts.count_params(layout.frozen):,} frozen parameters")

  batches = [synthetic_batch(i, batch_size=_BATCH.value, seq_len=model.seq_len, image_size=200, hand_size=84,
                             finetune=model.use_state) for i in range(_STEPS.value + 1)]
  step = make_train_step(layout, tx, schedule, dict(config.loss_weights))
  t = time.perf_counter()
  compiled = step.lower(state, frozen, rngs, batches[0]).compile()
  compile_s = time.perf_counter() - t
  cost = cost_analysis(compiled)
  flops = float(cost.get("flops", float("nan")))
  state, metrics = compiled(state, frozen, rngs, batches[0])     # warm-up
  jax.block_until_ready(metrics)
  measure_matmul = matmul_timer(_MATMUL.value)
  times, matmul_rates = [], measure_matmul()
  for batch in batches[1:]:
    t = time.perf_counter()
    state, metrics = compiled(state, frozen, rngs, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
    matmul_rates += measure_matmul()
  step_s = statistics.median(times)
  matmul = statistics.median(matmul_rates)
  peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
  achieved = flops / step_s
  best_achieved, best_matmul = flops / min(times), max(matmul_rates)
  print(f"config: {_VARIANT.value}, dtype {_DTYPE.value}, batch {_BATCH.value} x {model.seq_len} steps, "
        f"static 200px + wrist 84px -> {model.mae.image_size}px")
  print(f"compile time        {compile_s:8.1f} s")
  print(f"step time (median)  {step_s:8.2f} s   over {len(times)} steps: {', '.join(f'{x:.2f}' for x in times)}")
  print(f"examples/s          {_BATCH.value / step_s:8.2f}")
  print(f"peak host memory    {peak_rss_gb:8.2f} GB (max RSS)")
  print(f"step FLOPs (XLA)    {flops / 1e12:8.3f} TFLOP")
  print(f"achieved            {achieved / 1e9:8.1f} GFLOP/s (median step), {best_achieved / 1e9:.1f} (fastest)")
  print(f"f32 matmul {_MATMUL.value}^3  {matmul / 1e9:8.1f} GFLOP/s (median of {len(matmul_rates)}, "
        f"range {min(matmul_rates) / 1e9:.0f}-{max(matmul_rates) / 1e9:.0f})")
  print(f"utilisation         {100 * best_achieved / best_matmul:8.1f} % of matmul, best vs best "
        f"(median vs median: {100 * achieved / matmul:.1f} %; target >= 40 %)")
  print(f"loss {float(metrics['loss/total']):.4f}; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
  app.run(main)
