"""The policy step beside the official PyTorch evaluator's, at equal weights, in one process.

    python -m benchmarks.policy_vs_torch [--steps 4] [--torch_threads N] [--sides torch,full,cached]
        [--output FILE] [--profile_dir DIR]

All sides run the official evaluation layout (act-only, 10-step window, MAE ViT-B/16 at
224, both cameras, CALVIN-size uint8 frames: static 200 px, wrist 84 px), batch 1, fp32,
random weights shared by all three (tests/torch_reference/config_bridge.paired_models):

  torch  : tests/torch_reference/official_loop.OfficialLoopTorch around the project's
           independent torch model of the official GR-1 (tests/torch_reference/gr1_torch.py),
           as the official GR1CalvinEvaluation.step does it: every step re-tokenises and
           re-encodes the instruction (CLIP inside the forward) and re-runs the whole 10-slot
           window (MAE on 10 frames x 2 cameras, resampler, trunk), torch.no_grad, eval mode,
           bicubic resize to 224 + ImageNet normalisation inside the step;
           torch.set_num_threads(--torch_threads, default: the machine's cores).
  full   : GR1Policy(mode="full"), the same recompute in JAX.
  cached : GR1Policy(mode="cached"): the new frame through MAE + resampler once, the
           instruction once per episode, the trunk over the cached window.

Every observation goes to the three sides in turn (torch, full, cached, torch, ...), so the
machine's other load hits them alike. The first seq_len steps fill the history (the first
one of each side compiles / warms up); the next --steps are the steady state that is timed.
Printed: per-side median and fastest steady step (wall and process CPU seconds), the ratios
torch / full and torch / cached (> 1: JAX faster), the largest action difference from the
torch side (all three hold the same weights), FLOPs (XLA cost analysis of the two jitted
steps; torch's FlopCounterMode count of one step, matmuls only), the f32 2048^3 jnp.matmul
rate measured between steps, the CPU model and the load average. --output writes the
numbers as JSON. With --profile_dir, one more cached step runs under jax.profiler (perfetto
trace + the optimized HLO of the step, whose op names the trace uses).
"""
from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np
from absl import app, flags

from benchmarks.matmul_rate import matmul_timer
from benchmarks.policy_latency import random_obs

_STEPS = flags.DEFINE_integer("steps", 4, "timed steady-state steps per side (after seq_len filling steps)")
_VARIANT = flags.DEFINE_string("variant", "official", "experiments/configs/gr1_model.py variant")
_THREADS = flags.DEFINE_integer("torch_threads", os.cpu_count(), "torch.set_num_threads (default: the cores)")
_SIDES = flags.DEFINE_list("sides", ["torch", "full", "cached"], "which sides to run (torch, full, cached)")
_OUTPUT = flags.DEFINE_string("output", "", "optional JSON file for the numbers")
_PROFILE = flags.DEFINE_string("profile_dir", "", "write a jax profile of one more cached step here")

INSTRUCTION = "push the pink block to the left"


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "unknown"


def build_sides(variant: str, sides: set[str]):
  """{side: step(obs) -> action (7,)}, the torch FLOP counter, XLA FLOPs and the policies."""
  from experiments.configs import gr1_model
  from gr1_jax.model_config import GR1Config
  from gr1_jax.policy import GR1Policy, act_only_config
  from tests.torch_reference.config_bridge import paired_models
  from tests.torch_reference.official_loop import OfficialLoopTorch

  config = act_only_config(GR1Config.from_dict(gr1_model.get_config(variant).to_dict()).replace(dtype="float32"))
  ref, model = paired_models(config, seed=0)
  runners, policies = {}, {}
  if "torch" in sides:
    # No effect under the evaluator's no_grad (nothing is recorded either way), but
    # FlopCounterMode's module hooks fail on parameters that require grad inside no_grad.
    ref.requires_grad_(False)
    official = OfficialLoopTorch(ref)
    runners["torch"] = lambda obs: official.step(obs, INSTRUCTION)
  else:
    del ref
  for mode in ("full", "cached"):
    if mode in sides:
      policy = policies[mode] = GR1Policy(model, mode=mode)
      runners[mode] = lambda obs, policy=policy: policy.step(obs, INSTRUCTION)

  def count_torch_flops(obs) -> tuple[np.ndarray, float]:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
      action = runners["torch"](obs)
    return action, float(counter.get_total_flops())
  return config, runners, count_torch_flops, policies


def xla_flops(policy, obs) -> float:
  """XLA's FLOP count of the policy's jitted step at its current history (lowered, not compiled
  again)."""
  from gr1_jax.training.aot import cost_analysis
  return float(cost_analysis(policy.lower_step(obs, INSTRUCTION)).get("flops", float("nan")))


