"""experiments.calvin_pretrain_ablation: its stages, what it shares with the closed loop, its summary."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess

import pytest

from experiments import calvin_closed_loop, calvin_pretrain_ablation as ablation


def _argv(tmp_path, *extra):
  return ["--out", str(tmp_path / "out"), "--calvin_python", "/venv/bin/python", "--calvin_root", "/src/calvin",
          "--per_task", "10", "--labelled_per_task", "2", "--train_steps", "7", "--pretrain_steps", "5", *extra]


def test_both_arms_train_on_the_same_labelled_demos_and_differ_only_in_init(tmp_path):
  args = ablation.parse_args(_argv(tmp_path))
  stages = dict(ablation.stage_commands(args))
  out = str(tmp_path / "out")
  assert list(stages) == [
      "record", "mae", "assemble_evalstrings", "assemble_2per_task", "pretrain_video",
      "finetune_2per_task_scratch_seed0", "evaluate_2per_task_scratch_seed0",
      "finetune_2per_task_pretrained_seed0", "evaluate_2per_task_pretrained_seed0",
      "finetune_2per_task_scratch_seed1", "evaluate_2per_task_scratch_seed1",
      "finetune_2per_task_pretrained_seed1", "evaluate_2per_task_pretrained_seed1"]
  # The shared stages are the closed loop's own commands (evaluation strings), so their marks
  # in OUT/.stages count for both entry points.
  closed = dict(calvin_closed_loop.stage_commands(calvin_closed_loop.parse_args([
      "--out", out, "--calvin_python", "/venv/bin/python", "--calvin_root", "/src/calvin",
      "--per_task", "10", "--train_instructions", "validation"])))
  for name in ("record", "mae", "assemble_evalstrings"):
    assert stages[name] == closed[name]
  labelled = stages["assemble_2per_task"]
  assert labelled[labelled.index("--out") + 1] == f"{out}/data_evalstrings_2per_task"
  assert labelled[labelled.index("--per_task") + 1] == "2"
  assert labelled[labelled.index("--work_dir") + 1] == f"{out}/data.work"
  assert "--assemble_only" in labelled and labelled[-1] == "validation"
  pretrain = stages["pretrain_video"]
  assert pretrain[2] == "experiments.pretrain" and "experiments/configs/pretrain.py:mini" in pretrain
  assert f"--config.data.path={out}/data_evalstrings" in pretrain     # every demo, as video
  assert f"--config.mae_from={out}/mae" in pretrain and "--config.num_train_steps=5" in pretrain
  for seed in (0, 1):
    scratch = stages[f"finetune_2per_task_scratch_seed{seed}"]
    pretrained = stages[f"finetune_2per_task_pretrained_seed{seed}"]
    assert [a for a in pretrained if "init_from" in a] == [f"--config.init_from={out}/pretrain_video"]
    assert not [a for a in scratch if "init_from" in a]
    # apart from the init and the run directory, the two arms' commands are the same
    strip = lambda c: [a for a in c if "init_from" not in a and "/finetune_" not in a]  # noqa: E731
    assert strip(scratch) == strip(pretrained)
    assert f"--config.data.path={out}/data_evalstrings_2per_task" in scratch
    assert f"--config.seed={seed}" in scratch and "--config.num_train_steps=7" in scratch
    for arm in ("scratch", "pretrained"):
      evaluate = stages[f"evaluate_2per_task_{arm}_seed{seed}"]
      assert evaluate[evaluate.index("--checkpoint") + 1] == f"{out}/finetune_2per_task_{arm}_seed{seed}"
      assert evaluate[evaluate.index("--instructions") + 1] == "validation"
      assert evaluate[evaluate.index("--output") + 1] == f"{out}/eval_2per_task_{arm}_seed{seed}/validation.json"


def _fake_evaluation(path, successes):
  path.parent.mkdir(parents=True, exist_ok=True)
  task_info = {t: {"success": s, "total": 4, "success_rate": s / 4} for t, s in successes.items()}
  path.write_text(json.dumps({"mean_task_success": sum(s / 4 for s in successes.values()) / len(successes),
                              "num_episodes": 4 * len(successes), "task_info": task_info}))


def test_a_run_skips_the_shared_stages_done_before_and_summarises_per_arm(tmp_path, monkeypatch):
  argv = _argv(tmp_path, "--seeds", "3")
  out = tmp_path / "out"
  # The closed loop ran before over the same OUT: record, mae and assemble_evalstrings are done.
  calvin_closed_loop.run_stages(calvin_closed_loop.parse_args([
      "--out", str(out), "--calvin_python", "/venv/bin/python", "--calvin_root", "/src/calvin",
      "--per_task", "10", "--train_instructions", "validation", "--chains", "0", "--train_steps", "7"]),
      runner=lambda c, cwd: subprocess.CompletedProcess(c, 0), log=lambda *a, **k: None)
  ran = []

  def runner(command, cwd):
    ran.append(command[2])
    if command[2] == "experiments.evaluate_calvin":
      output = command[command.index("--output") + 1]
      _fake_evaluation(pathlib.Path(output),
                       {"open_drawer": 1, "close_drawer": 3} if "scratch" in output else
                       {"open_drawer": 3, "close_drawer": 4})
    return subprocess.CompletedProcess(command, 0)

  monkeypatch.setattr(ablation.cli, "existing_path", lambda *a: None)
  summary = ablation.main(argv, runner=runner)
  assert ran == ["data_pipelines.calvin.record_demos", "experiments.pretrain",
                 "experiments.finetune", "experiments.evaluate_calvin",
                 "experiments.finetune", "experiments.evaluate_calvin"]
  assert summary["runs"]["2per_task_scratch_seed3"]["mean_task_success"] == pytest.approx(0.5)
  assert summary["runs"]["2per_task_pretrained_seed3"]["per_task"] == {"open_drawer": 0.75, "close_drawer": 1.0}
  assert summary["arms"]["pretrained"] == {"mean_task_success": pytest.approx(0.875), "seeds": 1}
  assert json.loads((out / "ablation_2per_task.json").read_text())["arms"]["scratch"]["seeds"] == 1
  # stages.json keeps the closed loop's stages beside the ablation's
  seconds = json.loads((out / "stages.json").read_text())["seconds"]
  assert {"finetune_evalstrings", "pretrain_video", "evaluate_2per_task_pretrained_seed3"} <= set(seconds)


@pytest.mark.parametrize("extra, message", [
    (("--labelled_per_task", "10"), "--labelled_per_task .10. must be below --per_task .10."),
    (("--seeds", "0,x"), "--seeds must be comma-separated integers"),
    (("--pretrain_steps", "0"), "--pretrain_steps must be >= 1"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, extra, message):
  with pytest.raises(SystemExit) as exit_info:
    ablation.parse_args(_argv(tmp_path, *extra))
  assert exit_info.value.code == 2
  assert re.search(message, capsys.readouterr().err)
