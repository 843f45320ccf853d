r"""Convert GR-1 weights between the official PyTorch layout and model checkpoint directories.

    python -m experiments.convert from-official --policy snapshot_ABCD.pt \
        [--mae mae_pretrain_vit_base.pth] [--clip ViT-B-32.pt | --clip HF_CLIP_DIR] --out DIR \
        [--config experiments/configs/gr1_model.py[:variant]] [--config.key=value ...] [--overwrite]

    python -m experiments.convert to-torch --checkpoint DIR --out PATH.pt [--format pt|safetensors] \
        [--clip ViT-B-32.pt] [--gpt2_buffers auto|yes|no] [--float32]

    python -m experiments.convert release --checkpoint WORKDIR --out DIR [--step N]

from-official reads every size from the tensors and checks it against --config
(default: the official variant); head counts, activations and eps come from the
config. to-torch writes {'state_dict': ...} (or a flat safetensors file) in the
official key layout and dtypes; --clip adds CLIP's vision tower so that the
official GR1 class (which holds the whole CLIP model) loads it with strict=True.
release copies one step of a training run (default: the newest) without its optimizer
and data-iterator state: the model checkpoint to ship or share.
On any error nothing is written, and bad input is one `error:` line, exit status 2
(--debug: the traceback). The logic lives in gr1_jax.conversion.convert.
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

_CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "gr1_model.py")

_POLICY = flags.DEFINE_string("policy", None, "from-official: GR-1 checkpoint (.pt/.pth/.safetensors).")
_MAE = flags.DEFINE_string("mae", None, "from-official: MAE ViT weights (mae_pretrain_vit_base.pth).")
_CLIP = flags.DEFINE_string("clip", None, "OpenAI CLIP .pt (TorchScript or state_dict) or a Hugging Face CLIP "
                            "directory. from-official: the text tower; to-torch: adds the vision tower.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "to-torch, release: model checkpoint directory (or training workdir).")
_STEP = flags.DEFINE_integer("step", None, "release: the step to copy (default: the newest).")
_OUT = flags.DEFINE_string("out", None, "Output directory (from-official) or file (to-torch).")
_FORMAT = flags.DEFINE_enum("format", "pt", ["pt", "safetensors"], "to-torch: output format.")
_BUFFERS = flags.DEFINE_enum("gpt2_buffers", "auto", ["auto", "yes", "no"],
                             "to-torch: write GPT-2's attn.bias/masked_bias buffers (auto: as imported, "
                             "else yes, as transformers 4.5.1 saved them).")
_FLOAT32 = flags.DEFINE_bool("float32", False, "to-torch: keep float32 instead of the recorded source dtypes.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
_TRUST = flags.DEFINE_bool("trust_pickle", False, "Allow full unpickling of input files (only for trusted files).")
# No default here: ml_collections would load a default at import time, applying the
# --config.KEY overrides there, before cli could report a bad key; cli.run_absl adds it.
_CONFIG = config_flags.DEFINE_config_file("config", None, "Model config file[:variant] (default: "
                                          "experiments/configs/gr1_model.py, the official variant).",
                                          lock_config=True)

COMMANDS = ("from-official", "to-torch", "release")


def _require(**values):
  missing = [f"--{name}" for name, value in values.items() if not value]
  if missing:
    raise app.UsageError(f"missing {', '.join(missing)}")


def main(argv):
  from gr1_jax.conversion import convert
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)        # Orbax logs every step of a save at INFO
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: python -m experiments.convert {{{'|'.join(COMMANDS)}}} --flags ...")
  # Bad input (CheckpointReadError, CheckpointMismatchError, ConversionError: UserErrors,
  # or a missing / existing path) is reported by cli in one line, exit status 2.
  if argv[1] == "from-official":
    _require(policy=_POLICY.value, out=_OUT.value)
    result = convert.from_official(_POLICY.value, _OUT.value, mae=_MAE.value, clip=_CLIP.value,
                                   config=_CONFIG.value, overwrite=_OVERWRITE.value, trust_pickle=_TRUST.value)
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    lines = [f"config {config_flags.get_config_filename(flags.FLAGS['config'])}"
             + (f" with overrides {overrides}" if overrides else "")] + result.summary
  elif argv[1] == "release":
    _require(checkpoint=_CHECKPOINT.value, out=_OUT.value)
    lines = convert.release(_CHECKPOINT.value, _OUT.value, step=_STEP.value, overwrite=_OVERWRITE.value)
  else:
    _require(checkpoint=_CHECKPOINT.value, out=_OUT.value)
    lines = convert.to_torch(_CHECKPOINT.value, _OUT.value, fmt=_FORMAT.value, clip=_CLIP.value,
                             gpt2_buffers=_BUFFERS.value, restore_dtypes=not _FLOAT32.value,
                             overwrite=_OVERWRITE.value)
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  cli.run_absl(main, default_config=_CONFIG_FILE)
