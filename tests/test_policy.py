"""GR1Policy: parity with an independent PyTorch re-implementation of the official CALVIN
inference loop, cached == full recompute, one compilation, action chunking, bad inputs."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from flax import nnx

from gr1_jax.conversion.official_state import export_official
from gr1_jax.model_checkpoint import numpy_params, save_model_checkpoint
from gr1_jax.modules.gr1 import GR1
from gr1_jax.policy import GR1Policy, PolicyConfigError, PolicyInputError, act_only_config
from tests.conftest import tiny_config
from tests.torch_reference import GR1Reference
from tests.torch_reference.config_bridge import ref_config
from tests.torch_reference.official_loop import OfficialLoopTorch

INSTRUCTION = "push the blue block to the left"


def random_obs(rng, static=(200, 200, 3), gripper=(84, 84, 3)):
  robot = rng.uniform(-1.0, 1.0, 15)
  robot[3:6] *= 3.0
  robot[14] = rng.choice([-1.0, 1.0])
  return {"rgb_obs": {"rgb_static": rng.integers(0, 256, static, dtype=np.uint8),
                      "rgb_gripper": rng.integers(0, 256, gripper, dtype=np.uint8)},
          "robot_obs": robot, "scene_obs": rng.uniform(-1, 1, 24)}


def flax_model(cfg, seed=0):
  model = GR1(cfg, rngs=nnx.Rngs(seed))
  model.eval()
  return model


def torch_twin(model) -> GR1Reference:
  """The official act-only model holding the Flax model's weights (via export_official)."""
  act_cfg = act_only_config(model.config)
  params = numpy_params(model)
  state = export_official({k: v for k, v in params.items()
                           if k not in ("decoder", "obs_queries", "obs_hand_queries")}, act_cfg)
  ref = GR1Reference(ref_config(act_cfg))
  # Like the official evaluator the reference class always builds the video decoder and the
  # [OBS] queries (unused without fwd_pred); everything else must be loaded.
  result = ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                               strict=False)
  assert not result.unexpected_keys, result.unexpected_keys
  assert all(k.startswith(("decoder", "mask_token", "obs_queries", "obs_hand_queries"))
             for k in result.missing_keys), result.missing_keys
  return ref.eval()


@pytest.mark.parametrize("image_size", [32, pytest.param(224, marks=pytest.mark.slow)])
def test_policy_matches_official_torch_loop(image_size):
  cfg = tiny_config()
  if image_size != cfg.mae.image_size:
    cfg = cfg.replace(mae=dataclasses.replace(cfg.mae, image_size=image_size))
  assert cfg.seq_len == 10 and cfg.fwd_pred  # the full training layout goes in; act-only comes out
  model = flax_model(cfg)
  official = OfficialLoopTorch(torch_twin(model))
  cached, full = GR1Policy(model), GR1Policy(model, mode="full")
  rng = np.random.default_rng(image_size)
  worst = 0.0
  for policy in (cached, full):
    policy.reset()
  official.reset()
  for t in range(15):
    obs = random_obs(rng)
    want = official.step(obs, INSTRUCTION)
    for policy in (cached, full):
      got = policy.step(obs, INSTRUCTION)
      assert got.shape == (7,) and got.dtype == np.float32
      assert got[6] == want[6], f"step {t}: gripper {got[6]} vs official {want[6]}"
      worst = max(worst, float(np.abs(got - want).max()))
  print(f"image_size={image_size}: max |policy - official| over 15 steps = {worst:.3g}")
  assert worst < 1e-5
  assert cached.trace_counts["step"] == 1


def test_cached_equals_full_recompute_without_recompiling():
  model = flax_model(tiny_config(), seed=1)
  cached, full = GR1Policy(model), GR1Policy(model, mode="full")
  rng = np.random.default_rng(1)
  goals = [INSTRUCTION, "open the drawer"]
  worst = 0.0
  for episode in range(3):
    cached.reset(), full.reset()
    for t in range(14 if episode else 15):
      goal = goals[(episode + (t > 11)) % 2]       # also switch instruction mid-episode
      obs = random_obs(rng)
      a, b = cached.step(obs, goal), full.step(obs, goal)
      assert a[6] == b[6]
      worst = max(worst, float(np.abs(a - b).max()))
  assert worst < 1e-5
  # One trace of the step for every history length, one language encoding per instruction.
  assert cached.trace_counts == {"language": 1, "step": 1, "full": 0, "pad": 1}
  assert cached.encoder_calls == {"language": 2, "frames": 15 + 14 + 14}
  assert full.trace_counts["full"] == 1


