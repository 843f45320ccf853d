"""Closed-loop GR-1 policy with CALVIN's agent interface: `reset()` and `step(obs, goal)`.

    policy = GR1Policy.from_checkpoint("ckpt_dir")
    policy.reset()                                   # at the start of every subtask
    action = policy.step(obs, "push the blue block to the left")   # np.ndarray (7,) float32

It replicates the official evaluator (gr1.md section 9;
GR-1 evaluation/calvin_evaluation.py) step for step:
  * the instruction is CLIP-tokenised (77 ids) and encoded by the frozen CLIP text tower;
  * obs["rgb_obs"]["rgb_static"] / ["rgb_gripper"] (uint8 HWC) -> /255 -> torch-style
    bicubic resize to the model's image size -> ImageNet normalisation;
  * state = robot_obs[0:6] (raw) and robot_obs[-1] (gripper action +-1 -> class
    trunc((g+1)/2) -> one-hot);
  * a history of the last seq_len (10) steps, RIGHT-padded: padded slots hold zero
    (normalised) images, zero arm state and the "closed" gripper one-hot [1, 0], and
    attention_mask 0; the model is the act-only layout (no [OBS] queries: nobody
    attends to query tokens, so they cannot change the actions);
  * the prediction of the LAST VALID slot is returned: arm 6-D as predicted (no
    clipping), gripper sigmoid(logit) > 0.5 -> +1 else -1.

Speed. The frozen encoders and the resampler see every frame exactly once:
their per-frame token features (no timestep embedding yet) live in a device-side
shift buffer of seq_len slots, laid out exactly like the official window (slot i
= i-th frame of the history; when full, the buffer shifts left by one). One
jitted function per policy does preprocess + encode the new frame + update the
buffer + trunk + head, with the step count as a traced scalar, so it compiles
once and never again as the history fills. The language feature is computed
once per instruction (cached by text). `mode="full"` instead re-runs the whole
model on the full padded window every step, like the official code (for parity
tests and the latency benchmark).

Other robots (a checkpoint trained on a LeRobot dataset, whose steps hold the item
norm_stats: gr1_jax/norm_stats.py): obs["robot_obs"] is then that robot's state vector
(norm_stats.state.dim long); arm state = its arm dims, normalised as in training, gripper
one-hot from its gripper dim and threshold; the returned action is the arm prediction
UN-normalised to the robot's units, then gripper_values[1] / [0] for class 1 / 0.
Without that item everything stays CALVIN's (above), exactly.

Action chunking (GR1-Training's chunked variant, config.action_chunk = K > 1):
`execute_actions=m` (1 <= m <= K) runs the model on one step, returns its first
action and queues the next m - 1, which the following m - 1 steps return
WITHOUT observing (the history only gets the frames at model calls, exactly as
GR1-Training's evaluator). Default m = 1: one model call per step (official).
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gr1_jax import tokenizer
from gr1_jax.image_preprocessing import preprocess_uint8
from gr1_jax.model_config import GR1Config
from gr1_jax.user_errors import UserError

CALVIN_STATIC_SHAPE = (200, 200, 3)
CALVIN_GRIPPER_SHAPE = (84, 84, 3)
CALVIN_ROBOT_OBS_DIM = 15


class PolicyInputError(ValueError):
  """An observation or instruction the policy cannot use; the message names the field."""


class PolicyConfigError(UserError, ValueError):
  """A checkpoint / config the policy cannot act with; the message names the setting."""


def act_only_config(config: GR1Config) -> GR1Config:
  """The official evaluation layout: the same model without the [OBS] query groups."""
  return config.replace(fwd_pred=False, fwd_pred_hand=False)


def _select_like(tree: Mapping, template: Mapping, path: str = "") -> dict:
  """The sub-tree of `tree` with the keys of `template` (drops decoder / [OBS] queries)."""
  out = {}
  for key, sub in template.items():
    if key not in tree:
      raise PolicyConfigError(f"parameter {path}{key} is missing from the checkpoint params")
    out[key] = _select_like(tree[key], sub, f"{path}{key}.") if isinstance(sub, Mapping) else tree[key]
  return out


def check_policy_config(config: GR1Config, *, source: str = "config",
                        expected: Mapping[str, Any] | None = None) -> None:
  """Raises PolicyConfigError naming every setting that rules out closed-loop control."""
  problems = []
  if not config.act_pred:
    problems.append("act_pred=False (a video-only / pretraining checkpoint has no action head)")
  if not config.use_state:
    problems.append("use_state=False (the policy feeds robot_obs as the state tokens)")
  for key, value in (expected or {}).items():
    have = config.to_dict()
    for part in key.split("."):
      if not isinstance(have, Mapping) or part not in have:
        problems.append(f"expected setting {key} does not exist in the model config")
        break
      have = have[part]
    else:
      if have != value:
        problems.append(f"{key}={have!r}, expected {value!r}")
  if problems:
    raise PolicyConfigError(f"{source} does not fit the policy: " + "; ".join(problems))


class GR1Policy:
  """CALVIN agent around a GR-1 model (see the module docstring)."""

  def __init__(self, model, *, mode: str = "cached", execute_actions: int = 1,
               static_shape: tuple[int, int, int] = CALVIN_STATIC_SHAPE,
               gripper_shape: tuple[int, int, int] = CALVIN_GRIPPER_SHAPE,
               robot_obs_dim: int | None = None, source: str = "model", norm_stats=None):
    """model: a GR1 module (any layout with act_pred; it is re-built act-only).
    norm_stats: a gr1_jax.norm_stats.NormStats (robot mapping + normalisation) or None (CALVIN).
    robot_obs_dim: default CALVIN's 15, or norm_stats.state.dim."""
    config: GR1Config = model.config
    check_policy_config(config, source=source)
    if mode not in ("cached", "full"):
      raise ValueError(f"mode={mode!r}, expected 'cached' or 'full'")
    chunk = config.action_chunk
    if not 1 <= int(execute_actions) <= chunk:
      raise PolicyConfigError(f"execute_actions={execute_actions} must be in [1, action_chunk={chunk}] "
                              f"({source} predicts {chunk} action(s) per step)")
    from gr1_jax.model_checkpoint import build_model, numpy_params
    self.config = act_only_config(config)
    if config.fwd_pred:
      from gr1_jax.model_checkpoint import abstract_model
      template = nnx.to_pure_dict(nnx.state(abstract_model(self.config), nnx.Param))
      model = build_model(self.config, _select_like(numpy_params(model), template))
    model.eval()
    self.mode = mode
    self.execute_actions = int(execute_actions)
    self.source = source
    self.static_shape = tuple(static_shape)
    self.gripper_shape = tuple(gripper_shape)
    self.norm = norm_stats
    if robot_obs_dim is None:
      robot_obs_dim = norm_stats.state.dim if norm_stats is not None else CALVIN_ROBOT_OBS_DIM
    self.robot_obs_dim = int(robot_obs_dim)
    self.seq_len = self.config.seq_len
    self.image_size = self.config.mae.image_size
    # Python-side counters: traces (= compilations) of each jitted function, and how often
    # the frozen encoders ran (language: once per new instruction; frames: once per step).
    self.trace_counts = {"language": 0, "step": 0, "full": 0, "pad": 0}
    self.encoder_calls = {"language": 0, "frames": 0}
    self._graphdef, self._state = nnx.split(model)
    self._lang_cache: dict[str, jax.Array] = {}
    self._encode_language = jax.jit(self._encode_language_impl)
    self._cached_step = jax.jit(self._cached_step_impl, donate_argnums=(2,))
    self._full_step = jax.jit(self._full_step_impl)
    self._pad = None
    self.reset()

  # ------------------------------------------------------------------ construction
  @classmethod
  def from_checkpoint(cls, directory: str, *, step: int | None = None,
                      expected_config: Mapping[str, Any] | None = None, **kwargs) -> "GR1Policy":
    """Builds the policy from a checkpoint directory (or a training workdir).

    expected_config: optional {"field" or "sub.field": value} the checkpoint's model
    config must have (e.g. {"seq_len": 10, "mae.image_size": 224}).
    """
    from gr1_jax.model_checkpoint import (abstract_model, build_model, load_config, load_norm_stats,
                                          resolve_checkpoint_dir)
    directory = resolve_checkpoint_dir(directory)
    config, _ = load_config(directory, step)
    if "norm_stats" not in kwargs:
      kwargs["norm_stats"] = load_norm_stats(directory, step)
    check_policy_config(config, source=f"checkpoint {directory}", expected=expected_config)
    params = _load_checked_params(directory, config, step)
    # Build the act-only model straight away (no decoder / [OBS] queries in memory twice).
    act_config = act_only_config(config)
    template = nnx.to_pure_dict(nnx.state(abstract_model(act_config), nnx.Param))
    model = build_model(act_config, _select_like(params, template))
    del params
    return cls(model, source=f"checkpoint {directory}", **kwargs)

  # ------------------------------------------------------------------ jitted pieces
  def _model(self, state):
    return nnx.merge(self._graphdef, state)

  def _encode_language_impl(self, state, tokens):
    self.trace_counts["language"] += 1
    return self._model(state).encode_language(tokens)

  def _preprocess(self, rgb_u8, hand_u8):
    rgb = preprocess_uint8(rgb_u8, self.image_size)
    hand = preprocess_uint8(hand_u8, self.image_size) if self.config.use_hand_rgb else None
    return rgb, hand

  def _cached_step_impl(self, state, lang, cache, count, rgb_u8, hand_u8, arm, gripper):
    """One policy step with fixed shapes; `count` = frames seen before this one (traced)."""
    self.trace_counts["step"] += 1
    model = self._model(state)
    rgb, hand = self._preprocess(rgb_u8[None], None if hand_u8 is None else hand_u8[None])
    new = dict(model.encode_frames(rgb, hand))                      # (1, ...) per key
    new = {k: v[0] for k, v in new.items()}
    new["arm"], new["gripper"] = arm, gripper
    steps = self.seq_len
    full = count >= steps
    slot = jnp.minimum(count, steps - 1)

    def push(buffer, value):
      shifted = jnp.where(full, jnp.roll(buffer, -1, axis=0), buffer)
      return jax.lax.dynamic_update_index_in_dim(shifted, value.astype(buffer.dtype), slot, 0)

    cache = {k: push(cache[k], new[k]) for k in cache}
    num_valid = jnp.minimum(count + 1, steps)
    step_mask = (jnp.arange(steps) < num_valid)[None]
    feats = {k: v[None] for k, v in cache.items() if k not in ("arm", "gripper")}
    out = model.predict(lang, feats, step_mask, cache["arm"][None], cache["gripper"][None])
    return self._last_valid(out, num_valid), cache, count + 1

  def _full_step_impl(self, state, tokens, rgb, hand, arm, gripper, step_mask):
    """The official forward on a whole padded window (normalised images)."""
    self.trace_counts["full"] += 1
    model = self._model(state)
    out = model(rgb, tokens, step_mask, hand_rgb=hand, arm_state=arm, gripper_state=gripper)
    return self._last_valid(out, jnp.sum(step_mask[0]).astype(jnp.int32))

  @staticmethod
  def _last_valid(out, num_valid):
    index = num_valid - 1
    arm = jax.lax.dynamic_index_in_dim(out["arm_action_preds"][0], index, 0, keepdims=False)  # (K, 6)
    logit = jax.lax.dynamic_index_in_dim(out["gripper_action_preds"][0], index, 0, keepdims=False)
    gripper = jnp.where(jax.nn.sigmoid(logit.astype(jnp.float32)) > 0.5, 1.0, -1.0)
    return arm.astype(jnp.float32), gripper.astype(jnp.float32), logit

  def _padding_features(self):
    """Per-frame features of a padded slot: zero normalised images (computed once)."""
    if self._pad is None:
      def encode(state):
        self.trace_counts["pad"] += 1
        model = self._model(state)
        zeros = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
        feats = model.encode_frames(zeros, zeros if self.config.use_hand_rgb else None)
        return {k: v[0] for k, v in feats.items()}
      pad = jax.jit(encode)(self._state)
      pad["arm"] = jnp.zeros((self.config.arm_dim,), jnp.float32)
      pad["gripper"] = jnp.asarray([1.0, 0.0], jnp.float32)                # one-hot "closed"
      self._pad = pad
    return self._pad

  # ------------------------------------------------------------------ agent interface
  def reset(self) -> None:
    """Clears the history (call at the start of every subtask, as CALVIN's loop does)."""
    self._count = 0
    self._queue: list[np.ndarray] = []
    if self.mode == "cached":
      pad = self._padding_features()
      self._cache = {k: jnp.broadcast_to(v, (self.seq_len,) + v.shape).copy() for k, v in pad.items()}
      self._count_dev = jnp.asarray(0, jnp.int32)
    else:
      self._history: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]] = []

  def step(self, obs: Mapping, goal: str) -> np.ndarray:
    """One control step: CALVIN observation + instruction -> 7-D relative action (float32).

    [0:6] arm action as predicted; [6] gripper +1 (open) / -1 (close).
    """
    if self._queue:
      return self._queue.pop(0)
    rgb, hand, arm, gripper = self._read_obs(obs)
    tokens = self._tokens(goal)
    if self.mode == "cached":
      lang = self._language(goal, tokens)
      (arm_out, grip_out, _), self._cache, self._count_dev = self._cached_step(
          self._state, lang, self._cache, self._count_dev, rgb, hand, arm, gripper)
    else:
      arm_out, grip_out, _ = self._run_full(tokens, rgb, hand, arm, gripper)
    self._count += 1
    self.encoder_calls["frames"] += 1
    arm_out, grip_out = np.asarray(arm_out), np.asarray(grip_out)
    if self.norm is not None:
      arm_out = self.norm.unnormalise_arm_action(arm_out)
      low, high = self.norm.gripper_values
      grip_out = np.where(grip_out > 0, np.float32(high), np.float32(low)).astype(np.float32)
    actions = [np.concatenate([arm_out[k], grip_out[k:k + 1]]).astype(np.float32)
               for k in range(self.execute_actions)]
    self._queue = actions[1:]
    return actions[0]

  def lower_step(self, obs: Mapping, goal: str):
    """The jitted computation that step(obs, goal) would run now (at this history), lowered
    (a jax.stages.Lowered), without stepping: the history, cache and queue stay as they are.
    For cost analysis and compiler inspection (benchmarks/policy_vs_torch.py)."""
    rgb, hand, arm, gripper = self._read_obs(obs)
    tokens = self._tokens(goal)
    if self.mode == "cached":
      return self._cached_step.lower(self._state, self._language(goal, tokens), self._cache, self._count_dev,
                                     rgb, hand, arm, gripper)
    return self._full_step.lower(self._state, jnp.asarray(tokens),
                                 *self._window(self._with_frame(rgb, hand, arm, gripper)))

  def fork(self) -> "GR1Policy":
    """A policy with its own, empty history that shares this one's parameters, compiled
    functions and language-feature cache: no copy of the weights and no recompilation.

    For several concurrent episodes on one model (gr1_jax/serving). The forks must not
    step at the same time from different threads (they share the cache of instruction
    features and the trace / encoder counters); one lock around step() suffices.
    """
    if self.mode == "full":
      self._preprocess_jit   # noqa: B018 - create the jitted preprocessing once, for every fork to share
    other = copy.copy(self)   # shallow: graphdef, params, jitted callables, caches and counters shared
    other.reset()             # ... but a history of its own (reset() assigns fresh per-episode state)
    return other

  @property
  def steps_seen(self) -> int:
    """Frames observed since the last reset."""
    return self._count

  # ------------------------------------------------------------------ helpers
  def _tokens(self, goal) -> np.ndarray:
    if not isinstance(goal, str):
      raise PolicyInputError(f"goal must be the instruction string, got {type(goal).__name__}")
    if not goal.strip():
      raise PolicyInputError("goal (the language instruction) is empty")
    try:
      return tokenizer.tokenize(goal, self.config.clip.context_length)
    except ValueError as exc:
      raise PolicyInputError(f"goal {goal[:60]!r} cannot be tokenised: {exc}") from exc

  def _language(self, goal: str, tokens: np.ndarray):
    lang = self._lang_cache.get(goal)
    if lang is None:
      if len(self._lang_cache) > 256:
        self._lang_cache.clear()
      lang = self._lang_cache[goal] = self._encode_language(self._state, jnp.asarray(tokens))
      self.encoder_calls["language"] += 1
    return lang

  def _read_obs(self, obs):
    if not isinstance(obs, Mapping):
      raise PolicyInputError(f"obs must be a mapping (CALVIN observation dict), got {type(obs).__name__}")
    for key in ("rgb_obs", "robot_obs"):
      if key not in obs:
        raise PolicyInputError(f"obs is missing key {key!r}; it has {sorted(obs)}")
    cams = obs["rgb_obs"]
    if not isinstance(cams, Mapping):
      raise PolicyInputError(f"obs['rgb_obs'] must be a mapping of camera images, got {type(cams).__name__}")
    rgb = self._image(cams, "rgb_static", self.static_shape)
    hand = self._image(cams, "rgb_gripper", self.gripper_shape) if self.config.use_hand_rgb else None
    robot = np.asarray(obs["robot_obs"])
    if robot.shape != (self.robot_obs_dim,) or not np.issubdtype(robot.dtype, np.number):
      raise PolicyInputError(f"obs['robot_obs'] has shape {robot.shape} and dtype {robot.dtype}, "
                             f"expected numeric ({self.robot_obs_dim},)")
    if not np.all(np.isfinite(robot)):
      raise PolicyInputError(f"obs['robot_obs'] contains non-finite values: {robot}")
    if self.norm is not None:   # another robot: its mapping and normalisation (module docstring)
      arm = self.norm.normalise_arm_state(self.norm.state.arm(robot))
      gripper = np.eye(2, dtype=np.float32)[int(self.norm.state.gripper_above(robot))]
      return rgb, hand, arm, gripper
    arm = robot[:6].astype(np.float32)
    # Official: float32 (g + 1) / 2, then .long() (truncation), then one-hot.
    grip_class = int(np.trunc((np.float32(robot[-1]) + np.float32(1.0)) / np.float32(2.0)))
    if grip_class not in (0, 1):
      raise PolicyInputError(f"obs['robot_obs'][{self.robot_obs_dim - 1}] = {robot[-1]} is the gripper "
                             "action and must be -1 (closed) or +1 (open)")
    gripper = np.eye(2, dtype=np.float32)[grip_class]
    return rgb, hand, arm, gripper

  @staticmethod
  def _image(cams, key, shape):
    if key not in cams:
      raise PolicyInputError(f"obs['rgb_obs'] is missing camera {key!r}; it has {sorted(cams)}")
    image = np.asarray(cams[key])
    if image.dtype != np.uint8 or image.shape != tuple(shape):
      raise PolicyInputError(
          f"obs['rgb_obs'][{key!r}] has shape {image.shape} and dtype {image.dtype}, expected uint8 "
          f"{tuple(shape)} (the compiled step has fixed shapes; pass "
          f"{'static_shape' if key == 'rgb_static' else 'gripper_shape'}= for another camera size)")
    return image

  def _run_full(self, tokens, rgb, hand, arm, gripper):
    self._history = self._with_frame(rgb, hand, arm, gripper)
    return self._full_step(self._state, jnp.asarray(tokens), *self._window(self._history))

  def _with_frame(self, rgb, hand, arm, gripper) -> list:
    """The history with this frame appended (preprocessed), its oldest frames dropped to seq_len."""
    rgb_n, hand_n = self._preprocess_host(rgb, hand)
    return (self._history + [(rgb_n, hand_n, arm, gripper)])[-self.seq_len:]

  def _window(self, history):
    """(rgb, hand, arm, gripper, step_mask) of a batch-1 window: the history, right-padded."""
    size, steps = self.image_size, self.seq_len
    rgb_w = np.zeros((1, steps, size, size, 3), np.float32)
    hand_w = np.zeros((1, steps, size, size, 3), np.float32) if self.config.use_hand_rgb else None
    arm_w = np.zeros((1, steps, self.config.arm_dim), np.float32)
    grip_w = np.tile(np.asarray([1.0, 0.0], np.float32), (1, steps, 1))
    mask = np.zeros((1, steps), np.float32)
    for i, (r, h, a, g) in enumerate(history):
      rgb_w[0, i], arm_w[0, i], grip_w[0, i], mask[0, i] = r, a, g, 1.0
      if hand_w is not None:
        hand_w[0, i] = h
    return rgb_w, hand_w, arm_w, grip_w, mask

  @functools.cached_property
  def _preprocess_jit(self):
    return jax.jit(lambda img: preprocess_uint8(img, self.image_size))

  def _preprocess_host(self, rgb, hand):
    rgb_n = np.asarray(self._preprocess_jit(rgb))
    hand_n = None if hand is None else np.asarray(self._preprocess_jit(hand))
    return rgb_n, hand_n