def main(argv):
  del argv
  import jax
  import torch

  torch.set_num_threads(_THREADS.value)
  sides = [s for s in ("torch", "full", "cached") if s in set(_SIDES.value)]
  results = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu_model": cpu_model(), "cores": os.cpu_count(),
             "load_average_start": os.getloadavg(), "variant": _VARIANT.value, "jax": jax.__version__,
             "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
             "xla_flags": os.environ.get("XLA_FLAGS", "")}
  print(f"load average at start: {results['load_average_start']}; {results['cpu_model']}, {os.cpu_count()} "
        f"cores; jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; XLA_FLAGS={results['xla_flags']!r}")
  t = time.perf_counter()
  config, runners, count_torch_flops, policies = build_sides(_VARIANT.value, set(sides))
  print(f"models built in {time.perf_counter() - t:.1f} s (random weights, shared by all sides)")
  rng = np.random.default_rng(0)
  observations = [random_obs(rng) for _ in range(config.seq_len + _STEPS.value)]
  flops = {mode: xla_flops(policy, observations[0]) for mode, policy in policies.items()}
  if flops:
    print("XLA cost analysis per step: " + ", ".join(f"{k} {v / 1e9:.2f} GFLOP" for k, v in flops.items()),
          flush=True)
  measure_matmul = matmul_timer(2048)
  matmul_rates = measure_matmul(3)

  first = {}
  times = {s: [] for s in sides}
  cpu_times = {s: [] for s in sides}
  fill = {s: [] for s in sides}
  worst = {s: 0.0 for s in sides if s != "torch"}
  last = {}
  for i, obs in enumerate(observations):
    actions = {}
    for side in sides:  # interleaved: torch, full, cached, torch, ...
      t, c = time.perf_counter(), time.process_time()
      if i == 0 and side == "torch":
        actions[side], flops["torch"] = count_torch_flops(obs)  # doubles as torch's warm-up step
      else:
        actions[side] = runners[side](obs)
      wall, cpu = time.perf_counter() - t, time.process_time() - c
      last[side] = wall
      if i == 0:
        first[side] = wall
      elif i < config.seq_len:
        fill[side].append(wall)
      else:
        times[side].append(wall)
        cpu_times[side].append(cpu)
    print(f"step {i}: " + ", ".join(f"{side} {1000 * last[side]:.0f} ms" for side in sides),
          flush=True)  # progress, for slow / killed runs
    if "torch" in actions:
      for side in worst:
        worst[side] = max(worst[side], float(np.abs(actions[side] - actions["torch"]).max()))
    if i >= config.seq_len - 1:
      matmul_rates += measure_matmul(3)

  print(f"config: {_VARIANT.value} act-only, float32, batch 1, window {config.seq_len}, static 200px + wrist 84px "
        f"-> {config.mae.image_size}px, both cameras; {config.seq_len} filling steps, then {_STEPS.value} timed")
  for side in sides:
    med, best = statistics.median(times[side]), min(times[side])
    results[side] = {"steady_median_ms": 1000 * med, "steady_fastest_ms": 1000 * best,
                     "steady_ms": [1000 * x for x in times[side]], "steady_cpu_s": cpu_times[side],
                     "fill_median_ms": 1000 * statistics.median(fill[side]) if fill[side] else None,
                     "first_step_s": first[side], "flops_per_step": flops.get(side)}
    rate = (f"  {flops[side] / med / 1e9:6.1f} GFLOP/s" if side in flops else "")
    print(f"{side:6s} median {1000 * med:8.1f} ms  fastest {1000 * best:8.1f} ms  "
          f"({', '.join(f'{1000 * x:.0f}' for x in times[side])})  CPU s {', '.join(f'{x:.2f}' for x in cpu_times[side])}"
          f"  first step {first[side]:.1f} s  {flops.get(side, float('nan')) / 1e9:.1f} GFLOP{rate}")
  if "torch" in sides:
    if worst:
      print("largest |action - torch's| over all steps: "
            + ", ".join(f"{side} {value:.2e}" for side, value in worst.items()))
      results["max_action_diff_vs_torch"] = worst
    for side in ("full", "cached"):
      if side in sides:
        ratio = statistics.median(times["torch"]) / statistics.median(times[side])
        cpu_ratio = statistics.median(cpu_times["torch"]) / statistics.median(cpu_times[side])
        pairs = [a / b for a, b in zip(times["torch"], times[side])]
        results[f"ratio_torch_over_{side}"] = {"median": ratio, "fastest": min(times["torch"]) / min(times[side]),
                                               "per_step": pairs, "cpu_seconds": cpu_ratio}
        print(f"ratio torch/{side}: median {ratio:.2f}x, fastest {results[f'ratio_torch_over_{side}']['fastest']:.2f}x,"
              f" per step {', '.join(f'{x:.2f}' for x in pairs)}; CPU seconds {cpu_ratio:.2f}x (> 1: JAX faster)")
  results["matmul_2048_gflops"] = {"median": statistics.median(matmul_rates) / 1e9, "min": min(matmul_rates) / 1e9,
                                   "max": max(matmul_rates) / 1e9}
  print(f"f32 matmul 2048^3 (jnp): median {statistics.median(matmul_rates) / 1e9:.1f} GFLOP/s "
        f"(range {min(matmul_rates) / 1e9:.0f}-{max(matmul_rates) / 1e9:.0f})")
  results["load_average_end"] = os.getloadavg()
  print(f"load average at end: {results['load_average_end']}")
  if _PROFILE.value and "cached" in policies:
    profile_cached(policies["cached"], observations[-1], _PROFILE.value)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump(results, f, indent=2)


def profile_cached(policy, obs, out_dir):
  import jax
  os.makedirs(out_dir, exist_ok=True)
  compiled = policy.lower_step(obs, INSTRUCTION).compile()
  with open(os.path.join(out_dir, "jax_hlo.txt"), "w") as f:  # names the ops of the trace
    f.write(compiled.as_text())
  jax.profiler.start_trace(os.path.join(out_dir, "jax"), create_perfetto_trace=True)
  policy.step(obs, INSTRUCTION)
  jax.profiler.stop_trace()
  print(f"cached-step profile written to {out_dir}; load average {os.getloadavg()}")


if __name__ == "__main__":
  app.run(main)
