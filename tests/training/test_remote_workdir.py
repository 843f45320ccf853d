"""Workdirs given as URLs (gs://bucket/run) or relative paths: URLs pass through untouched,
the run's JSON, images and TensorBoard events reach any fsspec URL whole, a missing
filesystem package is named before anything runs; opt-in, a full run against an
emulated GCS bucket (checkpoints, resume, init_from, events)."""
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time

import fsspec
import numpy as np
import pytest

from gr1_jax import atomic_files, model_checkpoint, url_paths, visualization
from gr1_jax.training import checkpointing, metric_writers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_urls_pass_through_and_local_paths_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert url_paths.absolute("gs://bucket/run") == "gs://bucket/run"
  assert url_paths.absolute("s3://bucket/a/../b") == "s3://bucket/a/../b"
  assert url_paths.absolute("run") == str(tmp_path / "run")
  assert url_paths.absolute("./a/../run") == str(tmp_path / "run")
  assert url_paths.join("gs://bucket/run", "images", "x.png") == "gs://bucket/run/images/x.png"
  assert url_paths.is_url("memory://x")
  assert not url_paths.is_url("dir/gs://x") and not url_paths.is_url("/tmp/x")
  with pytest.raises(ValueError, match="empty string"):
    url_paths.absolute("")


def test_orbax_paths_refuse_schemes_epath_cannot_open(tmp_path):
  assert str(url_paths.as_epath("gs://bucket/run")) == "gs://bucket/run"
  with pytest.raises(ValueError, match=r"directory memory://run/checkpoints: .*not memory://"):
    checkpointing.TrainCheckpointer("memory://run", keep=1)


def test_relative_checkpoint_path_resolves_against_the_cwd(tmp_path, monkeypatch):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  monkeypatch.chdir(tmp_path)
  assert model_checkpoint.resolve_checkpoint_dir("run") == str(tmp_path / "run" / "checkpoints")
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
    model_checkpoint.resolve_checkpoint_dir("missing")


