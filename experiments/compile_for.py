r"""Compile the real train step for a TPU slice on this (CPU-only) machine: does it fit, how fast could it be.

    pip install -r requirements-tpu.txt      # libtpu, optional
    python -m experiments.compile_for --topology v5e-256 --config experiments/configs/pretrain.py \
        [--config.batch_size=4096 --config.mesh.fsdp=16 ...] [--save step.bin] [--json out.json]

It builds the train step exactly as a run would (gr1_jax/training/aot.py: config
validation, mesh, shardings, donation) over libtpu's abstract devices for the slice
and compiles it. Printed: per-chip memory (arguments, temporaries, peak) against the
chip's HBM, FLOPs and HBM bytes per step and chip from XLA's cost analysis, and a
step-time estimate: the roofline bound max(FLOPs / peak bf16 FLOP/s, bytes / HBM
bandwidth) and the time at 50 % of peak FLOP/s. The estimate ignores host input,
cross-chip collectives beyond what XLA schedules into the program, and compile-time
overlap, so it is a lower bound, not a promise. `--save` writes the serialized
executable (jax.experimental.serialize_executable) for the same jax/libtpu versions.
"""
from __future__ import annotations

import json
import os

# This process compiles for TPUs it does not have: the local backend is the CPU, and libtpu
# is told it runs on a host of its own (else it warns that the accelerator type is unknown
# and JAX logs that the 'tpu' backend failed to start). Set before jax is imported.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
# libtpu takes a machine-wide lock meant for processes sharing real chips; compiling touches
# no chip, so several compiles (one per slice) may run side by side.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/configs/{pretrain,finetune_calvin}.py[:variant]",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "v5e-16, v5e-256, v4-32, v5p-128, v6e-64, ... or a grid v5e:4x4")
_SAVE = flags.DEFINE_string("save", None, "write the serialized executable here")
_JSON = flags.DEFINE_string("json", None, "append the figures as one JSON line to this file")

GIB = 1024 ** 3


def report(result, topology) -> dict:
  chip = topology.chip
  mem = result.memory
  flops, moved = result.flops, result.bytes_accessed
  compute_s = flops / (chip.bf16_tflops * 1e12)
  memory_s = moved / (chip.hbm_gbps * 1e9)
  chips = topology.num_chips
  return {
      "topology": topology.name, "grid": topology.topology_name, "chips": chips,
      "mesh": result.mesh_shape, "global_batch": result.global_batch,
      "per_chip_batch": result.global_batch / chips, "dtype": result.model_config.dtype,
      "compile_s": round(result.compile_seconds, 1),
      "memory_gib": {k: round(v / GIB, 3) for k, v in mem.items()},
      "hbm_gib": chip.hbm_gib, "fits": bool(mem) and mem["peak"] <= chip.hbm_gib * GIB,
      "flops_per_chip": flops, "tflop_per_chip": round(flops / 1e12, 3), "tflop_total": round(flops * chips / 1e12, 2),
      "hbm_gb_per_chip": round(moved / 1e9, 2),
      "roofline_step_s": round(max(compute_s, memory_s), 4),
      "bound": "compute" if compute_s >= memory_s else "memory",
      "step_s_at_50pct_mfu": round(flops / (0.5 * chip.bf16_tflops * 1e12), 4),
  }


def format_report(r: dict) -> str:
  m = r["memory_gib"]
  return "\n".join([
      f"{r['topology']} ({r['grid']}, {r['chips']} chips), mesh {r['mesh']}, global batch {r['global_batch']} "
      f"({r['per_chip_batch']:g} per chip), {r['dtype']} compute; compiled in {r['compile_s']} s",
      f"memory per chip: peak {m.get('peak', float('nan')):.2f} GiB of {r['hbm_gib']:g} GiB HBM -> "
      f"{'fits' if r['fits'] else 'DOES NOT FIT'} (arguments {m.get('arguments', 0):.2f}, temporaries "
      f"{m.get('temporaries', 0):.2f}, outputs {m.get('outputs', 0):.2f}, aliased {m.get('aliased', 0):.2f}, "
      f"code {m.get('generated_code', 0):.2f})",
      f"per step: {r['tflop_per_chip']} TFLOP per chip ({r['tflop_total']} TFLOP in all), "
      f"{r['hbm_gb_per_chip']} GB HBM traffic per chip",
      f"step time: >= {r['roofline_step_s']} s ({r['bound']}-bound roofline at peak), "
      f"{r['step_s_at_50pct_mfu']} s at 50 % MFU"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from gr1_jax.training import aot, tpu_topologies
  topology = tpu_topologies.parse(_TOPOLOGY.value)
  devices = tpu_topologies.devices(topology)
  try:
    result = aot.compile_train_step(_CONFIG.value, devices)
  except Exception as exc:  # XLA reports an oversized program as RESOURCE_EXHAUSTED at compile time
    if "RESOURCE_EXHAUSTED" not in str(exc):
      raise
    first = next((line for line in str(exc).splitlines() if "RESOURCE_EXHAUSTED" in line), str(exc))
    print(f"{topology.name}: DOES NOT FIT: {first.strip()}")
    return 3
  figures = report(result, topology)
  figures["config"] = config_flags.get_config_filename(flags.FLAGS["config"])
  figures["overrides"] = config_flags.get_override_values(flags.FLAGS["config"])
  print(format_report(figures))
  if _SAVE.value:
    from jax.experimental import serialize_executable
    payload, _, _ = serialize_executable.serialize(result.compiled)
    with open(_SAVE.value, "wb") as f:
      f.write(payload)
    print(f"serialized executable -> {_SAVE.value} ({len(payload) / 1e6:.1f} MB)")
  if _JSON.value:
    with open(_JSON.value, "a") as f:
      f.write(json.dumps(figures) + "\n")
  return 0


if __name__ == "__main__":
  cli.run_absl(main, required=["config", "topology"])
