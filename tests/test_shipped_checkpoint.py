"""The trained CALVIN checkpoint shipped in docs/assets (docs/calvin_closed_loop.md) loads as a
policy and acts; `convert release` made it, so it holds no optimizer state."""
import json
import os

import numpy as np

from gr1_jax.model_checkpoint import load_config
from gr1_jax.policy import GR1Policy

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "docs", "assets", "calvin_mini_fixtures")


def test_shipped_calvin_checkpoint_loads_and_acts():
  assert os.listdir(SHIPPED) == ["2500"]
  assert not {"opt_state", "data_iter"} & set(os.listdir(os.path.join(SHIPPED, "2500")))
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(SHIPPED) for f in files)
  assert size < 25e6, size                     # the bound for shipping it in the repository
  config, stored = load_config(SHIPPED)
  # the mini model of finetune_calvin.py:mini, trained on the evaluation strings, eyes open
  assert (config.hidden_size, config.num_layers, config.mae.image_size, config.blind) == (96, 3, 64, False)
  run = stored["experiment"]
  assert run["data"]["path"].endswith("data_evalstrings") and run["num_train_steps"] == 2500
  policy = GR1Policy.from_checkpoint(SHIPPED)
  rng = np.random.default_rng(0)
  policy.reset()
  robot = np.zeros(15)
  robot[:6] = (0.03, -0.22, 0.55, np.pi, 0.0, np.pi / 2)   # near CALVIN's neutral TCP pose
  robot[14] = 1.0
  for _ in range(3):
    obs = {"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), np.uint8),
                       "rgb_gripper": rng.integers(0, 256, (84, 84, 3), np.uint8)},
           "robot_obs": robot}
    action = policy.step(obs, "pull the handle to open the drawer")
    assert action.shape == (7,) and np.isfinite(action).all() and action[6] in (-1.0, 1.0)
  json.dumps(stored)                           # the run's config travels along, as JSON
