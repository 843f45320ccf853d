"""Per-step latency of GR1Policy: full recompute (official loop) vs cached per-frame features.

    python -m benchmarks.policy_latency [--config official|tiny] [--steps 12] [--full_steps 4]

Random weights, the official evaluation layout (act-only, 10-step window, MAE
ViT-B/16 at 224, both cameras, CALVIN-size uint8 frames). The full path re-runs
CLIP + MAE on all 10 window frames of both cameras every step, as the official
evaluator does; the cached path encodes only the new frame (the instruction once)
and runs the trunk. Timings are after compilation, with a full history (steady
state), median over the measured steps; the machine's other load shows up in them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def build_model(variant: str):
  import jax
  from flax import nnx

  from experiments.configs.gr1_model import get_config
  from gr1_jax.model_config import GR1Config
  from gr1_jax.modules.gr1 import GR1
  config = GR1Config.from_dict(get_config(variant).to_dict())
  config = config.replace(fwd_pred=False, fwd_pred_hand=False)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: GR1(config, rngs=nnx.Rngs(0))))
  state = jax.jit(lambda: nnx.split(GR1(config, rngs=nnx.Rngs(0)))[1])()  # random init, compiled once
  model = nnx.merge(graphdef, state)
  model.eval()
  return model


def random_obs(rng):
  robot = rng.uniform(-1, 1, 15)
  robot[14] = rng.choice([-1.0, 1.0])
  return {"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                      "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)},
          "robot_obs": robot}


def time_policy(policy, steps: int, rng, instruction: str) -> dict:
  policy.reset()
  t0 = time.perf_counter()
  policy.step(random_obs(rng), instruction)                    # compiles
  first = time.perf_counter() - t0
  fill = []
  for _ in range(policy.seq_len - 1):                          # history filling (slots 1..9)
    obs = random_obs(rng)
    t0 = time.perf_counter()
    policy.step(obs, instruction)
    fill.append(time.perf_counter() - t0)
  steady = []
  for _ in range(steps):
    obs = random_obs(rng)
    t0 = time.perf_counter()
    policy.step(obs, instruction)
    steady.append(time.perf_counter() - t0)
  return {"first_step_s_incl_compile": first, "fill_median_ms": 1000 * statistics.median(fill),
          "steady_median_ms": 1000 * statistics.median(steady),
          "steady_mean_ms": 1000 * statistics.mean(steady), "steady_steps": steps,
          "trace_counts": dict(policy.trace_counts)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="official", choices=("official", "tiny"))
  parser.add_argument("--steps", type=int, default=12, help="steady-state steps timed (cached)")
  parser.add_argument("--full_steps", type=int, default=4, help="steady-state steps timed (full)")
  parser.add_argument("--output", default=None, help="optional JSON file for the numbers")
  args = parser.parse_args(argv)

  import jax

  from gr1_jax.policy import GR1Policy
  t0 = time.perf_counter()
  model = build_model(args.config)
  build_s = time.perf_counter() - t0
  instruction = "push the pink block to the left"
  rng = np.random.default_rng(0)
  results = {"config": args.config, "devices": str(jax.devices()), "model_build_s": build_s}
  cached = GR1Policy(model, mode="cached")
  results["cached"] = time_policy(cached, args.steps, rng, instruction)
  full = GR1Policy(model, mode="full")
  results["full"] = time_policy(full, args.full_steps, rng, instruction)
  results["speedup_steady_median"] = (results["full"]["steady_median_ms"]
                                      / results["cached"]["steady_median_ms"])
  print(json.dumps(results, indent=2))
  print(f"per-step latency ({args.config}): full recompute {results['full']['steady_median_ms']:.0f} ms, "
        f"cached {results['cached']['steady_median_ms']:.0f} ms -> {results['speedup_steady_median']:.1f}x")
  if args.output:
    with open(args.output, "w") as f:
      json.dump(results, f, indent=2)
  return results


if __name__ == "__main__":
  main()
