"""Every entry point reports a user's mistake as one `error:` line naming the flag, config key
or file, exits 2 and creates nothing; --help exits 0; real bugs keep their traceback.

The helper (experiments/cli.py) is tested in-process; each entry point through a real
subprocess for a few cases, the cheap ones (they fail before JAX is even imported) in one
parametrized list.
"""
import os
import subprocess
import sys

import ml_collections
import pytest

from experiments import cli
from gr1_jax.user_errors import ConfigError, UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
PRETRAIN = ["experiments.pretrain", "--config", "experiments/configs/pretrain.py:debug"]
FINETUNE = ["experiments.finetune", "--config", "experiments/configs/finetune_calvin.py:debug"]


def _run(module_and_args, env=ENV):
  return subprocess.run([sys.executable, "-m", *module_and_args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


def _assert_one_line_error(proc, *expected):
  """Exit 2; the last line of stderr is the `error:` report and names `expected`; no traceback."""
  output = proc.stdout + proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 2, output[-3000:]
  assert lines and lines[-1].startswith("error: "), output[-3000:]
  assert "Traceback" not in output, output[-3000:]
  for text in expected:
    assert text in lines[-1], lines[-1]
  return lines[-1]


def _listing(path):
  return sorted(os.path.relpath(os.path.join(d, n), path) for d, dirs, files in os.walk(path)
                for n in dirs + files)


# ----------------------------------------------------------------------------- the helper in-process

def _config():
  c = ml_collections.ConfigDict({"batch_size": 8, "data": {"path": "", "name": "synthetic"}, "seed": 0})
  c.lock()
  return c


def test_unknown_config_key_names_the_closest_keys():
  message = cli.unknown_config_key(_config(), "data.pth")
  assert message.startswith("--config.data.pth: unknown config key config.data.pth;")
  assert "closest valid keys: config.data.path" in message
  # Nothing close: every key of that level.
  message = cli.unknown_config_key(_config(), "nonexistent")
  assert "unknown config key config.nonexistent; valid keys: config.batch_size, config.data, config.seed" in message
  assert "is a int value" in cli.unknown_config_key(_config(), "batch_size.x")
  assert cli.unknown_config_key(_config(), "data.path") is None


def test_reporting_expected_errors_in_one_line(capsys):
  for exc in (ConfigError("config.x=1 is bad;\n  set it to 2"), FileNotFoundError("/x does not exist")):
    with pytest.raises(SystemExit) as stop:
      with cli.reporting(debug=False):
        raise exc
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(exc).splitlines()[0] in err
  with pytest.raises(ConfigError):            # --debug: the traceback
    with cli.reporting(debug=True):
      raise ConfigError("bad")
  with pytest.raises(KeyError):               # a bug is no user error
    with cli.reporting(debug=False):
      raise KeyError("bug")


def test_naming_puts_the_flag_in_front():
  with pytest.raises(UserError, match=r"^--checkpoint /ckpt: /ckpt/3 is damaged$"):
    with cli.naming("--checkpoint", "/ckpt"):
      raise UserError("/ckpt/3 is damaged")
  with pytest.raises(UserError, match=r"^--checkpoint /ckpt does not exist$"):   # named already
    with cli.naming("--checkpoint", "/ckpt"):
      raise UserError("--checkpoint /ckpt does not exist")


def test_argparse_usage_error_is_one_line(capsys):
  parser = cli.ArgumentParser(prog="evaluate.py")
  parser.add_argument("--batch_size", type=int, required=True)
  with pytest.raises(SystemExit) as stop:
    parser.parse_args([])
  assert stop.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: ") and "--batch_size" in err


# ----------------------------------------------------------------------------- training entry points

@pytest.mark.parametrize("args, expected", [
    (["--config.nonexistent=1"], ["config.nonexistent", "valid keys: config.async_checkpointing"]),
    (["--config.data.pth=/x"], ["config.data.pth", "closest valid keys: config.data.path"]),
    (["--config.batch_size=abc"], ["--config.batch_size=abc"]),
    (["extra_argument"], ["extra_argument"]),
], ids=["unknown-key", "typo-key", "bad-value", "extra-arg"])
def test_pretrain_command_line_mistakes(tmp_path, args, expected):
  workdir = tmp_path / "run"
  _assert_one_line_error(_run([*PRETRAIN, f"--workdir={workdir}", *args]), *expected)
  assert not workdir.exists()


def test_missing_flag_and_config_file(tmp_path):
  _assert_one_line_error(_run(PRETRAIN), "--workdir is required")
  _assert_one_line_error(_run(["experiments.pretrain", "--config=experiments/configs/nope.py",
                               f"--workdir={tmp_path}"]), "nope.py does not exist")
  _assert_one_line_error(_run(["experiments.pretrain", "--config=experiments/configs/pretrain.py:nope",
                               f"--workdir={tmp_path}"]), "unknown variant 'nope'")
  assert _listing(tmp_path) == []


def test_help_and_print_config(tmp_path):
  proc = _run(["experiments.pretrain", "--help"])
  assert proc.returncode == 0, proc.stderr
  for flag in ("--config", "--workdir", "--[no]distributed", "--coordinator_address", "--[no]print_config",
               "--[no]debug"):
    assert flag in proc.stdout
  workdir = tmp_path / "run"
  proc = _run([*PRETRAIN, "--print_config", "--config.batch_size=4", f"--workdir={workdir}"])
  assert proc.returncode == 0, proc.stderr
  assert "batch_size: 4\n" in proc.stdout and "  path: ''\n" in proc.stdout   # resolved, nested keys shown
  assert not workdir.exists()


def test_start_check_failure_through_the_cli(tmp_path):
  """A mistake found by train_and_evaluate (tests/training/test_start_checks.py has them all)
  reaches the user as one line, the workdir as it was; and no libtpu line on a CPU run."""
  existing = tmp_path / "existing"
  (existing / "notes").mkdir(parents=True)
  (existing / "notes" / "a.txt").write_text("x")
  before = _listing(existing)
  env = {k: v for k, v in ENV.items() if k != "JAX_PLATFORMS"}   # let JAX look for a TPU
  proc = _run([*PRETRAIN, f"--workdir={existing}", "--config.mesh.fsdp=3"], env=env)
  _assert_one_line_error(proc, "config.mesh=", "does not divide")
  assert "Unable to initialize backend" not in proc.stderr
  assert _listing(existing) == before


# ----------------------------------------------------------------------------- the other entry points

def test_evaluation_and_visualization_mistakes(tmp_path):
  missing, empty = str(tmp_path / "missing"), tmp_path / "empty"
  empty.mkdir()
  _assert_one_line_error(_run(["experiments.evaluate", "--checkpoint", missing, "--data", missing]),
                         f"--checkpoint {missing} does not exist")
  _assert_one_line_error(_run(["experiments.evaluate", "--checkpoint", missing, "--data", missing,
                               "--batch_size", "0"]), "--batch_size must be >= 1")
  _assert_one_line_error(_run(["experiments.evaluate_calvin", "--checkpoint", missing, "--dataset_dir", missing]),
                         f"--checkpoint {missing} does not exist")
  _assert_one_line_error(_run(["experiments.visualize", "predictions", "--checkpoint", missing, "--data", missing,
                               "--out_dir", str(tmp_path / "viz")]), f"--checkpoint {missing} does not exist")
  _assert_one_line_error(_run(["experiments.visualize", "attention-mask", "--config", "nope", "--out",
                               str(tmp_path / "m.png")]), "--config nope", "unknown model variant")
  assert os.listdir(tmp_path) == ["empty"] and _listing(empty) == []   # no output, no viz/
  # --debug: the traceback of the same mistake.
  proc = _run(["experiments.evaluate", "--checkpoint", missing, "--data", missing, "--debug"])
  assert proc.returncode != 0 and "Traceback" in proc.stderr and "MissingPathError" in proc.stderr


def test_convert_unknown_key_without_config():
  # The default --config is loaded after cli is in charge, so a bad override is one line too.
  _assert_one_line_error(_run(["experiments.convert", "from-official", "--policy=x.pt", "--out=y",
                               "--config.hiden_size=1"]), "closest valid keys: config.hidden_size")
