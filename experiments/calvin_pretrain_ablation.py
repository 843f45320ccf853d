"""GR-1's claim in miniature on CALVIN's simulator: video pre-training, then few labelled demos.

    python -m experiments.calvin_pretrain_ablation --out /runs/closed_loop_D \\
        --calvin_python /opt/calvin_venv/bin/python --calvin_root /opt/calvin_src/calvin \\
        [--tasks fixtures] [--per_task 40] [--labelled_per_task 4] [--seeds 0,1] \\
        [--pretrain_steps 2500] [--train_steps 2500] [--episodes_per_task 20] [--workers 2]

The paper pre-trains on action-free video (Ego4D) and shows the gain is largest when few
labelled robot demonstrations follow (its 10 % CALVIN setting). Here, on scripted scene-D
demonstrations (docs/calvin_closed_loop.md):

  video       every recorded demo's static-camera frames and its instruction, without its
              actions or robot state: experiments.pretrain --config pretrain.py:mini
              -> OUT/pretrain_video
  labelled    the first --labelled_per_task demos of each task (4 of 40 = the 10 % setting),
              labelled with CALVIN's evaluation strings -> OUT/data_evalstrings_<K>per_task
  fine-tune   finetune_calvin.py:mini on the labelled set, from scratch and from the video
              pre-training (config.init_from), for each of --seeds
              -> OUT/finetune_<K>per_task_{scratch,pretrained}_seed<S>
  evaluate    experiments.evaluate_calvin --protocol tasks with CALVIN's validation strings
              -> OUT/eval_<K>per_task_{scratch,pretrained}_seed<S>/validation.json
  summary     OUT/ablation_<K>per_task.json: mean success per run and per arm

Both arms use the same frozen MAE (OUT/mae, pre-trained on the frames as in the closed-loop
run), the same schedule and the same labelled demos; only the initialisation differs. The
video corpus is scene D's own demos (the issue's "more demonstrations without labels"), not
another scene. Runs one seed's pair before the next seed, so a partial run already compares.

It shares OUT with experiments.calvin_closed_loop: its record, mae and assemble_evalstrings
stages are that command's (same names and commands, so done once), and it is resumable the
same way (OUT/.stages/<name>.json; interrupted stages resume themselves).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from experiments import calvin_closed_loop, cli
from gr1_jax.atomic_files import write_json

PRETRAIN_CONFIG = "experiments/configs/pretrain.py:mini"


def labelled_name(args) -> str:
  return f"{args.labelled_per_task}per_task"


def run_name(args, arm: str, seed: int) -> str:
  return f"{labelled_name(args)}_{arm}_seed{seed}"


def closed_loop_args(args) -> argparse.Namespace:
  """The closed-loop command's arguments for the stages both commands share."""
  return calvin_closed_loop.parse_args([
      "--out", args.out, "--calvin_python", args.calvin_python, "--calvin_root", args.calvin_root,
      "--tasks", args.tasks, "--per_task", str(args.per_task), "--workers", str(args.workers),
      "--mae_steps", str(args.mae_steps), "--train_instructions", "validation", "--chains", "0"])


def stage_commands(args) -> list[tuple[str, list[str]]]:
  out = os.path.abspath(args.out)
  shared = dict(calvin_closed_loop.stage_commands(closed_loop_args(args)))
  stages = [(name, shared[name]) for name in ("record", "mae", "assemble_evalstrings")]
  record = shared["assemble_evalstrings"]
  videos, mae = os.path.join(out, "data_evalstrings"), os.path.join(out, "mae")
  labelled = os.path.join(out, f"data_evalstrings_{labelled_name(args)}")
  pretrained = os.path.join(out, "pretrain_video")
  # The same assembly with fewer demos per task: the first K by index, as the full set's first K.
  assemble = list(record)
  assemble[assemble.index("--out") + 1] = labelled
  assemble[assemble.index("--per_task") + 1] = str(args.labelled_per_task)
  stages.append((f"assemble_{labelled_name(args)}", assemble))
  py = [sys.executable, "-m"]
  stages.append(("pretrain_video", py + [
      "experiments.pretrain", "--config", PRETRAIN_CONFIG, "--workdir", pretrained,
      f"--config.data.path={videos}", f"--config.mae_from={mae}", f"--config.seed={args.pretrain_seed}",
      f"--config.num_train_steps={args.pretrain_steps}"]))
  for seed in args.seeds:
    for arm in ("scratch", "pretrained"):
      name = run_name(args, arm, seed)
      run = os.path.join(out, f"finetune_{name}")
      stages.append((f"finetune_{name}", py + [
          "experiments.finetune", "--config", calvin_closed_loop.CONFIG, "--workdir", run,
          f"--config.data.path={labelled}", f"--config.mae_from={mae}", f"--config.seed={seed}",
          f"--config.num_train_steps={args.train_steps}"]
          + ([f"--config.init_from={pretrained}"] if arm == "pretrained" else [])))
      stages.append((f"evaluate_{name}", py + [
          "experiments.evaluate_calvin", "--protocol", "tasks", "--tasks", args.tasks,
          "--episodes_per_task", str(args.episodes_per_task), "--instructions", "validation",
          "--checkpoint", run, "--dataset_dir", labelled, "--workers", str(args.workers),
          "--output", os.path.join(out, f"eval_{name}", "validation.json"),
          "--calvin_python", args.calvin_python, "--calvin_root", args.calvin_root]))
  return stages


