"""experiments.calvin_closed_loop: the stages' commands, skipping finished stages, resuming."""
from __future__ import annotations

import json
import subprocess

import pytest

from experiments import calvin_closed_loop
from gr1_jax.user_errors import UserError


def _args(tmp_path, *extra):
  return calvin_closed_loop.parse_args([
      "--out", str(tmp_path / "out"), "--calvin_python", "/venv/bin/python", "--calvin_root", "/src/calvin",
      "--per_task", "3", "--train_steps", "7", "--seed", "2", *extra])


def test_commands_chain_each_stage_to_the_next(tmp_path):
  args = _args(tmp_path, "--finetune_flag=--config.batch_size=4")
  stages = dict(calvin_closed_loop.stage_commands(args))
  out = str(tmp_path / "out")
  assert list(stages) == ["record", "mae", "finetune", "evaluate_training", "evaluate_validation",
                          "evaluate_chains"]
  assert stages["record"][2:5] == ["data_pipelines.calvin.record_demos", "--out", f"{out}/data"]
  assert f"--config.data.path={out}/data" in stages["mae"]
  assert stages["mae"][-4:] == ["--out", f"{out}/mae", "--steps", "300"]
  finetune = stages["finetune"]
  assert f"--config.mae_from={out}/mae" in finetune and "--config.seed=2" in finetune
  assert "--config.num_train_steps=7" in finetune and finetune[-1] == "--config.batch_size=4"
  assert finetune[finetune.index("--workdir") + 1] == f"{out}/finetune_seed2"
  for which in ("validation", "training"):
    command = stages[f"evaluate_{which}"]
    assert command[command.index("--checkpoint") + 1] == f"{out}/finetune_seed2"
    assert command[command.index("--instructions") + 1] == which
    assert command[command.index("--output") + 1] == f"{out}/eval_seed2/{which}.json"
    assert command[command.index("--calvin_python") + 1] == "/venv/bin/python"
  chains = stages["evaluate_chains"]
  assert chains[2] == "experiments.evaluate_calvin" and "--protocol" not in chains     # the official one
  assert chains[chains.index("--num_sequences") + 1] == "100"
  assert chains[chains.index("--checkpoint") + 1] == f"{out}/finetune_seed2"
  assert chains[chains.index("--output") + 1] == f"{out}/eval_seed2/chains100.json"
  assert "evaluate_chains" not in dict(calvin_closed_loop.stage_commands(_args(tmp_path, "--chains", "0")))


def test_a_failed_stage_stops_and_a_rerun_resumes_there(tmp_path):
  args = _args(tmp_path)
  ran = []

  def runner(command, cwd):
    ran.append(command[2])
    return subprocess.CompletedProcess(command, 1 if command[2] == "experiments.finetune" and len(ran) == 3 else 0)

  with pytest.raises(UserError, match="stage finetune failed .exit 1.; fix the cause and re-run"):
    calvin_closed_loop.run_stages(args, runner=runner, log=lambda *a, **k: None)
  assert ran == ["data_pipelines.calvin.record_demos", "experiments.pretrain_mae", "experiments.finetune"]
  assert not (tmp_path / "out" / "stages.json").exists()
  ran.clear()
  times = calvin_closed_loop.run_stages(args, runner=runner, log=lambda *a, **k: None)
  assert ran == ["experiments.finetune"] + ["experiments.evaluate_calvin"] * 3
  assert list(times) == ["record", "mae", "finetune", "evaluate_training", "evaluate_validation",
                         "evaluate_chains"]
  summary = json.loads((tmp_path / "out" / "stages.json").read_text())
  assert set(summary["seconds"]) == set(times)
  ran.clear()
  calvin_closed_loop.run_stages(args, runner=runner, log=lambda *a, **k: None)
  assert ran == []                      # everything finished: nothing runs again


def test_training_on_the_evaluation_strings_reuses_the_recording(tmp_path):
  args = _args(tmp_path, "--train_instructions", "validation")
  stages = dict(calvin_closed_loop.stage_commands(args))
  out = str(tmp_path / "out")
  assert list(stages) == ["record", "mae", "assemble_evalstrings", "finetune_evalstrings",
                          "evaluate_validation_evalstrings", "evaluate_chains_evalstrings"]
  # the default run's record and mae stages, the same commands: their marks are shared
  default = dict(calvin_closed_loop.stage_commands(_args(tmp_path)))
  assert stages["record"] == default["record"] and stages["mae"] == default["mae"]
  assemble = stages["assemble_evalstrings"]
  assert assemble[assemble.index("--out") + 1] == f"{out}/data_evalstrings"
  assert assemble[assemble.index("--work_dir") + 1] == f"{out}/data.work"
  assert "--assemble_only" in assemble and assemble[-1] == "validation"
  finetune = stages["finetune_evalstrings"]
  assert f"--config.data.path={out}/data_evalstrings" in finetune
  assert f"--config.mae_from={out}/mae" in finetune
  assert finetune[finetune.index("--workdir") + 1] == f"{out}/finetune_evalstrings_seed2"
  command = stages["evaluate_validation_evalstrings"]
  assert command[command.index("--checkpoint") + 1] == f"{out}/finetune_evalstrings_seed2"
  assert command[command.index("--instructions") + 1] == "validation"
  assert command[command.index("--output") + 1] == f"{out}/eval_evalstrings_seed2/validation.json"
  chains = stages["evaluate_chains_evalstrings"]
  assert chains[chains.index("--checkpoint") + 1] == f"{out}/finetune_evalstrings_seed2"
  assert chains[chains.index("--output") + 1] == f"{out}/eval_evalstrings_seed2/chains100.json"


def test_the_blind_baseline_trains_on_the_same_data_into_its_own_run(tmp_path):
  out = str(tmp_path / "out")
  for extra, strings in (((), ""), (("--train_instructions", "validation"), "_evalstrings")):
    stages = dict(calvin_closed_loop.stage_commands(_args(tmp_path, "--blind", *extra)))
    assert f"finetune{strings}_blind" in stages and f"evaluate_chains{strings}_blind" in stages
    finetune = stages[f"finetune{strings}_blind"]
    assert "--config.model.blind=True" in finetune
    assert f"--config.data.path={out}/data{strings}" in finetune
    assert finetune[finetune.index("--workdir") + 1] == f"{out}/finetune{strings}_blind_seed2"
    command = stages[f"evaluate_validation{strings}_blind"]
    assert command[command.index("--checkpoint") + 1] == f"{out}/finetune{strings}_blind_seed2"
    assert command[command.index("--output") + 1] == f"{out}/eval{strings}_blind_seed2/validation.json"
    assert ("assemble_evalstrings" in stages) == bool(strings)


def test_eval_tasks_narrow_the_scoring_not_the_data(tmp_path):
  stages = dict(calvin_closed_loop.stage_commands(_args(tmp_path, "--tasks", "all", "--eval_tasks", "blocks",
                                                        "--blind", "--train_instructions", "validation")))
  record, evaluate = stages["record"], stages["evaluate_validation_evalstrings_blind"]
  assert record[record.index("--tasks") + 1] == "all"
  assert stages["assemble_evalstrings"][stages["assemble_evalstrings"].index("--tasks") + 1] == "all"
  assert evaluate[evaluate.index("--tasks") + 1] == "blocks"
  default = dict(calvin_closed_loop.stage_commands(_args(tmp_path, "--tasks", "all")))["evaluate_validation"]
  assert default[default.index("--tasks") + 1] == "all"
