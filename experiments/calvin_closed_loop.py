"""Closed loop on CALVIN's own simulator in one command: record -> MAE -> fine-tune -> evaluate.

    python -m experiments.calvin_closed_loop --out /runs/closed_loop_D \\
        --calvin_python /opt/calvin_venv/bin/python --calvin_root /opt/calvin_src/calvin \\
        [--tasks fixtures] [--per_task 40] [--workers 2] [--seed 0] [--train_steps 2500] \\
        [--episodes_per_task 20] [--eval_tasks blocks] [--chains 100] \\
        [--train_instructions training|validation] [--blind] \\
        [--finetune_flag=--config.batch_size=16 ...]

Stages (each one a process of its own, run through its own entry point; docs/calvin_closed_loop.md):
  1 record    data_pipelines.calvin.record_demos: scripted scene-D demonstrations, kept only if
              CALVIN's oracle says solved, in CALVIN's dataset layout -> OUT/data
  2 mae       experiments.pretrain_mae: the frozen MAE of finetune_calvin.py:mini, trained on
              OUT/data's frames -> OUT/mae
  3 finetune  experiments.finetune --config finetune_calvin.py:mini -> OUT/finetune_seed<S>
  4 evaluate  experiments.evaluate_calvin --protocol tasks, with a training instruction and with
              CALVIN's validation instructions -> OUT/eval_seed<S>/{training,validation}.json
  5 chains    experiments.evaluate_calvin: CALVIN's official protocol (5-task chains, validation
              strings) on the first --chains of its 1000 chains -> OUT/eval_seed<S>/chains<N>.json

--train_instructions validation fine-tunes on CALVIN's evaluation strings instead: the same demos
are assembled again with those labels (OUT/data_evalstrings, no new recording), trained into
OUT/finetune_evalstrings_seed<S> and scored with the validation strings only
(OUT/eval_evalstrings_seed<S>/validation.json). record and mae are shared with the default run.
--blind trains and scores the no-vision baseline on the same data (config.model.blind=True)
into OUT/finetune[_evalstrings]_blind_seed<S> and OUT/eval[_evalstrings]_blind_seed<S>.

Resumable: a stage that finished leaves OUT/.stages/<name>.json (its command and wall time) and
is skipped on a re-run; an interrupted stage is run again and resumes itself (the recorder
skips attempts already made, fine-tuning restarts from its last checkpoint, an evaluation runs
only the episodes or chains missing from its .progress/). Every stage prints
its own progress: the recorder its acceptance counts and rate, fine-tuning its step and ETA,
the evaluation one line per episode. OUT/stages.json sums up the wall time per stage.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from experiments import cli
from gr1_jax.atomic_files import write_json
from gr1_jax.user_errors import UserError

CONFIG = "experiments/configs/finetune_calvin.py:mini"


def stage_commands(args) -> list[tuple[str, list[str]]]:
  out = os.path.abspath(args.out)
  data, mae = os.path.join(out, "data"), os.path.join(out, "mae")
  # Trained on the evaluation strings: its own dataset copy (same demos and frames, other
  # labels), run and results, so both variants live side by side under OUT.
  strings = "_evalstrings" if args.train_instructions == "validation" else ""
  variant = strings + ("_blind" if args.blind else "")
  train_data = os.path.join(out, "data" + strings)
  run = os.path.join(out, f"finetune{variant}_seed{args.seed}")
  evals = os.path.join(out, f"eval{variant}_seed{args.seed}")
  calvin = ["--calvin_python", args.calvin_python, "--calvin_root", args.calvin_root]
  py = [sys.executable, "-m"]
  def record(dataset):
    return py + ["data_pipelines.calvin.record_demos", "--out", dataset, "--tasks", args.tasks,
                 "--per_task", str(args.per_task)]
  stages = [
      ("record", record(data) + ["--workers", str(args.workers)] + calvin),
      ("mae", py + ["experiments.pretrain_mae", "--config", CONFIG, f"--config.data.path={data}",
                    "--out", mae, "--steps", str(args.mae_steps)]),
  ]
  if strings:
    stages.append((f"assemble{strings}", record(train_data) + [
        "--work_dir", data + ".work", "--assemble_only", "--train_instructions", "validation"]))
  stages.append((f"finetune{variant}", py + [
      "experiments.finetune", "--config", CONFIG, "--workdir", run, f"--config.data.path={train_data}",
      f"--config.mae_from={mae}", f"--config.seed={args.seed}",
      f"--config.num_train_steps={args.train_steps}"] + (["--config.model.blind=True"] if args.blind else [])
      + list(args.finetune_flag)))
  # A training string first: the quick check that the policy acts (successes end episodes
  # early); then CALVIN's validation strings, the official number, which a text encoder
  # without pre-trained weights may not carry over to (failed episodes run the full 360 steps).
  # A model trained on the validation strings is scored with those only.
  for instructions in ("validation",) if strings else ("training", "validation"):
    stages.append((f"evaluate_{instructions}{variant}", py + [
        "experiments.evaluate_calvin", "--protocol", "tasks", "--tasks", args.eval_tasks or args.tasks,
        "--episodes_per_task", str(args.episodes_per_task), "--instructions", instructions,
        "--checkpoint", run, "--dataset_dir", train_data, "--workers", str(args.workers),
        "--output", os.path.join(evals, f"{instructions}.json")] + calvin))
  if args.chains:  # CALVIN's official protocol on the first N of its 1000 chains (all 34 tasks)
    stages.append((f"evaluate_chains{variant}", py + [
        "experiments.evaluate_calvin", "--num_sequences", str(args.chains), "--checkpoint", run,
        "--dataset_dir", train_data, "--workers", str(args.workers),
        "--output", os.path.join(evals, f"chains{args.chains}.json")] + calvin))
  return stages


def run_stages(args, runner=subprocess.run, log=print, stages=None) -> dict:
  """Runs `stages` (default: this command's) in order, skipping those OUT/.stages marks done.

  Marks are keyed by stage name only, so another entry point over the same OUT (e.g.
  experiments.calvin_pretrain_ablation) shares the stages it has in common with this one."""
  out = os.path.abspath(args.out)
  marks = os.path.join(out, ".stages")
  os.makedirs(marks, exist_ok=True)
  stages = stage_commands(args) if stages is None else stages
  times = {}
  for number, (name, command) in enumerate(stages, 1):
    mark = os.path.join(marks, f"{name}.json")
    if os.path.exists(mark):
      with open(mark) as f:
        times[name] = json.load(f)["seconds"]
      log(f"[{number}/{len(stages)}] {name}: done before ({times[name] / 60:.1f} min), skipped")
      continue
    log(f"[{number}/{len(stages)}] {name}: {shlex.join(command)}", flush=True)
    start = time.time()
    result = runner(command, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if result.returncode != 0:
      raise UserError(f"stage {name} failed (exit {result.returncode}); fix the cause and re-run the "
                      f"same command: finished stages are skipped and this one resumes")
    times[name] = time.time() - start
    write_json(mark, {"command": command, "seconds": times[name]})
    log(f"[{number}/{len(stages)}] {name}: {times[name] / 60:.1f} min", flush=True)
  # Merged with what other entry points over the same OUT recorded there.
  summary_path = os.path.join(out, "stages.json")
  seconds = {}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      seconds = json.load(f).get("seconds", {})
  seconds.update(times)
  write_json(summary_path, {"seconds": seconds, "total_seconds": sum(seconds.values())})
  return times


def add_shared_arguments(parser, out_help: str) -> None:
  """The arguments every command over a closed-loop OUT takes (this one, the ablation)."""
  parser.add_argument("--out", required=True, help=out_help)
  parser.add_argument("--calvin_python", required=True, help="python of the CALVIN venv (experiments/calvin_setup.sh)")
  parser.add_argument("--calvin_root", required=True, help="the calvin repository checkout")
  parser.add_argument("--tasks", default="fixtures", help="fixtures, blocks, all or task names (record and evaluate)")


def parse_args(argv=None):
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  add_shared_arguments(parser, "directory for the data, the runs and the results")
  parser.add_argument("--eval_tasks", default=None,
                      help="tasks to score per task, if not --tasks (e.g. blocks for the blind "
                           "baseline, whose point is the tasks that need vision)")
  parser.add_argument("--per_task", type=int, default=40, help="demonstrations per task")
  parser.add_argument("--workers", type=int, default=2, help="simulator processes (record and evaluate)")
  parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
  parser.add_argument("--mae_steps", type=int, default=300,
                      help="MAE pre-training steps (300: held-out masked MSE about a quarter of its start)")
  parser.add_argument("--train_steps", type=int, default=2500)
  parser.add_argument("--episodes_per_task", type=int, default=20)
  parser.add_argument("--chains", type=int, default=100,
                      help="then CALVIN's official protocol on the first N of its 1000 evaluation "
                           "chains (validation strings; 0: skip)")
  parser.add_argument("--train_instructions", choices=("training", "validation"), default="training",
                      help="strings the fine-tuning data carries: CALVIN's training paraphrases, or "
                           "its validation strings (the ones evaluation uses; runs go to "
                           "OUT/{data,finetune,eval}_evalstrings*)")
  parser.add_argument("--blind", action="store_true",
                      help="the no-vision baseline: both cameras zeroed in training and acting "
                           "(config.model.blind); runs go to OUT/{finetune,eval}*_blind_seed<S>")
  parser.add_argument("--finetune_flag", action="append", default=[],
                      help="extra flag for experiments.finetune, e.g. --finetune_flag=--config.batch_size=32")
  args = parser.parse_args(argv)
  for name in ("per_task", "workers", "mae_steps", "train_steps", "episodes_per_task"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if not 0 <= args.chains <= 1000:
    parser.error(f"--chains must be within 0..1000 (CALVIN's list has 1000), got {args.chains}")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  cli.existing_path("--calvin_python", args.calvin_python, "the python of a CALVIN venv")
  cli.existing_path("--calvin_root", args.calvin_root, "the calvin repository checkout")
  return run_stages(args)


if __name__ == "__main__":
  cli.run(main)
