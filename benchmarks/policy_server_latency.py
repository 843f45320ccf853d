"""Round-trip latency of the websocket policy server vs calling GR1Policy.step directly.

    python -m benchmarks.policy_server_latency [--config official|tiny] [--calls 50] [--output f.json]

Random weights (benchmarks/policy_latency.py builds the model), the cached policy, CALVIN-size
uint8 frames. The server runs in this process on 127.0.0.1 (its event loop in a thread,
inference in its executor) and openpi's own client (openpi-client, see
requirements-openpi-client.txt) sends flat openpi-style requests. The direct reference is
a GR1Policy.fork() of the served policy: the same compiled step, so the difference is
the serving path (msgpack of ~150 KB of images, loopback websocket, executor hop, reply).
Calls alternate direct / served after both histories are full (steady state); the load
average is printed, since the machine's other jobs show up in every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from benchmarks.policy_latency import build_model, random_obs


def flat(obs, prompt):
  return {"observation/image": obs["rgb_obs"]["rgb_static"],
          "observation/wrist_image": obs["rgb_obs"]["rgb_gripper"],
          "observation/state": obs["robot_obs"], "prompt": prompt}


def summary(ms: list[float]) -> dict:
  ordered = sorted(ms)
  return {"median_ms": statistics.median(ordered), "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
          "mean_ms": statistics.mean(ordered), "min_ms": ordered[0]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="official", choices=("official", "tiny"))
  parser.add_argument("--calls", type=int, default=50, help="timed calls of each kind (steady state)")
  parser.add_argument("--output", default=None, help="optional JSON file for the numbers")
  args = parser.parse_args(argv)

  import jax
  from openpi_client.websocket_client_policy import WebsocketClientPolicy

  from gr1_jax.policy import GR1Policy
  from gr1_jax.serving import msgpack_numpy
  from gr1_jax.serving.policy_server import BackgroundServer, PolicyServer

  load_before = os.getloadavg()
  instruction = "push the pink block to the left"
  rng = np.random.default_rng(0)
  model = build_model(args.config)
  start = time.perf_counter()
  server = PolicyServer(GR1Policy(model, mode="cached"))
  startup_s = time.perf_counter() - start
  direct = server.policy.fork()
  seq_len = direct.seq_len
  observations = [random_obs(rng) for _ in range(seq_len + args.calls)]
  requests = [flat(obs, instruction) for obs in observations]
  direct_ms, served_ms, infer_ms = [], [], []
  with BackgroundServer(server) as running:
    client = WebsocketClientPolicy("127.0.0.1", running.port)
    for i, (obs, request) in enumerate(zip(observations, requests)):
      t0 = time.perf_counter()
      want = direct.step(obs, instruction)
      t1 = time.perf_counter()
      reply = client.infer(request)
      t2 = time.perf_counter()
      if not np.array_equal(reply["actions"], want):
        raise AssertionError(f"call {i}: served actions {reply['actions']} != direct {want}")
      if i >= seq_len:                       # history full: steady state
        direct_ms.append(1000 * (t1 - t0))
        served_ms.append(1000 * (t2 - t1))
        infer_ms.append(reply["server_timing"]["infer_ms"])
  results = {
      "config": args.config, "devices": str(jax.devices()), "calls": args.calls,
      "request_bytes": len(msgpack_numpy.packb(requests[0])),
      "server_start_s_incl_warmup": startup_s, "warmup_s": server.warmup_s,
      "direct_step": summary(direct_ms), "served_round_trip": summary(served_ms),
      "server_side_infer": summary(infer_ms),
      "load_average_before": load_before, "load_average_after": os.getloadavg(),
  }
  results["overhead_median_ms"] = results["served_round_trip"]["median_ms"] - results["direct_step"]["median_ms"]
  results["overhead_p90_ms"] = results["served_round_trip"]["p90_ms"] - results["direct_step"]["p90_ms"]
  print(json.dumps(results, indent=2))
  d, s = results["direct_step"], results["served_round_trip"]
  print(f"policy step ({args.config}, {args.calls} calls, load {load_before[0]:.1f}): direct median "
        f"{d['median_ms']:.1f} ms (p90 {d['p90_ms']:.1f}), served round trip median {s['median_ms']:.1f} ms "
        f"(p90 {s['p90_ms']:.1f}) -> overhead {results['overhead_median_ms']:.1f} ms median")
  if args.output:
    with open(args.output, "w") as f:
      json.dump(results, f, indent=2)
  return results


if __name__ == "__main__":
  main()
