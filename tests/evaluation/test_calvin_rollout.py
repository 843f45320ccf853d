"""The CALVIN evaluation loop against a fake CALVIN (CALVIN itself cannot be installed in CI)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from gr1_jax.evaluation import calvin_rollout, calvin_service
from gr1_jax.evaluation.calvin_backend import CalvinBackend, CalvinServiceError
from gr1_jax.evaluation.calvin_service import CalvinNotInstalledError
from tests.evaluation.fake_calvin import CHAINS, STEPS_NEEDED, FakeCalvin, ScriptedPolicy


def test_protocol_on_fake_chains():
  backend, policy = FakeCalvin(), ScriptedPolicy()
  chains = backend.sequences(3)
  results = calvin_rollout.run_chains(backend, lambda: policy, chains, backend.instructions(),
                                      ep_len=8, verbose=False)
  env = backend.env
  assert [r.index for r in results] == [0, 1, 2]
  # Chain 0: every task needs <= 8 steps -> 5/5; chain 1: the 2nd task never succeeds -> 1;
  # chain 2: the first task fails -> 0.  The chain stops at its first failure.
  assert [r.num_success for r in results] == [5, 1, 0]
  assert [len(r.subtasks) for r in results] == [5, 2, 1]
  # Success is checked after every step: a task needing n steps takes exactly n.
  assert [s.steps for s in results[0].subtasks] == [STEPS_NEEDED[t] for t in CHAINS[0][1]]
  assert results[1].subtasks[1].steps == 8 and not results[1].subtasks[1].success
  # One env reset per chain, one policy reset per attempted subtask, and the env is not
  # reset between subtasks.
  assert env.resets == 3 and policy.resets == 5 + 2 + 1
  total_steps = sum(s.steps for r in results for s in r.subtasks)
  assert policy.steps == len(env.actions) == total_steps
  # The gripper value 0.3 reaches the env as exactly +1 (GR-1's env wrapper rule).
  assert all(a[-1] == 1.0 and a.dtype == np.float32 for a in env.actions)
  assert policy.goals[0] == "please open drawer"

  summary = calvin_rollout.summarize(results)
  assert summary["chain_sr"] == {"1": 2 / 3, "2": 1 / 3, "3": 1 / 3, "4": 1 / 3, "5": 1 / 3}
  assert summary["avg_seq_len"] == pytest.approx(2.0)
  info = summary["task_info"]
  assert info["unsolvable_task"] == {"success": 0, "total": 2, "success_rate": 0.0}
  assert info["turn_on_led"] == {"success": 2, "total": 2, "success_rate": 1.0}
  assert info["open_drawer"]["total"] == 1            # chain 2 never got to it
  assert summary["timing"]["env_steps"] == total_steps


def test_an_interrupted_evaluation_resumes_and_another_is_refused(tmp_path):
  progress = tmp_path / "results.progress"
  meta = {"checkpoint": "/ckpt/run", "step": 2500, "backend": {"calvin_env": "797142c"}}

  def run(policy, metadata=meta):
    return calvin_rollout.evaluate(FakeCalvin(), lambda: policy, num_sequences=3, ep_len=8,
                                   progress_dir=str(progress), metadata=metadata, verbose=False)

  first = run(ScriptedPolicy())
  (log,) = progress.glob("*.jsonl")
  lines = log.read_text().splitlines(keepends=True)
  assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]
  # a kill during chain 2 while chain 1's line was half written
  log.write_text(lines[0] + lines[1][:25])
  policy = ScriptedPolicy()
  second = run(policy, dict(meta, backend={"calvin_env": "reinstalled"}))
  assert policy.resets == 2 + 1                      # only chains 1 (2 subtasks) and 2 (1) ran
  def strip(chains):  # all but the timings
    return [(c["index"], c["tasks"], c["initial_condition"], c["num_success"],
             [(t["task"], t["instruction"], t["success"], t["steps"]) for t in c["subtasks"]]) for c in chains]

  assert strip(second["chains"]) == strip(first["chains"])
  assert second["chain_sr"] == first["chain_sr"] and second["avg_seq_len"] == first["avg_seq_len"]
  policy = ScriptedPolicy()
  assert strip(run(policy)["chains"]) == strip(first["chains"]) and policy.resets == 0
  with pytest.raises(calvin_rollout.ProgressMismatchError, match=r"another evaluation \(its identity differ"):
    run(ScriptedPolicy(), dict(meta, step=2000))
  with pytest.raises(calvin_rollout.ProgressMismatchError, match="its ep_len differ"):
    calvin_rollout.evaluate(FakeCalvin(), ScriptedPolicy, num_sequences=3, ep_len=9,
                            progress_dir=str(progress), metadata=meta, verbose=False)


def test_count_success_and_split():
  assert calvin_rollout.count_success([5, 0, 2, 2]) == [0.75, 0.75, 0.25, 0.25, 0.25]
  chains = list(range(10))
  parts = calvin_rollout.split_chains(chains, 3)
  assert [x for p in parts for x in p] == chains and len(parts) == 3
  assert calvin_rollout.split_chains(chains[:2], 5) == [[0], [1]]


def _tiny_checkpoint(path):
  from flax import nnx

  from gr1_jax.model_checkpoint import numpy_params, save_model_checkpoint
  from gr1_jax.modules.gr1 import GR1
  from tests.conftest import tiny_config
  cfg = tiny_config()
  save_model_checkpoint(str(path), numpy_params(GR1(cfg, rngs=nnx.Rngs(0))), cfg)
  return str(path)


def test_cli_end_to_end_with_tiny_checkpoint(tmp_path):
  """python -m experiments.evaluate_calvin on the fake CALVIN with a real (tiny) GR-1 policy."""
  from experiments import evaluate_calvin
  ckpt = _tiny_checkpoint(tmp_path / "ckpt")
  output = tmp_path / "out" / "results.json"
  summary = evaluate_calvin.main([
      "--checkpoint", ckpt, "--dataset_dir", str(tmp_path), "--num_sequences", "3",
      "--sequence_pool", "3", "--ep_len", "5",
      "--record_video", "--output", str(output), "--quiet",
      "--backend", "tests.evaluation.fake_calvin:FakeCalvin"])
  data = json.loads(output.read_text())
  assert data["num_sequences"] == 3 and data["ep_len"] == 5
  assert set(data["chain_sr"]) == {"1", "2", "3", "4", "5"}
  # Fake oracle succeeds by step count, so the outcome does not depend on the random weights.
  # (chain 0 fails its 5th task, which needs 6 > 5 steps).
  assert [c["num_success"] for c in data["chains"]] == [4, 1, 0]
  assert data["avg_seq_len"] == pytest.approx(5 / 3)
  assert data["task_info"]["unsolvable_task"]["total"] == 2
  assert data["timing"]["policy_step_ms"] > 0 and data["checkpoint"] == ckpt
  assert summary["chain_sr"] == data["chain_sr"]
  videos = sorted(os.listdir(tmp_path / "out" / "videos"))
  assert len(videos) == 5 + 2 + 1 and videos[0] == "0000-0-open_drawer-succ.mp4"
  import av
  with av.open(str(tmp_path / "out" / "videos" / videos[0])) as container:
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  assert len(frames) == STEPS_NEEDED["open_drawer"] + 1 and frames[0].shape == (200, 200, 3)
  progress = (tmp_path / "out" / "results.progress" / "progress.worker0.jsonl").read_text().splitlines()
  assert len(progress) == 3


def test_worker_processes_give_the_same_results(tmp_path):
  backend = FakeCalvin()
  chains = backend.sequences(5)
  one = calvin_rollout.run_chains(backend, ScriptedPolicy, chains, backend.instructions(), ep_len=6,
                                  verbose=False)
  two = calvin_rollout.run_chains(backend, ScriptedPolicy, chains, backend.instructions(), ep_len=6,
                                  workers=2, progress_dir=str(tmp_path), verbose=False)
  def outcome(results):
    return [[(s.task, s.success, s.steps) for s in r.subtasks] for r in results]
  assert outcome(one) == outcome(two)
  assert [r.index for r in two] == list(range(5))
  assert sorted(os.listdir(tmp_path)) == ["evaluation.json", "progress.worker0.jsonl", "progress.worker1.jsonl"]


def test_missing_calvin_is_a_clear_error(tmp_path):
  with pytest.raises(CalvinNotInstalledError, match="not on PyPI"):
    CalvinBackend(str(tmp_path)).check()


def test_service_wire_format_and_subprocess_errors(tmp_path):
  info = {"robot_info": {"tcp_pos": np.arange(3.0), "contacts": ((1, 2, np.float32(0.5)),),
                         "gripper_action": np.int64(-1)},
          "scene_info": {"doors": {"base__slide": {"current_state": np.float64(0.2)}},
                         "mask": np.array([True, False]), "img": np.ones((2, 3, 3), np.uint8)},
          "tasks": {"open_drawer"}, "none": None}
  back = calvin_service.decode(calvin_service.encode(info))
  assert back["tasks"] == {"open_drawer"} and back["none"] is None
  assert back["robot_info"]["contacts"] == ((1, 2, 0.5),)
  np.testing.assert_array_equal(back["scene_info"]["img"], info["scene_info"]["img"])
  assert back["scene_info"]["img"].dtype == np.uint8 and back["scene_info"]["mask"].dtype == bool
  # The service in a separate interpreter (this one, which has no CALVIN): the import error
  # crosses the pipe as CalvinNotInstalledError; unknown requests are reported, not fatal.
  backend = CalvinBackend(str(tmp_path), calvin_python=sys.executable,
                          log_path=str(tmp_path / "calvin.log"))
  try:
    with pytest.raises(CalvinNotInstalledError, match="not on PyPI"):
      backend.check()
    with pytest.raises(CalvinServiceError, match="unknown or premature request 'bogus'"):
      backend._svc().call("bogus")
    with pytest.raises(CalvinNotInstalledError, match="calvin_agent"):
      backend.instructions()                     # the service survived the bad request
  finally:
    backend.close()
  assert backend._service is None