@pytest.mark.slow
def test_history_window_is_the_last_seq_len_frames():
  """After reset the policy must not remember earlier frames, and it keeps exactly 10."""
  model = flax_model(tiny_config(), seed=2)
  policy = GR1Policy(model)
  rng = np.random.default_rng(2)
  frames = [random_obs(rng) for _ in range(13)]
  policy.reset()
  for obs in frames:
    last = policy.step(obs, INSTRUCTION)
  fresh = GR1Policy(model, mode="full")
  fresh.reset()
  for obs in frames[3:]:                     # only the 10 most recent frames matter...
    expected = fresh.step(obs, INSTRUCTION)
  # ...but their slot positions differ from a 13-step history only if the window were wrong.
  assert np.abs(last - expected).max() < 1e-5
  policy.reset()
  again = policy.step(frames[0], INSTRUCTION)
  fresh.reset()
  assert np.abs(again - fresh.step(frames[0], INSTRUCTION)).max() < 1e-5


def test_action_chunking_executes_the_first_m_of_k():
  cfg = tiny_config(action_chunk=3)
  model = flax_model(cfg, seed=3)
  # GR1-Training initialises the chunk offsets at zero (all K actions equal); make them differ.
  offsets = model.action_chunk_queries[...]
  model.action_chunk_queries[...] = np.random.default_rng(3).normal(size=offsets.shape).astype(np.float32)
  rng = np.random.default_rng(3)
  obs_list = [random_obs(rng) for _ in range(6)]
  one = GR1Policy(model)                     # m = 1: a model call every step
  two = GR1Policy(model, execute_actions=2)  # m = 2: a model call every 2nd step
  one.reset(), two.reset()
  got = [two.step(o, INSTRUCTION) for o in obs_list]
  assert two.steps_seen == 3                 # frames 0, 2, 4 observed only
  reference = GR1Policy(model, mode="full", execute_actions=2)
  reference.reset()
  want = [reference.step(o, INSTRUCTION) for o in obs_list]
  assert np.abs(np.stack(got) - np.stack(want)).max() < 1e-5
  # The queued action is chunk entry k=1 of the same prediction, not a new model call.
  first = one.step(obs_list[0], INSTRUCTION)
  assert np.allclose(first, got[0], atol=1e-6)
  assert not np.allclose(got[1][:6], first[:6])
  with pytest.raises(PolicyConfigError, match="execute_actions=4"):
    GR1Policy(model, execute_actions=4)


@pytest.mark.parametrize("mode", ["cached", "full"])
def test_fork_has_its_own_history_and_shares_the_compiled_step(mode):
  model = flax_model(tiny_config(), seed=4)
  policy = GR1Policy(model, mode=mode)
  fork = policy.fork()
  rng = np.random.default_rng(4)
  steps = 12 if mode == "cached" else 4
  episodes = [[random_obs(rng) for _ in range(steps)] for _ in range(2)]
  got = ([], [])
  for obs_a, obs_b in zip(*episodes):                 # interleaved: a step of each in turn
    got[0].append(policy.step(obs_a, INSTRUCTION))
    got[1].append(fork.step(obs_b, "open the drawer"))
  assert policy.steps_seen == fork.steps_seen == steps
  for p, goal, episode, actions in zip((policy, policy), (INSTRUCTION, "open the drawer"), episodes, got):
    p.reset()                                          # one history at a time: the reference
    np.testing.assert_array_equal(np.stack(actions), np.stack([p.step(o, goal) for o in episode]))
  assert fork.trace_counts is policy.trace_counts and policy.trace_counts[
      "step" if mode == "cached" else "full"] == 1


def test_from_checkpoint_and_config_errors(tmp_path):
  cfg = tiny_config()
  model = flax_model(cfg, seed=4)
  save_model_checkpoint(str(tmp_path / "ok"), numpy_params(model), cfg)
  policy = GR1Policy.from_checkpoint(str(tmp_path / "ok"), expected_config={"seq_len": 10})
  direct = GR1Policy(model)
  rng = np.random.default_rng(4)
  policy.reset(), direct.reset()
  for _ in range(3):
    obs = random_obs(rng)
    assert np.abs(policy.step(obs, INSTRUCTION) - direct.step(obs, INSTRUCTION)).max() < 1e-6

  with pytest.raises(PolicyConfigError, match=r"mae.image_size=32, expected 224"):
    GR1Policy.from_checkpoint(str(tmp_path / "ok"), expected_config={"mae.image_size": 224})

  pretrain = tiny_config("tiny_pretrain")
  save_model_checkpoint(str(tmp_path / "pre"), numpy_params(flax_model(pretrain)), pretrain)
  with pytest.raises(PolicyConfigError, match="act_pred=False"):
    GR1Policy.from_checkpoint(str(tmp_path / "pre"))

  # Params written for one config, config JSON claiming another: named parameter mismatches.
  wider = cfg.replace(hidden_size=48, mlp_dim=96)
  save_model_checkpoint(str(tmp_path / "bad"), numpy_params(model), wider)
  with pytest.raises(PolicyConfigError, match=r"do not match its own model config.*shape"):
    GR1Policy.from_checkpoint(str(tmp_path / "bad"))


