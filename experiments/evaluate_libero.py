"""LIBERO evaluation of a GR-1 checkpoint: LIBERO's own tasks and init states, standard protocol.

    python -m experiments.evaluate_libero --checkpoint CKPT_DIR --suite libero_spatial \
        [--tasks 0,1] [--trials 50] [--workers N] [--record_video] [--output results.json] \
        [--libero_python /work/libero_venv/bin/python]

Per task: env built from the task's bddl file (cameras --resolution^2, env.seed(--seed)); trial i
starts from the task's init_states[i]; 10 no-op steps, then up to the suite's max steps (spatial
220, object 280, goal 300, libero_10 520, libero_90 400) of the policy, success as soon as
LIBERO's goal predicate holds (gr1_jax/evaluation/libero_rollout.py: the observation and action
mappings, including the gripper sign, are documented there). The results JSON holds per-task
success, their mean, timings and every episode; --record_video writes an MP4 of the agent view.

LIBERO runs in its own virtualenv (experiments/libero_setup.sh VENV_DIR) behind a pipe
(gr1_jax/evaluation/libero_service.py); --libero_python points at its interpreter.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os

from experiments import cli
from gr1_jax.user_errors import UserError


def _policy_factory(checkpoint: str, step, execute_actions: int, mode: str, resolution: int):
  from gr1_jax.policy import GR1Policy
  shape = (resolution, resolution, 3)
  return GR1Policy.from_checkpoint(checkpoint, step=step, execute_actions=execute_actions, mode=mode,
                                   static_shape=shape, gripper_shape=shape)


def _load_backend(spec: str):
  module, _, name = spec.partition(":")
  if not name:
    raise UserError(f"--backend {spec!r} must look like 'package.module:factory'")
  return getattr(importlib.import_module(module), name)()


def _parse_tasks(spec: str | None):
  if not spec:
    return None
  try:
    return [int(t) for t in spec.split(",") if t.strip()]
  except ValueError:
    raise UserError(f"--tasks {spec!r} must be comma-separated task indices, e.g. 0,1") from None


def parse_args(argv=None):
  from gr1_jax.evaluation.libero_rollout import MAX_STEPS
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--checkpoint", required=True, help="checkpoint directory or training workdir")
  parser.add_argument("--suite", required=True, choices=sorted(MAX_STEPS))
  parser.add_argument("--tasks", default=None, help="comma-separated task indices (default: all)")
  parser.add_argument("--trials", type=int, default=50, help="trials per task (init_states[0..n-1])")
  parser.add_argument("--max_steps", type=int, default=None, help="default: the suite's standard budget")
  parser.add_argument("--num_wait_steps", type=int, default=10, help="no-op steps before the policy")
  parser.add_argument("--resolution", type=int, default=256, help="camera height = width")
  parser.add_argument("--seed", type=int, default=7, help="env.seed per task env")
  parser.add_argument("--workers", type=int, default=1, help="evaluation processes (one simulator each)")
  parser.add_argument("--record_video", action="store_true", help="MP4 of the agent view per episode")
  parser.add_argument("--video_dir", default=None, help="default: <output dir>/videos")
  parser.add_argument("--output", default="libero_results.json", help="results JSON path")
  parser.add_argument("--execute_actions", type=int, default=1,
                      help="with a chunked checkpoint (action_chunk K): actions executed per model call")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
  parser.add_argument("--mode", choices=("cached", "full"), default="cached")
  parser.add_argument("--libero_python", default=None,
                      help="Python interpreter with LIBERO installed (default: this one)")
  parser.add_argument("--backend", default=None,
                      help="advanced: 'module:factory' building a LIBERO-like backend (tests)")
  parser.add_argument("--quiet", action="store_true")
  args = parser.parse_args(argv)
  for name in ("trials", "workers", "execute_actions", "resolution"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.num_wait_steps < 0 or (args.max_steps is not None and args.max_steps < 1):
    parser.error("--num_wait_steps must be >= 0 and --max_steps >= 1")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  cli.existing_path("--checkpoint", args.checkpoint, "a checkpoint directory or a training workdir")
  from gr1_jax.evaluation import libero_rollout
  from gr1_jax.evaluation.libero_backend import LiberoBackend
  from gr1_jax.evaluation.libero_service import LiberoNotInstalledError
  from gr1_jax.model_checkpoint import load_config, resolve_checkpoint_dir
  from gr1_jax.policy import check_policy_config

  with cli.naming("--checkpoint", args.checkpoint):
    checkpoint = resolve_checkpoint_dir(args.checkpoint)
    config, _ = load_config(checkpoint, args.step)           # fail fast, before any simulator starts
  check_policy_config(config, source=f"checkpoint {checkpoint}")
  if args.execute_actions > config.action_chunk:
    raise UserError(f"--execute_actions={args.execute_actions} exceeds the checkpoint's "
                    f"action_chunk={config.action_chunk}; pass at most {config.action_chunk}")
  task_ids = _parse_tasks(args.tasks)
  output = os.path.abspath(args.output)
  os.makedirs(os.path.dirname(output), exist_ok=True)
  video_dir = (args.video_dir or os.path.join(os.path.dirname(output), "videos")) if args.record_video else None

  if args.backend:
    backend = _load_backend(args.backend)
  else:
    backend = LiberoBackend(libero_python=args.libero_python,
                            log_path=os.path.splitext(output)[0] + ".libero.log")
  try:
    info = backend.check()
  except (LiberoNotInstalledError, FileNotFoundError) as exc:
    backend.close()
    raise UserError(str(exc)) from None
  if not args.quiet:
    print(f"LIBERO backend ready: {info}", flush=True)
  n_tasks = backend.suite_info(args.suite)["n_tasks"]
  bad = [t for t in task_ids or [] if not 0 <= t < n_tasks]
  n_init = len(backend.init_states(args.suite, (task_ids or [0])[0]))
  if bad or args.trials > n_init:
    backend.close()
    raise UserError(f"--tasks {bad} not in {args.suite} (tasks 0..{n_tasks - 1})" if bad else
                    f"--trials={args.trials}: the tasks have {n_init} initial states")
  factory = functools.partial(_policy_factory, checkpoint, args.step, args.execute_actions, args.mode,
                              args.resolution)
  metadata = {"checkpoint": checkpoint, "execute_actions": args.execute_actions,
              "policy_mode": args.mode, "backend": info}
  try:
    summary = libero_rollout.evaluate(
        backend, factory, args.suite, task_ids=task_ids, trials=args.trials, workers=args.workers,
        max_steps=args.max_steps, num_wait_steps=args.num_wait_steps, resolution=args.resolution,
        seed=args.seed, video_dir=video_dir, output=output,
        progress_dir=os.path.splitext(output)[0] + ".progress", metadata=metadata,
        verbose=not args.quiet)
  finally:
    backend.close()
  if not args.quiet:
    print(libero_rollout.format_summary(summary))
    print(f"wrote {output}" + (f"; videos in {video_dir}" if video_dir else ""))
  return summary


if __name__ == "__main__":
  cli.run(main)
