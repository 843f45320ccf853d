"""The fields of a training config (experiments/configs/pretrain.py, finetune_calvin.py) and
their validation, so a wrong config fails before any data is read, naming the field."""
from __future__ import annotations

import os
from collections.abc import Mapping

from gr1_jax import url_paths
from gr1_jax.losses import DEFAULT_WEIGHTS
from gr1_jax.model_config import GR1Config
from gr1_jax.training.input_pipeline import DATA_SOURCES, MIXTURE_KINDS, parse_mixture
from gr1_jax.training.optimizer import OPTIMIZER_FIELDS
from gr1_jax.user_errors import ConfigError

FIELDS = {
    "seed": int, "model": Mapping, "mesh": Mapping, "batch_size": int, "num_train_steps": int,
    "optimizer": Mapping, "loss_weights": Mapping, "data": Mapping, "init_from": str, "mae_from": str,
    "log_every": int, "eval_every": int, "eval_batches": int, "checkpoint_every": int,
    "keep_checkpoints": int, "async_checkpointing": bool, "max_consecutive_nonfinite": int,
    "image_every": int,
}
DATA_FIELDS = {"name": str, "path": str, "mixture": str, "augment": bool, "worker_count": int,
               "image_size": int, "hand_size": int, "nonfinite_from": int, "generate_demo_data": bool,
               "lerobot": Mapping, "frame_reuse": int}
POSITIVE = ("batch_size", "num_train_steps", "log_every", "eval_every", "checkpoint_every",
            "keep_checkpoints", "max_consecutive_nonfinite", "image_every")


def _check_fields(values: Mapping, fields: Mapping, where: str) -> None:
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ConfigError(f"unknown config key {where}{unknown[0]}; valid keys: {', '.join(sorted(fields))}")
  missing = sorted(set(fields) - set(values))
  if missing:
    raise ConfigError(f"config is missing {where}{missing[0]}")
  for name, kind in fields.items():
    value = values[name]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
      kind_name = getattr(kind, "__name__", None) or " or ".join(k.__name__ for k in kind)
      raise ConfigError(f"{where}{name}={value!r} must be of type {kind_name}")


def _check_data_source(data: Mapping, check_paths: bool) -> None:
  name, path, mixture = data["name"], data["path"], data["mixture"]
  if mixture:
    if name != "ego4d":
      raise ConfigError(f"config.data.mixture is set but data.name={name!r}; only the stage-1 "
                        "source data.name='ego4d' reads a mixture")
    if path:
      raise ConfigError(f"config.data.path={path!r} and config.data.mixture are both set; the mixture "
                        f"names every source, so give it alone (e.g. add 'ego4d:{path}=1' to it)")
    parse_mixture(mixture, check_paths=check_paths)
  elif name != "synthetic" and not path:
    hint = " (or set config.data.mixture)" if name == "ego4d" else ""
    raise ConfigError(f"config.data.path is empty; data.name={name!r} reads from a directory{hint}")
  elif name != "synthetic" and check_paths and not url_paths.is_url(path) and not os.path.isdir(path):
    what = "does not exist" if not os.path.exists(path) else "is not a directory"
    raise ConfigError(f"config.data.path={path} {what}; set it to {MIXTURE_KINDS[name]} (data.name={name!r})")


def _check_frame_reuse(windows: int, batch_size: int) -> None:
  """data.frame_reuse = W windows per segment (0 = per-window); batch_size counts windows."""
  if windows < 0:
    raise ConfigError(f"config.data.frame_reuse={windows} must be 0 (per-window batches) or the number "
                      "of windows per segment (data_pipelines/frame_reuse.py)")
  if windows and batch_size % windows:
    raise ConfigError(f"config.batch_size={batch_size} is not divisible by config.data.frame_reuse={windows}: "
                      "the batch counts windows and is made of batch_size / frame_reuse segments")


def segments_per_batch(config: Mapping) -> int:
  """Leading dimension of a training batch: batch_size windows, or batch_size / W segments."""
  windows = config["data"]["frame_reuse"]
  return config["batch_size"] // windows if windows else config["batch_size"]


