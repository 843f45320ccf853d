"""A run that cannot start leaves its workdir as it found it, and says which config field to fix.

train_and_evaluate in-process (no step is compiled: every case fails before the loop);
tests/test_cli.py runs the same through the command line."""
import os

import pytest

from gr1_jax.training import train
from gr1_jax.user_errors import ConfigError, UserError
from tests.conftest import debug_config


_config = debug_config


def _listing(path):
  return sorted(os.path.relpath(os.path.join(d, n), path) for d, dirs, files in os.walk(path)
                for n in dirs + files)


@pytest.fixture
def existing_workdir(tmp_path):
  """A workdir that holds something already (notes, an earlier run's event file)."""
  workdir = tmp_path / "existing"
  (workdir / "tensorboard").mkdir(parents=True)
  (workdir / "tensorboard" / "events.out.tfevents.1.old").write_bytes(b"x")
  (workdir / "notes.txt").write_text("mine")
  return workdir


def _start_fails(config, workdir, match):
  before = _listing(workdir) if workdir.exists() else None
  with pytest.raises(UserError, match=match) as err:
    train.train_and_evaluate(config, str(workdir))
  assert "\n" not in str(err.value)
  assert (_listing(workdir) if workdir.exists() else None) == before
  return str(err.value)


@pytest.mark.parametrize("changes, match", [
    ({"mesh.fsdp": 3}, r"config\.mesh=.* does not divide the 8 devices"),
    ({"batch_size": 6}, r"config\.batch_size=6 is not divisible .*; use a multiple of 8"),
    ({"data.name": "calvin_raw", "data.path": "/nonexistent/calvin"},
     r"config\.data\.path=/nonexistent/calvin does not exist; set it to a raw CALVIN split"),
    ({"init_from": "/nonexistent/stage1"}, r"config\.init_from=/nonexistent/stage1 does not exist; set it to"),
], ids=["mesh", "batch", "data-path", "init_from"])
def test_start_checks_create_nothing(tmp_path, existing_workdir, changes, match):
  _start_fails(_config(**changes), tmp_path / "new", match)
  assert not (tmp_path / "new").exists()
  _start_fails(_config(**changes), existing_workdir, match)


def test_init_from_without_a_checkpoint(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  _start_fails(_config(init_from=str(empty)), tmp_path / "run", rf"config\.init_from={empty}: .*no complete checkpoint")
  assert _listing(empty) == []


def test_data_errors_name_the_config_field(tmp_path):
  """The pipelines know the path; the report also names the field that pointed there, and
  tells how to make the data with a command that exists."""
  empty = tmp_path / "empty"
  empty.mkdir()
  message = _start_fails(_config(**{"data.name": "calvin", "data.path": str(empty)}), tmp_path / "run",
                         rf"^config\.data\.path={empty}: no converted CALVIN dataset")
  assert "python -m data_pipelines.calvin.convert --src CALVIN_SPLIT" in message
  _start_fails(_config(**{"data.name": "calvin_raw", "data.path": str(empty)}), tmp_path / "run",
               rf"^config\.data\.path={empty}: {empty}/training: split folder not found")


def test_failed_state_phase_adds_nothing(tmp_path, existing_workdir, monkeypatch):
  """A resume (or init_from) that fails while the state is built adds no TensorBoard event
  file and no directory: the writer is created only after the state exists."""
  (existing_workdir / "checkpoints").mkdir()

  def damaged(*args, **kwargs):
    raise UserError("checkpoint step 3 is damaged")
  monkeypatch.setattr(train, "_init_state", damaged)
  _start_fails(_config(), existing_workdir, "step 3 is damaged")
  _start_fails(_config(), tmp_path / "new", "step 3 is damaged")
  assert not (tmp_path / "new").exists()


def test_bad_fields_are_config_errors():
  # ConfigError is a UserError (one line from the CLI) and still the ValueError it was.
  with pytest.raises(ConfigError, match="config.data.generate_demo_data=True but data.name='synthetic'"):
    train.experiment_config.validate(_config(**{"data.generate_demo_data": True}))
  assert issubclass(ConfigError, ValueError)
