"""The per-task CALVIN protocol (gr1_jax/evaluation/calvin_tasks.py) against the fake CALVIN."""
from __future__ import annotations

import json

import pytest

from gr1_jax.evaluation import calvin_tasks
from gr1_jax.user_errors import UserError
from tests.evaluation.fake_calvin import CHAINS, FakeCalvin, ScriptedPolicy

TASKS = ("open_drawer", "turn_on_led", "unsolvable_task")


def test_pool_is_the_distinct_initial_conditions_in_order():
  assert calvin_tasks.initial_conditions(FakeCalvin(), 10) == [dict(c) for c, _ in CHAINS]


def test_episodes_are_feasible_episode_major_and_seeded():
  backend = FakeCalvin()
  episodes = calvin_tasks.task_episodes(backend, TASKS, 4, seed=0)
  assert [tasks for _, tasks in episodes] == [(t,) for _ in range(4) for t in TASKS]
  by_task = {t: [c for c, (task,) in episodes if task == t] for t in TASKS}
  # Only CALVIN-valid starts: the drawer closed for open_drawer (1 condition of 3), the LED off
  # for turn_on_led (2 of 3); any of the 3 for a task without a rule.
  assert by_task["open_drawer"] == [CHAINS[0][0]] * 4
  assert all(c["led"] == 0 for c in by_task["turn_on_led"])
  # Without replacement while the pool lasts: the first 3 draws of a 3-condition pool differ.
  assert len({json.dumps(c, sort_keys=True) for c in by_task["unsolvable_task"][:3]}) == 3
  assert episodes == calvin_tasks.task_episodes(backend, TASKS, 4, seed=0)
  orders = {tuple(json.dumps(c, sort_keys=True) for c, (t,) in
                  calvin_tasks.task_episodes(backend, TASKS, 3, seed=s) if t == "unsolvable_task")
            for s in range(6)}
  assert len(orders) > 1          # the seed changes the draw


def test_a_task_no_condition_allows_is_named():
  class NoDrawer(FakeCalvin):
    def valid_conditions(self, conditions, task):
      return [task != "open_drawer"] * len(conditions)
  with pytest.raises(ValueError, match="allows task 'open_drawer'"):
    calvin_tasks.task_episodes(NoDrawer(), TASKS, 2)


def test_evaluate_tasks_scores_each_task_with_the_oracle():
  backend = FakeCalvin()
  summary = calvin_tasks.evaluate_tasks(backend, ScriptedPolicy, TASKS, episodes_per_task=3, ep_len=5,
                                        groups={"fixtures": ("open_drawer", "turn_on_led")},
                                        verbose=False)
  # The fake oracle: open_drawer needs 3 steps, turn_on_led 2, unsolvable_task never (5 >= budget).
  info = summary["task_info"]
  assert {t: (i["success"], i["total"]) for t, i in info.items()} == {
      "open_drawer": (3, 3), "turn_on_led": (3, 3), "unsolvable_task": (0, 3)}
  assert summary["mean_task_success"] == pytest.approx(2 / 3)
  assert summary["mean_success_fixtures"] == 1.0
  steps = [e["subtasks"][0]["steps"] for e in summary["episodes"]]
  assert steps == [3, 2, 5] * 3
  assert summary["timing"]["env_steps"] == sum(steps)
  # One env reset per episode: every episode starts from its own initial state.
  assert backend.env.resets == 9
  assert "open_drawer: 3 / 3 (100.0%)" in calvin_tasks.format_task_summary(summary)


def test_cli_tasks_protocol_with_a_tiny_checkpoint(tmp_path):
  from experiments import evaluate_calvin
  from tests.evaluation.test_calvin_rollout import _tiny_checkpoint
  ckpt = _tiny_checkpoint(tmp_path / "ckpt")
  output = tmp_path / "tasks.json"
  evaluate_calvin.main([
      "--protocol", "tasks", "--tasks", "open_drawer,turn_on_led", "--episodes_per_task", "2",
      "--checkpoint", ckpt, "--dataset_dir", str(tmp_path), "--ep_len", "5", "--output", str(output),
      "--quiet", "--backend", "tests.evaluation.fake_calvin:FakeCalvin"])
  data = json.loads(output.read_text())
  assert data["protocol"] == "tasks" and data["episodes_per_task"] == 2 and data["checkpoint"] == ckpt
  assert {t: i["total"] for t, i in data["task_info"].items()} == {"open_drawer": 2, "turn_on_led": 2}
  assert data["mean_task_success"] == 1.0 and data["mean_success_fixtures"] == 1.0
  assert "mean_success_blocks" not in data
  with pytest.raises(UserError, match="--tasks: 'open_the_door' is not a CALVIN task"):
    evaluate_calvin.main([
        "--protocol", "tasks", "--tasks", "open_drawer,open_the_door", "--checkpoint", ckpt,
        "--dataset_dir", str(tmp_path), "--output", str(tmp_path / "x.json"), "--quiet",
        "--backend", "tests.evaluation.fake_calvin:FakeCalvin"])


def test_instructions_override_the_validation_strings():
  backend, policy = FakeCalvin(), ScriptedPolicy()
  calvin_tasks.evaluate_tasks(backend, lambda: policy, ("turn_on_led",), episodes_per_task=2, ep_len=3,
                              verbose=False)
  assert set(policy.goals) == {"please turn on led"}
  policy.goals.clear()
  calvin_tasks.evaluate_tasks(backend, lambda: policy, ("turn_on_led",), episodes_per_task=2, ep_len=3,
                              instructions={"turn_on_led": "switch the green lamp on"}, verbose=False)
  assert set(policy.goals) == {"switch the green lamp on"} and len(policy.goals) == 4


def test_progress_lines_speak_of_episodes(capsys):
  calvin_tasks.evaluate_tasks(FakeCalvin(), ScriptedPolicy, ("turn_on_led", "unsolvable_task"),
                              episodes_per_task=1, ep_len=4)
  lines = [line for line in capsys.readouterr().out.splitlines() if "episode" in line]
  assert len(lines) == 2
  assert "episode 0: turn_on_led succeeded after 2 steps in " in lines[0]
  assert "episode 1: unsolvable_task failed after 4 steps" in lines[1]
  assert lines[1].split("| ")[1] == "this worker: 1/2 succeeded, 0 to go"


@pytest.mark.parametrize("spec", ["fixtures", "blocks", "all", "open_drawer,blocks"])
def test_the_evaluator_reads_tasks_as_the_recorder_does(spec):
  """calvin_closed_loop passes one --tasks to both: a group the recorder takes must be one the
  evaluator takes, with the same tasks ('all' was once unknown to the evaluator)."""
  from data_pipelines.calvin import record_demos, scripted_tasks
  from experiments import evaluate_calvin
  instructions = {task: f"do {task}" for task in scripted_tasks.TASKS}
  assert evaluate_calvin._resolve_tasks(spec, instructions) == record_demos.resolve_tasks(spec)