def _load_checked_params(directory: str, config: GR1Config, step: int | None):
  """load_params, with a parameter-by-parameter comparison against the config on failure."""
  from gr1_jax.model_checkpoint import load_params
  try:
    return load_params(directory, config, step=step)
  except Exception as exc:  # Orbax raises assorted errors for tree/shape mismatches
    problems = _param_mismatches(directory, config, step)
    if problems:
      raise PolicyConfigError(
          f"checkpoint {directory}: its params do not match its own model config "
          f"({len(problems)} problem(s)): " + "; ".join(problems[:12])) from exc
    raise


def _param_mismatches(directory: str, config: GR1Config, step: int | None) -> list[str]:
  import orbax.checkpoint as ocp

  from gr1_jax.model_checkpoint import PARAMS, abstract_model, latest_step
  step = latest_step(directory) if step is None else step
  expected = nnx.to_pure_dict(nnx.state(abstract_model(config), nnx.Param))
  try:
    with ocp.CheckpointManager(directory, item_handlers={PARAMS: ocp.StandardCheckpointHandler()}) as manager:
      stored = manager.item_metadata(step)[PARAMS].tree
  except Exception:  # noqa: BLE001 - metadata unreadable: report the original error instead
    return []

  def flat(tree, prefix=""):
    out = {}
    for key, value in dict(tree).items():
      name = f"{prefix}{key}"
      if isinstance(value, Mapping):
        out.update(flat(value, name + "."))
      else:
        out[name] = tuple(getattr(value, "shape", ()) or ())
    return out

  want, have = flat(expected), flat(stored)
  problems = [f"missing {k} {want[k]}" for k in sorted(set(want) - set(have))]
  problems += [f"unexpected {k} {have[k]}" for k in sorted(set(have) - set(want))]
  problems += [f"{k} has shape {have[k]}, config expects {want[k]}"
               for k in sorted(set(want) & set(have)) if want[k] != have[k]]
  return problems
