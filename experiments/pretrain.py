"""Stage 1 (video pretraining) entry point; the config docstring has the exact commands.

    python -m experiments.pretrain --config experiments/configs/pretrain.py[:variant] --workdir DIR

Overrides: `--config.batch_size=64 --config.mesh.fsdp=4 ...`; `--print_config` lists every
key with its value; see the config file for its variants. Re-running with the same workdir
resumes from its latest checkpoint. A mistake (bad config, missing data or checkpoint)
is reported in one `error:` line, exit status 2; `--debug` shows its traceback.
"""
from absl import app, flags
from ml_collections import config_flags

from experiments import cli, run_training

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/configs/pretrain.py[:variant]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard logs and images go here")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  run_training.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run_absl(main, required=["config", "workdir"])