def test_bad_observations_and_instructions_are_named():
  policy = GR1Policy(flax_model(tiny_config(), seed=5))
  rng = np.random.default_rng(5)
  policy.reset()
  good = random_obs(rng)

  def broken(mutate):
    obs = {"rgb_obs": dict(good["rgb_obs"]), "robot_obs": good["robot_obs"].copy()}
    mutate(obs)
    return obs

  cases = [
      (lambda o: o.pop("robot_obs"), "missing key 'robot_obs'"),
      (lambda o: o.pop("rgb_obs"), "missing key 'rgb_obs'"),
      (lambda o: o["rgb_obs"].pop("rgb_gripper"), "missing camera 'rgb_gripper'"),
      (lambda o: o["rgb_obs"].__setitem__("rgb_static", good["rgb_obs"]["rgb_static"][:100]),
       r"\['rgb_static'\] has shape \(100, 200, 3\)"),
      (lambda o: o["rgb_obs"].__setitem__("rgb_gripper", good["rgb_obs"]["rgb_gripper"] / 255.0),
       r"\['rgb_gripper'\] has shape \(84, 84, 3\) and dtype float64, expected uint8"),
      (lambda o: o.__setitem__("robot_obs", good["robot_obs"][:7]), r"'robot_obs'\] has shape \(7,\)"),
      (lambda o: o["robot_obs"].__setitem__(14, 0.0) or o["robot_obs"].__setitem__(14, 3.0),
       r"robot_obs'\]\[14\] = 3.0 is the gripper action"),
  ]
  for mutate, message in cases:
    with pytest.raises(PolicyInputError, match=message):
      policy.step(broken(mutate), INSTRUCTION)
  for goal in ("", "   "):
    with pytest.raises(PolicyInputError, match="instruction\\) is empty"):
      policy.step(good, goal)
  with pytest.raises(PolicyInputError, match="goal must be the instruction string"):
    policy.step(good, None)
  assert policy.steps_seen == 0              # rejected steps leave the history untouched
  policy.step(good, INSTRUCTION)
  assert policy.steps_seen == 1


def test_blind_baseline_ignores_both_cameras_and_travels_with_the_checkpoint(tmp_path):
  """model.blind zeroes the frames inside encode_frames: a blind policy acts the same on any
  images, but still on the state; the same weights with eyes open do not. The flag is read
  back from the checkpoint, and export to the official class (which always looks) is refused."""
  from gr1_jax.conversion.convert import export_torch_state_dict
  cfg = tiny_config()
  params = numpy_params(flax_model(cfg, seed=6))
  for blind in (False, True):
    save_model_checkpoint(str(tmp_path / str(blind)), params, cfg.replace(blind=blind))
  rng = np.random.default_rng(6)
  states = [random_obs(rng)["robot_obs"] for _ in range(4)]

  policies = {blind: GR1Policy.from_checkpoint(str(tmp_path / str(blind))) for blind in (False, True)}

  def rollout(blind, image_seed, state_offset=0.0):
    policy = policies[blind]                  # reset below: one compiled step per policy
    images = np.random.default_rng(image_seed)
    policy.reset()
    actions = []
    for state in states:
      obs = random_obs(images)
      obs["robot_obs"] = state + state_offset * (np.arange(15) < 6)
      actions.append(policy.step(obs, INSTRUCTION))
    return np.stack(actions)

  sighted = np.abs(rollout(False, 1) - rollout(False, 2)).max()
  blind_images = np.abs(rollout(True, 1) - rollout(True, 2)).max()
  blind_state = np.abs(rollout(True, 1) - rollout(True, 1, state_offset=0.3)).max()
  assert sighted > 1e-3, sighted            # other images, other actions
  assert blind_images < 1e-6, blind_images  # a blind policy: images do not matter
  assert blind_state > 1e-3, blind_state    # ... but its state still does
  assert policies[True].config.blind and not policies[False].config.blind
  with pytest.raises(ValueError, match="model.blind=True .* cannot be exported"):
    export_torch_state_dict(str(tmp_path / "True"))


@pytest.mark.parametrize("mode", ["cached", "full"])
def test_lower_step_is_the_next_step_and_leaves_the_episode_alone(mode):
  """lower_step(obs, goal) lowers exactly what step(obs, goal) runs next, at the current history,
  without stepping: interleaving it with steps changes no action, and its compiled program
  counts the model's FLOPs (the cost reader of benchmarks/policy_vs_torch.py)."""
  from gr1_jax.training.aot import cost_analysis
  model = flax_model(tiny_config(), seed=5)
  rng = np.random.default_rng(5)
  episode = [random_obs(rng) for _ in range(4)]
  plain = GR1Policy(model, mode=mode)
  expected = [plain.step(o, INSTRUCTION) for o in episode]
  policy = GR1Policy(model, mode=mode)
  got = []
  for obs in episode:
    lowered = policy.lower_step(obs, INSTRUCTION)
    assert policy.steps_seen == len(got)
    got.append(policy.step(obs, INSTRUCTION))
  np.testing.assert_array_equal(np.stack(got), np.stack(expected))
  assert cost_analysis(lowered)["flops"] > 1e5   # a whole tiny GR-1 step, not an empty program
  # No new trace: the lowered program is the jitted step's own (same shapes and dtypes).
  assert policy.trace_counts["step" if mode == "cached" else "full"] == 1
