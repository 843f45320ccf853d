"""Two JAX processes on localhost (2 CPU devices each, gloo) train like one process with 4
devices on the same global batches, checkpoint included."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from gr1_jax import model_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["--config", "experiments/configs/finetune_calvin.py:debug", "--config.num_train_steps=4",
        "--config.checkpoint_every=2", "--config.eval_every=2", "--config.log_every=1"]


def _env(devices):
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _params(workdir, step):
  config, _ = model_checkpoint.load_config(str(workdir), step)
  return jax.device_get(model_checkpoint.load_params(str(workdir), config, step=step))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  single = tmp_path / "single"
  proc = subprocess.run([sys.executable, "-m", "experiments.finetune", *ARGS, "--workdir", str(single),
                         "--compilation_cache_dir="], cwd=REPO, env=_env(4), capture_output=True, text=True,
                        timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]

  multi = tmp_path / "multi"
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "experiments.finetune", *ARGS, "--workdir", str(multi),
                             "--compilation_cache_dir=", f"--coordinator_address=127.0.0.1:{port}",
                             "--num_processes=2", f"--process_id={i}"],
                            cwd=REPO, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=1800) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 1} over 4 cpu devices, 2 process(es)" in outputs[0][1]

  a = json.loads((single / "summary.json").read_text())
  b = json.loads((multi / "summary.json").read_text())
  for key, value in a["train"].items():
    np.testing.assert_allclose(b["train"][key], value, rtol=1e-5, err_msg=key)
  for key, value in a["eval"].items():
    np.testing.assert_allclose(b["eval"][key], value, rtol=1e-5, err_msg=key)
  for step in (2, 4):
    for x, y in zip(jax.tree.leaves(_params(single, step)), jax.tree.leaves(_params(multi, step))):
      np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-7)
  # Each process saved its own data-iterator position next to the shared arrays.
  files = os.listdir(multi / "checkpoints" / "4" / "data_iter")
  assert sorted(f for f in files if f.startswith("process_")) == ["process_0-of-2.json", "process_1-of-2.json"]
