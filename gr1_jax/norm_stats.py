"""Normalisation of a robot's state and actions, and the asset that carries it in a checkpoint.

Pure numpy (the data pipelines use it too).  A `NormStats` describes how a robot's
state vector and action vector map onto GR-1's inputs and heads, and how the arm
parts are normalised:

  state  -> arm_state (arm_dims, normalised)      + gripper one-hot [below, above threshold]
  action -> arm_action (arm_dims, normalised)     + gripper class 1 = value > threshold;
            the policy answers class 1 / 0 with gripper_values[1] / [0]

Modes (config.data.lerobot.normalization):
  none       identity (only the mapping is stored)
  mean_std   (x - mean) / (std + 1e-6)
  quantile   2 (x - q01) / (q99 - q01 + 1e-6) - 1   (openpi's quantile normalisation; not clipped)
Both are exactly invertible, so normalise -> un-normalise is the identity up to float error.

The training loop writes `to_json()` as the item `norm_stats` of every checkpoint step
(`<workdir>/checkpoints/<step>/norm_stats/metadata`, a JSON file), and GR1Policy
normalises its state input and un-normalises its arm actions from it. A checkpoint
without that item (CALVIN, converted official weights) keeps CALVIN's fixed mapping
and raw values.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

MODES = ("none", "mean_std", "quantile")
STAT_NAMES = ("mean", "std", "q01", "q99")
EPS = 1e-6
ITEM = "norm_stats"      # the checkpoint item's name
FORMAT = "gr1_norm_stats/1"


@dataclasses.dataclass(frozen=True)
class VectorMap:
  """One robot vector (state or action): which dims are the arm, which one the gripper."""
  key: str                         # the dataset feature, e.g. "observation.state"
  dim: int                         # length of the robot's vector
  arm_dims: tuple[int, ...]
  gripper_dim: int
  gripper_threshold: float
  stats: Mapping[str, np.ndarray]  # STAT_NAMES -> float32 (len(arm_dims),); empty for mode none

  def arm(self, vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector, np.float32)[..., list(self.arm_dims)]

  def gripper_above(self, vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector)[..., self.gripper_dim] > self.gripper_threshold

  def to_json(self) -> dict:
    return {"key": self.key, "dim": self.dim, "arm_dims": list(self.arm_dims), "gripper_dim": self.gripper_dim,
            "gripper_threshold": self.gripper_threshold,
            "stats": {k: np.asarray(v, np.float64).tolist() for k, v in self.stats.items()}}

  @classmethod
  def from_json(cls, d: Mapping) -> "VectorMap":
    return cls(key=str(d["key"]), dim=int(d["dim"]), arm_dims=tuple(int(i) for i in d["arm_dims"]),
               gripper_dim=int(d["gripper_dim"]), gripper_threshold=float(d["gripper_threshold"]),
               stats={k: np.asarray(v, np.float32) for k, v in dict(d.get("stats", {})).items()})


@dataclasses.dataclass(frozen=True)
class NormStats:
  mode: str
  state: VectorMap
  action: VectorMap
  gripper_values: tuple[float, float] = (-1.0, 1.0)   # the policy's gripper output for class 0 / 1
  source: str = ""                                     # where the statistics came from

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"normalization mode {self.mode!r}; expected one of {', '.join(MODES)}")
    if self.mode != "none":
      for vec in (self.state, self.action):
        for name in ("mean", "std") if self.mode == "mean_std" else ("q01", "q99"):
          if name not in vec.stats or np.shape(vec.stats[name]) != (len(vec.arm_dims),):
            raise ValueError(f"{vec.key}: statistic {name!r} missing or not of shape ({len(vec.arm_dims)},)")

  # ---- the maths (arm parts only; x has the arm dims last) ----
  def _normalise(self, x, vec: VectorMap):
    x = np.asarray(x, np.float32)
    s = vec.stats
    if self.mode == "mean_std":
      return ((x - s["mean"]) / (s["std"] + EPS)).astype(np.float32)
    if self.mode == "quantile":
      return (2.0 * (x - s["q01"]) / (s["q99"] - s["q01"] + EPS) - 1.0).astype(np.float32)
    return x

  def _unnormalise(self, x, vec: VectorMap):
    x = np.asarray(x, np.float32)
    s = vec.stats
    if self.mode == "mean_std":
      return (x * (s["std"] + EPS) + s["mean"]).astype(np.float32)
    if self.mode == "quantile":
      return ((x + 1.0) / 2.0 * (s["q99"] - s["q01"] + EPS) + s["q01"]).astype(np.float32)
    return x

  def normalise_arm_state(self, arm):
    return self._normalise(arm, self.state)

  def unnormalise_arm_state(self, arm):
    return self._unnormalise(arm, self.state)

  def normalise_arm_action(self, arm):
    return self._normalise(arm, self.action)

  def unnormalise_arm_action(self, arm):
    return self._unnormalise(arm, self.action)

  # ---- serialisation ----
  def to_json(self) -> dict:
    return {"format": FORMAT, "mode": self.mode, "state": self.state.to_json(), "action": self.action.to_json(),
            "gripper_values": list(self.gripper_values), "source": self.source}

  @classmethod
  def from_json(cls, d: Mapping) -> "NormStats":
    if d.get("format") != FORMAT:
      raise ValueError(f"norm stats format {d.get('format')!r}, expected {FORMAT!r}")
    return cls(mode=str(d["mode"]), state=VectorMap.from_json(d["state"]), action=VectorMap.from_json(d["action"]),
               gripper_values=tuple(float(v) for v in d.get("gripper_values", (-1.0, 1.0))),
               source=str(d.get("source", "")))


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
  """Per-dimension mean, std, q01, q99, min, max of (N, D) values (float64 accumulation)."""
  values = np.asarray(values, np.float64).reshape(len(values), -1)
  if len(values) == 0:
    raise ValueError("no values to compute statistics of")
  return {"mean": values.mean(0), "std": values.std(0), "q01": np.quantile(values, 0.01, axis=0),
          "q99": np.quantile(values, 0.99, axis=0), "min": values.min(0), "max": values.max(0)}


def select_stats(stats: Mapping[str, Sequence[float]], dims: Sequence[int]) -> dict[str, np.ndarray]:
  """STAT_NAMES of the full-vector `stats` restricted to `dims`."""
  return {k: np.asarray(stats[k], np.float32)[list(dims)] for k in STAT_NAMES}