def test_atomic_writes_to_a_relative_path_and_to_an_fsspec_url(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert atomic_files.write_json("run/summary.json", {"step": 3}) == str(tmp_path / "run" / "summary.json")
  assert os.listdir(tmp_path / "run") == ["summary.json"]   # no temp file left behind

  url = f"memory://gr1-test-{os.getpid()}/run"
  assert atomic_files.write_json(f"{url}/summary.json", {"step": 3}) == f"{url}/summary.json"
  image = np.zeros((8, 12, 3), np.uint8)
  image[2:4, 3:9] = 255
  visualization.save_png(f"{url}/images/p.png", image)
  fs = fsspec.filesystem("memory")
  with fsspec.open(f"{url}/summary.json") as f:
    assert json.load(f) == {"step": 3}
  from PIL import Image
  with fsspec.open(f"{url}/images/p.png") as f:
    np.testing.assert_array_equal(np.asarray(Image.open(f)), image)
  fs.rm(url.removeprefix("memory://"), recursive=True)


def test_tensorboard_events_reach_an_fsspec_url_whole(tmp_path):
  from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
  url = f"memory://gr1-test-{os.getpid()}/tensorboard"
  writer = metric_writers.TensorBoardWriter(url)
  fs = fsspec.filesystem("memory")
  assert len(fs.ls(url)) == 1    # the event file exists from the start
  for step in (1, 2):
    writer.write_scalars(step, {"train/loss": 1.0 / step})
    writer.flush()                # each flush re-uploads the whole file, not the new records alone
  writer.write_images(3, {"eval/predicted_vs_real": np.zeros((4, 4, 3), np.uint8)})
  staging = writer._staging
  writer.close()
  assert not os.path.exists(staging)
  (name,) = fs.ls(url, detail=False)
  local = tmp_path / "events"
  local.write_bytes(fs.cat(name))
  events = [e for e in EventFileLoader(str(local)).Load() if e.HasField("summary")]
  assert [(e.step, v.tag) for e in events for v in e.summary.value] == [
      (1, "train/loss"), (2, "train/loss"), (3, "eval/predicted_vs_real")]
  fs.rm(url.removeprefix("memory://"), recursive=True)


def test_missing_gcsfs_is_named_before_the_run_starts():
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("with TensorFlow installed, gs:// goes through tf.io.gfile and needs no gcsfs")
  # A fresh interpreter where gcsfs cannot be imported, whether or not it is installed here.
  code = (
      "import sys; sys.modules['gcsfs'] = None\n"
      "from gr1_jax.training import metric_writers\n"
      "from gr1_jax import atomic_files\n"
      "for make in (lambda: metric_writers.TensorBoardWriter('gs://bucket/run/tensorboard'),\n"
      "             lambda: atomic_files.write_json('gs://bucket/run/config.json', {})):\n"
      "  try:\n"
      "    make()\n"
      "  except ImportError as e:\n"
      "    print(e)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  assert len(lines) == 2, out.stdout
  assert lines[0].startswith(
      "writing TensorBoard events to gs://bucket/run/tensorboard needs `pip install gcsfs`")
  assert lines[1].startswith("writing gs://bucket/run/config.json needs `pip install gcsfs`")


# ---------------------------------------------------------------------------- opt-in: emulated GCS
def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# gcp-storage-emulator leaves out the x-goog-generation header that GCS sends with every
# download; tensorstore (Orbax's OCDBT arrays) needs it, so the emulator runs with it added.
_EMULATOR = """
import sys
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.storage import NotFound
plain_download = objects.download
def download(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = obj["generation"]
    response["x-goog-metageneration"] = obj["metageneration"]
  except NotFound:
    pass
  return plain_download(request, response, storage, *args, **kwargs)
objects.download = download
from gcp_storage_emulator.server import create_server
create_server("127.0.0.1", int(sys.argv[1]), in_memory=True, default_bucket="gr1").run()
"""


@pytest.fixture
def gcs_emulator(monkeypatch):
  """A local GCS API (gcp-storage-emulator, in memory) with bucket `gr1`; gcsfs (used by
  etils.epath and so Orbax's metadata) and tensorstore (Orbax's arrays) both pointed at it."""
  pytest.importorskip("gcp_storage_emulator")
  pytest.importorskip("gcsfs")
  port = _free_port()
  server = subprocess.Popen([sys.executable, "-c", _EMULATOR, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 60
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        if time.time() > deadline or server.poll() is not None:
          raise RuntimeError("the GCS emulator did not start")
        time.sleep(0.2)
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
           "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{port}",
           # gcsfs would otherwise ask the (absent) storage-control API for the bucket type,
           # a 60 s timeout per bucket.
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    for key, value in env.items():
      monkeypatch.setenv(key, value)
    yield env
  finally:
    server.terminate()
    server.wait(timeout=30)


def _train(stage, workdir, cache, env, *overrides):
  config = {"pretrain": "pretrain", "finetune": "finetune_calvin"}[stage]
  proc = subprocess.run(
      [sys.executable, "-m", f"experiments.{stage}", "--config", f"experiments/configs/{config}.py:debug",
       "--workdir", workdir, f"--compilation_cache_dir={cache}", "--config.log_every=1", *overrides],
      cwd=REPO, capture_output=True, text=True, timeout=900,
      env={**os.environ, **env, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"})
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


@pytest.mark.slow
def test_training_run_on_an_emulated_gcs_bucket(gcs_emulator, tmp_path):
  import jax
  from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
  fs = fsspec.filesystem("gs")
  cache = str(tmp_path / "xla_cache")
  every = ["--config.eval_every=2", "--config.image_every=2", "--config.checkpoint_every=2"]

  _train("pretrain", "gs://gr1/stage1", cache, gcs_emulator, "--config.num_train_steps=4", *every)
  proc = _train("pretrain", "gs://gr1/stage1", cache, gcs_emulator, "--config.num_train_steps=6", *every)
  assert "resumed from gs://gr1/stage1/checkpoints step 4" in proc.stderr
  fs.invalidate_cache()
  names = [p.rsplit("/", 1)[1] for p in fs.ls("gr1/stage1/checkpoints")]
  assert sorted(int(n) for n in names if re.fullmatch(r"\d+", n)) == [4, 6]
  assert json.loads(fs.cat("gr1/stage1/summary.json"))["step"] == 6
  assert json.loads(fs.cat("gr1/stage1/config.json"))["num_train_steps"] == 4   # written by the first run
  assert {p.rsplit("/", 1)[1] for p in fs.ls("gr1/stage1/images")} == {
      f"predicted_vs_real_{s:07d}.png" for s in (2, 4, 6)}
  steps = set()
  for i, name in enumerate(fs.ls("gr1/stage1/tensorboard")):   # one event file per run
    local = tmp_path / f"events{i}"
    local.write_bytes(fs.cat(name))
    steps |= {e.step for e in EventFileLoader(str(local)).Load()
              if any(v.tag == "train/loss/total" for v in e.summary.value)}
  assert steps == set(range(1, 7))

  _train("finetune", "gs://gr1/stage2", cache, gcs_emulator, "--config.num_train_steps=2",
         "--config.checkpoint_every=2", "--config.eval_every=100", "--config.init_from=gs://gr1/stage1")
  report = json.loads(fs.cat("gr1/stage2/init_from_report.json"))
  assert report["init_from"] == "gs://gr1/stage1" and "obs_queries" in report["loaded"]
  assert "action_queries" in report["initialised"]
  model = model_checkpoint.load_model("gs://gr1/stage2")
  stage1 = model_checkpoint.load_params("gs://gr1/stage1", model_checkpoint.load_config("gs://gr1/stage1")[0])
  np.testing.assert_array_equal(jax.device_get(model.model_mae.cls_token[...]),
                                jax.device_get(stage1["model_mae"]["cls_token"]))
