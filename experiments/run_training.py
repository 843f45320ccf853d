"""What `experiments.pretrain` and `experiments.finetune` share: flags, multi-process start-up,
logging on process 0, demo data, then gr1_jax.training.train.train_and_evaluate."""
from __future__ import annotations

import logging
import os

from absl import flags

from gr1_jax.user_errors import UserError

DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "call jax.distributed.initialize() with its cluster auto-detection "
    "(TPU pod slices, SLURM, ...); experiments/launch/tpu_pod.py passes it")
COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for a multi-process run without a "
    "cluster environment (TPU pods and SLURM are detected automatically)")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "with --coordinator_address")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "with --coordinator_address")
COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", os.path.expanduser("~/.cache/gr1_jax/xla"),
    "persistent XLA compilation cache ('' disables): a restarted or repeated run skips compiling")

# Variables that say "this process is one of several" (then jax.distributed.initialize()
# finds the coordinator itself).
_CLUSTER_ENV = ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def _multi_process_cluster() -> bool:
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hosts:
    return True
  return any(int(os.environ.get(v, "1") or 1) > 1 for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


def initialize_distributed() -> None:
  import jax
  if COORDINATOR.value:
    if NUM_PROCESSES.value is None or PROCESS_ID.value is None:
      raise UserError("--coordinator_address needs --num_processes and --process_id; pass all three")
    jax.distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
  elif DISTRIBUTED.value or _multi_process_cluster():
    jax.distributed.initialize()


def setup_logging() -> None:
  import jax
  # Before jax.process_index() starts the backends: their INFO lines (e.g. "Unable to
  # initialize backend 'tpu'" on every CPU-only run) read like errors.
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  level = logging.INFO if jax.process_index() == 0 else logging.WARNING
  logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def run(config, workdir: str):
  # JAX is imported here, not at the top: --help and command-line mistakes answer at once.
  import jax

  from experiments import demo_data
  from gr1_jax.training import experiment_config
  from gr1_jax.training.train import train_and_evaluate
  # The fields first, so that a bad config does not first spend minutes generating demo
  # data; train_and_evaluate checks everything again, the data paths included.
  experiment_config.validate(config.to_dict(), check_paths=False)
  if COMPILATION_CACHE.value:
    jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE.value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  initialize_distributed()
  setup_logging()
  if jax.process_index() == 0:
    demo_data.ensure(config.data)
    demo_data.ensure_mae(config)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("demo data ready")
  summary = train_and_evaluate(config, workdir)
  if jax.process_index() == 0 and demo_data.is_ego4d_demo(config.data) and not summary["stopped_by"]:
    summary = demo_data.report_ball(config, workdir, summary)
  return summary
