"""The TPU pod launcher's dry run prints the gcloud commands and runs nothing."""
import shlex
import subprocess
import sys

from experiments.launch import tpu_pod


def test_dry_run_prints_all_worker_commands(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.launch.tpu_pod", "--tpu", "pod1", "--zone", "us-west4-a",
       "--dry_run", "--", "python", "-m", "experiments.pretrain", "--config",
       "experiments/configs/pretrain.py", "--workdir", "/mnt/shared/run 1"],
      cwd=tpu_pod.REPO, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert [l.split()[1:5] for l in lines] == [
      ["git", "-C", tpu_pod.REPO, "archive"],
      ["gcloud", "compute", "tpus", "tpu-vm"],
      ["gcloud", "compute", "tpus", "tpu-vm"],
      ["gcloud", "compute", "tpus", "tpu-vm"]]
  assert "scp" in lines[1] and "--worker=all" in lines[1]
  assert all("--worker=all" in l and "ssh pod1" in l for l in lines[2:])
  remote = [w for w in shlex.split(lines[3][2:]) if w.startswith("--command=")][0][len("--command="):]
  assert shlex.split(remote)[3:] == ["python", "-m", "experiments.pretrain", "--config",
                                     "experiments/configs/pretrain.py", "--workdir", "/mnt/shared/run 1",
                                     "--distributed"]   # quoting survives both shells
  assert not (tmp_path / "gr1_jax.tar.gz").exists()


def test_queued_resource_creation_commands():
  args, command = tpu_pod.parse(["--tpu", "n1", "--zone", "z", "--queued_resource", "qr", "--create",
                                 "--spot", "--", "python", "-m", "experiments.finetune"])
  cmds = tpu_pod.commands(args, command)
  assert cmds[0][:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "qr"]
  assert "--node-id=n1" in cmds[0] and "--spot" in cmds[0]
  assert "ACTIVE" in cmds[1][-1]
  assert cmds[-1][-1].endswith("python -m experiments.finetune --distributed")
