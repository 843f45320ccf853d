r"""Runs one training command on every worker of a Cloud TPU VM slice (or a queued resource).

    python -m experiments.launch.tpu_pod --tpu my-v5e-32 --zone us-west4-a [--dry_run] -- \
        python -m experiments.pretrain --config experiments/configs/pretrain.py \
            --workdir /mnt/shared/gr1_pretrain --config.data.path=/mnt/shared/ego4d_clips

    # the same on capacity from a queued resource (created first, or --create to request it):
    python -m experiments.launch.tpu_pod --queued_resource my-qr --tpu my-v5e-32 --zone us-west4-a \
        --create --accelerator_type v5litepod-32 --runtime_version v2-alpha-tpuv5-lite [--spot] -- ...

Steps (each one a gcloud command, printed and not run with --dry_run):
  [create]  `gcloud compute tpus tpu-vm create` (or `queued-resources create`, then wait for ACTIVE)
  copy      `git archive HEAD` of this repository -> `tpu-vm scp --worker=all` to every host
  install   `tpu-vm ssh --worker=all`: unpack into ~/gr1_jax, `pip install -e . "jax[tpu]"`
  run       `tpu-vm ssh --worker=all`: the command after `--` on every host at once, with
            --distributed added to our entry points so each host calls
            jax.distributed.initialize(), which finds the other hosts itself on TPU VMs
The workdir must be a path every host sees (a shared mount, or gs://bucket/run): checkpoints
are written collectively by all hosts; logs and images by host 0.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCHIVE = "gr1_jax.tar.gz"
REMOTE_DIR = "gr1_jax"


def _gcloud_tpu(args, *words):
  return ["gcloud", "compute", "tpus", *words, f"--zone={args.zone}"] + (
      [f"--project={args.project}"] if args.project else [])


def commands(args, train_command: list[str]) -> list[list[str]]:
  out = []
  if args.create:
    if args.queued_resource:
      out.append(_gcloud_tpu(args, "queued-resources", "create", args.queued_resource) + [
          f"--node-id={args.tpu}", f"--accelerator-type={args.accelerator_type}",
          f"--runtime-version={args.runtime_version}"] + (["--spot"] if args.spot else []))
      # Blocks until the slice is provisioned (state ACTIVE) so the next steps find the VM.
      out.append(["bash", "-c", "until " + shlex.join(_gcloud_tpu(
          args, "queued-resources", "describe", args.queued_resource) + ["--format=value(state.state)"])
          + " | grep -q ACTIVE; do sleep 30; done"])
    else:
      out.append(_gcloud_tpu(args, "tpu-vm", "create", args.tpu) + [
          f"--accelerator-type={args.accelerator_type}", f"--version={args.runtime_version}"]
          + (["--spot"] if args.spot else []))
  archive = os.path.join("/tmp", ARCHIVE)
  out.append(["git", "-C", REPO, "archive", "--format=tar.gz", "-o", archive, "HEAD"])
  out.append(_gcloud_tpu(args, "tpu-vm", "scp", archive, f"{args.tpu}:~/{ARCHIVE}") + ["--worker=all"])
  install = (f"rm -rf ~/{REMOTE_DIR} && mkdir -p ~/{REMOTE_DIR} && tar xzf ~/{ARCHIVE} -C ~/{REMOTE_DIR} && "
             f"cd ~/{REMOTE_DIR} && pip install -q -e . 'jax[tpu]'")
  out.append(_gcloud_tpu(args, "tpu-vm", "ssh", args.tpu) + ["--worker=all", f"--command={install}"])
  if any(word in ("experiments.pretrain", "experiments.finetune") for word in train_command) \
      and "--distributed" not in train_command:
    train_command = [*train_command, "--distributed"]
  run = f"cd ~/{REMOTE_DIR} && {shlex.join(train_command)}"
  out.append(_gcloud_tpu(args, "tpu-vm", "ssh", args.tpu) + ["--worker=all", f"--command={run}"])
  return out


def parse(argv):
  if "--" not in argv:
    raise SystemExit("usage: ... [options] -- <training command>, e.g. -- python -m experiments.pretrain ...")
  split = argv.index("--")
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tpu", required=True, help="TPU VM name (the node id of a queued resource)")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default=None)
  parser.add_argument("--queued_resource", default=None, help="run on a queued resource's node")
  parser.add_argument("--create", action="store_true", help="create the TPU VM / queued resource first")
  parser.add_argument("--accelerator_type", default="v5litepod-32")
  parser.add_argument("--runtime_version", default="v2-alpha-tpuv5-lite")
  parser.add_argument("--spot", action="store_true")
  parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  args = parser.parse_args(argv[:split])
  train_command = argv[split + 1:]
  if not train_command:
    raise SystemExit("nothing to run after `--`")
  return args, train_command


def main(argv=None) -> int:
  args, train_command = parse(sys.argv[1:] if argv is None else argv)
  for command in commands(args, train_command):
    print("+ " + shlex.join(command), flush=True)
    if not args.dry_run:
      subprocess.run(command, check=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