def validate(config: Mapping, *, check_paths: bool = True) -> GR1Config:
  """Raises ConfigError (a ValueError) naming the offending field; returns the model config.

  check_paths: local data paths must be existing directories (off to check a config
  before its demo data is generated)."""
  _check_fields(config, FIELDS, "config.")
  for name in POSITIVE:
    if config[name] <= 0:
      raise ConfigError(f"config.{name}={config[name]} must be > 0")
  _check_fields(config["data"], DATA_FIELDS, "config.data.")
  if config["data"]["name"] not in DATA_SOURCES:
    raise ConfigError(f"config.data.name={config['data']['name']!r}; expected one of {', '.join(DATA_SOURCES)}")
  _check_data_source(config["data"], check_paths)
  _check_frame_reuse(config["data"]["frame_reuse"], config["batch_size"])
  mae_from = config["mae_from"]
  if mae_from and check_paths and not url_paths.is_url(mae_from) and not os.path.isdir(mae_from):
    raise ConfigError(f"config.mae_from={mae_from} does not exist; set it to a directory written by "
                      "`python -m experiments.pretrain_mae`, or to '' to keep the MAE of init_from / scratch")
  if config["data"]["generate_demo_data"] and config["data"]["name"] not in ("ego4d", "calvin_raw"):
    raise ConfigError(f"config.data.generate_demo_data=True but data.name={config['data']['name']!r} has no "
                      "demo generator; use data.name='ego4d' or 'calvin_raw', or set it to False")
  unknown = sorted(set(config["loss_weights"]) - set(DEFAULT_WEIGHTS))
  if unknown:
    raise ConfigError(f"unknown config key config.loss_weights.{unknown[0]}; valid keys: {', '.join(DEFAULT_WEIGHTS)}")
  _check_fields(config["optimizer"], {k: (int, float) for k in OPTIMIZER_FIELDS}, "config.optimizer.")
  try:
    model = GR1Config.from_dict(config["model"])
  except ValueError as exc:
    raise ConfigError(f"config.model: {exc}") from None
  if config["data"]["name"] == "lerobot" or "lerobot:" in config["data"]["mixture"]:
    check_lerobot(config["data"]["lerobot"], model)
  if model.fwd_pred and config["data"]["name"] in ("ego4d",) and (model.use_state or model.use_hand_rgb):
    raise ConfigError("config.model uses state / the hand camera but config.data.name='ego4d' has "
                      "neither; use the pretraining layout (use_state=use_hand_rgb=act_pred=False)")
  return model


def check_lerobot(lerobot: Mapping, model: GR1Config) -> None:
  """config.data.lerobot: known keys, a normalisation mode, as many arm dims as the model's arm."""
  from data_pipelines.lerobot.pipeline import LeRobotSpec  # pylint: disable=import-outside-toplevel
  from gr1_jax.norm_stats import MODES  # pylint: disable=import-outside-toplevel
  try:
    spec = LeRobotSpec.from_config(lerobot)
  except (TypeError, ValueError) as exc:
    raise ConfigError(str(exc)) from None
  if spec.normalization not in MODES:
    raise ConfigError(f"config.data.lerobot.normalization={spec.normalization!r}; expected one of {', '.join(MODES)}")
  for name in ("arm_state_dims", "arm_action_dims"):
    dims = getattr(spec, name)
    if len(dims) != model.arm_dim:
      raise ConfigError(f"config.data.lerobot.{name}={dims} has {len(dims)} dims; the model's arm has "
                        f"{model.arm_dim} (config.model.arm_dim)")
  if len(spec.gripper_action_values) != 2:
    raise ConfigError(f"config.data.lerobot.gripper_action_values={spec.gripper_action_values} must be (class 0, class 1)")
  if spec.val_episodes < 0:
    raise ConfigError(f"config.data.lerobot.val_episodes={spec.val_episodes} must be >= 0")