def summarise(args) -> dict:
  """Mean task success of every finished evaluation, per run and per arm (mean over seeds)."""
  out = os.path.abspath(args.out)
  runs, arms = {}, {}
  for seed in args.seeds:
    for arm in ("scratch", "pretrained"):
      path = os.path.join(out, f"eval_{run_name(args, arm, seed)}", "validation.json")
      if os.path.exists(path):
        with open(path) as f:
          result = json.load(f)
        runs[run_name(args, arm, seed)] = {
            "mean_task_success": result["mean_task_success"], "num_episodes": result["num_episodes"],
            "per_task": {task: info["success_rate"] for task, info in result["task_info"].items()}}
        arms.setdefault(arm, []).append(result["mean_task_success"])
  summary = {"labelled_per_task": args.labelled_per_task, "per_task": args.per_task, "tasks": args.tasks,
             "seeds": args.seeds, "runs": runs,
             "arms": {arm: {"mean_task_success": statistics.mean(v), "seeds": len(v)} for arm, v in arms.items()}}
  write_json(os.path.join(out, f"ablation_{labelled_name(args)}.json"), summary)
  return summary


def parse_args(argv=None):
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  calvin_closed_loop.add_shared_arguments(parser, "the closed-loop run's directory (shared with it)")
  parser.add_argument("--per_task", type=int, default=40, help="demonstrations per task (the video corpus)")
  parser.add_argument("--labelled_per_task", type=int, default=4,
                      help="labelled demonstrations per task for fine-tuning (4 of 40: the 10 %% setting)")
  parser.add_argument("--seeds", default="0,1", help="comma-separated fine-tuning seeds")
  parser.add_argument("--pretrain_seed", type=int, default=0)
  parser.add_argument("--workers", type=int, default=2, help="simulator processes (record and evaluate)")
  parser.add_argument("--mae_steps", type=int, default=300)
  parser.add_argument("--pretrain_steps", type=int, default=2500)
  parser.add_argument("--train_steps", type=int, default=2500)
  parser.add_argument("--episodes_per_task", type=int, default=20)
  args = parser.parse_args(argv)
  try:
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  if not args.seeds:
    parser.error("--seeds names no seed")
  for name in ("per_task", "labelled_per_task", "workers", "mae_steps", "pretrain_steps", "train_steps",
               "episodes_per_task"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.labelled_per_task >= args.per_task:
    parser.error(f"--labelled_per_task ({args.labelled_per_task}) must be below --per_task ({args.per_task}): "
                 "the video corpus is meant to be the larger one")
  return args


def main(argv=None, runner=None) -> dict:
  args = parse_args(argv)
  cli.existing_path("--calvin_python", args.calvin_python, "the python of a CALVIN venv")
  cli.existing_path("--calvin_root", args.calvin_root, "the calvin repository checkout")
  kwargs = {} if runner is None else {"runner": runner}
  calvin_closed_loop.run_stages(args, stages=stage_commands(args), **kwargs)
  summary = summarise(args)
  for arm, result in summary["arms"].items():
    print(f"{arm}: mean task success {result['mean_task_success']:.3f} over {result['seeds']} seed(s)")
  return summary


if __name__ == "__main__":
  cli.run(main)
