"""CALVIN evaluation of a GR-1 checkpoint: the official long-horizon protocol, or per task.

    python -m experiments.evaluate_calvin --checkpoint CKPT_DIR --dataset_dir /data/task_ABC_D \
        [--num_sequences 1000] [--workers N] [--record_video] [--output results.json] \
        [--calvin_python /opt/calvin-venv/bin/python]
    python -m experiments.evaluate_calvin --protocol tasks --tasks fixtures,lift_red_block_table \
        --episodes_per_task 20 --checkpoint CKPT_DIR --dataset_dir /data/scripted_D ...

--protocol tasks (gr1_jax/evaluation/calvin_tasks.py) runs each task alone from CALVIN's
initial states that allow it, with the same loop, budget, oracle and instruction as a chain's
subtask, and reports per-task success and its means (all, fixtures, blocks).

Chains come from CALVIN's own get_sequences(num_sequences); each subtask gets
360 env steps, the policy is reset per subtask, success is CALVIN's task oracle,
and a chain stops at its first failure (gr1_jax/evaluation/calvin_rollout.py).
The environment is built from <dataset_dir>/validation/.hydra/merged_config.yaml.
Chains are split into contiguous slices over --workers spawned processes, each
with its own simulator and policy. The results JSON holds the success rates at
1..5, the average length, per-task success, per-step timings and every chain;
--record_video writes an MP4 of the static camera per subtask.

Resumable: every finished chain (or episode) is appended to OUTPUT's .progress/ directory,
and running the same command again evaluates only what is missing; an evaluation of
another checkpoint, step or chain list into the same --output is refused.

CALVIN (calvin_agent + calvin_env) is not on PyPI: see README "CALVIN evaluation".
It needs numpy<2; if it lives in another interpreter, --calvin_python runs the
simulator there and talks to it over pipes.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os

from experiments import cli
from gr1_jax.user_errors import UserError


def _policy_factory(checkpoint: str, step, execute_actions: int, mode: str):
  from gr1_jax.policy import GR1Policy
  return GR1Policy.from_checkpoint(checkpoint, step=step, execute_actions=execute_actions, mode=mode)


def _load_backend(spec: str, dataset_dir: str):
  module, _, name = spec.partition(":")
  if not name:
    raise UserError(f"--backend {spec!r} must look like 'package.module:factory'")
  return getattr(importlib.import_module(module), name)(dataset_dir)


def _task_groups() -> dict:
  from data_pipelines.calvin import scripted_tasks
  # the recorder's groups (data_pipelines.calvin.record_demos --tasks), so one --tasks serves both
  return {"fixtures": scripted_tasks.FIXTURE_TASKS, "blocks": scripted_tasks.BLOCK_TASKS,
          "all": scripted_tasks.TASKS}


def _resolve_tasks(spec: str, instructions: dict) -> list[str]:
  """fixtures / blocks / all / task names -> CALVIN task names that have a validation instruction."""
  tasks = []
  for part in spec.split(","):
    for task in _task_groups().get(part, [part]):
      if task not in instructions:
        raise UserError(f"--tasks: {task!r} is not a CALVIN task with a validation instruction; "
                        f"choose fixtures, blocks, all or from {', '.join(sorted(instructions))}")
      if task not in tasks:
        tasks.append(task)
  return tasks


def parse_args(argv=None):
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--checkpoint", required=True, help="checkpoint directory or training workdir")
  parser.add_argument("--dataset_dir", required=True, help="CALVIN split directory (holds validation/)")
  parser.add_argument("--protocol", choices=("chains", "tasks"), default="chains",
                      help="chains: CALVIN's official 5-task chains; tasks: each task alone")
  parser.add_argument("--tasks", default="fixtures",
                      help="--protocol tasks: fixtures, blocks, all (both), or comma-separated CALVIN task names")
  parser.add_argument("--episodes_per_task", type=int, default=20, help="--protocol tasks")
  parser.add_argument("--seed", type=int, default=0, help="--protocol tasks: draws the initial states")
  parser.add_argument("--instructions", choices=("validation", "training"), default="validation",
                      help="--protocol tasks: CALVIN's evaluation string per task (official), or the "
                           "first of its training strings (new_playtable.yaml), to tell a policy that "
                           "fails from a text encoder that does not carry over to paraphrases")
  parser.add_argument("--num_sequences", type=int, default=1000,
                      help="evaluate the first N chains of the official list")
  parser.add_argument("--sequence_pool", type=int, default=1000,
                      help="size of the list drawn from CALVIN's get_sequences (official: 1000; "
                           "get_sequences(n) for smaller n gives different chains)")
  parser.add_argument("--workers", type=int, default=1, help="evaluation processes (one simulator each)")
  parser.add_argument("--record_video", action="store_true", help="MP4 of rgb_static per subtask")
  parser.add_argument("--video_dir", default=None, help="default: <output dir>/videos")
  parser.add_argument("--output", default="calvin_results.json", help="results JSON path")
  parser.add_argument("--ep_len", type=int, default=360, help="env steps per subtask (official 360)")
  parser.add_argument("--execute_actions", type=int, default=1,
                      help="with a chunked checkpoint (action_chunk K): actions executed per model call")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
  parser.add_argument("--mode", choices=("cached", "full"), default="cached",
                      help="policy implementation (same actions; cached is faster)")
  parser.add_argument("--calvin_python", default=None,
                      help="Python interpreter with CALVIN installed (default: this one)")
  parser.add_argument("--calvin_root", default=os.environ.get("CALVIN_ROOT"),
                      help="calvin repository checkout (for calvin_models/conf; default $CALVIN_ROOT "
                           "or next to the installed calvin_agent)")
  parser.add_argument("--backend", default=None,
                      help="advanced: 'module:factory' building a CALVIN-like backend from dataset_dir "
                           "(tests use a fake simulator)")
  parser.add_argument("--quiet", action="store_true")
  args = parser.parse_args(argv)
  for name in ("num_sequences", "workers", "ep_len", "execute_actions", "sequence_pool",
               "episodes_per_task"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.sequence_pool < args.num_sequences:
    parser.error(f"--sequence_pool={args.sequence_pool} must be >= --num_sequences={args.num_sequences}")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  cli.existing_path("--checkpoint", args.checkpoint, "a checkpoint directory or a training workdir")
  from gr1_jax.evaluation import calvin_rollout, calvin_tasks
  from gr1_jax.evaluation.calvin_backend import CalvinBackend
  from gr1_jax.evaluation.calvin_service import CalvinNotInstalledError
  from gr1_jax.model_checkpoint import load_config, locate, resolve_checkpoint_dir
  from gr1_jax.policy import check_policy_config

  with cli.naming("--checkpoint", args.checkpoint):
    checkpoint = resolve_checkpoint_dir(args.checkpoint)
    # The step is fixed here (fail fast, before any simulator starts): every worker loads it,
    # and the progress fingerprint names it, even if training writes a newer step meanwhile.
    step = locate(checkpoint, args.step)[1]
    config, _ = load_config(checkpoint, step)
  check_policy_config(config, source=f"checkpoint {checkpoint}")
  if args.execute_actions > config.action_chunk:
    raise UserError(f"--execute_actions={args.execute_actions} exceeds the checkpoint's "
                    f"action_chunk={config.action_chunk}; pass at most {config.action_chunk}")
  output = os.path.abspath(args.output)
  os.makedirs(os.path.dirname(output), exist_ok=True)
  video_dir = None
  if args.record_video:
    video_dir = args.video_dir or os.path.join(os.path.dirname(output), "videos")

  if args.backend:
    backend = _load_backend(args.backend, args.dataset_dir)
  else:
    backend = CalvinBackend(args.dataset_dir, calvin_python=args.calvin_python,
                            calvin_root=args.calvin_root,
                            log_path=os.path.splitext(output)[0] + ".calvin.log")
  try:
    info = backend.check()
  except (CalvinNotInstalledError, FileNotFoundError) as exc:
    backend.close()
    raise UserError(str(exc)) from None
  if not args.quiet:
    print(f"CALVIN backend ready: {info}", flush=True)

  factory = functools.partial(_policy_factory, checkpoint, step, args.execute_actions, args.mode)
  metadata = {"checkpoint": checkpoint, "step": step, "dataset_dir": os.path.abspath(args.dataset_dir),
              "execute_actions": args.execute_actions, "policy_mode": args.mode, "backend": info}
  progress_dir = os.path.splitext(output)[0] + ".progress"
  try:
    if args.protocol == "tasks":
      instructions = backend.instructions()
      tasks = _resolve_tasks(args.tasks, instructions)
      if args.instructions == "training":
        instructions = {task: texts[0] for task, texts in backend.annotations("training").items()}
      summary = calvin_tasks.evaluate_tasks(
          backend, factory, tasks, episodes_per_task=args.episodes_per_task, seed=args.seed,
          workers=args.workers, ep_len=args.ep_len, groups=_task_groups(), instructions=instructions,
          video_dir=video_dir, output=output, progress_dir=progress_dir,
          metadata=dict(metadata, instructions=args.instructions), verbose=not args.quiet)
      text = calvin_tasks.format_task_summary(summary)
    else:
      summary = calvin_rollout.evaluate(
          backend, factory, num_sequences=args.num_sequences, sequence_pool=args.sequence_pool,
          workers=args.workers, ep_len=args.ep_len, video_dir=video_dir, output=output,
          progress_dir=progress_dir, metadata=metadata, verbose=not args.quiet)
      text = calvin_rollout.format_summary(summary)
  except calvin_rollout.ProgressMismatchError as exc:
    raise UserError(str(exc)) from None
  finally:
    backend.close()
  if not args.quiet:
    print(text)
    print(f"wrote {output}" + (f"; videos in {video_dir}" if video_dir else ""))
  return summary


if __name__ == "__main__":
  cli.run(main)
