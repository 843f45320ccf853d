"""python -m experiments.serve_policy: one-line errors before anything slow; a real run (slow)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from experiments import cli, serve_policy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("argv, expected", [
    (["--checkpoint", "/nonexistent/ckpt"], "error: --checkpoint /nonexistent/ckpt does not exist"),
    ([], "error: the following arguments are required: --checkpoint"),
    (["--checkpoint", ".", "--port", "70000"], "error: --port must be in [0, 65535], got 70000"),
    (["--checkpoint", ".", "--obs_key", "camera=observation/image"], "unknown input 'camera'"),
    (["--checkpoint", ".", "--obs_key", "static"], "expected NAME=KEY"),
    (["--checkpoint", ".", "--obs_key", "static=prompt"], "two inputs read the same key"),
])
def test_command_line_mistakes_are_one_line(argv, expected, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.run(serve_policy.main, argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


@pytest.mark.slow
def test_serves_a_checkpoint_until_interrupted(tmp_path):
  from flax import nnx
  from openpi_client.websocket_client_policy import WebsocketClientPolicy

  from gr1_jax.model_checkpoint import numpy_params, save_model_checkpoint
  from gr1_jax.modules.gr1 import GR1
  from tests.conftest import tiny_config
  cfg = tiny_config(action_chunk=2)
  save_model_checkpoint(str(tmp_path / "ckpt"), numpy_params(GR1(cfg, rngs=nnx.Rngs(0))), cfg)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  proc = subprocess.Popen([sys.executable, "-m", "experiments.serve_policy", "--checkpoint", str(tmp_path / "ckpt"),
                           "--host", "127.0.0.1", "--port", "0", "--execute_actions", "2",
                           "--obs_key", "prompt=task"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stderr:                       # "serving ... on ws://127.0.0.1:PORT; health: ..."
      if line.startswith("serving "):
        port = int(line.split("ws://127.0.0.1:")[1].split(";")[0])
        break
    else:
      pytest.fail(f"the server exited with {proc.wait()} before listening")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
      assert response.status == 200
    client = WebsocketClientPolicy("127.0.0.1", port)
    assert client.get_server_metadata()["action_shape"] == [2, 7]
    obs = {"observation/image": np.zeros((200, 200, 3), np.uint8), "observation/wrist_image":
           np.zeros((84, 84, 3), np.uint8), "observation/state": np.ones(15), "task": "open the drawer"}
    assert client.infer(obs)["actions"].shape == (2, 7)
  finally:
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=30)[1]
  assert proc.returncode == 0 and rest.strip().endswith("stopped"), rest[-2000:]
