"""Serves a GR-1 checkpoint as a closed-loop policy over a websocket (openpi's client protocol).

    python -m experiments.serve_policy --checkpoint CKPT [--port 8000] [--host 0.0.0.0] [--step N]
        [--mode cached|full] [--execute_actions K] [--obs_key static=observation/image ...]

The checkpoint is loaded and compiled (one warm-up step) before the port opens; then
any number of clients connect, each with its own history. With openpi's client
(`pip install --no-deps openpi-client`):

    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    policy = WebsocketClientPolicy("SERVER_HOST", 8000)
    actions = policy.infer({"observation/image": rgb_static_u8, "observation/wrist_image": rgb_gripper_u8,
                            "observation/state": robot_obs, "prompt": "open the drawer"})["actions"]
    policy.infer({"reset": True})      # at the start of every episode / subtask

`actions` is float32 (7,) (arm 6-D relative action, gripper +1 open / -1 close), or (K, 7)
with --execute_actions K on an action-chunking checkpoint. CALVIN's nested layout
({"rgb_obs": {"rgb_static", "rgb_gripper"}, "robot_obs", "prompt"}) is accepted as well;
--obs_key NAME=KEY renames the flat keys (NAME: static, gripper, state, prompt). A bad
request is answered with a text message naming the key (openpi's client raises it as a
RuntimeError) and the connection stays open. GET /healthz answers 200 "OK".
Protocol details: gr1_jax/serving/policy_server.py.
"""
from __future__ import annotations

import argparse
import logging
import sys

from experiments import cli

CHECKPOINT_EXPECTED = "a checkpoint directory or a training workdir"


def parse_args(argv=None):
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--checkpoint", required=True, help="checkpoint directory or training workdir")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
  parser.add_argument("--host", default="0.0.0.0", help="interface to listen on (default all)")
  parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
  parser.add_argument("--mode", choices=("cached", "full"), default="cached",
                      help="cached per-frame features (default) or the official full recompute per step")
  parser.add_argument("--execute_actions", type=int, default=1,
                      help="K actions per reply from one model call (1 <= K <= the checkpoint's action_chunk)")
  parser.add_argument("--obs_key", action="append", default=[], metavar="NAME=KEY",
                      help="request key of an input: static, gripper, state or prompt (repeatable); defaults "
                           "observation/image, observation/wrist_image, observation/state, prompt")
  parser.add_argument("--quiet", action="store_true", help="do not log each connection")
  args = parser.parse_args(argv)
  if not 0 <= args.port <= 65535:
    parser.error(f"--port must be in [0, 65535], got {args.port}")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  cli.existing_path("--checkpoint", args.checkpoint, CHECKPOINT_EXPECTED)   # before the slow imports
  from gr1_jax.serving.policy_server import ObsKeys
  obs_keys = ObsKeys.with_overrides(args.obs_key)                             # before loading the checkpoint
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
  log = logging.getLogger("gr1_jax.serving")         # connections opened / closed; not the libraries' INFO
  log.addHandler(handler)
  log.propagate = False
  log.setLevel(logging.WARNING if args.quiet else logging.INFO)
  from gr1_jax.policy import GR1Policy
  from gr1_jax.serving.policy_server import PolicyServer
  with cli.naming("--checkpoint", args.checkpoint):
    policy = GR1Policy.from_checkpoint(args.checkpoint, step=args.step, mode=args.mode,
                                       execute_actions=args.execute_actions)
  server = PolicyServer(policy, obs_keys=obs_keys)

  def listening(port):
    print(f"serving {policy.source} (mode {policy.mode}, {server.execute_actions} action(s) per reply, "
          f"warm-up {server.warmup_s:.1f} s) on ws://{args.host}:{port}; health: http://{args.host}:{port}/healthz",
          file=sys.stderr, flush=True)

  try:
    with cli.naming("--port", str(args.port)):
      server.serve_forever(args.host, args.port, on_listening=listening)
  except KeyboardInterrupt:
    print("stopped", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
